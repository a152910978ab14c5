"""Editing a client's profile (staff): validate everything, then apply, log one diff and commit."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select, type_coerce
from sqlalchemy.exc import IntegrityError

from ..billing import vies
from ..models import Client, ClientGroup, Currency, Invoice, Money, Service, Tag
from ..models.base import MONEY_PLACES
from ..security import has_perm
from . import DomainError, activity, collect
from .clients import (
    PROFILE_FIELDS,
    check_group,
    check_language,
    check_manager,
    check_status,
    check_tags,
    check_tax_id_unique,
    parse_money,
    scoped_clients,
)
from .directory import staff_users
from .session import get_session, transaction
from .validation import check_texts, is_true, normalize_phone, normalize_tax_id, parse_id

# Free-text fields of the form and the columns their length limits come from.
_TEXT_COLUMNS = {
    "firstname": Client.firstname, "lastname": Client.lastname, "company_name": Client.company_name,
    "national_id": Client.national_id, "blocked_reason": Client.blocked_reason,
}


def _text(data: Mapping[str, Any], name: str) -> str:
    return str(data.get(name) or "").strip()


def clean_contact(errors: dict, data: Mapping[str, Any], client_id: int, country: str) -> dict[str, Any]:
    """Phone (E.164, read in `country`), tax id (normalized in `country`, unique among clients other than
    `client_id`; None when empty) and language of a profile form; each field's error goes into `errors`.
    Shared by the staff profile (update_profile) and the client's own (client_self_service)."""
    phone = collect(errors, normalize_phone, _text(data, "phone"), country) or ""
    tax_id = collect(errors, normalize_tax_id, _text(data, "tax_id"), country) if _text(data, "tax_id") else None
    if tax_id:
        collect(errors, check_tax_id_unique, tax_id, client_id)
    return {"phone": phone, "tax_id": tax_id, "language": collect(errors, check_language, _text(data, "language"))}


def _optional_id(errors: dict, data: Mapping[str, Any], name: str) -> int | None:
    return collect(errors, parse_id, data.get(name), name)


def _coordinate(errors: dict, data: Mapping[str, Any], name: str, limit: int) -> float | None:
    raw = _text(data, name).replace(",", ".")
    if not raw:
        return None
    try:
        value = float(Decimal(raw))
    except Exception:
        errors[name] = str(_l("Enter a number."))
        return None
    if not -limit <= value <= limit:
        errors[name] = str(_l("Must be between %(low)s and %(high)s.", low=-limit, high=limit))
        return None
    return round(value, 6)


def tag_ids_of(data: Mapping[str, Any]) -> list[str]:
    raw = data.get("tag_ids") or []
    if isinstance(raw, (str, int)):
        raw = [raw]
    return [str(v) for v in raw if str(v).strip()]


def check_parent(client: Client, parent_id: int | None) -> int | None:
    """The parent must be another client within the caller's scope, and must not make a cycle."""
    if not parent_id:
        return None
    if parent_id == client.id:
        raise DomainError({"parent_id": str(_l("A client cannot be its own parent."))})
    session = get_session()
    if session.scalar(scoped_clients().with_only_columns(Client.id).where(Client.id == parent_id)) is None:
        raise DomainError({"parent_id": str(_l("Unknown client."))})
    seen = {client.id}
    current = parent_id
    while current is not None:
        if current in seen:
            raise DomainError({"parent_id": str(_l("This parent would make a cycle of linked accounts."))})
        seen.add(current)
        current = session.scalar(select(Client.parent_id).where(Client.id == current))
    return parent_id


def _snapshot(client: Client) -> dict[str, Any]:
    snap = activity.snapshot(client, PROFILE_FIELDS)
    snap["tags"] = sorted(t.name for t in client.tags)
    return snap


def parent_in_scope(client: Client) -> bool:
    """Whether the caller may see the client's parent (its name and record), not just its id."""
    if client.parent_id is None:
        return False
    return get_session().scalar(
        scoped_clients().with_only_columns(Client.id).where(Client.id == client.parent_id)
    ) is not None


def update_profile(client: Client, data: Mapping[str, Any]) -> dict[str, list]:
    """Validate every field of `data` (form-like values), then apply them to `client` in one transaction.

    Raises DomainError with every field error and changes nothing when anything is invalid. Returns the
    logged diff ({} when nothing changed; then nothing is written).
    """
    session = get_session()
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}

    for name in _TEXT_COLUMNS:
        values[name] = _text(data, name)
    check_texts(errors, values, ("firstname", "lastname"), _TEXT_COLUMNS)
    values["admin_notes"] = str(data.get("admin_notes") or "").strip()

    billing = client.billing_address
    country = billing.country if billing is not None else ""
    values.update(clean_contact(errors, data, client.id, country))
    values["status"] = collect(errors, check_status, _text(data, "status"))

    currency_id = _optional_id(errors, data, "currency_id")
    if "currency_id" not in errors:
        if not currency_id or session.get(Currency, currency_id) is None:
            errors["currency_id"] = str(_l("Choose a currency."))
        elif currency_id != client.currency_id and client.balance != 0:
            errors["currency_id"] = str(_l("The currency can only change while the balance is zero."))
    values["currency_id"] = currency_id

    credit_limit = collect(errors, parse_money, data.get("credit_limit", ""), "credit_limit")
    if credit_limit is not None and credit_limit < 0:
        errors["credit_limit"] = str(_l("The credit limit cannot be negative."))
    values["credit_limit"] = credit_limit.quantize(MONEY_PLACES) if credit_limit is not None else None

    values["blocked"] = is_true(data.get("blocked"))
    if values["blocked"] and not values["blocked_reason"]:
        errors["blocked_reason"] = str(_l("Give the reason for blocking this client."))
    if not values["blocked"]:
        values["blocked_reason"] = ""
    values["never_auto_suspend"] = is_true(data.get("never_auto_suspend"))
    values["tax_exempt"] = is_true(data.get("tax_exempt"))
    values["is_reseller"] = is_true(data.get("is_reseller"))

    group_id = _optional_id(errors, data, "group_id")
    values["group_id"] = collect(errors, check_group, group_id) if "group_id" not in errors else None
    manager_id = _optional_id(errors, data, "manager_id")
    if "manager_id" not in errors and manager_id != client.manager_id:
        if not has_perm("can_access_all"):
            # Staff limited to their own clients may not hand a client over or unassign it.
            errors["manager_id"] = str(_l("Only staff who can access all clients may change the manager."))
        else:
            manager_id = collect(errors, check_manager, manager_id)
    values["manager_id"] = manager_id
    parent_id = _optional_id(errors, data, "parent_id")
    if "parent_id" not in errors and parent_id != client.parent_id:
        # An unchanged parent is kept even when it lies outside the caller's scope.
        parent_id = collect(errors, check_parent, client, parent_id)
    values["parent_id"] = parent_id
    values["latitude"] = _coordinate(errors, data, "latitude", 90)
    values["longitude"] = _coordinate(errors, data, "longitude", 180)
    if (values["latitude"] is None) != (values["longitude"] is None) and not (
        "latitude" in errors or "longitude" in errors
    ):
        errors["longitude" if values["longitude"] is None else "latitude"] = str(
            _l("Give both latitude and longitude, or neither.")
        )

    tags = collect(errors, check_tags, tag_ids_of(data))
    if "tag_ids" in errors:
        errors["tag_ids"] = str(_l("Choose valid tags."))

    if errors:
        raise DomainError(errors)

    try:
        with transaction():
            before = _snapshot(client)
            for name, value in values.items():
                setattr(client, name, value)
            client.tags = tags
            changes = activity.diff(before, _snapshot(client))
            if changes:
                if "tax_id" in changes:
                    vies.identity_changed(client)  # the last VIES answer was about the old id
                activity.record(
                    "client.update",
                    client_id=client.id,
                    object_type="client",
                    object_id=client.id,
                    changes=changes,
                    description="Profile updated",
                )
            else:  # nothing to write; the untouched values are put back
                session.rollback()
    except IntegrityError:  # a concurrent save took the same tax id between the check and the commit
        raise DomainError({"tax_id": str(_l("Another client already has this tax id."))})
    if "tax_id" in changes and client.tax_id:
        vies.schedule_check(client.id)
    return changes


def credit_limit_text(amount: Decimal | None) -> str:
    """The credit limit for the edit form: 2 places, or all 4 stored places when they matter, so that
    saving the form unchanged never rounds it."""
    amount = Decimal(amount or 0).quantize(MONEY_PLACES)
    cents = amount.quantize(Decimal("0.01"))
    return f"{cents}" if cents == amount else f"{amount}"


def profile_form_data(client: Client) -> dict[str, Any]:
    """The client's current values in the shape update_profile reads (for the edit form)."""
    data = {name: getattr(client, name) for name in PROFILE_FIELDS}
    data["credit_limit"] = credit_limit_text(client.credit_limit)
    data["tax_id"] = client.tax_id or ""
    data["tag_ids"] = [str(t.id) for t in client.tags]
    for name in ("group_id", "manager_id", "parent_id", "currency_id", "latitude", "longitude"):
        data[name] = "" if data[name] is None else str(data[name])
    return data


def form_choices(client: Client) -> dict[str, list[tuple[str, str]]]:
    """Options of the profile form's selects (small reference tables; staff list)."""
    session = get_session()
    managers = [(str(uid), label) for uid, label in staff_users()]
    if client.manager_id and str(client.manager_id) not in {m[0] for m in managers} and client.manager:
        managers.append((str(client.manager_id), client.manager.username))  # e.g. a deactivated manager
    return {
        "language": [(code, meta.get("name", code)) for code, meta in current_app.config.get("LANGUAGES", {}).items()],
        "currency_id": [(str(c.id), c.code) for c in session.scalars(select(Currency).order_by(Currency.code))],
        "group_id": [(str(g.id), g.name) for g in session.scalars(select(ClientGroup).order_by(ClientGroup.name))],
        "tag_ids": [(str(t.id), t.name) for t in session.scalars(select(Tag).order_by(Tag.name))],
        "manager_id": managers,
    }


def finance_summary(client: Client) -> dict[str, Any]:
    """What the Summary tab shows of a client's money: balance and credit limit; outstanding = Σ (total -
    amount paid) of its unpaid documents in the client's currency (`outstanding_other`: the same per other
    currency, for documents issued before a currency change); VIES status of the tax id; active services and
    services in use (active + suspended + pending); the last 5 ledger rows. Three statements."""
    from ..billing.ledger import recent_transactions

    session = get_session()
    due = session.execute(
        select(Invoice.currency_id, type_coerce(func.sum(Invoice.total - Invoice.amount_paid), Money()))
        .where(Invoice.client_id == client.id, Invoice.status == "unpaid")
        .group_by(Invoice.currency_id)
    ).all()
    outstanding = Decimal(0)
    other: dict[int, Decimal] = {}
    for currency_id, amount in due:
        if currency_id == client.currency_id:
            outstanding += amount or 0
        elif amount:
            other[currency_id] = amount
    counts = session.execute(
        select(
            func.count(Service.id).filter(Service.status == "active"),
            func.count(Service.id).filter(Service.status.in_(("active", "suspended", "pending"))),
        ).where(Service.client_id == client.id)
    ).one()
    currencies = {c.id: c for c in session.scalars(select(Currency).where(Currency.id.in_(other)))} if other else {}
    return {
        "balance": client.balance,
        "credit_limit": client.credit_limit,
        "available": client.balance + client.credit_limit,
        "outstanding": Decimal(outstanding).quantize(MONEY_PLACES),
        "outstanding_other": [(currencies.get(cid), amount) for cid, amount in other.items()],
        "active_services": counts[0] or 0,
        "services_in_use": counts[1] or 0,
        "vies_status": client.vies_status,
        "vies_checked_at": client.vies_checked_at,
        "vies_name": client.vies_name,
        "vies_error": client.vies_error,
        "tax_exempt": client.tax_exempt,
        "recent_transactions": recent_transactions(client.id, 5),
    }
