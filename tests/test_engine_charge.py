"""The billing engine's charge job, run through its real entry points (runs.run_inline): what it charges,
for which periods, at which amounts — with the expected values computed independently in the test — and
the funds rules it applies (cheapest first, credit limit, never-auto-suspend, foreign currency).

The helpers at the top are shared with tests/test_engine_lifecycle.py and tests/test_engine_cli.py."""
from __future__ import annotations

import datetime as dt
import itertools
import random
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import func, select

from puqpanel.billing import charging, clock, ledger
from puqpanel.billing import services as svc
from puqpanel.billing.engine import runs
from puqpanel.billing.ledger import verify
from puqpanel.models import (PERIODS, ActivityLog, AutomationChunk, AutomationRun, Client, Currency, Product,
                             ProductPrice, Service, Transaction)

D = Decimal
H = dt.timedelta(hours=1)
_names = itertools.count(1)


# -- shared helpers -------------------------------------------------------------------------------------------
def make_price(db, currency, period="monthly", base="10", *, setup="0", idle="0", hourly=False, module="none",
               termination_delay_hours=48, cancellation_delay_hours=48) -> ProductPrice:
    """A new product with one price (each call its own product)."""
    product = Product(name=f"Plan {next(_names)}", hourly_billing=hourly, module=module,
                      termination_delay_hours=termination_delay_hours,
                      cancellation_delay_hours=cancellation_delay_hours)
    db.add(product)
    db.flush()
    price = ProductPrice(product_id=product.id, currency_id=currency.id, period=period, setup=D(setup),
                         base=D(base), idle=D(idle))
    db.add(price)
    db.commit()
    return price


def fund(client, amount) -> None:
    """A staff adjustment (+ credit / - debit) through the ledger."""
    ledger.adjust(client.id, str(amount), "test funds")


def order(client, price, at: dt.datetime, **kw) -> Service:
    """A pending service ordered at `at`."""
    with clock.frozen_at(at):
        return svc.add_service(client, price.id, **kw)


def started(client, price, at: dt.datetime, force: bool = True, **kw) -> Service:
    """A service ordered and activated at `at` (setup + first period charged from `at`)."""
    service = order(client, price, at, **kw)
    with clock.frozen_at(at):
        service = svc.activate(service, force=force)
    assert service.status == "active"
    return service


def run(job: str, at: dt.datetime) -> AutomationRun:
    """Run a job (or "cycle") inline at `at`; its (top) run, fresh."""
    run_id = runs.run_inline(job, at)
    assert run_id is not None
    session = runs.get_session()
    session.expire_all()
    return session.get(AutomationRun, run_id)


def job_runs(db, cycle: AutomationRun) -> dict[str, AutomationRun]:
    """The job runs of a cycle by job name."""
    return {r.job: r for r in db.scalars(select(AutomationRun).where(AutomationRun.cycle_id == cycle.id))}


def fresh(db, obj):
    db.expire_all()
    return db.get(type(obj), obj.id)


def period_rows(db, service) -> list[tuple[Decimal, dt.datetime, dt.datetime | None]]:
    """(amount, period_start, period_stop) of the service's period charges (setup excluded), in id order."""
    db.expire_all()
    return [(-net, start, stop) for net, start, stop in db.execute(
        select(Transaction.net, Transaction.period_start, Transaction.period_stop)
        .where(Transaction.service_id == service.id, Transaction.type == "charge",
               Transaction.period_start.is_not(None)).order_by(Transaction.id))]


def setup_rows(db, service) -> list[Decimal]:
    db.expire_all()
    return [-net for net in db.scalars(select(Transaction.net).where(
        Transaction.service_id == service.id, Transaction.type == "charge", Transaction.period_start.is_(None)))]


def ledger_count(db) -> int:
    return db.scalar(select(func.count()).select_from(Transaction))


def half_up(value: Decimal) -> Decimal:
    return value.quantize(D("0.0001"), rounding=ROUND_HALF_UP)


def hour_amount(monthly: str, days: int) -> Decimal:
    """monthly ÷ (days × 24), 4 places half-up — the rule, computed here on its own."""
    return half_up(D(monthly) / D(days * 24))


# -- hourly billing -------------------------------------------------------------------------------------------
# (monthly amount, a moment in a month of `days` days). The second price of each month hits an exact 5 at the
# 5th decimal place with an even 4th digit: half-up and half-even differ there.
HOURLY_CASES = [
    ("10.00", dt.datetime(2026, 2, 10, 7), 28),
    ("10.1136", dt.datetime(2026, 2, 10, 7), 28),   # 10.1136 / 672 = 0.01505
    ("10.00", dt.datetime(2028, 2, 10, 7), 29),
    ("10.4748", dt.datetime(2028, 2, 10, 7), 29),   # 10.4748 / 696 = 0.01505
    ("10.00", dt.datetime(2026, 4, 10, 7), 30),     # 0.013888… → 0.0139
    ("8.82", dt.datetime(2026, 4, 10, 7), 30),      # 8.82 / 720 = 0.01225
    ("10.00", dt.datetime(2026, 1, 10, 7), 31),
    ("11.1972", dt.datetime(2026, 1, 10, 7), 31),   # 11.1972 / 744 = 0.01505
    ("0.01", dt.datetime(2026, 1, 10, 7), 31),      # rounds to 0.0000: the hours are paid, no ledger row
]


def test_hourly_rounding_per_month_length(db, eur, new_client):
    client = new_client()
    fund(client, "1000")
    # the half cases really are halves (so half-up is what the test checks)
    for monthly, _start, days in HOURLY_CASES:
        exact = D(monthly) / D(days * 24)
        if exact.as_tuple().exponent == -5 and exact.as_tuple().digits[-1] == 5:
            assert exact.quantize(D("0.0001")) != half_up(exact)  # half-even would differ
    assert sum(1 for m, _s, d in HOURLY_CASES if (D(m) / D(d * 24)).as_tuple().exponent == -5) == 4
    # per month: activate (the first hour is charged), run 3 hours later (hours +1, +2 and the current +3),
    # then terminate those services so that the next month's runs leave them alone
    for month_start in sorted({start for _m, start, _d in HOURLY_CASES}):
        cases = [(m, s, d) for m, s, d in HOURLY_CASES if s == month_start]
        services = [started(client, make_price(db, eur, "monthly", m, hourly=True), s) for m, s, _d in cases]
        for (monthly, start, days), service in zip(cases, services):
            expected = hour_amount(monthly, days)
            assert period_rows(db, service) == ([(expected, start, start + H)] if expected else [])
            assert fresh(db, service).paid_until == start + H
        run("charge", month_start + 3 * H)
        for (monthly, start, days), service in zip(cases, services):
            expected = hour_amount(monthly, days)
            want = [(expected, start + i * H, start + (i + 1) * H) for i in range(4)] if expected else []
            assert period_rows(db, service) == want, (monthly, days)
            assert fresh(db, service).paid_until == start + 4 * H
            with clock.frozen_at(month_start + 3 * H):
                svc.terminate(fresh(db, service), "done")
    assert verify() == []


def test_hour_across_a_month_boundary_uses_the_month_of_its_start(db, eur, new_client):
    client = new_client()
    fund(client, "100")
    price = make_price(db, eur, "monthly", "10.00", hourly=True)
    service = started(client, price, dt.datetime(2026, 1, 31, 22))
    run("charge", dt.datetime(2026, 1, 31, 23, 30))
    jan, feb = hour_amount("10.00", 31), hour_amount("10.00", 28)
    assert (jan, feb) == (D("0.0134"), D("0.0149"))
    assert period_rows(db, service)[-1] == (jan, dt.datetime(2026, 1, 31, 23), dt.datetime(2026, 2, 1, 0))
    run("charge", dt.datetime(2026, 2, 1, 0))
    assert period_rows(db, service)[-1] == (feb, dt.datetime(2026, 2, 1, 0), dt.datetime(2026, 2, 1, 1))
    with clock.frozen_at(dt.datetime(2026, 2, 1, 0)):
        svc.terminate(fresh(db, service), "done")
    # a leap February ends into March: the last hour of Feb 29 is a February hour
    service2 = started(client, make_price(db, eur, "monthly", "10.00", hourly=True), dt.datetime(2028, 2, 29, 22))
    run("charge", dt.datetime(2028, 3, 1, 0))
    assert period_rows(db, service2) == [
        (hour_amount("10.00", 29), dt.datetime(2028, 2, 29, 22), dt.datetime(2028, 2, 29, 23)),
        (hour_amount("10.00", 29), dt.datetime(2028, 2, 29, 23), dt.datetime(2028, 3, 1, 0)),
        (hour_amount("10.00", 31), dt.datetime(2028, 3, 1, 0), dt.datetime(2028, 3, 1, 1)),
    ]
    assert verify() == []


def test_outage_charges_each_missed_hour_in_its_own_row(db, eur, new_client):
    client = new_client()
    fund(client, "100")
    price = make_price(db, eur, "monthly", "72.00", hourly=True)  # 72 / 720 = 0.1 per hour in April
    start = dt.datetime(2026, 4, 10, 10)
    service = started(client, price, start)
    before = fresh(db, client).balance
    top = run("charge", start + 6 * H)  # the job last ran at 10:00; five runs (11…15) were missed
    rows = period_rows(db, service)
    assert rows == [(D("0.1000"), start + i * H, start + (i + 1) * H) for i in range(7)]
    assert fresh(db, service).paid_until == start + 7 * H
    assert fresh(db, client).balance == before - D("0.6")
    assert top.status == "succeeded" and top.counts["charges"] == 6 and top.counts["periods"] == 6
    assert top.counts["amounts"] == {"EUR": "0.6000"}
    entries = list(db.scalars(select(ActivityLog).where(ActivityLog.action == "automation.charge")))
    assert {(e.client_id, e.object_type, e.object_id, e.actor_id) for e in entries} == {
        (client.id, "automation_run", top.id, None)}
    assert sum(e.changes["periods"] for e in entries) == 6
    assert sum(D(e.changes["amount"]) for e in entries) == D("-0.6")
    assert verify() == []


# -- other periods --------------------------------------------------------------------------------------------
def test_fixed_hour_periods_charge_whole_periods(db, eur, new_client):
    client = new_client()
    fund(client, "10000")
    start = dt.datetime(2026, 3, 28, 9, 15)
    lengths = {"hourly": 1, "daily": 24, "weekly": 168, "biweekly": 336}
    services = {p: started(client, make_price(db, eur, p, "2.50"), start) for p in lengths}
    at = start + dt.timedelta(hours=2 * 336, minutes=1)
    run("charge", at)
    for period, hours in lengths.items():
        length = dt.timedelta(hours=hours)
        count = (at - start) // length + 1  # periods started by `at`, the first charged at activation
        assert period_rows(db, services[period]) == [(D("2.5"), start + i * length, start + (i + 1) * length)
                                                     for i in range(count)], period
        assert fresh(db, services[period]).paid_until == start + count * length
    assert count == 3 and len(period_rows(db, services["hourly"])) == 673
    rows = ledger_count(db)
    run("charge", fresh(db, services["hourly"]).paid_until - dt.timedelta(seconds=1))  # nothing due yet
    assert ledger_count(db) == rows
    assert verify() == []


def test_month_periods_keep_the_anchor_day(db, eur, new_client):
    client = new_client()
    fund(client, "10000")
    t = dt.datetime
    monthly = started(client, make_price(db, eur, "monthly", "10"), t(2026, 1, 31, 10))
    quarterly = started(client, make_price(db, eur, "quarterly", "25"), t(2025, 11, 30, 10))
    annually = started(client, make_price(db, eur, "annually", "100"), t(2028, 2, 29, 10))
    for at in (t(2026, 3, 1), t(2026, 4, 1), t(2026, 6, 1), t(2030, 3, 1)):
        run("charge", at)
    assert [(s, e) for _a, s, e in period_rows(db, monthly)][:5] == [
        (t(2026, 1, 31, 10), t(2026, 2, 28, 10)), (t(2026, 2, 28, 10), t(2026, 3, 31, 10)),
        (t(2026, 3, 31, 10), t(2026, 4, 30, 10)), (t(2026, 4, 30, 10), t(2026, 5, 31, 10)),
        (t(2026, 5, 31, 10), t(2026, 6, 30, 10))]
    assert [(s, e) for _a, s, e in period_rows(db, quarterly)][:4] == [
        (t(2025, 11, 30, 10), t(2026, 2, 28, 10)), (t(2026, 2, 28, 10), t(2026, 5, 30, 10)),
        (t(2026, 5, 30, 10), t(2026, 8, 30, 10)), (t(2026, 8, 30, 10), t(2026, 11, 30, 10))]
    assert [(s, e) for _a, s, e in period_rows(db, annually)] == [
        (t(2028, 2, 29, 10), t(2029, 2, 28, 10)), (t(2029, 2, 28, 10), t(2030, 2, 28, 10)),
        (t(2030, 2, 28, 10), t(2031, 2, 28, 10))]
    assert {a for a, _s, _e in period_rows(db, monthly)} == {D("10")}
    assert verify() == []


def test_one_time_charged_once_idle_price_setup_only_at_activation(db, eur, new_client):
    client = new_client()
    fund(client, "1000")
    t0 = dt.datetime(2026, 5, 1, 12)
    licence = started(client, make_price(db, eur, "one_time", "49.99", setup="3"), t0)
    idle_price = make_price(db, eur, "monthly", "10", setup="5", idle="2")
    idle = order(client, idle_price, t0)
    db.execute(Service.__table__.update().where(Service.id == idle.id).values(idle=True))
    db.commit()
    with clock.frozen_at(t0):
        svc.activate(fresh(db, idle))
    for days in (1, 31, 62, 400):
        run("cycle", t0 + dt.timedelta(days=days))
    assert period_rows(db, licence) == [(D("49.99"), t0, None)]
    assert fresh(db, licence).paid_until is None and fresh(db, licence).status == "active"
    assert setup_rows(db, licence) == [D("3")]
    idle_rows = period_rows(db, idle)
    assert len(idle_rows) == 14 and {a for a, _s, _e in idle_rows} == {D("2")}  # May 2026 … Jun 2027
    assert setup_rows(db, idle) == [D("5")]
    assert verify() == []


# -- idempotence ----------------------------------------------------------------------------------------------
def test_running_twice_at_the_same_moment_charges_nothing_more(db, eur, new_client):
    client = new_client()
    fund(client, "1000")
    t0 = dt.datetime(2026, 6, 1, 8)
    for period in ("hourly", "daily", "monthly"):
        started(client, make_price(db, eur, period, "1.25"), t0)
    started(client, make_price(db, eur, "monthly", "30", hourly=True), t0)
    at = t0 + dt.timedelta(days=2, hours=3)
    first = run("charge", at)
    assert first.counts["charges"] > 0
    rows, balance = ledger_count(db), fresh(db, client).balance
    second = run("charge", at)
    assert second.status == "succeeded" and second.counts == {}
    cycle = run("cycle", at)
    again = run("cycle", at)
    assert cycle.status == again.status == "succeeded"
    assert ledger_count(db) == rows and fresh(db, client).balance == balance
    assert job_runs(db, again)["charge"].counts == {}
    assert db.scalar(select(func.count()).select_from(ActivityLog)
                     .where(ActivityLog.action == "automation.charge")) == 1
    assert verify() == []


# -- the set-based engine against charging.py -----------------------------------------------------------------
WINDOWS = {"hourly": 60, "daily": 24 * 40, "weekly": 24 * 200, "biweekly": 24 * 300}


def test_engine_equals_the_python_rules(db, eur, new_client):
    rnd = random.Random(4)
    at = dt.datetime(2028, 3, 1, 0, 30)
    clients = [new_client() for _ in range(4)]
    for c in clients:
        fund(c, "10000000")
    prices = {}
    for period in PERIODS:
        for idle in (False, True):
            prices[(period, False, idle)] = make_price(db, eur, period, str(D(rnd.randint(0, 500000)) / 100),
                                                       idle=str(D(rnd.randint(0, 9999)) / 10000))
    for idle in (False, True):
        prices[("monthly", True, idle)] = make_price(db, eur, "monthly", str(D(rnd.randint(1, 900000)) / 10000),
                                                     hourly=True, idle="0.0001")
    services = []
    for key in sorted(prices, key=str) * 3:
        period, hourly, idle = key
        window = 72 if hourly else WINDOWS.get(period, 24 * 365 * 4)
        activated = at - dt.timedelta(hours=rnd.randint(0, window), minutes=rnd.randint(0, 59),
                                      seconds=rnd.randint(0, 59))
        labels = rnd.choice([{}, {"client_label": "web-1"}, {"admin_label": "db"},
                             {"client_label": "x", "admin_label": "y"}])
        service = order(rnd.choice(clients), prices[key], activated, **labels)
        if idle:
            db.execute(Service.__table__.update().where(Service.id == service.id).values(idle=True))
            db.commit()
        with clock.frozen_at(activated):
            services.append(svc.activate(fresh(db, service), force=True))
    assert len(services) >= 40
    run("cycle", at)
    for service in services:
        service = fresh(db, service)
        expected, start = [], service.activated_at
        while True:
            start, stop = charging.charge_bounds(service, start)
            amount = charging.charge_amount(service, start)
            if amount:
                expected.append((amount, start, stop))
            if stop is None or stop > at:
                break
            start = stop
        assert service.status == "active"
        assert period_rows(db, service) == expected, (service.price.period, service.product.hourly_billing)
        assert service.paid_until == stop
        # the SQL-built description is the one charging.describe gives (the activation row's, too)
        assert set(db.scalars(select(Transaction.description).where(
            Transaction.service_id == service.id, Transaction.period_start.is_not(None)))) <= {
            charging.describe(service, charging._period_text(service))}
    assert verify() == []


# -- funds ----------------------------------------------------------------------------------------------------
def _three_services(db, eur, client, t0):
    """Monthly services at 5, 3 and 4 (in that id order), activated at t0 (12 charged)."""
    return [started(client, make_price(db, eur, "monthly", amount), t0) for amount in ("5", "3", "4")]


def test_funds_cover_the_cheapest_first_the_rest_is_suspended(db, eur, new_client):
    t0, at = dt.datetime(2026, 1, 10, 9), dt.datetime(2026, 2, 10, 9)
    client, with_credit, exempt = new_client(), new_client(), new_client()
    fund(client, "22")
    fund(with_credit, "22")
    db.execute(Client.__table__.update().where(Client.id == with_credit.id).values(credit_limit=D("2")))
    db.execute(Client.__table__.update().where(Client.id == exempt.id).values(never_auto_suspend=True))
    db.commit()
    five, three, four = _three_services(db, eur, client, t0)
    credited = _three_services(db, eur, with_credit, t0)
    exempted = _three_services(db, eur, exempt, t0)  # forced: balance -12
    assert fresh(db, client).balance == D("10")
    cycle = run("cycle", at)
    # 10: the 3 and the 4 are charged, the 5 is not and is suspended
    assert len(period_rows(db, three)) == len(period_rows(db, four)) == 2
    assert len(period_rows(db, five)) == 1
    assert fresh(db, client).balance == D("3")
    five = fresh(db, five)
    assert (five.status, five.suspension_kind, five.suspended_at, five.provision_status) == (
        "suspended", "non_payment", at, "suspended")
    assert five.status_reason and five.paid_until == at
    # 10 + credit limit 2 cover all three
    assert [fresh(db, s).status for s in credited] == ["active"] * 3
    assert fresh(db, with_credit).balance == D("-2")
    # never auto-suspend: charged into the negative
    assert [fresh(db, s).status for s in exempted] == ["active"] * 3
    assert [len(period_rows(db, s)) for s in exempted] == [2, 2, 2]
    assert fresh(db, exempt).balance == D("-24")
    jobs = job_runs(db, cycle)
    assert jobs["charge"].counts["charges"] == 8 and jobs["suspend"].counts == {"suspended": 1}
    entry = db.scalar(select(ActivityLog).where(ActivityLog.action == "service.suspend"))
    assert (entry.object_id, entry.client_id, entry.actor_id) == (five.id, client.id, None)
    assert entry.changes["status"] == ["active", "suspended"] and entry.changes["run"] == jobs["suspend"].id
    assert verify() == []


def test_a_backlog_the_funds_cannot_pay_is_not_charged_but_suspended(db, eur, new_client):
    """After an outage, funds for only part of the missed hours: a service is charged wholly or not at all,
    so the hourly plan's backlog (30 × 0.1) is not charged and the service is suspended at its first unpaid
    hour; the client's cheaper daily service, which the funds cover, is charged and keeps running."""
    client = new_client()
    fund(client, "1.35")
    start = dt.datetime(2026, 4, 10, 10)
    hourly = started(client, make_price(db, eur, "monthly", "72", hourly=True), start)  # 0.1 an hour
    daily = started(client, make_price(db, eur, "daily", "0.05"), start)
    assert fresh(db, client).balance == D("1.2")
    at = start + 30 * H  # 30 hours missed (+ the current one), the daily period from +24h
    run("cycle", at)
    assert period_rows(db, hourly) == [(D("0.1"), start, start + H)]  # only the activation's hour
    assert len(period_rows(db, daily)) == 2
    hourly = fresh(db, hourly)
    assert (hourly.status, hourly.paid_until, hourly.suspended_at) == ("suspended", start + H, at)
    assert fresh(db, daily).status == "active"
    assert fresh(db, client).balance == D("1.15")
    assert verify() == []


def test_service_in_another_currency_is_skipped_and_reported(db, eur, new_client):
    t0, at = dt.datetime(2026, 1, 10, 9), dt.datetime(2026, 2, 10, 9)
    usd = Currency(code="USD", prefix="$", exchange_rate=D("1.1"))
    db.add(usd)
    db.commit()
    client, other = new_client(), new_client()
    fund(client, "100")
    fund(other, "100")
    service = started(client, make_price(db, eur, "monthly", "5"), t0)
    normal = started(other, make_price(db, eur, "monthly", "5"), t0)
    # the client's currency changed after ordering
    db.execute(Client.__table__.update().where(Client.id == client.id).values(currency_id=usd.id))
    db.commit()
    cycle = run("cycle", at)
    assert len(period_rows(db, service)) == 1 and fresh(db, service).status == "active"
    assert len(period_rows(db, normal)) == 2
    charge = job_runs(db, cycle)["charge"]
    assert charge.status == "succeeded" and charge.counts["skipped_currency"] == 1
    assert "another currency" in charge.errors
    assert "another currency" in fresh(db, cycle).errors
    assert verify() == []


# -- chunks ---------------------------------------------------------------------------------------------------
def test_small_chunks_give_the_same_result_as_one(app, db, eur, new_client):
    t0 = dt.datetime(2026, 7, 1, 0)
    at = t0 + dt.timedelta(days=3, hours=5)

    def build():
        clients = [new_client() for _ in range(3)]
        for i, c in enumerate(clients):
            fund(c, ["1000", "30", "0.5"][i])
        prices = [make_price(db, eur, p, b, hourly=h) for p, b, h in (
            ("hourly", "0.05", False), ("daily", "1", False), ("monthly", "20", True), ("monthly", "9", False))]
        return clients, [started(clients[i % 3], prices[i % 4], t0) for i in range(12)]

    def outcome(clients, services):
        return ([(fresh(db, s).status, [(a, s_ - t0, e - t0) for a, s_, e in period_rows(db, s)])
                 for s in services], [fresh(db, c).balance for c in clients])

    size = app.config.get("PUQPANEL_BILLING_CHUNK_SIZE")
    clients, services = build()
    one = run("cycle", at)
    assert job_runs(db, one)["charge"].chunks_total == 1
    expected = outcome(clients, services)
    expected_counts = {job: r.counts for job, r in job_runs(db, one).items()}
    assert expected_counts["suspend"]["suspended"] > 0 and expected_counts["charge"]["charges"] > 0
    # the same data again (new clients and services, after the first ones), run in chunks of 5 service ids
    db.execute(Service.__table__.update().values(status="terminated"))  # out of the way of the second run
    db.commit()
    clients2, services2 = build()
    assert min(s.id for s in services2) > max(s.id for s in services)
    app.config["PUQPANEL_BILLING_CHUNK_SIZE"] = 5
    watermark = db.scalar(select(func.max(Transaction.id)))
    try:
        many = run("cycle", at)
    finally:
        if size is None:
            app.config.pop("PUQPANEL_BILLING_CHUNK_SIZE")
        else:
            app.config["PUQPANEL_BILLING_CHUNK_SIZE"] = size
    jobs = job_runs(db, many)
    assert jobs["charge"].chunks_total == 3 and jobs["charge"].chunks_done == 3
    assert all(r.status == "succeeded" and r.chunks_done == r.chunks_total for r in jobs.values())
    assert set(db.scalars(select(AutomationChunk.status).where(AutomationChunk.run_id == jobs["charge"].id))) == {"done"}
    assert outcome(clients2, services2) == expected
    # counts are equal, except the activity entries: a client whose services fall in several chunks is
    # logged once per chunk
    counts = {job: r.counts for job, r in jobs.items()}
    for key in ("clients", "client_entries"):
        assert counts["charge"].pop(key, 0) >= expected_counts["charge"].pop(key, 0)
    assert counts == expected_counts
    charged = set(db.scalars(select(Transaction.client_id).where(Transaction.id > watermark)))
    logged = set(db.scalars(select(ActivityLog.client_id).where(
        ActivityLog.action == "automation.charge", ActivityLog.object_id == jobs["charge"].id)))
    assert logged == charged and len(charged) >= 2
    assert verify() == []


def test_a_client_is_decided_with_all_its_services_whatever_chunks_they_fall_in(app, db, eur, new_client,
                                                                                   monkeypatch):
    """One service per chunk: the client's two due services still follow the per-client rule (cheapest
    first), decided by the chunk of its lowest-id due service — not "whichever chunk runs first"."""
    monkeypatch.setitem(app.config, "PUQPANEL_BILLING_CHUNK_SIZE", 1)
    client = new_client()
    t0 = dt.datetime(2026, 5, 1, 10)
    fund(client, "13")
    expensive = started(client, make_price(db, eur, "daily", "8"), t0)   # lower id
    cheap = started(client, make_price(db, eur, "daily", "5"), t0)       # higher id, another chunk
    assert fresh(db, client).balance == D("0")
    fund(client, "8")  # covers either, not both
    cycle = run("cycle", t0 + 24 * H)
    assert job_runs(db, cycle)["charge"].chunks_total == 2
    assert fresh(db, cheap).status == "active" and len(period_rows(db, cheap)) == 2
    assert fresh(db, expensive).status == "suspended" and len(period_rows(db, expensive)) == 1
    assert fresh(db, client).balance == D("3")
    assert verify() == []
