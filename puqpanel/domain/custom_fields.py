"""Values of the admin-defined custom fields on a client: typed, required, regex; upserted and logged."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..models import Client, CustomField, CustomFieldValue
from . import DomainError, activity
from .session import get_session

MAX_VALUE = 5_000
_TRUE = ("1", "y", "yes", "on", "true")


def form_key(field: CustomField) -> str:
    return f"cf_{field.id}"


def all_fields() -> list[CustomField]:
    return list(get_session().scalars(select(CustomField).order_by(CustomField.sort_order, CustomField.id)))


def current_values(client: Client) -> dict[int, CustomFieldValue]:
    rows = get_session().scalars(select(CustomFieldValue).where(CustomFieldValue.client_id == client.id))
    return {row.field_id: row for row in rows}


def fields_with_values(client: Client) -> list[tuple[CustomField, str]]:
    values = current_values(client)
    return [(f, values[f.id].value if f.id in values else "") for f in all_fields()]


def clean_value(field: CustomField, raw: Any) -> str:
    """The stored form of one submitted value; DomainError({form_key: message}) when it is invalid."""
    key = form_key(field)
    if field.field_type == "bool":
        value = "1" if str(raw or "").strip().lower() in _TRUE else "0"
        if field.required and value != "1":
            raise DomainError({key: str(_l("This box must be ticked."))})
        return value
    value = str(raw or "").strip()
    if not value:
        if field.required:
            raise DomainError({key: str(_l("This field is required."))})
        return ""
    if len(value) > MAX_VALUE:
        raise DomainError({key: str(_l("At most %(n)s characters.", n=MAX_VALUE))})
    if field.field_type == "number":
        try:
            number = Decimal(value.replace(",", "."))
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            raise DomainError({key: str(_l("Enter a number."))})
        value = str(number)
    elif field.field_type == "date":
        try:
            value = dt.date.fromisoformat(value).isoformat()
        except ValueError:
            raise DomainError({key: str(_l("Enter a date as YYYY-MM-DD."))})
    elif field.field_type == "select":
        if value not in field.option_list:
            raise DomainError({key: str(_l("Choose one of the options."))})
    if field.regex:
        try:
            matches = re.fullmatch(field.regex, value) is not None
        except re.error:
            matches = False
        if not matches:
            raise DomainError({key: str(_l("The value does not have the required format."))})
    return value


def save_values(client: Client, data: Mapping[str, Any]) -> dict[str, list]:
    """Validate every field first (keys cf_<id>), then upsert the values and log {name: [before, after]}."""
    fields = all_fields()
    errors: dict[str, str] = {}
    cleaned: dict[int, str] = {}
    for field in fields:
        try:
            cleaned[field.id] = clean_value(field, data.get(form_key(field)))
        except DomainError as exc:
            errors.update(exc.errors)
    if errors:
        raise DomainError(errors)

    session = get_session()
    existing = current_values(client)
    changes: dict[str, list] = {}
    try:
        for field in fields:
            new = cleaned[field.id]
            row = existing.get(field.id)
            old = row.value if row is not None else ""
            if field.field_type == "bool" and row is None:
                old = "0"
            if old == new:
                continue
            if row is None:
                session.add(CustomFieldValue(client_id=client.id, field_id=field.id, value=new))
            else:
                row.value = new
            changes[field.name] = [old, new]
        if not changes:
            session.rollback()
            return {}
        activity.record(
            "custom_fields.update",
            client_id=client.id,
            object_type="client",
            object_id=client.id,
            changes=changes,
            description="Custom fields updated",
        )
        session.commit()
    except Exception:
        session.rollback()
        raise
    return changes
