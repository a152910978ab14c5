"""Editing a client's profile (staff): validate everything, then apply, log one diff and commit."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..models import CLIENT_STATUSES, Client, ClientGroup, Currency, Invoice, Service, Tag, User, UserSecurity
from ..models.base import MONEY_PLACES
from . import DomainError, activity
from .clients import (
    PROFILE_FIELDS,
    _collect,
    check_group,
    check_language,
    check_manager,
    check_status,
    check_tax_id_unique,
    parse_money,
    scoped_clients,
)
from .session import get_session
from .validation import normalize_phone, normalize_tax_id

# Fields logged for a profile change: the client's own columns plus its tags (by name).
LOGGED_FIELDS = PROFILE_FIELDS + ("tags",)
_TEXT_LIMITS = {
    "firstname": 100, "lastname": 100, "company_name": 200, "national_id": 50, "blocked_reason": 255,
}


def _text(data: Mapping[str, Any], name: str) -> str:
    return str(data.get(name) or "").strip()


def _bool(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "y", "yes", "on", "true")
    return bool(value)


def _optional_id(errors: dict, data: Mapping[str, Any], name: str) -> int | None:
    raw = _text(data, name)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        errors[name] = str(_l("Choose a valid entry."))
        return None
    return value if value > 0 else None


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


def update_profile(client: Client, data: Mapping[str, Any]) -> dict[str, list]:
    """Validate every field of `data` (form-like values), then apply them to `client` in one transaction.

    Raises DomainError with every field error and changes nothing when anything is invalid. Returns the
    logged diff ({} when nothing changed; then nothing is written).
    """
    session = get_session()
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}

    for name in ("firstname", "lastname"):
        if not _text(data, name):
            errors[name] = str(_l("This field is required."))
    for name, limit in _TEXT_LIMITS.items():
        values[name] = _text(data, name)
        if len(values[name]) > limit:
            errors[name] = str(_l("At most %(n)s characters.", n=limit))
    values["admin_notes"] = str(data.get("admin_notes") or "").strip()

    billing = client.billing_address
    country = billing.country if billing is not None else ""
    values["phone"] = _collect(errors, normalize_phone, _text(data, "phone"), country) or ""
    tax_id = _collect(errors, normalize_tax_id, _text(data, "tax_id"), country) if _text(data, "tax_id") else None
    if tax_id:
        _collect(errors, check_tax_id_unique, tax_id, client.id)
    values["tax_id"] = tax_id

    values["language"] = _collect(errors, check_language, _text(data, "language"))
    values["status"] = _collect(errors, check_status, _text(data, "status"))

    currency_id = _optional_id(errors, data, "currency_id")
    if "currency_id" not in errors:
        if not currency_id or session.get(Currency, currency_id) is None:
            errors["currency_id"] = str(_l("Choose a currency."))
        elif currency_id != client.currency_id and client.balance != 0:
            errors["currency_id"] = str(_l("The currency can only change while the balance is zero."))
    values["currency_id"] = currency_id

    credit_limit = _collect(errors, parse_money, data.get("credit_limit", ""), "credit_limit")
    if credit_limit is not None and credit_limit < 0:
        errors["credit_limit"] = str(_l("The credit limit cannot be negative."))
    values["credit_limit"] = credit_limit.quantize(MONEY_PLACES) if credit_limit is not None else None

    values["blocked"] = _bool(data, "blocked")
    if values["blocked"] and not values["blocked_reason"]:
        errors["blocked_reason"] = str(_l("Give the reason for blocking this client."))
    if not values["blocked"]:
        values["blocked_reason"] = ""
    values["never_auto_suspend"] = _bool(data, "never_auto_suspend")
    values["is_reseller"] = _bool(data, "is_reseller")

    group_id = _optional_id(errors, data, "group_id")
    values["group_id"] = _collect(errors, check_group, group_id) if "group_id" not in errors else None
    manager_id = _optional_id(errors, data, "manager_id")
    if "manager_id" not in errors and manager_id != client.manager_id:
        manager_id = _collect(errors, check_manager, manager_id)
    values["manager_id"] = manager_id
    parent_id = _optional_id(errors, data, "parent_id")
    if "parent_id" not in errors:
        parent_id = _collect(errors, check_parent, client, parent_id)
    values["parent_id"] = parent_id
    values["latitude"] = _coordinate(errors, data, "latitude", 90)
    values["longitude"] = _coordinate(errors, data, "longitude", 180)
    if (values["latitude"] is None) != (values["longitude"] is None) and not (
        "latitude" in errors or "longitude" in errors
    ):
        errors["longitude" if values["longitude"] is None else "latitude"] = str(
            _l("Give both latitude and longitude, or neither.")
        )

    tags: list[Tag] = []
    raw_tag_ids = tag_ids_of(data)
    if raw_tag_ids:
        try:
            wanted = {int(v) for v in raw_tag_ids}
        except ValueError:
            wanted = set()
            errors["tag_ids"] = str(_l("Choose valid tags."))
        if wanted:
            tags = list(session.scalars(select(Tag).where(Tag.id.in_(wanted)).order_by(Tag.name)))
            if len(tags) != len(wanted):
                errors["tag_ids"] = str(_l("Choose valid tags."))

    if errors:
        raise DomainError(errors)

    before = _snapshot(client)
    try:
        for name, value in values.items():
            setattr(client, name, value)
        client.tags = tags
        after = _snapshot(client)
        changes = activity.diff(before, after)
        if not changes:
            session.rollback()
            return {}
        activity.record(
            "client.update",
            client_id=client.id,
            object_type="client",
            object_id=client.id,
            changes=changes,
            description="Profile updated",
        )
        session.commit()
    except IntegrityError:  # a concurrent save took the same tax id between the check and the commit
        session.rollback()
        raise DomainError({"tax_id": str(_l("Another client already has this tax id."))})
    except Exception:
        session.rollback()
        raise
    return changes


def profile_form_data(client: Client) -> dict[str, Any]:
    """The client's current values in the shape update_profile reads (for the edit form)."""
    data = {name: getattr(client, name) for name in PROFILE_FIELDS}
    data["credit_limit"] = f"{client.credit_limit:.2f}"
    data["tax_id"] = client.tax_id or ""
    data["tag_ids"] = [str(t.id) for t in client.tags]
    for name in ("group_id", "manager_id", "parent_id", "currency_id", "latitude", "longitude"):
        data[name] = "" if data[name] is None else str(data[name])
    return data


def form_choices(client: Client) -> dict[str, list[tuple[str, str]]]:
    """Options of the profile form's selects (small reference tables; staff list)."""
    session = get_session()
    staff = session.execute(
        select(User.id, User.first_name, User.last_name, User.username)
        .outerjoin(UserSecurity, UserSecurity.user_id == User.id)
        .where(User.active.is_(True))
        .where(func.coalesce(UserSecurity.is_client_login, False).is_(False))
        .order_by(User.first_name, User.last_name)
    ).all()
    managers = [(str(u.id), f"{u.first_name} {u.last_name} ({u.username})") for u in staff]
    if client.manager_id and str(client.manager_id) not in {m[0] for m in managers} and client.manager:
        managers.append((str(client.manager_id), client.manager.username))
    return {
        "language": [(code, meta.get("name", code)) for code, meta in current_app.config.get("LANGUAGES", {}).items()],
        "currency_id": [(str(c.id), c.code) for c in session.scalars(select(Currency).order_by(Currency.code))],
        "status": [(s, s) for s in CLIENT_STATUSES],
        "group_id": [(str(g.id), g.name) for g in session.scalars(select(ClientGroup).order_by(ClientGroup.name))],
        "tag_ids": [(str(t.id), t.name) for t in session.scalars(select(Tag).order_by(Tag.name))],
        "manager_id": managers,
    }


def finance_summary(client: Client) -> dict[str, Any]:
    """Balance, credit limit, outstanding (unpaid invoices) and active services of a client."""
    session = get_session()
    outstanding = session.scalar(
        select(func.sum(Invoice.total)).where(
            Invoice.client_id == client.id, Invoice.status == "unpaid"
        )
    )
    active_services = session.scalar(
        select(func.count(Service.id)).where(Service.client_id == client.id, Service.status == "active")
    )
    return {
        "balance": client.balance,
        "credit_limit": client.credit_limit,
        "outstanding": Decimal(outstanding or 0).quantize(MONEY_PLACES),
        "active_services": active_services or 0,
    }
