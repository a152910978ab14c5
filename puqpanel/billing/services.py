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
from sqlalchemy import or_, select, update
from sqlalchemy.orm import contains_eager, joinedload
from werkzeug.security import check_password_hash

from ..domain import DomainError, NotFound, activity
from ..domain.session import get_session, transaction
from ..domain.validation import parse_id
from ..models import Client, Product, ProductPrice, Service
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


# -- the client area -------------------------------------------------------------------------------------------
# Status filters of the client area's services list: a status, "current" (what the dashboard's Total counts:
# active + suspended + pending), "termination_requested" (active or suspended with a request, as the
# dashboard's counter) or "all".
CLIENT_FILTERS = ("all", "current", "active", "suspended", "pending", "terminated", "cancelled",
                  "termination_requested")
CLIENT_SORTS = ("id", "product", "label", "status", "created", "paid_until")
CLIENT_SEARCH_MAX = 100
TERMINATION_REASON_MAX = Service.__table__.c.termination_request_reason.type.length  # 255
CLIENT_LABEL_MAX = Service.__table__.c.client_label.type.length  # 150
_REQUESTABLE = ("active", "suspended")


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _service_number(search: str) -> int | None:
    """A searched service number ("42" or "#42", ASCII digits only), else None."""
    try:
        return parse_id(search.lstrip("#"), "q")
    except DomainError:
        return None


def parse_client_list_args(args) -> dict[str, Any]:
    """The services list's arguments (status, q, sort, dir) from request arguments, whitelisted: an unknown
    value falls back to the default (status "all"; sort "id" descending — an unknown sort drops the direction too)."""
    status = str(args.get("status") or "").strip()
    sort = str(args.get("sort") or "").strip()
    direction = str(args.get("dir") or "").strip().lower()
    if sort not in CLIENT_SORTS:
        sort, direction = "id", "desc"
    return {
        "status": status if status in CLIENT_FILTERS else "all",
        "search": str(args.get("q") or "").strip()[:CLIENT_SEARCH_MAX],
        "sort": sort,
        "direction": direction if direction in ("asc", "desc") else "desc",
    }


def client_services(client: Client, *, status: str = "all", search: str = "", sort: str = "id",
                    direction: str = "desc", page: int = 1, page_size: int = 25) -> tuple[list[Service], bool]:
    """One page of the client's services for the client area, with product, price and currency loaded in the
    same statement, and whether a next page exists (page_size + 1 rows fetched; no COUNT).

    `status` is one of CLIENT_FILTERS (anything else: all); `search` matches the client label or the product
    name (case-insensitive, wildcards taken literally) or, when it is a number, the service id; `sort` one of
    CLIENT_SORTS (anything else: id), `direction` asc / desc; the id breaks ties."""
    session = get_session()
    stmt = (
        select(Service)
        .outerjoin(Product, Product.id == Service.product_id)
        .options(contains_eager(Service.product),
                 joinedload(Service.price).joinedload(ProductPrice.currency))
        .where(Service.client_id == client.id)
    )
    if status == "current":
        stmt = stmt.where(Service.status.in_((*_REQUESTABLE, "pending")))
    elif status == "termination_requested":
        stmt = stmt.where(Service.status.in_(_REQUESTABLE), Service.termination_requested_at.is_not(None))
    elif status in CLIENT_FILTERS and status != "all":
        stmt = stmt.where(Service.status == status)
    search = str(search or "").strip()[:CLIENT_SEARCH_MAX]
    if search:
        pattern = _like(search)
        matches = [Service.client_label.ilike(pattern, escape="\\"), Product.name.ilike(pattern, escape="\\")]
        number = _service_number(search)
        if number is not None:
            matches.append(Service.id == number)
        stmt = stmt.where(or_(*matches))
    descending = direction == "desc"
    column = {
        "id": Service.id,
        "product": Product.name,
        "label": Service.client_label,
        "status": Service.status,
        "created": Service.created_at,
        "paid_until": Service.paid_until,
    }.get(sort, Service.id)
    order = []
    if sort == "paid_until":  # services never paid last, in either direction, on every database
        order.append(Service.paid_until.is_(None))
    order.append(column.desc() if descending else column.asc())
    if column is not Service.id:
        order.append(Service.id.desc() if descending else Service.id.asc())
    page = min(max(1, int(page)), 10**6)
    page_size = min(max(1, int(page_size)), 100)
    rows = list(session.scalars(
        stmt.order_by(*order).limit(page_size + 1).offset((page - 1) * page_size)
    ).unique())
    return rows[:page_size], len(rows) > page_size


def request_termination(service: Service, reason: Any = "") -> Service:
    """The client asks to end an active or suspended service (reason optional, ≤ 255 characters): the billing
    engine stops charging it and terminates it when its paid period ends (billing.engine.lifecycle). Refused
    for any other state or when a request already exists. Logged "service.termination_request"."""
    reason = " ".join(_text(reason, "reason", TERMINATION_REASON_MAX).split())
    with transaction():
        _client, service = _locked(service)
        if service.status not in _REQUESTABLE:
            raise DomainError(str(_l("Only an active or suspended service can get a termination request.")))
        if service.termination_requested_at is not None:
            raise DomainError(str(_l("This service already has a termination request.")))
        service.termination_requested_at = clock.now()
        service.termination_request_reason = reason
        activity.record("service.termination_request", client_id=service.client_id, object_type="service",
                        object_id=service.id, changes={"reason": reason, "paid_until": service.paid_until})
    return service


def withdraw_termination(service: Service) -> Service:
    """Withdraw the termination request of a service that is still active or suspended (once terminated it is
    final). Refused without a request. Logged "service.termination_withdraw"."""
    with transaction():
        _client, service = _locked(service)
        if service.termination_requested_at is None:
            raise DomainError(str(_l("This service has no termination request.")))
        if service.status not in _REQUESTABLE:
            raise DomainError(str(_l("The service has already ended; its termination request can't be withdrawn.")))
        reason = service.termination_request_reason
        requested = service.termination_requested_at
        service.termination_requested_at = None
        service.termination_request_reason = ""
        activity.record("service.termination_withdraw", client_id=service.client_id, object_type="service",
                        object_id=service.id, changes={"requested_at": requested, "reason": reason})
    return service


def set_client_label(service: Service, label: Any) -> Service:
    """The label the client gives its service (≤ 150 characters, may be empty). Logged "service.client_label"
    with the old and new label (nothing written when unchanged)."""
    label = " ".join(_text(label, "client_label", CLIENT_LABEL_MAX).split())
    with transaction():
        _client, service = _locked(service)
        if label != service.client_label:
            activity.record("service.client_label", client_id=service.client_id, object_type="service",
                            object_id=service.id, changes={"client_label": [service.client_label, label]})
            service.client_label = label
    return service


def client_service_names(client: Client, service_ids) -> dict[int, str]:
    """{service id: what the client calls it} for those of the client's services: its client label, else the
    product name, else "" (never the staff's admin label). One query."""
    ids = {int(i) for i in service_ids if i is not None}
    if not ids:
        return {}
    rows = get_session().execute(
        select(Service.id, Service.client_label, Product.name)
        .outerjoin(Product, Product.id == Service.product_id)
        .where(Service.client_id == client.id, Service.id.in_(ids))
    )
    return {sid: (label or name or "") for sid, label, name in rows}
