"""Field validation with the field's libraries: pycountry, python-stdnum, phonenumbers, email-validator."""
from __future__ import annotations

import datetime as dt

import re
from functools import lru_cache
from typing import Any, Iterable, Mapping

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email
from flask_babel import lazy_gettext as _l
from stdnum import get_cc_module
from stdnum.exceptions import ValidationError as StdnumError

from . import DomainError


@lru_cache(maxsize=1)
def countries() -> list[tuple[str, str]]:
    """(alpha-2, name) sorted by name."""
    return sorted(((c.alpha_2, c.name) for c in pycountry.countries), key=lambda c: c[1])


@lru_cache(maxsize=None)
def regions(country: str) -> list[tuple[str, str]]:
    """ISO 3166-2 subdivisions (code, name) of a country, sorted by name; [] when it has none."""
    subs = pycountry.subdivisions.get(country_code=country.upper()) if country else None
    return sorted(((s.code, s.name) for s in subs or []), key=lambda s: s[1])


def check_country(country: str, field: str = "country") -> str:
    country = (country or "").strip().upper()
    if not pycountry.countries.get(alpha_2=country):
        raise DomainError({field: str(_l("Choose a valid country."))})
    return country


def check_region(country: str, region: str, field: str = "region") -> str:
    """Region must be a subdivision of the country; required when the country has subdivisions."""
    region = (region or "").strip().upper()
    codes = {code for code, _ in regions(country)}
    if not region:
        return ""
    if region not in codes:
        raise DomainError({field: str(_l("Choose a region of the selected country."))})
    return region


def normalize_email(email: str, field: str = "email") -> str:
    try:
        # Logins are matched case-insensitively, so the stored form is lower case.
        return validate_email((email or "").strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise DomainError({field: str(_l("Enter a valid email address: %(reason)s", reason=str(exc)))})


def normalize_phone(phone: str, country: str | None, field: str = "phone") -> str:
    """E.164, or "" when blank. A number without +CC is read in the client's country."""
    phone = (phone or "").strip()
    if not phone:
        return ""
    try:
        parsed = phonenumbers.parse(phone, (country or "").upper() or None)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        raise DomainError({field: str(_l("Enter a valid phone number with its country code, e.g. +49 30 123456."))})
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


_TAX_ID_MODULES = ("vat", "tin", "gst", "bn", "ein", "abn", "cnpj", "nip", "ustid", "mwst", "ustnr")


def normalize_tax_id(tax_id: str, country: str, field: str = "tax_id") -> str | None:
    """Validate a tax id for the country with python-stdnum; returns its compact form, None when blank.

    An EU VAT number may be given with or without its country prefix; it is stored with the prefix.
    Countries stdnum knows no tax-id format for accept any 3-30 letters/digits.
    """
    raw = (tax_id or "").strip()
    if not raw:
        return None
    country = (country or "").upper()
    from stdnum.eu import vat as eu_vat

    eu_prefix = "EL" if country == "GR" else country
    if country and eu_prefix.lower() in eu_vat.MEMBER_STATES:
        candidate = raw if raw[:2].upper().isalpha() else eu_prefix + raw
        try:
            return eu_vat.validate(candidate)
        except StdnumError:
            raise DomainError({field: str(_l("This is not a valid VAT number for %(country)s.", country=country))})
    modules = []
    if country:
        modules = [m for m in (_cc_module(country, name) for name in _TAX_ID_MODULES) if m is not None]
    if not modules:
        compact = re.sub(r"[\s.\-/]", "", raw).upper()
        if not re.fullmatch(r"[A-Z0-9]{3,30}", compact):
            raise DomainError({field: str(_l("A tax id has 3 to 30 letters and digits."))})
        return compact
    for module in modules:
        try:
            return module.validate(raw)
        except StdnumError:
            continue
    raise DomainError({field: str(_l("This is not a valid tax id for %(country)s.", country=country))})


def _cc_module(country: str, name: str):
    try:
        return get_cc_module(country.lower(), name)
    except Exception:
        return None


# Ids arrive from forms and URLs; anything outside a 32-bit positive integer cannot be a row here.
MAX_ID = 2**31 - 1


def parse_id(value, field: str, required: bool = False) -> int | None:
    """A row id from user input, or None when blank; DomainError on anything else."""
    text = str(value if value is not None else "").strip()
    if not text or text in ("0", "None"):
        if required:
            raise DomainError({field: str(_l("This field is required."))})
        return None
    if not re.fullmatch(r"[0-9]{1,10}", text) or int(text) > MAX_ID:
        raise DomainError({field: str(_l("Not a valid choice."))})
    return int(text)


def column_length(attribute) -> int | None:
    """The declared length of a mapped String attribute (e.g. User.first_name → 64)."""
    return getattr(attribute.property.columns[0].type, "length", None)


def check_lengths(values: Mapping[str, Any], columns: Mapping[str, Any]) -> dict[str, str]:
    """Field errors for values longer than their column allows."""
    errors = {}
    for name, column in columns.items():
        limit = column_length(column)
        value = values.get(name) or ""
        if limit and len(value) > limit:
            errors[name] = str(_l("At most %(count)d characters.", count=limit))
    return errors


def required_errors(values: Mapping[str, Any], names: Iterable[str]) -> dict[str, str]:
    """Field errors for the named values that are blank."""
    return {name: str(_l("This field is required.")) for name in names if not str(values.get(name) or "").strip()}


def check_texts(errors: dict[str, str], values: Mapping[str, Any], required: Iterable[str], columns: Mapping[str, Any]):
    """Add to `errors` the blank required fields and the values longer than their column; a field that
    already has an error keeps it."""
    for name, message in {**check_lengths(values, columns), **required_errors(values, required)}.items():
        errors.setdefault(name, message)


_TRUE_WORDS = ("1", "y", "yes", "on", "true")


def is_true(value: Any) -> bool:
    """A checkbox / flag from a form ("1", "on", "yes", ...) or a Python value."""
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_WORDS
    return bool(value)


def parse_date_arg(value) -> dt.date | None:
    """A YYYY-MM-DD filter argument (blank → None); ValueError for anything else."""
    value = str(value or "").strip()
    if not value:
        return None
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError(value)
    return dt.date.fromisoformat(value)
