"""The client-area dashboard's numbers (billing.dashboard): counters, recurring cost breakdown and the
recommended add-funds amount, over services of mixed periods, with the expected values computed by hand here."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

from test_engine_charge import fund, make_price, order, started

from puqpanel.billing import dashboard, ledger
from puqpanel.billing import services as svc
from puqpanel.billing.ledger import verify
from puqpanel.models import Currency, ProductPrice, Service

D = Decimal
T0 = dt.datetime(2026, 3, 1, 0, 0)  # "now" of the scenario; the 30-day horizon is 2026-03-31 00:00


def _set(db, service, **values):
    db.execute(Service.__table__.update().where(Service.id == service.id).values(**values))
    db.commit()


def _scenario(db, eur, new_client):
    """One client with services of every kind (see the comments), another client, a foreign-currency one."""
    usd = Currency(code="USD", prefix="$", exchange_rate=D("1.1"))
    db.add(usd)
    db.commit()
    client, other = new_client(), new_client()
    fund(client, "2000")
    fund(other, "500")
    s = {}
    # active, counted in the recurring cost
    s["hourly"] = started(client, make_price(db, eur, "hourly", "0.0501"), T0)            # paid until T0+1h
    s["daily"] = started(client, make_price(db, eur, "daily", "1.20"), T0)                # paid until T0+1d
    s["monthly"] = started(client, make_price(db, eur, "monthly", "10"), T0)              # paid until Apr 1
    s["hourly_billed"] = started(client, make_price(db, eur, "monthly", "7.44", hourly=True), T0)  # T0+1h
    s["annual"] = started(client, make_price(db, eur, "annually", "120"), T0)             # paid until 2027
    s["idle"] = started(client, make_price(db, eur, "monthly", "30", idle="3"),
                        dt.datetime(2026, 2, 5))                                          # paid until Mar 5
    _set(db, s["idle"], idle=True)
    # suspended: still counted in the recurring cost
    s["suspended"] = started(client, make_price(db, eur, "weekly", "7"), dt.datetime(2026, 2, 22))  # → Mar 1
    svc.suspend(s["suspended"], "staff hold")
    # active but not recurring: one-time, termination requested, foreign currency
    s["one_time"] = started(client, make_price(db, eur, "one_time", "50"), T0)
    s["leaving"] = started(client, make_price(db, eur, "monthly", "40"), dt.datetime(2026, 2, 10))  # → Mar 10
    _set(db, s["leaving"], termination_requested_at=T0 - dt.timedelta(days=1))
    foreign = make_price(db, eur, "monthly", "1000")
    s["foreign"] = started(client, foreign, dt.datetime(2026, 2, 5))                       # → Mar 5
    db.execute(ProductPrice.__table__.update().where(ProductPrice.id == foreign.id).values(currency_id=usd.id))
    db.commit()
    # pending: counted in the recommendation with their setup
    s["pending"] = order(client, make_price(db, eur, "quarterly", "15", setup="4.5"), T0)
    s["pending_once"] = order(client, make_price(db, eur, "one_time", "25", setup="1"), T0)
    # gone: counted nowhere
    gone = started(client, make_price(db, eur, "daily", "100"), T0)
    svc.terminate(gone, "done")
    # another client's services
    started(other, make_price(db, eur, "monthly", "99"), dt.datetime(2026, 2, 5))
    order(other, make_price(db, eur, "daily", "5", setup="2"), T0)
    return client, other, s


def test_counters_recurring_cost_and_recommendation(db, eur, new_client):
    client, other, s = _scenario(db, eur, new_client)

    # active: hourly, daily, monthly, hourly_billed, annual, idle, one_time, leaving, foreign = 9;
    # suspended: 1; pending: 2; the terminated one is not counted; "leaving" has a termination request.
    assert dashboard.service_counters(client.id) == {
        "total": 12, "active": 9, "suspended": 1, "termination_requested": 1}
    assert dashboard.service_counters(other.id) == {
        "total": 2, "active": 1, "suspended": 0, "termination_requested": 0}

    # hourly = 0.0501/1 + 1.20/24 + 10/720 + 7.44/720 + 120/8760 + 3/720 (idle amount) + 7/168 (suspended)
    # monthly (×720) = 36.072 + 36 + 10 + 7.44 + 9.86301369… + 3 + 30 = 132.37501369… → 132.3750
    # yearly (×8760) = 438.876 + 438 + 20.44 × 12.1666… (= 248.68666…) + 120 + 365 = 1610.56266… → 1610.5627
    # daily (×24)    = 1.2024 + 1.20 + 0.33333… + 0.248 + 0.32876712… + 0.1 + 1 = 4.41250045… → 4.4125
    #   (rounding the hourly sum first would give 0.1839 × 24 = 4.4136: the figures derive from the exact sum)
    expected = {"hourly": D("0.1839"), "daily": D("4.4125"), "weekly": D("30.8875"), "monthly": D("132.3750"),
                "yearly": D("1610.5627")}
    assert dashboard.recurring_cost(client.id) == expected
    # the same by an independent exact computation, rounded half-up
    exact = (Fraction("0.0501") + Fraction("1.20") / 24 + Fraction(10) / 720 + Fraction("7.44") / 720
             + Fraction(120) / 8760 + Fraction(3) / 720 + Fraction(7) / 168)
    for name, hours in {"hourly": 1, "daily": 24, "weekly": 168, "monthly": 720, "yearly": 8760}.items():
        value = exact * hours
        assert abs(Fraction(expected[name]) - value) <= Fraction(1, 20000), name
    assert dashboard.recurring_cost(other.id)["monthly"] == D("99.0000")

    # due by T0 + 30 days (2026-03-31): hourly 0.0501 + daily 1.20 + hourly_billed one month 7.44 + idle 3
    # + suspended 7 + pending 15 + 4.5 setup + pending one-time 25 + 1 setup = 64.1901 → 64.20 (rounded up);
    # not due: monthly (Apr 1), annual; excluded: one-time active, leaving (termination request), foreign (USD)
    assert dashboard.recommended_add_funds(client.id, now=T0) == D("64.20")
    # three days later the monthly one (paid until Apr 1) is due too: 74.1901 → 74.20
    assert dashboard.recommended_add_funds(client.id, now=T0 + dt.timedelta(days=3)) == D("74.20")
    # paid_until exactly at the horizon counts; one day beyond does not
    _set(db, s["daily"], paid_until=T0 + dt.timedelta(days=30))
    assert dashboard.recommended_add_funds(client.id, now=T0) == D("64.20")
    _set(db, s["daily"], paid_until=T0 + dt.timedelta(days=30, seconds=1))
    assert dashboard.recommended_add_funds(client.id, now=T0) == D("63.00")  # 62.9901 → 63.00
    # a pending service whose setup was already charged no longer adds the setup
    _set(db, s["pending"], setup_charged=True)
    assert dashboard.recommended_add_funds(client.id, now=T0) == D("58.50")  # 58.4901 → 58.50
    # the other client: monthly 99 paid until Mar 5 + pending daily 5 + setup 2
    assert dashboard.recommended_add_funds(other.id, now=T0) == D("106.00")
    assert verify() == []


def test_recommendation_uses_the_billing_clock(db, eur, new_client):
    from puqpanel.billing import clock

    client = new_client()
    fund(client, "100")
    started(client, make_price(db, eur, "monthly", "10"), T0)  # paid until Apr 1
    with clock.frozen_at(T0):
        assert dashboard.recommended_add_funds(client.id) == D("0.00")
    with clock.frozen_at(T0 + dt.timedelta(days=2)):
        assert dashboard.recommended_add_funds(client.id) == D("10.00")


def test_empty_client(db, eur, new_client):
    client = new_client()
    assert dashboard.service_counters(client.id) == {
        "total": 0, "active": 0, "suspended": 0, "termination_requested": 0}
    assert dashboard.recurring_cost(client.id) == {k: D("0.0000") for k in
                                                   ("hourly", "daily", "weekly", "monthly", "yearly")}
    assert dashboard.recommended_add_funds(client.id, now=T0) == D("0.00")


def test_add_funds_suggestion_adds_negative_balance_and_clamps(app, db, eur, new_client, monkeypatch):
    client = new_client()
    order(client, make_price(db, eur, "monthly", "20"), T0)
    ledger.adjust(client.id, "-12.3456", "test debit")
    db.expire_all()
    # 20 due + 12.3456 owed = 32.3456 → 32.35 (rounded up), within the default 10 … 10000
    assert dashboard.add_funds_suggestion(client, now=T0) == D("32.35")

    monkeypatch.setitem(app.config, "PUQPANEL_ADD_FUNDS_MAX", D("30"))
    assert dashboard.add_funds_suggestion(client, now=T0) == D("30.00")  # clamped to the max

    monkeypatch.setitem(app.config, "PUQPANEL_ADD_FUNDS_MAX", D("10000"))
    quiet = new_client()
    fund(quiet, "5")
    db.expire_all()
    assert dashboard.add_funds_suggestion(quiet, now=T0) == D("10.00")  # nothing due: the minimum

    monkeypatch.setitem(app.config, "PUQPANEL_MAX_BALANCE", D("5"))
    db.expire_all()
    assert dashboard.add_funds_suggestion(quiet, now=T0) == D("0.00")  # balance at the maximum: no top-up
    assert verify() == []
