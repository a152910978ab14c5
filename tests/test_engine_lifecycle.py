"""The billing cycle's lifecycle jobs (cancel, create, unsuspend, suspend, terminate) through the real entry
point runs.run_inline: which services move, which don't, what is charged on the way, and what each run and
each touched client's activity log records."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import func, select

from puqpanel.billing import clock
from puqpanel.billing import services as svc
from puqpanel.billing.ledger import verify
from puqpanel.models import ActivityLog, AutomationChunk, Client, Service, Transaction
from test_engine_charge import (fresh, fund, job_runs, ledger_count, make_price, order, period_rows, run,
                                setup_rows, started)

D = Decimal
T0 = dt.datetime(2026, 3, 10, 9, 0)
DAY = dt.timedelta(days=1)
H = dt.timedelta(hours=1)


def set_service(db, service, **values) -> None:
    db.execute(Service.__table__.update().where(Service.id == service.id).values(**values))
    db.commit()


def actions(db, service) -> list[str]:
    return list(db.scalars(select(ActivityLog.action).where(ActivityLog.object_type == "service",
                                                            ActivityLog.object_id == service.id)
                           .order_by(ActivityLog.id)))


def entry(db, service, action) -> ActivityLog:
    return db.scalar(select(ActivityLog).where(ActivityLog.object_type == "service",
                                               ActivityLog.object_id == service.id, ActivityLog.action == action)
                     .order_by(ActivityLog.id.desc()))


# -- unsuspend ------------------------------------------------------------------------------------------------
def test_unsuspend_reactivates_non_payment_only_without_charging_the_gap(db, eur, new_client):
    client = new_client()
    fund(client, "15")
    monthly = started(client, make_price(db, eur, "monthly", "10", termination_delay_hours=1000), T0)
    staff = started(client, make_price(db, eur, "monthly", "5", termination_delay_hours=1000), T0)
    with clock.frozen_at(T0 + DAY):
        svc.suspend(fresh(db, staff), "abuse report", kind="staff")
    suspended_at = dt.datetime(2026, 4, 10, 9)
    run("cycle", suspended_at)
    monthly = fresh(db, monthly)
    assert (monthly.status, monthly.suspension_kind, monthly.suspended_at) == ("suspended", "non_payment", suspended_at)
    # not covered yet: stays suspended
    run("cycle", dt.datetime(2026, 4, 12, 9))
    assert fresh(db, monthly).status == "suspended"
    fund(client, "9.99")  # balance 9.99: still short of 10
    run("cycle", dt.datetime(2026, 4, 12, 10))
    assert fresh(db, monthly).status == "suspended"
    fund(client, "0.01")
    at = dt.datetime(2026, 4, 13, 15, 30)
    cycle = run("cycle", at)
    monthly, staff = fresh(db, monthly), fresh(db, staff)
    assert (monthly.status, monthly.suspension_kind, monthly.status_reason, monthly.provision_status) == (
        "active", "", "", "completed")
    assert staff.status == "suspended" and staff.suspension_kind == "staff"
    # the suspended days (Apr 10 → Apr 13 15:30) are not charged: billing resumes at `at`, re-anchored on the 13th
    assert period_rows(db, monthly) == [(D("10"), T0, dt.datetime(2026, 4, 10, 9)),
                                        (D("10"), at, dt.datetime(2026, 5, 13, 15, 30))]
    assert monthly.billing_anchor_day == 13 and monthly.paid_until == dt.datetime(2026, 5, 13, 15, 30)
    assert period_rows(db, staff) == [(D("5"), T0, dt.datetime(2026, 4, 10, 9))]
    jobs = job_runs(db, cycle)
    assert jobs["unsuspend"].counts == {"unsuspended": 1} and jobs["charge"].counts["charges"] == 1
    log = entry(db, monthly, "service.unsuspend")
    assert log.changes["status"] == ["suspended", "active"] and log.changes["run"] == jobs["unsuspend"].id
    assert log.client_id == client.id and log.actor_id is None and log.created_at == at
    # the next month: charged on the new anchor day
    fund(client, "10")
    run("cycle", dt.datetime(2026, 5, 13, 16))
    assert period_rows(db, monthly)[-1] == (D("10"), dt.datetime(2026, 5, 13, 15, 30), dt.datetime(2026, 6, 13, 15, 30))
    assert fresh(db, client).balance == D("0")
    assert verify() == []


def test_unsuspend_leaves_funds_to_the_services_still_running(db, eur, new_client):
    """A suspended service is reactivated only with what is left after the next charges of the client's
    running services: reactivating it must not get a running service suspended in the same cycle (and the
    reactivated one suspended again, its termination delay restarted)."""
    client = new_client()
    fund(client, "19")
    running = started(client, make_price(db, eur, "monthly", "4"), T0)   # paid until Apr 10
    cheap = started(client, make_price(db, eur, "weekly", "3", termination_delay_hours=10000), T0)
    big = started(client, make_price(db, eur, "weekly", "12", termination_delay_hours=10000), T0)  # balance 0
    first = dt.datetime(2026, 3, 17, 9)
    run("cycle", first)
    assert {fresh(db, s).status for s in (cheap, big)} == {"suspended"}
    fund(client, "6")  # covers the running service's 4 on Apr 10, not that plus the weekly 3
    run("cycle", dt.datetime(2026, 4, 10, 9))
    assert fresh(db, running).status == "active" and len(period_rows(db, running)) == 2
    assert fresh(db, cheap).status == "suspended" and fresh(db, cheap).suspended_at == first
    assert fresh(db, client).balance == D("2")
    assert actions(db, running) == ["service.add", "service.activate"]
    assert actions(db, cheap) == ["service.add", "service.activate", "service.suspend"]
    fund(client, "1")  # now 3: the weekly one is covered (the running one is paid until May 10)
    run("cycle", dt.datetime(2026, 4, 11, 9))
    assert fresh(db, cheap).status == "active" and fresh(db, big).status == "suspended"
    assert fresh(db, client).balance == D("0")
    assert verify() == []


def test_a_month_based_backlog_is_charged_in_one_round_and_reserved_whole(db, eur, new_client):
    """Two monthly periods of a running plan are due (a run two months late): both are charged in one
    round, wholly, and reserved wholly before a reactivation, which therefore doesn't happen (10 - 9.98
    doesn't cover the 0.35 of the suspended daily backup) — the running plan keeps running."""
    client = new_client()
    start = dt.datetime(2026, 1, 1, 6)
    hosting = started(client, make_price(db, eur, "monthly", "4.99"), start - dt.timedelta(days=31))  # paid to Jan 1
    backup = started(client, make_price(db, eur, "daily", "0.35", termination_delay_hours=10000), start)
    at = dt.datetime(2026, 3, 1, 5)
    set_service(db, backup, status="suspended", suspension_kind="non_payment", suspended_at=at - H,
                paid_until=at - H)
    fund(client, str(D("10") - fresh(db, client).balance))
    run("cycle", at)
    assert [row[1:] for row in period_rows(db, hosting)][-2:] == [
        (dt.datetime(2026, 1, 1, 6), dt.datetime(2026, 2, 1, 6)), (dt.datetime(2026, 2, 1, 6), dt.datetime(2026, 3, 1, 6))]
    assert fresh(db, hosting).status == "active" and fresh(db, hosting).paid_until == dt.datetime(2026, 3, 1, 6)
    assert fresh(db, backup).status == "suspended"
    assert fresh(db, client).balance == D("0.02")
    assert verify() == []


def test_only_what_the_charge_job_will_really_charge_is_set_aside(db, eur, new_client):
    """The reservation is the charge job's own first round: a running service the funds can't pay anyway
    doesn't block a reactivation or a new order (else a second cycle at the same moment would do them);
    a running service's whole backlog of missed hours is set aside, not just its next hour."""
    at = dt.datetime(2026, 4, 10, 9)
    # client 1: a running 12 that 10 can't pay; a suspended 3 and a new order of 2 fit
    one = new_client()
    fund(one, "15")
    dear = started(one, make_price(db, eur, "monthly", "12"), T0)            # paid until Apr 10; balance 3
    cheap = started(one, make_price(db, eur, "weekly", "3", termination_delay_hours=10000), at - 8 * DAY)
    run("cycle", at - DAY)                                                    # balance 0: cheap suspended
    assert fresh(db, cheap).status == "suspended"
    fund(one, "10")
    new = order(one, make_price(db, eur, "monthly", "2"), at - H)
    cycle = run("cycle", at)
    assert fresh(db, new).status == "active" and fresh(db, cheap).status == "active"
    assert fresh(db, dear).status == "suspended"
    assert fresh(db, one).balance == D("5")
    # client 2: 5 missed hours of a running hourly plan (0.1 each) are set aside before a suspended 0.3
    two = new_client()
    fund(two, "1.3")
    hourly = started(two, make_price(db, eur, "monthly", "72", hourly=True), at - 5 * H)  # 0.1 an hour
    small = started(two, make_price(db, eur, "daily", "0.3", termination_delay_hours=10000), at - 2 * DAY)
    with clock.frozen_at(at - DAY):
        svc.suspend(fresh(db, small), "unpaid", kind="non_payment")
    fund(two, "-0.2")  # 1.3 - 0.1 - 0.3 - 0.2 = 0.7: the 5 hours due at `at` (0.5) leave 0.2 < 0.3
    run("cycle", at)
    assert fresh(db, hourly).status == "active" and fresh(db, hourly).paid_until == at + H
    assert fresh(db, small).status == "suspended" and fresh(db, two).balance == D("0.2")
    # the same cycle again: nothing changes
    rows, entries = ledger_count(db), db.scalar(select(func.count()).select_from(ActivityLog))
    statuses = [(s.id, s.status) for s in db.scalars(select(Service).order_by(Service.id))]
    again = run("cycle", at)
    assert ledger_count(db) == rows and db.scalar(select(func.count()).select_from(ActivityLog)) == entries
    assert [(s.id, s.status) for s in db.scalars(select(Service).order_by(Service.id))] == statuses
    assert all(not r.counts for r in job_runs(db, again).values())
    assert job_runs(db, cycle)["unsuspend"].counts == {"unsuspended": 1}
    assert verify() == []


def test_time_run_unpaid_before_the_suspension_is_billed_after_it(db, eur, new_client):
    """A late run (6 hours behind) can't pay the first missed hour: suspended at the run. The suspended
    time is not billed, the 6 hours the service ran are: on reactivation paid-until moves on by the
    suspended time only, and the funds must cover every period then due. A second cycle at the same moment
    changes nothing (it used to reactivate at March's cheaper hourly rate what the first had suspended at
    February's)."""
    client = new_client()
    price = make_price(db, eur, "monthly", "120", hourly=True, termination_delay_hours=1000)
    feb, mar = D("120") / 672, D("120") / 744
    feb, mar = feb.quantize(D("0.0001")), mar.quantize(D("0.0001"))
    assert (feb, mar) == (D("0.1786"), D("0.1613"))
    fund(client, str(feb + D("0.17")))
    service = started(client, price, dt.datetime(2026, 2, 28, 22))   # paid until Feb 28 23:00
    at = dt.datetime(2026, 3, 1, 5)
    run("cycle", at)
    service = fresh(db, service)
    assert (service.status, service.suspended_at, service.paid_until) == ("suspended", at, dt.datetime(2026, 2, 28, 23))
    again = run("cycle", at)
    assert fresh(db, service).status == "suspended" and all(not r.counts for r in job_runs(db, again).values())
    # three hours later: resume at Feb 28 23:00 + 3 h suspended = Mar 1 02:00; 02:00 … 08:00 are due (7 × March)
    later = at + 3 * H
    fund(client, str(7 * mar - D("0.17") - D("0.0001")))
    run("cycle", later)
    assert fresh(db, service).status == "suspended"
    fund(client, "0.0001")
    cycle = run("cycle", later)
    service = fresh(db, service)
    assert service.status == "active" and service.paid_until == later + H
    assert period_rows(db, service)[1:] == [(mar, dt.datetime(2026, 3, 1, 2) + i * H, dt.datetime(2026, 3, 1, 3) + i * H)
                                            for i in range(7)]
    assert fresh(db, client).balance == D("0")
    assert job_runs(db, cycle)["unsuspend"].counts == {"unsuspended": 1}
    # month-based: paid until Mar 10, the run comes on Mar 12 (2 days unpaid), reactivated on Mar 20: the
    # period starts on Mar 18 (8 suspended days later) and re-anchors on the 18th
    other = new_client()
    fund(other, "10")
    monthly = started(other, make_price(db, eur, "monthly", "10", termination_delay_hours=1000),
                      dt.datetime(2026, 2, 10, 9))
    run("cycle", dt.datetime(2026, 3, 12, 9))
    assert fresh(db, monthly).status == "suspended"
    fund(other, "10")
    run("cycle", dt.datetime(2026, 3, 20, 9))
    monthly = fresh(db, monthly)
    assert (monthly.status, monthly.billing_anchor_day, monthly.paid_until) == (
        "active", 18, dt.datetime(2026, 4, 18, 9))
    assert period_rows(db, monthly)[-1] == (D("10"), dt.datetime(2026, 3, 18, 9), dt.datetime(2026, 4, 18, 9))
    assert verify() == []


def test_never_auto_suspend_client_is_unsuspended(db, eur, new_client):
    client = new_client()
    fund(client, "2")
    service = started(client, make_price(db, eur, "daily", "2"), T0)
    run("cycle", T0 + DAY)
    assert fresh(db, service).status == "suspended"
    db.execute(Client.__table__.update().where(Client.id == client.id).values(never_auto_suspend=True))
    db.commit()
    run("cycle", T0 + 2 * DAY)
    assert fresh(db, service).status == "active" and fresh(db, client).balance == D("-2")
    assert verify() == []


# -- terminate ------------------------------------------------------------------------------------------------
def test_termination_request_ends_the_service_when_its_paid_period_ends(db, eur, new_client):
    client = new_client()
    fund(client, "100")
    service = started(client, make_price(db, eur, "monthly", "10"), T0)  # paid until Apr 10 09:00
    hourly = started(client, make_price(db, eur, "monthly", "30", hourly=True), T0)
    licence = started(client, make_price(db, eur, "one_time", "7"), T0)
    for s in (service, hourly, licence):
        set_service(db, s, termination_requested_at=T0 + DAY, termination_request_reason="moving away")
    rows = ledger_count(db)
    cycle = run("cycle", T0 + 2 * DAY)
    # the hourly one's paid hour ended long ago, the one-time one has no period: terminated now
    assert fresh(db, hourly).status == fresh(db, licence).status == "terminated"
    assert fresh(db, service).status == "active"
    assert job_runs(db, cycle)["terminate"].counts == {"terminated_on_request": 2}
    run("cycle", dt.datetime(2026, 4, 10, 8, 59, 59))
    assert fresh(db, service).status == "active"
    at = dt.datetime(2026, 4, 10, 9)
    run("cycle", at)
    service = fresh(db, service)
    assert (service.status, service.provision_status, service.terminated_at) == ("terminated", "terminated", at)
    assert service.status_reason
    assert ledger_count(db) == rows  # nothing charged after the request
    log = entry(db, service, "service.terminate")
    assert log.changes["status"] == ["active", "terminated"] and log.created_at == at
    run("cycle", at + 40 * DAY)
    assert ledger_count(db) == rows
    assert actions(db, service).count("service.terminate") == 1
    assert verify() == []


def test_non_payment_suspension_is_terminated_after_the_delay_staff_suspension_never(db, eur, new_client):
    client = new_client()
    fund(client, "3")
    unpaid = started(client, make_price(db, eur, "daily", "1", termination_delay_hours=72), T0)
    staff = started(client, make_price(db, eur, "daily", "2", termination_delay_hours=1), T0)
    with clock.frozen_at(T0 + H):
        svc.suspend(fresh(db, staff), "maintenance", kind="staff")
    run("cycle", T0 + DAY)  # balance 0: the daily 1 can't be paid
    assert fresh(db, unpaid).status == "suspended"
    run("cycle", T0 + DAY + 72 * H - dt.timedelta(seconds=1))
    assert fresh(db, unpaid).status == "suspended"
    at = T0 + DAY + 72 * H
    cycle = run("cycle", at)
    unpaid = fresh(db, unpaid)
    assert (unpaid.status, unpaid.terminated_at, unpaid.suspension_kind) == ("terminated", at, "")
    assert job_runs(db, cycle)["terminate"].counts == {"terminated_overdue": 1}
    assert entry(db, unpaid, "service.terminate").changes["status"] == ["suspended", "terminated"]
    run("cycle", at + 100 * DAY)
    assert fresh(db, staff).status == "suspended"
    assert verify() == []


# -- cancel ---------------------------------------------------------------------------------------------------
def test_cancel_pending_unpaid_orders_after_the_delay(db, eur, new_client):
    client = new_client()  # no funds: the create job leaves everything pending
    price = make_price(db, eur, "monthly", "10", cancellation_delay_hours=24, module="test")
    old = order(client, price, T0)
    young = order(client, price, T0 + 2 * H)
    broken = order(client, price, T0, admin_label="will fail")
    with clock.frozen_at(T0):
        assert svc.activate(fresh(db, broken), force=True).provision_status == "error"
    run("cycle", T0 + 24 * H - dt.timedelta(seconds=1))
    assert fresh(db, old).status == "pending" and fresh(db, old).status_reason == "Insufficient funds"
    cycle = run("cycle", T0 + 24 * H)
    old, young, broken = fresh(db, old), fresh(db, young), fresh(db, broken)
    assert (old.status, old.provision_status, old.cancelled_at) == ("cancelled", "cancelled", T0 + 24 * H)
    assert young.status == "pending" and broken.status == "pending" and broken.provision_status == "error"
    assert job_runs(db, cycle)["cancel"].counts == {"cancelled": 1}
    assert entry(db, old, "service.cancel").changes["status"] == ["pending", "cancelled"]
    run("cycle", T0 + 26 * H)
    assert fresh(db, young).status == "cancelled" and fresh(db, broken).status == "pending"
    assert ledger_count(db) == 0
    assert verify() == []


# -- create ---------------------------------------------------------------------------------------------------
def test_create_activates_covered_orders_and_charges_setup_and_first_period(db, eur, new_client):
    rich, poor = new_client(), new_client()
    fund(rich, "100")
    fund(poor, "14.99")
    price = make_price(db, eur, "monthly", "10", setup="5", module="test")
    covered = order(rich, price, T0)
    short = order(poor, price, T0)
    failing = order(rich, price, T0, admin_label="FAIL me")
    at = T0 + 3 * H
    cycle = run("cycle", at)
    covered, short, failing = fresh(db, covered), fresh(db, short), fresh(db, failing)
    assert (covered.status, covered.provision_status, covered.activated_at) == ("active", "completed", at)
    assert setup_rows(db, covered) == [D("5")]
    assert period_rows(db, covered) == [(D("10"), at, dt.datetime(2026, 4, 10, 12))]
    assert (short.status, short.status_reason, short.provision_status) == ("pending", "Insufficient funds", "pending")
    assert (failing.status, failing.provision_status) == ("pending", "error")
    assert "failed" in failing.provision_error
    assert period_rows(db, short) == period_rows(db, failing) == [] and setup_rows(db, failing) == []
    assert fresh(db, rich).balance == D("85") and fresh(db, poor).balance == D("14.99")
    assert job_runs(db, cycle)["create"].counts == {"created": 1, "insufficient_funds": 1,
                                                     "marked_insufficient": 1, "provisioning_errors": 1}
    assert entry(db, covered, "service.activate").actor_id is None
    # covered later (credit limit): created by the next cycle; the failed one is not retried automatically
    db.execute(Client.__table__.update().where(Client.id == poor.id).values(credit_limit=D("0.01")))
    db.commit()
    run("cycle", at + H)
    short = fresh(db, short)
    assert (short.status, short.status_reason) == ("active", "")
    assert fresh(db, poor).balance == D("-0.01")
    assert fresh(db, failing).status == "pending" and ledger_count(db) == 6
    assert verify() == []


def test_a_new_order_does_not_take_the_money_a_running_service_needs(db, eur, new_client):
    client = new_client()
    fund(client, "18")
    running = started(client, make_price(db, eur, "monthly", "8"), T0)  # paid until Apr 10 09:00; balance 10
    at = dt.datetime(2026, 4, 10, 9)
    new = order(client, make_price(db, eur, "monthly", "4", setup="1"), at - H)
    cycle = run("cycle", at)
    # 10 covers the running 8 but not 8 + the order's 5: the order waits, the running service stays
    assert fresh(db, running).status == "active" and len(period_rows(db, running)) == 2
    new = fresh(db, new)
    assert (new.status, new.status_reason) == ("pending", "Insufficient funds")
    assert job_runs(db, cycle)["create"].counts == {"insufficient_funds": 1, "marked_insufficient": 1}
    fund(client, "3")  # 5: the running one is paid until May 10, the order is covered now
    run("cycle", at + H)
    assert fresh(db, new).status == "active" and fresh(db, client).balance == D("0")
    assert fresh(db, running).status == "active"
    assert verify() == []


def test_create_refused_for_another_reason_is_not_called_insufficient_funds(db, eur, new_client):
    from puqpanel.models import Currency

    client = new_client()
    fund(client, "100")
    service = order(client, make_price(db, eur, "monthly", "10"), T0)
    usd = Currency(code="USD", prefix="$", exchange_rate=D("1.1"))
    db.add(usd)
    db.commit()
    db.execute(Client.__table__.update().where(Client.id == client.id).values(currency_id=usd.id))
    db.commit()
    cycle = run("cycle", T0 + H)
    service = fresh(db, service)
    assert service.status == "pending" and service.status_reason != "Insufficient funds"
    assert "currency" in service.status_reason
    assert job_runs(db, cycle)["create"].counts == {"refused": 1}
    assert verify() == []


# -- runs and chunk failures ----------------------------------------------------------------------------------
def test_every_job_records_its_run(db, eur, new_client):
    client = new_client()
    fund(client, "20")
    started(client, make_price(db, eur, "daily", "10"), T0)
    at = T0 + DAY
    cycle = run("cycle", at)
    assert (cycle.job, cycle.trigger, cycle.status, cycle.at, cycle.chunks_total, cycle.chunks_done) == (
        "cycle", "cli", "succeeded", at, 6, 6)
    jobs = job_runs(db, cycle)
    assert list(jobs) == ["cancel", "create", "unsuspend", "charge", "suspend", "terminate"]
    for name, r in jobs.items():
        assert (r.trigger, r.status, r.at, r.error_count) == ("cycle", "succeeded", at, 0), name
        assert r.finished_at is not None and r.chunks_done == r.chunks_total
    assert jobs["charge"].counts["charges"] == 1 and jobs["charge"].counts["amounts"] == {"EUR": "10.0000"}
    assert cycle.counts["charge"] == jobs["charge"].counts
    assert jobs["suspend"].chunks_total == 0 and jobs["suspend"].counts == {}  # nothing due any more
    single = run("suspend", at + DAY)
    assert (single.job, single.cycle_id, single.status, single.counts) == ("suspend", None, "succeeded",
                                                                          {"suspended": 1})
    assert verify() == []


def test_a_failing_chunk_is_recorded_and_the_others_still_run(app, db, eur, new_client):
    """A period already in the ledger for a due service (paid_until moved back by hand) makes its chunk fail
    (nothing of that chunk is written); the run and the cycle are marked failed with the error; the other
    chunk is charged."""
    clients = [new_client(), new_client()]
    for c in clients:
        fund(c, "100")
    price = make_price(db, eur, "daily", "1")
    services = [started(clients[i // 3], price, T0) for i in range(6)]
    set_service(db, services[1], paid_until=T0)  # its first period (from T0) is charged already
    size = app.config.get("PUQPANEL_BILLING_CHUNK_SIZE")
    app.config["PUQPANEL_BILLING_CHUNK_SIZE"] = 3
    try:
        cycle = run("cycle", T0 + DAY)
    finally:
        if size is None:
            app.config.pop("PUQPANEL_BILLING_CHUNK_SIZE")
        else:
            app.config["PUQPANEL_BILLING_CHUNK_SIZE"] = size
    charge = job_runs(db, cycle)["charge"]
    assert (charge.status, charge.chunks_total, charge.chunks_done, charge.error_count) == ("failed", 2, 2, 1)
    assert "chunk 0" in charge.errors and "ChargeConflict" in charge.errors
    chunks = dict(db.execute(select(AutomationChunk.seq, AutomationChunk.status)
                             .where(AutomationChunk.run_id == charge.id)).all())
    assert chunks == {0: "failed", 1: "done"}
    assert [len(period_rows(db, s)) for s in services] == [1, 1, 1, 2, 2, 2]
    assert cycle.status == "failed" and cycle.error_count == 1 and "charge: chunk 0" in cycle.errors
    assert job_runs(db, cycle)["terminate"].status == "succeeded"  # the cycle went on
    assert verify() == []


# -- invariants over random cycles ----------------------------------------------------------------------------
def test_random_cycles_keep_the_rules(db, eur, new_client):
    """Random services, funds and cycle moments; after every cycle: no running service of a non-exempt
    client is left unpaid (paid-until passed) — it was charged or suspended; every charge of a non-exempt
    client stayed within balance + credit limit; no service is reactivated and suspended again in one cycle;
    a service's periods follow each other without overlap (a gap only where billing resumed after a
    suspension); each period charged once."""
    import random

    rnd = random.Random(1)
    clients = [new_client() for _ in range(6)]
    for i, c in enumerate(clients):
        values = {"credit_limit": D(rnd.choice(["0", "0", "5"])), "never_auto_suspend": i == 5}
        db.execute(Client.__table__.update().where(Client.id == c.id).values(**values))
    db.commit()
    prices = [make_price(db, eur, period, base, hourly=hourly, termination_delay_hours=delay)
              for period, base, hourly, delay in (
                  ("hourly", "0.07", False, 200), ("daily", "1.3", False, 100), ("weekly", "4", False, 500),
                  ("monthly", "9.99", False, 1000), ("monthly", "30", True, 300), ("monthly", "2", True, 48),
                  ("quarterly", "20", False, 2000), ("one_time", "15", False, 48))]
    now = dt.datetime(2026, 1, 28, 22, 0)
    services = []
    for c in clients:
        fund(c, str(rnd.randint(0, 80)))
    for _ in range(30):
        c, price = rnd.choice(clients), rnd.choice(prices)
        services.append(order(c, price, now - dt.timedelta(hours=rnd.randint(0, 30))))
    for step in range(6):
        now += dt.timedelta(hours=rnd.choice([1, 5, 23, 49, 24 * 9]) if step else 1, minutes=rnd.randint(0, 59))
        if step % 2:
            for c in rnd.sample(clients, 3):
                fund(c, str(rnd.randint(1, 40)))
        if step == 2:  # a termination request for a running service
            running = [s for s in services if fresh(db, s).status == "active"]
            db.execute(Service.__table__.update().where(Service.id == rnd.choice(running).id)
                       .values(termination_requested_at=now))
            db.commit()
        run("cycle", now)
        db.expire_all()
        exempt = {c.id for c in clients if fresh(db, c).never_auto_suspend}
        for s in db.scalars(select(Service)):
            if s.status == "active" and s.price.period != "one_time" and s.termination_requested_at is None:
                assert s.paid_until > now, (step, s.id, s.price.period, s.paid_until, now)
            if s.status == "suspended":
                assert s.client_id not in exempt and s.suspension_kind == "non_payment"
        rows = db.execute(select(Transaction.client_id, Transaction.balance_after, Client.credit_limit)
                          .join(Client, Client.id == Transaction.client_id)
                          .where(Transaction.type == "charge", Transaction.period_start.is_not(None),
                                 Transaction.created_at == now)).all()
        for client_id, after, limit in rows:
            if client_id not in exempt:
                assert after >= -limit, (step, client_id, after, limit)
        # no service reactivated and suspended again in one cycle
        moved = db.execute(select(ActivityLog.object_id, ActivityLog.action).where(
            ActivityLog.created_at == now, ActivityLog.action.in_(["service.suspend", "service.unsuspend"]))).all()
        assert len({object_id for object_id, _a in moved}) == len(moved), moved
    # periods per service: consecutive or a gap (resumed), never overlapping, never twice
    for s in services:
        periods = [(start, stop) for _a, start, stop in period_rows(db, s)]
        assert len(set(periods)) == len(periods)
        for (_s1, e1), (s2, _e2) in zip(periods, periods[1:]):
            assert e1 is not None and s2 >= e1, (s.id, periods)
    statuses = {fresh(db, s).status for s in services}
    assert {"active", "suspended", "terminated"} <= statuses, statuses
    assert verify() == []
