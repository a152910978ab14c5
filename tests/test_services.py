"""Charging rules and the service lifecycle (billing.charging, billing.services), with exact Decimals."""
from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import generate_password_hash

from conftest import IS_POSTGRES, PASSWORD
from puqpanel.billing import charging, clock, ledger
from puqpanel.billing import services as svc
from puqpanel.billing.charging import add_months, charge_amount, hourly_rate, period_bounds
from puqpanel.domain import DomainError
from puqpanel.models import ActivityLog, Client, Currency, Product, ProductPrice, Service, Transaction

D = Decimal
T0 = dt.datetime(2026, 1, 31, 10, 0, 0)


# -- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture()
def catalog(db, eur):
    """Products with EUR prices: VPS (monthly 10 + setup 5, idle 2), Hourly VPS (hourly billing), a one-time
    licence, a retired product; one USD price."""
    usd = Currency(code="USD", prefix="$", exchange_rate=D("1.1"))
    vps = Product(name="VPS S")
    hourly = Product(name="Cloud VPS", hourly_billing=True)
    licence = Product(name="Licence")
    old = Product(name="Old plan", retired=True)
    failing = Product(name="Test module product", module="test")
    db.add_all([usd, vps, hourly, licence, old, failing])
    db.flush()
    prices = {
        "monthly": ProductPrice(product_id=vps.id, currency_id=eur.id, period="monthly", setup=D("5"), base=D("10"),
                                idle=D("2")),
        "annually": ProductPrice(product_id=vps.id, currency_id=eur.id, period="annually", base=D("100")),
        "daily": ProductPrice(product_id=vps.id, currency_id=eur.id, period="daily", base=D("0.5")),
        "hourly_monthly": ProductPrice(product_id=hourly.id, currency_id=eur.id, period="monthly", base=D("10")),
        "one_time": ProductPrice(product_id=licence.id, currency_id=eur.id, period="one_time", base=D("49.99")),
        "retired": ProductPrice(product_id=old.id, currency_id=eur.id, period="monthly", base=D("1")),
        "usd": ProductPrice(product_id=vps.id, currency_id=usd.id, period="monthly", base=D("11")),
        "test": ProductPrice(product_id=failing.id, currency_id=eur.id, period="monthly", setup=D("1"), base=D("3")),
        "free": ProductPrice(product_id=licence.id, currency_id=eur.id, period="monthly", base=D("0")),
    }
    db.add_all(prices.values())
    db.commit()
    return prices


@pytest.fixture()
def client_row(new_client):
    return new_client()


def fund(client: Client, amount: str) -> None:
    """Credit the balance through the ledger (a manual adjustment)."""
    from puqpanel.domain.session import transaction

    with transaction():
        locked = ledger.lock_client(client.id)
        ledger.post(locked, "adjustment", D(amount), description="test funds")


def balance(db, client) -> Decimal:
    db.expire_all()
    return db.get(Client, client.id).balance


def charges(db, service) -> list[Transaction]:
    db.expire_all()
    return list(db.scalars(select(Transaction).where(Transaction.service_id == service.id).order_by(Transaction.id)))


def active_service(db, client, price, **kw) -> Service:
    service = svc.add_service(client, price.id, **kw)
    with clock.frozen_at(T0):
        svc.activate(service, force=True)
    return service


# -- period bounds and rates --------------------------------------------------------------------------------
def test_month_end_period_bounds():
    assert period_bounds("monthly", dt.datetime(2026, 1, 31, 10)) == (dt.datetime(2026, 1, 31, 10), dt.datetime(2026, 2, 28, 10))
    # the next period returns to the anchor day instead of drifting to the 28th
    assert period_bounds("monthly", dt.datetime(2026, 2, 28, 10), anchor=dt.datetime(2026, 1, 31))[1] == dt.datetime(2026, 3, 31, 10)
    assert period_bounds("monthly", dt.datetime(2026, 3, 31, 10), anchor=dt.datetime(2026, 1, 31))[1] == dt.datetime(2026, 4, 30, 10)
    assert period_bounds("monthly", dt.datetime(2028, 1, 31))[1] == dt.datetime(2028, 2, 29)  # leap year
    assert period_bounds("monthly", dt.datetime(2026, 12, 15, 8, 30))[1] == dt.datetime(2027, 1, 15, 8, 30)
    assert period_bounds("quarterly", dt.datetime(2026, 11, 30))[1] == dt.datetime(2027, 2, 28)
    assert period_bounds("semiannually", dt.datetime(2026, 8, 31))[1] == dt.datetime(2027, 2, 28)
    assert period_bounds("annually", dt.datetime(2028, 2, 29))[1] == dt.datetime(2029, 2, 28)
    assert period_bounds("biennially", dt.datetime(2026, 5, 1))[1] == dt.datetime(2028, 5, 1)
    assert period_bounds("triennially", dt.datetime(2026, 5, 1))[1] == dt.datetime(2029, 5, 1)
    start = dt.datetime(2026, 3, 29, 1, 0)
    assert period_bounds("hourly", start)[1] == dt.datetime(2026, 3, 29, 2, 0)
    assert period_bounds("daily", start)[1] == dt.datetime(2026, 3, 30, 1, 0)
    assert period_bounds("weekly", start)[1] == dt.datetime(2026, 4, 5, 1, 0)
    assert period_bounds("biweekly", start)[1] == dt.datetime(2026, 4, 12, 1, 0)
    assert period_bounds("one_time", start) == (start, None)
    with pytest.raises(ValueError):
        period_bounds("fortnightly", start)
    assert add_months(dt.datetime(2026, 1, 31), -1) == dt.datetime(2025, 12, 31)


def test_hourly_rate_per_month_length():
    assert hourly_rate(D("10.00"), dt.datetime(2026, 2, 10)) == D("0.0149")  # 10 / 672 = 0.014880…
    assert hourly_rate(D("10.00"), dt.datetime(2028, 2, 10)) == D("0.0144")  # leap: 10 / 696 = 0.014367…
    assert hourly_rate(D("10.00"), dt.datetime(2026, 4, 10)) == D("0.0139")  # 10 / 720 = 0.013888…
    assert hourly_rate(D("10.00"), dt.datetime(2026, 1, 10)) == D("0.0134")  # 10 / 744 = 0.013440…
    # exactly half a unit of the 4th place rounds up (half-even would give 0.0122)
    assert hourly_rate(D("8.82"), dt.datetime(2026, 4, 1)) == D("0.0123")  # 8.82 / 720 = 0.01225
    assert hourly_rate(D("0"), dt.datetime(2026, 4, 1)) == D("0.0000")


def test_charge_amount_base_idle_hourly(db, catalog, client_row):
    vps = svc.add_service(client_row, catalog["monthly"].id)
    assert charge_amount(vps, T0) == D("10.0000")
    vps.idle = True
    assert charge_amount(vps, T0) == D("2.0000")
    hourly = svc.add_service(client_row, catalog["hourly_monthly"].id)
    assert charge_amount(hourly, dt.datetime(2026, 2, 3, 4)) == D("0.0149")
    assert charge_amount(hourly, dt.datetime(2026, 3, 3, 4)) == D("0.0134")
    assert charging.charge_bounds(hourly, dt.datetime(2026, 2, 3, 4, 30)) == (
        dt.datetime(2026, 2, 3, 4, 30), dt.datetime(2026, 2, 3, 5, 30))
    # hourly billing applies to monthly prices only: the same product's other periods charge whole periods
    hourly.product.hourly_billing = True
    daily = svc.add_service(client_row, catalog["daily"].id)
    assert charge_amount(daily, T0) == D("0.5000")


# -- adding ------------------------------------------------------------------------------------------------
def test_add_service_pending_and_logged(db, catalog, client_row):
    with clock.frozen_at(T0):
        service = svc.add_service(client_row, str(catalog["monthly"].id), client_label="web1", admin_label="rack 4",
                                  notes="VIP")
    db.expire_all()
    service = db.get(Service, service.id)
    assert (service.status, service.provision_status, service.client_label, service.admin_label, service.admin_notes) == (
        "pending", "pending", "web1", "rack 4", "VIP")
    assert service.product_id == catalog["monthly"].product_id and service.created_at == T0
    assert service.paid_until is None and service.activated_at is None
    entry = db.scalar(select(ActivityLog).where(ActivityLog.action == "service.add"))
    assert entry.client_id == client_row.id and entry.object_id == service.id


@pytest.mark.parametrize("price_key, raw, field", [
    ("usd", None, "price_id"),  # another currency than the client's
    ("retired", None, "price_id"),
    (None, "999999", "price_id"),
    (None, "abc", "price_id"),
    (None, "", "price_id"),
])
def test_add_service_refuses_bad_prices(db, catalog, client_row, price_key, raw, field):
    price_id = catalog[price_key].id if price_key else raw
    with pytest.raises(DomainError) as info:
        svc.add_service(client_row, price_id)
    assert field in info.value.errors
    assert db.scalar(select(func.count()).select_from(Service)) == 0


def test_add_service_refuses_long_labels_and_closed_clients(db, catalog, client_row):
    with pytest.raises(DomainError) as info:
        svc.add_service(client_row, catalog["monthly"].id, client_label="x" * 151, admin_label="y" * 151)
    assert set(info.value.errors) == {"client_label", "admin_label"}
    client_row.status = "closed"
    db.commit()
    with pytest.raises(DomainError) as info:
        svc.add_service(client_row, catalog["monthly"].id)
    assert "" in info.value.errors
    assert db.scalar(select(func.count()).select_from(Service)) == 0


# -- activation ----------------------------------------------------------------------------------------------
def test_activate_charges_setup_and_first_period(db, catalog, client_row):
    fund(client_row, "20")
    service = svc.add_service(client_row, catalog["monthly"].id, client_label="web1")
    with clock.frozen_at(dt.datetime(2026, 1, 31, 10, 0, 0, 123456)):
        result = svc.activate(service)
    assert result.status == "active" and result.provision_status == "completed"
    db.expire_all()
    service = db.get(Service, service.id)
    assert service.activated_at == T0  # whole seconds
    assert service.paid_until == dt.datetime(2026, 2, 28, 10)
    assert service.setup_charged is True
    rows = charges(db, service)
    assert [(r.type, r.net, r.period_start, r.period_stop) for r in rows] == [
        ("charge", D("-5.0000"), None, None),
        ("charge", D("-10.0000"), T0, dt.datetime(2026, 2, 28, 10)),
    ]
    assert rows[0].description == "VPS S (web1) — Setup fee"
    assert rows[1].description == "VPS S (web1) — Monthly"
    assert balance(db, client_row) == D("5.0000")
    entry = db.scalar(select(ActivityLog).where(ActivityLog.action == "service.activate"))
    assert entry.changes["status"] == ["pending", "active"] and entry.changes["charged"] == "15.0000"
    assert "forced" not in entry.changes
    assert entry.changes["transactions"] == f"{rows[0].id}, {rows[1].id}"
    assert ledger.verify() == []


def test_activate_refuses_insufficient_funds_then_credit_limit_covers(db, catalog, client_row):
    fund(client_row, "14.9999")
    service = svc.add_service(client_row, catalog["monthly"].id)
    with pytest.raises(DomainError) as info:
        svc.activate(service)
    message = str(info.value)
    assert "Insufficient funds" in message and "15.00 EUR" in message and "14.9999 EUR" in message
    db.expire_all()
    service = db.get(Service, service.id)
    assert service.status == "pending" and service.provision_status == "pending" and not service.setup_charged
    assert charges(db, service) == [] and balance(db, client_row) == D("14.9999")
    client = db.get(Client, client_row.id)
    client.credit_limit = D("0.0001")
    db.commit()
    svc.activate(service)
    assert balance(db, client_row) == D("-0.0001")


def test_force_activation_overdraws_and_is_logged(db, catalog, client_row):
    service = svc.add_service(client_row, catalog["monthly"].id)
    with clock.frozen_at(T0):
        svc.activate(service, force=True)
    assert balance(db, client_row) == D("-15.0000")
    entry = db.scalar(select(ActivityLog).where(ActivityLog.action == "service.activate"))
    assert entry.changes["forced"] is True and entry.changes["funds_covered"] is False
    assert ledger.verify() == []


def test_activate_hourly_billed_monthly_plan_charges_one_hour(db, catalog, client_row):
    fund(client_row, "1")
    service = svc.add_service(client_row, catalog["hourly_monthly"].id)
    start = dt.datetime(2026, 2, 10, 12, 15)
    with clock.frozen_at(start):
        svc.activate(service)
    rows = charges(db, service)
    assert [(r.net, r.period_start, r.period_stop) for r in rows] == [
        (D("-0.0149"), start, start + dt.timedelta(hours=1))]
    assert rows[0].description == "Cloud VPS — Monthly, billed hourly"
    assert db.get(Service, service.id).paid_until == start + dt.timedelta(hours=1)
    assert balance(db, client_row) == D("0.9851")


def test_one_time_is_charged_once(db, catalog, client_row):
    fund(client_row, "100")
    service = svc.add_service(client_row, catalog["one_time"].id)
    with clock.frozen_at(T0):
        svc.activate(service)
    db.expire_all()
    service = db.get(Service, service.id)
    assert service.paid_until is None  # nothing further to pay
    assert [(r.net, r.period_start, r.period_stop) for r in charges(db, service)] == [(D("-49.9900"), T0, None)]
    from puqpanel.domain.session import transaction

    for later in (T0, T0 + dt.timedelta(days=31), T0 + dt.timedelta(days=400)):
        with transaction():
            locked = ledger.lock_client(client_row.id)
            assert charging.charge_period(locked, db.get(Service, service.id), later) is None
    assert len(charges(db, service)) == 1 and balance(db, client_row) == D("50.0100")


def test_charge_period_and_setup_are_idempotent(db, catalog, client_row):
    from puqpanel.domain.session import transaction

    service = active_service(db, client_row, catalog["monthly"])
    paid_until = db.get(Service, service.id).paid_until
    before = balance(db, client_row)
    with transaction():
        locked = ledger.lock_client(client_row.id)
        service = db.get(Service, service.id)
        assert charging.charge_period(locked, service, T0) is None  # the first period again
        assert charging.charge_setup(locked, service) is None
    assert balance(db, client_row) == before
    # the next period: charged once, anchored on the activation day
    with transaction():
        locked = ledger.lock_client(client_row.id)
        service = db.get(Service, service.id)
        row = charging.charge_period(locked, service, paid_until)
        assert row.net == D("-10.0000") and row.period_stop == dt.datetime(2026, 3, 31, 10)
    with transaction():
        locked = ledger.lock_client(client_row.id)
        assert charging.charge_period(locked, db.get(Service, service.id), paid_until) is None
    assert db.get(Service, service.id).paid_until == dt.datetime(2026, 3, 31, 10)
    assert balance(db, client_row) == before - D("10")
    assert ledger.verify() == []


def test_database_refuses_a_second_charge_for_the_same_period(db, catalog, client_row):
    """The partial unique index is the last line of defence behind the check-first."""
    from puqpanel.domain.session import transaction

    service = active_service(db, client_row, catalog["monthly"])
    with pytest.raises(IntegrityError):
        with transaction():
            locked = ledger.lock_client(client_row.id)
            ledger.post(locked, "charge", D("-10"), description="duplicate", service_id=service.id, period_start=T0)
    # the setup row's NULL period_start is outside the index; adjustments aren't charges
    assert len(charges(db, service)) == 2


def test_zero_price_posts_no_row_but_advances(db, catalog, client_row):
    service = svc.add_service(client_row, catalog["free"].id)
    with clock.frozen_at(T0):
        svc.activate(service)
    assert charges(db, service) == []
    assert db.get(Service, service.id).paid_until == dt.datetime(2026, 2, 28, 10)


def test_idle_service_charges_idle_amount(db, catalog, client_row):
    from puqpanel.domain.session import transaction

    service = active_service(db, client_row, catalog["monthly"])
    service = db.get(Service, service.id)
    service.idle = True
    db.commit()
    with transaction():
        locked = ledger.lock_client(client_row.id)
        row = charging.charge_period(locked, db.get(Service, service.id), dt.datetime(2026, 2, 28, 10))
    assert row.net == D("-2.0000")


def test_provisioning_error_then_retry(app, db, catalog, client_row):
    fund(client_row, "10")
    service = svc.add_service(client_row, catalog["test"].id, admin_label="please FAIL")
    result = svc.activate(service)
    assert result.status == "pending" and result.provision_status == "error"
    db.expire_all()
    service = db.get(Service, service.id)
    assert service.provision_error == "Test module: provisioning failed on purpose."
    assert charges(db, service) == [] and balance(db, client_row) == D("10.0000") and not service.setup_charged
    assert db.scalar(select(ActivityLog).where(ActivityLog.action == "service.provision_error")) is not None
    # retry fails again while the label says so; then succeeds
    assert svc.retry_provisioning(service).provision_status == "error"
    service.admin_label = "fixed"
    db.commit()
    result = svc.retry_provisioning(service)
    assert result.status == "active" and result.provision_status == "completed" and result.provision_error == ""
    assert [r.net for r in charges(db, service)] == [D("-1.0000"), D("-3.0000")]
    with pytest.raises(DomainError, match="provisioning failed"):
        svc.retry_provisioning(service)
    # the config flag fails every service of the test module
    other = svc.add_service(client_row, catalog["test"].id)
    app.config["PUQPANEL_TEST_MODULE_FAIL"] = True
    try:
        assert svc.activate(other).provision_status == "error"
    finally:
        app.config.pop("PUQPANEL_TEST_MODULE_FAIL")
    assert svc.activate(other).status == "active"


def test_charging_guards(db, catalog, client_row):
    """Only active / suspended services are charged, and only in the client's currency."""
    from puqpanel.domain.session import transaction

    pending = svc.add_service(client_row, catalog["monthly"].id)
    with pytest.raises(DomainError, match="active or suspended"):
        with transaction():
            charging.charge_period(ledger.lock_client(client_row.id), pending, T0)
    service = active_service(db, client_row, catalog["monthly"])
    svc.terminate(service, "gone")
    with pytest.raises(DomainError, match="active or suspended"):
        with transaction():
            charging.charge_period(ledger.lock_client(client_row.id), db.get(Service, service.id), T0)
    # the client's currency changed after ordering: neither activation nor charging uses the old price
    other = svc.add_service(client_row, catalog["monthly"].id)
    running = active_service(db, client_row, catalog["monthly"])
    client = db.get(Client, client_row.id)
    client.currency_id = catalog["usd"].currency_id
    db.commit()
    before = (balance(db, client_row), db.scalar(select(func.count()).select_from(Transaction)))
    with pytest.raises(DomainError, match="another currency"):
        svc.activate(db.get(Service, other.id), force=True)
    assert db.get(Service, other.id).provision_status == "pending"  # refused before provisioning
    with pytest.raises(DomainError, match="another currency"):
        with transaction():
            charging.charge_period(ledger.lock_client(client_row.id), db.get(Service, running.id),
                                   dt.datetime(2026, 2, 28, 10))
    assert (balance(db, client_row), db.scalar(select(func.count()).select_from(Transaction))) == before


def test_retry_needs_a_provisioning_error(db, catalog, client_row):
    service = svc.add_service(client_row, catalog["monthly"].id)
    with pytest.raises(DomainError):
        svc.retry_provisioning(service)


def test_unknown_module_is_a_provisioning_error_not_a_crash(db, catalog, client_row):
    product = db.get(Product, catalog["monthly"].product_id)
    product.module = "gone"
    db.commit()
    service = svc.add_service(client_row, catalog["monthly"].id)
    result = svc.activate(service, force=True)
    assert result.provision_status == "error" and "gone" in result.provision_error


# -- other transitions -------------------------------------------------------------------------------------------
def test_suspend_unsuspend_terminate(db, catalog, client_row):
    service = active_service(db, client_row, catalog["monthly"])
    with clock.frozen_at(T0 + dt.timedelta(days=3)):
        svc.suspend(service, "  abuse report  ")
    db.expire_all()
    service = db.get(Service, service.id)
    assert (service.status, service.provision_status, service.status_reason, service.suspension_kind) == (
        "suspended", "suspended", "abuse report", "staff")
    assert service.suspended_at == T0 + dt.timedelta(days=3)
    svc.unsuspend(service)
    assert (service.status, service.provision_status, service.status_reason, service.suspension_kind) == (
        "active", "completed", "", "")
    svc.suspend(service, "unpaid", kind="non_payment")
    assert service.suspension_kind == "non_payment"
    with clock.frozen_at(T0 + dt.timedelta(days=9)):
        svc.terminate(service, "client left")
    db.expire_all()
    service = db.get(Service, service.id)
    assert (service.status, service.provision_status, service.status_reason) == ("terminated", "terminated", "client left")
    assert service.terminated_at == T0 + dt.timedelta(days=9)
    actions = list(db.scalars(select(ActivityLog.action).where(ActivityLog.object_type == "service",
                                                             ActivityLog.object_id == service.id)
                              .order_by(ActivityLog.id)))
    assert actions == ["service.add", "service.activate", "service.suspend", "service.unsuspend", "service.suspend",
                       "service.terminate"]
    entry = db.scalar(select(ActivityLog).where(ActivityLog.action == "service.terminate"))
    assert entry.changes["status"] == ["suspended", "terminated"]


def test_cancel_pending(db, catalog, client_row):
    service = svc.add_service(client_row, catalog["monthly"].id)
    svc.cancel(service, "ordered by mistake")
    db.expire_all()
    service = db.get(Service, service.id)
    assert (service.status, service.provision_status, service.status_reason) == ("cancelled", "cancelled",
                                                                                 "ordered by mistake")
    assert service.cancelled_at is not None and charges(db, service) == []


def _service_in(db, client, price, status) -> Service:
    service = svc.add_service(client, price.id)
    if status == "pending":
        return service
    if status == "cancelled":
        return svc.cancel(service, "x")
    service = svc.activate(service, force=True)
    if status == "suspended":
        svc.suspend(service, "x")
    elif status == "terminated":
        svc.terminate(service, "x")
    elif status == "fraud":
        service.status = "fraud"
        db.commit()
    return service


ALLOWED = {
    "activate": {"pending"},
    "suspend": {"active"},
    "unsuspend": {"suspended"},
    "terminate": {"active", "suspended"},
    "cancel": {"pending"},
}


@pytest.mark.parametrize("status", ["pending", "active", "suspended", "terminated", "cancelled", "fraud"])
def test_illegal_moves_are_refused(db, catalog, client_row, status):
    calls = {
        "activate": lambda s: svc.activate(s, force=True),
        "suspend": lambda s: svc.suspend(s, "r"),
        "unsuspend": svc.unsuspend,
        "terminate": lambda s: svc.terminate(s, "r"),
        "cancel": lambda s: svc.cancel(s, "r"),
    }
    for verb, call in calls.items():
        if status in ALLOWED[verb]:
            continue
        service = _service_in(db, client_row, catalog["monthly"], status)
        before = (balance(db, client_row), db.scalar(select(func.count()).select_from(ActivityLog)))
        with pytest.raises(DomainError):
            call(service)
        db.expire_all()
        assert db.get(Service, service.id).status == status, verb
        assert (balance(db, client_row), db.scalar(select(func.count()).select_from(ActivityLog))) == before


@pytest.mark.parametrize("call", [
    lambda s: svc.suspend(s, ""),
    lambda s: svc.suspend(s, "   "),
    lambda s: svc.suspend(s, "x" * 256),
    lambda s: svc.terminate(s, ""),
])
def test_reasons_are_required(db, catalog, client_row, call):
    service = active_service(db, client_row, catalog["monthly"])
    with pytest.raises(DomainError) as info:
        call(service)
    assert "reason" in info.value.errors
    assert db.get(Service, service.id).status == "active"


def test_cancel_needs_reason(db, catalog, client_row):
    service = svc.add_service(client_row, catalog["monthly"].id)
    with pytest.raises(DomainError):
        svc.cancel(service, "")


# -- suspend all ----------------------------------------------------------------------------------------------
class _Staff:
    def __init__(self, password: str | None):
        self.password = generate_password_hash(password) if password else None


def test_suspend_all_checks_password_and_suspends_only_active(db, catalog, client_row, new_client):
    other_client = new_client()
    active = [active_service(db, client_row, catalog["monthly"]) for _ in range(3)]
    pending = svc.add_service(client_row, catalog["monthly"].id)
    suspended = active_service(db, client_row, catalog["monthly"])
    svc.suspend(suspended, "earlier")
    elsewhere = active_service(db, other_client, catalog["monthly"])
    staff_user = _Staff(PASSWORD)
    logs_before = db.scalar(select(func.count()).select_from(ActivityLog))
    for wrong in ("", "wrong", None):
        with pytest.raises(DomainError) as info:
            svc.suspend_all(client_row, "fraud check", staff_user, wrong)
        assert "password" in info.value.errors
    with pytest.raises(DomainError) as info:
        svc.suspend_all(client_row, "fraud check", _Staff(None), PASSWORD)  # no local password (e.g. LDAP)
    assert "password" in info.value.errors
    with pytest.raises(DomainError) as info:
        svc.suspend_all(client_row, "", staff_user, PASSWORD)
    assert "reason" in info.value.errors
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Service).where(Service.status == "active")) == 4
    assert db.scalar(select(func.count()).select_from(ActivityLog)) == logs_before

    with clock.frozen_at(T0 + dt.timedelta(days=1)):
        assert svc.suspend_all(client_row, "fraud check", staff_user, PASSWORD) == 3
    db.expire_all()
    for s in active:
        s = db.get(Service, s.id)
        assert (s.status, s.status_reason, s.suspension_kind, s.suspended_at) == (
            "suspended", "fraud check", "staff", T0 + dt.timedelta(days=1))
    assert db.get(Service, pending.id).status == "pending"
    assert db.get(Service, suspended.id).status_reason == "earlier"
    assert db.get(Service, elsewhere.id).status == "active"
    entries = list(db.scalars(select(ActivityLog).where(ActivityLog.action == "service.suspend_all")))
    assert len(entries) == 1 and entries[0].changes["count"] == 3 and entries[0].client_id == client_row.id
    assert entries[0].changes["service_ids"] == ", ".join(str(s.id) for s in sorted(active, key=lambda s: s.id))
    assert svc.suspend_all(client_row, "again", staff_user, PASSWORD) == 0


def test_list_services_one_query_newest_first(app, db, catalog, client_row):
    ids = [svc.add_service(client_row, catalog[k].id).id for k in ("monthly", "annually", "one_time", "hourly_monthly")]
    db.expire_all()
    statements = []
    from sqlalchemy import event

    engine = db.get_bind()

    def count(*_args):
        statements.append(1)

    event.listen(engine, "before_cursor_execute", count)
    try:
        rows, has_next = svc.list_services(client_row, 1, 3)
        names = [(r.product.name, r.price.period, r.price.currency.code) for r in rows]
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [r.id for r in rows] == ids[::-1][:3] and has_next
    assert names[0] == ("Cloud VPS", "monthly", "EUR")
    assert len(statements) <= 2  # the client row (expired above) + the one list query


# -- concurrency (PostgreSQL) -------------------------------------------------------------------------------------
@pytest.mark.skipif(not IS_POSTGRES, reason="row locks and real concurrency need PostgreSQL")
def test_concurrent_activations_charge_once(app, db, catalog, client_row):
    fund(client_row, "100")
    service = svc.add_service(client_row, catalog["monthly"].id)
    service_id = service.id  # read here: the main thread's expired object must not be refreshed from 8 threads
    results: list[str] = []
    barrier = threading.Barrier(8)

    def worker():
        with app.app_context():
            from puqpanel.extensions import db as fsa

            try:
                barrier.wait(timeout=60)
                target = fsa.session.get(Service, service_id)
                svc.activate(target)
                results.append("ok")
            except DomainError:
                results.append("refused")
            except BaseException as exc:  # shown by the assertion below (and never leaves the others waiting)
                barrier.abort()
                results.append(repr(exc))
            finally:
                fsa.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == ["ok"] + ["refused"] * 7, results
    assert len(charges(db, service)) == 2 and balance(db, client_row) == D("85.0000")
    assert ledger.verify() == []
