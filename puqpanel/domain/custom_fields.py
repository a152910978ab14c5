"""Values of the admin-defined custom fields on a client: typed, required, regex; upserted and logged."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

import regex
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..models import Client, CustomField, CustomFieldValue
from . import DomainError, activity
from .session import get_session, transaction
from .validation import is_true

MAX_VALUE = 5_000
# Values checked against an admin-written regex are capped, and matching is given REGEX_SECONDS: a
# pattern such as (a+)+$ backtracks exponentially. The `regex` package can stop a match on a timeout.
MAX_REGEX_VALUE = 1_000
REGEX_SECONDS = 0.5
MAX_EXPONENT = 30  # number fields: |adjusted exponent| beyond this is refused (1e999999999 is "finite")


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
        value = "1" if is_true(raw) else "0"
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
        if number and abs(number.adjusted()) > MAX_EXPONENT:
            raise DomainError({key: str(_l("Enter a number between 1e-30 and 1e30."))})
        value = str(number)
    elif field.field_type == "date":
        try:
            value = dt.date.fromisoformat(value).isoformat()
        except ValueError:
            raise DomainError({key: str(_l("Enter a date as YYYY-MM-DD."))})
    elif field.field_type == "select":
        if value not in field.option_list:
            raise DomainError({key: str(_l("Choose one of the options."))})
    if field.regex and len(value) > MAX_REGEX_VALUE:
        raise DomainError({key: str(_l("At most %(n)s characters.", n=MAX_REGEX_VALUE))})
    return value


def regex_matches(pairs: list[tuple[str, str]]) -> list[bool]:
    """Whether each value fully matches its pattern; False for a bad pattern or one that runs out of time."""
    results = []
    for pattern, value in pairs:
        try:
            results.append(regex.fullmatch(pattern, value, timeout=REGEX_SECONDS) is not None)
        except (regex.error, TimeoutError):
            results.append(False)
    return results


def clean_values(fields: list[CustomField], data: Mapping[str, Any]) -> dict[int, str]:
    """Stored form of every submitted value (keys cf_<id>); DomainError with every field's error."""
    errors: dict[str, str] = {}
    cleaned: dict[int, str] = {}
    for field in fields:
        try:
            cleaned[field.id] = clean_value(field, data.get(form_key(field)))
        except DomainError as exc:
            errors.update(exc.errors)
    patterned = [f for f in fields if f.regex and cleaned.get(f.id) and f.field_type != "bool"]
    for field, ok in zip(patterned, regex_matches([(f.regex, cleaned[f.id]) for f in patterned])):
        if not ok:
            errors[form_key(field)] = str(_l("The value does not have the required format."))
    if errors:
        raise DomainError(errors)
    return cleaned


def save_values(client: Client, data: Mapping[str, Any]) -> dict[str, list]:
    """Validate every field first (keys cf_<id>), then upsert the values and log {name: [before, after]}."""
    fields = all_fields()
    cleaned = clean_values(fields, data)
    existing = current_values(client)
    changes: dict[str, list] = {}
    with transaction() as session:
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
        if changes:
            activity.record(
                "custom_fields.update",
                client_id=client.id,
                object_type="client",
                object_id=client.id,
                changes=changes,
                description="Custom fields updated",
            )
    return changes
