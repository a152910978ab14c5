"""Regressions found in the review of the billing engine (issue 4)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from puqpanel.billing.ledger import verify
from test_engine_charge import fresh, fund, make_price, period_rows, run, started
from test_engine_lifecycle import actions

D = Decimal


def test_unsuspend_counts_a_month_based_backlog_wholly(db, eur, new_client):
    """A monthly plan suspended with two months still unpaid (a run two months late, an imported
    paid-until) needs every started month to be covered before it is reactivated — the charge job charges
    it wholly or not at all. Counting one month reactivated it only for the suspend job to suspend it again
    in the same cycle, every cycle (its suspension date, and so its termination delay, restarting)."""
    client = new_client()
    start = dt.datetime(2026, 1, 1, 6)
    plan = started(client, make_price(db, eur, "monthly", "10", termination_delay_hours=100000),
                   start - dt.timedelta(days=31))  # paid to Jan 1, 06:00
    fund(client, str(-fresh(db, client).balance))  # balance 0
    suspended_at = dt.datetime(2026, 3, 15, 6)
    run("cycle", suspended_at)  # Jan, Feb, Mar started: 30 not covered
    plan = fresh(db, plan)
    assert (plan.status, plan.suspension_kind, plan.paid_until) == ("suspended", "non_payment", start)
    fund(client, "10")  # one month: the backlog (resumed Jan 2 → Jan 2, Feb 2, Mar 2) is still not covered
    at = dt.datetime(2026, 3, 16, 6)
    run("cycle", at)
    plan = fresh(db, plan)
    assert plan.status == "suspended" and plan.suspended_at == suspended_at
    assert "service.unsuspend" not in actions(db, plan)
    assert fresh(db, client).balance == D("10")
    # covered: reactivated and charged wholly (three months from the resume point, Jan 2 06:00)
    fund(client, "20")
    run("cycle", at + dt.timedelta(hours=1))
    plan = fresh(db, plan)
    assert plan.status == "active"
    assert [row[1] for row in period_rows(db, plan)][-3:] == [
        dt.datetime(2026, 1, 2, 7), dt.datetime(2026, 2, 2, 7), dt.datetime(2026, 3, 2, 7)]
    assert fresh(db, client).balance == D("0")
    assert verify() == []


def test_a_redelivered_chunk_closes_the_run_its_crashed_worker_left_open(db, eur, new_client):
    """A worker committed the run's last chunk and died before closing the run (acks late: its task is
    delivered again). The redelivery finds the chunk done; it must still close the run and, in a cycle,
    start the next job — else the run stays "running" and the cycle stops until the stale limit."""
    from puqpanel.billing.engine import runs
    from puqpanel.models import AutomationRun
    from test_engine_charge import order

    client = new_client()
    at = dt.datetime(2026, 3, 10, 9)
    order(client, make_price(db, eur, "monthly", "10"), at - dt.timedelta(days=30))  # the cancel job's chunk
    first = runs.start_run("cycle", at, "cli")
    session = runs.get_session()
    cancel = session.get(AutomationRun, first)
    assert cancel.job == "cancel" and cancel.chunks_total == 1
    # what the crashed worker committed: the chunk's work and "chunk done" (run not closed)
    assert runs._mark_chunk(session, first, 0, "done", {}, "") is True
    session.commit()
    follow = runs.execute_chunk(first, 0)  # the redelivery
    session.expire_all()
    assert session.get(AutomationRun, first).status == "succeeded"
    assert follow is not None and session.get(AutomationRun, follow).job == "create"
    # a later duplicate changes nothing more; it hands the cycle's next job back for dispatching again (a
    # worker may have died after starting it, before dispatching its chunks — done chunks are skipped)
    assert runs.execute_chunk(first, 0) == follow
    session.expire_all()
    assert session.get(AutomationRun, first).status == "succeeded"
    assert verify() == []


def test_cli_dry_run_names_currencies_and_status_refuses_a_bad_limit(app, db, eur, new_client):
    """The dry run's per-job totals name the currency (they said "(currency 1)", its database id);
    `billing status --limit -1` is a usage error, not a database error (PostgreSQL: LIMIT must not be
    negative)."""
    import re

    from puqpanel.billing_cli import billing_group

    client = new_client()
    fund(client, "100")
    at = dt.datetime(2026, 3, 10, 9)
    started(client, make_price(db, eur, "daily", "1.5"), at - dt.timedelta(days=2))
    runner = app.test_cli_runner()
    result = runner.invoke(billing_group, ["run", "--dry-run", "--at", at.isoformat()])
    assert result.exit_code == 0, result.output
    assert re.search(r"^charge\s+.*; 3\.0000 EUR$", result.output, re.M), result.output
    assert "(currency" not in result.output
    bad = runner.invoke(billing_group, ["status", "--limit", "-1"])
    assert bad.exit_code == 2 and "--limit" in bad.output
    assert verify() == []

