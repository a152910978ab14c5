"""A client's services and their lifecycle. Every transition is a function here that refuses an illegal
move with DomainError, takes the client's row lock (so two staff users / workers acting on one client's
services are serialised and each decision reads the committed state), writes an activity entry
"service.<verb>" in the same transaction and commits.

    pending ──activate──▶ active ──suspend──▶ suspended ──unsuspend──▶ active
       │  (provision + charge)  │                  │
       │                        └──terminate──▶ terminated ◀──terminate──┘
       └──cancel──▶ cancelled

Activation provisions through the product's module (billing.provisioning), then charges the setup fee (once)
and the first period from the balance. It is refused with "Insufficient funds" when balance + credit limit
< setup + first charge, unless forced by staff (logged). A provisioning error leaves the service pending
with provision_status "error" and the module's note, charges nothing, and is committed (the error note is
what staff look at); `retry_provisioning` runs activation again.

No request objects here (Celery jobs call these too); the acting user comes from activity.current_actor().
"""
from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import select, update
from sqlalchemy.orm import joinedload
from werkzeug.security import check_password_hash

from ..domain import DomainError, NotFound, activity
from ..domain.session import get_session, transaction
from ..domain.validation import parse_id
from ..models import Client, ProductPrice, Service
from . import clock, provisioning
from .charging import charge_period, charge_setup, covered, first_charges
from .ledger import lock_client

log = logging.getLogger(__name__)

REASON_MAX = 255  # Service.status_reason
LABEL_MAX = 150  # client_label / admin_label
NOTES_MAX = 5000
# Clients that can't get new services.
_NO_NEW_SERVICES = ("closed", "fraud")
_LOGGED_FIELDS = ("status", "provision_status", "status_reason", "suspension_kind", "paid_until")


# -- reading ---------------------------------------------------------------------------------------------------

def get_service(client: Client, service_id: int) -> Service:
    """The client's service with that id (looked up together with the client id), else NotFound."""
    service = get_session().scalar(select(Service).where(Service.id == service_id, Service.client_id == client.id))
    if service is None:
        raise NotFound(str(_l("Service not found.")))
    return service


def list_services(client: Client, page: int = 1, page_size: int = 100) -> tuple[list[Service], bool]:
    """One page of the client's services, newest first, with product, price and currency loaded in the
    same query; and whether a next page exists."""
    rows = list(
        get_session().scalars(
            select(Service)
            .options(joinedload(Service.product), joinedload(Service.price).joinedload(ProductPrice.currency))
            .where(Service.client_id == client.id)
            .order_by(Service.id.desc())
            .limit(page_size + 1)
            .offset((max(page, 1) - 1) * page_size)
        ).unique()
    )
    return rows[:page_size], len(rows) > page_size


# -- helpers ---------------------------------------------------------------------------------------------------

def _text(value: Any, field: str, limit: int, required: bool = False) -> str:
    text = str(value if value is not None else "").strip()
    if required and not text:
        raise DomainError({field: str(_l("This field is required."))})
    if len(text) > limit:
        raise DomainError({field: str(_l("At most %(count)d characters.", count=limit))})
    return text


def _reason(reason: Any) -> str:
    return _text(reason, "reason", REASON_MAX, required=True)


def _locked(service: Service) -> tuple[Client, Service]:
    """The client under its row lock, then the service re-read (its committed state)."""
    client = lock_client(service.client_id)
    fresh = get_session().scalars(
        select(Service).where(Service.id == service.id).execution_options(populate_existing=True)
    ).first()
    if fresh is None:
        raise NotFound(str(_l("Service not found.")))
    return client, fresh


_REFUSALS = {
    "activate": _l("Only a pending service can be activated."),
    "suspend": _l("Only an active service can be suspended."),
    "unsuspend": _l("Only a suspended service can be unsuspended."),
    "terminate": _l("Only an active or suspended service can be terminated."),
    "cancel": _l("Only a pending service can be cancelled."),
    "retry_provisioning": _l("Only a pending service whose provisioning failed can be retried."),
}


def _refuse(verb: str) -> DomainError:
    return DomainError(str(_REFUSALS[verb]))


def _amount_text(amount, client: Client) -> str:
    """An amount for a message: 2 places unless it needs 4, with the client's currency code."""
    value = amount.quantize(Decimal("0.01")) if amount == amount.quantize(Decimal("0.01")) else amount
    return f"{value} {client.currency.code}"


def _log(verb: str, service: Service, before: dict, **extra) -> None:
    changes = activity.diff(before, activity.snapshot(service, _LOGGED_FIELDS))
    changes.update(extra)
    activity.record(f"service.{verb}", client_id=service.client_id, object_type="service", object_id=service.id,
                    changes=changes)


# -- adding ----------------------------------------------------------------------------------------------------

def add_service(client: Client, price_id: Any, client_label: str = "", admin_label: str = "", notes: str = "") -> Service:
    """A new pending service of `client` at that price. The price must be in the client's currency and of
    a product that is not retired."""
    errors: dict[str, str] = {}
    price = None
    try:
        pid = parse_id(price_id, "price_id", required=True)
        price = get_session().scalar(
            select(ProductPrice).options(joinedload(ProductPrice.product)).where(ProductPrice.id == pid)
        )
        if price is None or price.product.retired or price.currency_id != client.currency_id:
            price = None
            errors["price_id"] = str(_l("Choose a price of an orderable product in the client's currency."))
    except DomainError as exc:
        errors.update(exc.errors)
    values = {}
    for field, value, limit in (("client_label", client_label, LABEL_MAX), ("admin_label", admin_label, LABEL_MAX),
                                ("notes", notes, NOTES_MAX)):
        try:
            values[field] = _text(value, field, limit)
        except DomainError as exc:
            errors.update(exc.errors)
    if client.status in _NO_NEW_SERVICES:
        errors.setdefault("", str(_l("A %(status)s client can't get new services.", status=client.status)))
    if errors:
        raise DomainError(errors)
    with transaction():
        service = Service(
            client_id=client.id,
            product_id=price.product_id,
            price_id=price.id,
            status="pending",
            provision_status="pending",
            client_label=values["client_label"],
            admin_label=values["admin_label"],
            admin_notes=values["notes"],
            created_at=clock.now(),
        )
        get_session().add(service)
        get_session().flush()
        activity.record("service.add", client_id=client.id, object_type="service", object_id=service.id,
                        changes={"product": price.product.name, "price_id": price.id, "period": price.period,
                                 "base": price.base, "setup": price.setup, "client_label": values["client_label"],
                                 "admin_label": values["admin_label"]})
    return service


# -- activation ------------------------------------------------------------------------------------------------

def _activate(service: Service, force: bool, verb: str) -> Service:
    with transaction():
        client, service = _locked(service)
        if service.status != "pending" or (verb == "retry_provisioning" and service.provision_status != "error"):
            raise _refuse(verb)
        if service.price is None or service.product is None:
            raise DomainError(str(_l("The service has no product price.")))
        if service.price.currency_id != client.currency_id:
            raise DomainError(str(_l("The service's price is in another currency than the client's.")))
        now = clock.now().replace(microsecond=0)
        needed = first_charges(service, now)
        funded = covered(client, needed)
        if not funded and not force:
            raise DomainError(str(_l(
                "Insufficient funds: activation needs %(needed)s (setup and first period); balance plus credit "
                "limit is %(available)s.", needed=_amount_text(needed, client),
                available=_amount_text(client.balance + client.credit_limit, client),
            )))
        before = activity.snapshot(service, _LOGGED_FIELDS)
        service.provision_status = "deploying"
        try:
            provisioning.provision(service)
        except Exception as exc:  # a module's failure (or bug) is the service's error note, never a crash
            if not isinstance(exc, provisioning.ProvisioningError):
                log.exception("provisioning module failed on service %s", service.id)
                note = f"{type(exc).__name__}: {exc}"
            else:
                note = str(exc)
            service.provision_status = "error"
            service.provision_error = note[:2000] or str(_l("Provisioning failed."))
            _log("provision_error", service, before, error=service.provision_error)
            return service
        service.status = "active"
        service.provision_status = "completed"
        service.provision_error = ""
        service.status_reason = ""
        service.activated_at = now
        setup_row = charge_setup(client, service)
        period_row = charge_period(client, service, now)
        extra: dict[str, Any] = {"charged": str(needed)}
        if force:
            extra["forced"] = True
            extra["funds_covered"] = funded
        # ids as text: the activity tab reads a two-item list as [before, after]
        extra["transactions"] = ", ".join(str(row.id) for row in (setup_row, period_row) if row is not None)
        _log(verb, service, before, **extra)
    return service


def activate(service: Service, force: bool = False) -> Service:
    """pending → active: provision, then charge setup (once) and the first period. `force` (staff) skips
    the funds check (the balance may go below the credit limit; logged). On a provisioning error the
    service stays pending with provision_status "error" and nothing is charged: check
    `service.provision_status` on the returned service."""
    return _activate(service, force, "activate")


def retry_provisioning(service: Service, force: bool = False) -> Service:
    """Activation again, for a pending service whose provisioning failed (same result as activate)."""
    return _activate(service, force, "retry_provisioning")


# -- other transitions -----------------------------------------------------------------------------------------

def suspend(service: Service, reason: str, kind: str = "staff") -> Service:
    """active → suspended. `kind` is "staff" or "non_payment" (only the latter is lifted by the billing
    engine when funds return)."""
    reason = _reason(reason)
    if kind not in ("staff", "non_payment"):
        raise ValueError(f"unknown suspension kind {kind!r}")
    with transaction():
        _client, service = _locked(service)
        if service.status != "active":
            raise _refuse("suspend")
        before = activity.snapshot(service, _LOGGED_FIELDS)
        service.status = "suspended"
        service.provision_status = "suspended"
        service.suspended_at = clock.now()
        service.status_reason = reason
        service.suspension_kind = kind
        _log("suspend", service, before)
    return service


def unsuspend(service: Service) -> Service:
    """suspended → active. The suspended time is not charged: paid-until moves on by it (never beyond now;
    time the service ran unpaid before the suspension stays due) and month-based periods re-anchor on the
    new paid-until's day — as the billing engine's unsuspend does."""
    with transaction():
        _client, service = _locked(service)
        if service.status != "suspended":
            raise _refuse("unsuspend")
        before = activity.snapshot(service, _LOGGED_FIELDS)
        now = clock.now().replace(microsecond=0)
        if service.paid_until is not None and service.paid_until < now:
            suspended = service.suspended_at or service.paid_until
            resumed = min(now, service.paid_until + max(now - suspended, dt.timedelta(0)))
            if resumed != service.paid_until:
                service.paid_until = resumed
                service.billing_anchor_day = resumed.day
        service.status = "active"
        service.provision_status = "completed"
        service.status_reason = ""
        service.suspension_kind = ""
        _log("unsuspend", service, before)
    return service


def terminate(service: Service, reason: str) -> Service:
    """active / suspended → terminated (final; nothing is charged any more)."""
    reason = _reason(reason)
    with transaction():
        _client, service = _locked(service)
        if service.status not in ("active", "suspended"):
            raise _refuse("terminate")
        before = activity.snapshot(service, _LOGGED_FIELDS)
        service.status = "terminated"
        service.provision_status = "terminated"
        service.terminated_at = clock.now()
        service.status_reason = reason
        service.suspension_kind = ""
        _log("terminate", service, before)
    return service


def cancel(service: Service, reason: str) -> Service:
    """pending → cancelled (it was never activated, so nothing was charged)."""
    reason = _reason(reason)
    with transaction():
        _client, service = _locked(service)
        if service.status != "pending":
            raise _refuse("cancel")
        before = activity.snapshot(service, _LOGGED_FIELDS)
        service.status = "cancelled"
        service.provision_status = "cancelled"
        service.cancelled_at = clock.now()
        service.status_reason = reason
        _log("cancel", service, before)
    return service


def suspend_all(client: Client, reason: str, staff_user, password: str) -> int:
    """Suspend every active service of the client in one UPDATE, after checking the staff user's own
    password (a wrong or missing password changes nothing). One activity entry with the count. Returns
    how many services were suspended."""
    errors: dict[str, str] = {}
    try:
        reason = _reason(reason)
    except DomainError as exc:
        errors.update(exc.errors)
    stored = getattr(staff_user, "password", None) or ""
    if not password or not stored or not check_password_hash(stored, str(password)):
        errors["password"] = str(_l("Wrong password."))
    if errors:
        raise DomainError(errors)
    with transaction() as session:
        lock_client(client.id)
        ids = list(session.scalars(
            update(Service)
            .where(Service.client_id == client.id, Service.status == "active")
            .values(status="suspended", provision_status="suspended", suspended_at=clock.now(),
                    status_reason=reason, suspension_kind="staff")
            .returning(Service.id)
            .execution_options(synchronize_session=False)
        ))
        activity.record("service.suspend_all", client_id=client.id, object_type="client", object_id=client.id,
                        changes={"count": len(ids), "reason": reason,
                                 "service_ids": ", ".join(str(i) for i in sorted(ids)[:100])})
    return len(ids)
