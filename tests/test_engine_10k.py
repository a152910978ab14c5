"""The billing cycle over 10 000 services (~2 900 clients) against results computed independently.

tests/engine_data.py inserts the mix in bulk and computes, in plain Python from the documented rules, every
ledger row the cycle must write, the final state of every service and every balance. The cycle runs inline
(`runs.run_inline("cycle", at)`, chunks of 1 000 service ids) at 2026-03-01 05:00, hours to days after the
services' paid-until — so hourly-billed plans charge missed hours at February's and March's rates, daily
ones several days, month-based ones a calendar period on their anchor day. Then the same cycle again:
nothing may change (whatever it changes is compared with the model's second cycle first, so a failure there
names an engine rule, not a test slip). Last, what the unsuspend and create jobs' reservation is for: no
service suspended only because the cycle reactivated or created another service of its client.
Runs on SQLite and PostgreSQL; no broker needed.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace
from decimal import Decimal

from sqlalchemy import func, select

from engine_data import assert_outcome, build_mix, simulate_again, simulate_cycle
from puqpanel.billing.engine import runs
from puqpanel.billing.ledger import verify
from puqpanel.models import ActivityLog, AutomationRun, Client, Service, Transaction

AT = dt.datetime(2026, 3, 1, 5, 0, 0)
CHUNK = 1000
N = 10_000


def _snapshot(db) -> tuple:
    db.rollback()
    return (
        db.scalar(select(func.count()).select_from(Transaction)), db.scalar(select(func.max(Transaction.id))),
        db.scalar(select(func.count()).select_from(ActivityLog)),
        tuple(db.execute(select(Client.id, Client.balance).order_by(Client.id)).all()),
        tuple(db.execute(select(Service.id, Service.status, Service.provision_status, Service.paid_until,
                                Service.suspended_at, Service.terminated_at, Service.cancelled_at,
                                Service.billing_anchor_day, Service.suspension_kind, Service.status_reason)
                         .order_by(Service.id)).all()),
    )


def _logged(db, action: str) -> set[int]:
    return set(db.scalars(select(ActivityLog.object_id).where(ActivityLog.action == action)))


def test_cycle_over_10000_services_matches_independent_totals(app, db, monkeypatch, capsys):
    monkeypatch.setitem(app.config, "PUQPANEL_BILLING_CHUNK_SIZE", CHUNK)
    started = time.monotonic()
    data = build_mix(db, n_services=N, at=AT, block=CHUNK, seed=4)
    created = time.monotonic()
    expected = simulate_cycle(data, CHUNK)
    modelled = time.monotonic()
    assert expected.straddling == [], "test data: a partially covered client spans two chunks"

    # The mix really has every case (so a rule that silently did nothing would be noticed).
    assert len(data.services) == N and 2500 <= len(data.clients) <= 3300
    hourly_rows = [k for k, (_c, stop, _a) in expected.rows.items()
                   if k[1] and stop and stop - k[1] == dt.timedelta(hours=1)]
    assert len(hourly_rows) > 10_000
    assert {k[1].month for k in hourly_rows} == {2, 3}
    assert len(expected.suspended) > 100 and len(expected.unsuspended) > 100 and len(expected.terminated) > 100
    assert expected.cancelled and expected.created and expected.insufficient and expected.skipped_currency
    assert any(b < 0 for cid, b in expected.balances.items() if data.categories[cid] == "exempt")
    assert len(set(expected.balances.values())) > 100

    ran = time.monotonic()
    cycle_id = runs.run_inline("cycle", AT)
    first_run = time.monotonic()
    db.rollback()

    # Run records: the cycle and its six jobs succeeded.
    cycle = db.get(AutomationRun, cycle_id)
    jobs = {run.job: run for run in db.scalars(select(AutomationRun).where(AutomationRun.cycle_id == cycle_id))}
    assert cycle.status == "succeeded", cycle.errors
    assert set(jobs) == set(runs.CYCLE) and all(run.status == "succeeded" for run in jobs.values())
    assert jobs["charge"].chunks_total > 5  # several chunks of 1 000 ids

    # Ledger rows (count, totals per currency, per client, row by row), balances, every service's state.
    assert_outcome(db, data, expected)

    # Who was cancelled / created / unsuspended / suspended / terminated, from the activity log.
    assert _logged(db, "service.cancel") == expected.cancelled
    assert _logged(db, "service.activate") == expected.created
    assert _logged(db, "service.unsuspend") == expected.unsuspended
    assert _logged(db, "service.suspend") == expected.suspended
    assert _logged(db, "service.terminate") == expected.terminated
    pending_left = set(db.scalars(select(Service.id).where(Service.status == "pending")))
    assert pending_left == expected.insufficient

    # The charge job's own record, and one "automation.charge" entry for each client it charged.
    engine_rows = {k: v for k, v in expected.rows.items() if k[0] not in expected.created}
    counts = jobs["charge"].counts
    assert counts["charges"] == len(engine_rows)
    assert counts["periods"] == expected.charge_job_periods
    assert counts["skipped_currency"] == expected.skipped_currency
    assert {code: Decimal(v) for code, v in counts["amounts"].items()} == expected.charge_job_amounts
    charged_clients = {client for client, _stop, _amount in engine_rows.values()}
    logged_clients = set(db.scalars(select(ActivityLog.client_id).where(ActivityLog.action == "automation.charge")))
    assert logged_clients == charged_clients
    assert jobs["suspend"].counts["suspended"] == len(expected.suspended)
    assert jobs["unsuspend"].counts["unsuspended"] == len(expected.unsuspended)
    assert sum(jobs["terminate"].counts.get(k, 0) for k in ("terminated_on_request", "terminated_overdue")) \
        == len(expected.terminated)
    assert verify() == []

    # The same cycle again at the same moment: nothing changes.
    before = _snapshot(db)
    rerun = time.monotonic()
    again = runs.run_inline("cycle", AT)
    second_run = time.monotonic()
    after = _snapshot(db)
    assert db.get(AutomationRun, again).status == "succeeded"
    # Whatever it did, it did by the same rules: the engine's state is the model's after two cycles.
    second = simulate_again(data, expected, CHUNK)
    assert_outcome(db, data, replace(second, rows={**expected.rows, **second.rows}))
    with capsys.disabled():
        print(f"\n10k cycle [{db.get_bind().dialect.name}]: data {created - started:.1f}s, model "
              f"{modelled - created:.1f}s, cycle {first_run - ran:.1f}s, re-run {second_run - rerun:.1f}s; "
              f"{len(expected.rows)} charge rows, {len(expected.suspended)} suspended, "
              f"{len(expected.unsuspended)} unsuspended, {len(expected.terminated)} terminated, "
              f"{len(expected.created)} created, {len(expected.cancelled)} cancelled")
    problems = []
    if after != before:
        changed = [f"service {b[0]}: {b[1:4]} -> {a[1:4]}" for b, a in zip(before[4], after[4]) if a != b]
        again_jobs = {run.job: run.counts
                      for run in db.scalars(select(AutomationRun).where(AutomationRun.cycle_id == again))}
        problems.append(f"the same cycle again changed things: {after[0] - before[0]} new ledger rows, "
                        f"{after[2] - before[2]} activity entries, {len(changed)} services "
                        f"({'; '.join(changed[:6])}); job counts {again_jobs}")
    # What the unsuspend and create jobs' reservation promises: no service is suspended only because the
    # cycle reactivated or created another service of its client (the model's cycle without those
    # reactivations would not suspend it; the engine did what the model did, so these are the engine's).
    if expected.flips:
        problems.append(f"{len(expected.flips)} services suspended because the cycle reactivated / created "
                        f"another of the client's services: {expected.flips[:4]}")
    assert not problems, "\n".join(problems)
