"""Billing reference data: currencies and home companies (validation, the one default, logos, numbering).

The staff screens (views/billing_settings.py) call `check_currency` / `check_home_company` from their form
validation, so bad input is a form error and nothing is written; `make_default_*` keeps exactly one default
in the saving transaction; `refuse_delete_*` refuses deleting what documents or clients still use.
"""
from __future__ import annotations

import base64
import datetime as dt
import re
import string
from decimal import Decimal
from typing import Any, Mapping
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pycountry
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, inspect, select, update

from ..domain import DomainError, collect
from ..domain.session import get_session
from ..models.base import MONEY_MAX
from ..domain.validation import (
    check_country,
    check_region,
    check_texts,
    is_true,
    normalize_email,
    normalize_phone,
    normalize_tax_id,
)
from ..models import INVOICE_TYPES, Client, Currency, HomeCompany, Invoice, ProductPrice, TaxRule, Transaction
from .money import ledger

from .numbering import check_format, format_number
from .tax import parse_number

MAX_MINOR_UNITS = 4
ONE = Decimal("1.0000")

# --- currencies ------------------------------------------------------------------------------------------

_CURRENCY_TEXT = {"code": Currency.code, "prefix": Currency.prefix, "suffix": Currency.suffix}


def currency_in_use(currency_id: int) -> bool:
    session = get_session()
    return any(
        session.scalar(select(model.id).where(model.currency_id == currency_id).limit(1)) is not None
        for model in (Client, Invoice, ProductPrice, Transaction)
    )


def check_currency(data: Mapping[str, Any], current: Currency | None = None) -> dict[str, Any]:
    """Validate a currency (code ISO 4217, prefix / suffix ≤ 8 characters, minor units 0–4, exchange rate
    > 0 with ≤ 4 places, default flag); returns the column values. The default currency's rate is 1 (rates
    are units per 1 default unit); there is always exactly one default; a code in use stays."""
    session = get_session()
    errors: dict[str, str] = {}
    values: dict[str, Any] = {
        "code": str(data.get("code") or "").strip().upper(),
        "prefix": str(data.get("prefix") or "").strip(" \t\r\n").replace("\n", " "),
        "suffix": str(data.get("suffix") or "").rstrip(" \t\r\n").replace("\n", " "),
    }
    check_texts(errors, values, ("code",), _CURRENCY_TEXT)
    if "code" not in errors and not (re.fullmatch(r"[A-Z]{3}", values["code"])
                                     and pycountry.currencies.get(alpha_3=values["code"])):
        errors["code"] = str(_l("Enter an ISO 4217 currency code such as EUR."))
    if "code" not in errors:
        clash = select(Currency.id).where(Currency.code == values["code"])
        if current is not None and current.id is not None:
            clash = clash.where(Currency.id != current.id)
        if session.scalar(clash) is not None:
            errors["code"] = str(_l("This currency already exists."))
        elif current is not None and current.id is not None and current.code != values["code"] \
                and currency_in_use(current.id):
            errors["code"] = str(_l("This currency is in use: its code cannot change."))

    raw_units = str(data.get("minor_units") if data.get("minor_units") is not None else "").strip()
    if not re.fullmatch(r"[0-9]{1,2}", raw_units) or int(raw_units) > MAX_MINOR_UNITS:
        errors["minor_units"] = str(_l("Between 0 and %(n)s.", n=MAX_MINOR_UNITS))
    else:
        values["minor_units"] = int(raw_units)

    rate = collect(errors, parse_number, data.get("exchange_rate"), "exchange_rate")
    values["exchange_rate"] = rate

    default_id = session.scalar(select(Currency.id).where(Currency.is_default.is_(True)).limit(1))
    is_default = is_true(data.get("is_default"))
    if not is_default and (default_id is None or (current is not None and default_id == current.id)):
        if default_id is None:
            is_default = True  # the first currency (or the first after a broken setup) is the default
        else:
            errors["is_default"] = str(_l("One currency is the default: make another one the default instead."))
    values["is_default"] = is_default
    editing = current is not None and current.id is not None
    if is_default and default_id is not None and not editing:
        errors["is_default"] = str(_l("Add the currency with its exchange rate first, then make it the default."))
    elif is_default and editing and default_id != current.id:
        values["exchange_rate"] = ONE  # taking over: make_default_currency re-expresses the other rates
        errors.pop("exchange_rate", None)
    elif is_default and rate is not None and rate != ONE:
        errors["exchange_rate"] = str(_l("The default currency's exchange rate is 1 (rates are per 1 unit of it)."))
    if errors:
        raise DomainError(errors)
    return values


ZERO_RATE = Decimal(0)


def make_default_currency(currency: Currency) -> None:
    """`currency` (is_default set, not yet committed) becomes the only default. When it takes over from
    another default, every other rate is re-expressed per 1 unit of it: rate ÷ its previous rate (4 places,
    half-up), so conversions between any two currencies stay what they were."""
    history = inspect(currency).attrs.exchange_rate.history  # before any query autoflushes it away
    previous = Decimal(history.deleted[0]) if history.deleted and history.deleted[0] else ONE
    session = get_session()
    with session.no_autoflush:
        others = [c for c in session.scalars(select(Currency)) if c is not currency]
    if not any(c.is_default for c in others):
        return
    rates = {other.id: max(ledger(Decimal(other.exchange_rate) / previous), Decimal("0.0001"))
             for other in others} if previous != ONE else {}
    too_large = [other.code for other in others if rates.get(other.id, ZERO_RATE) >= MONEY_MAX]
    if too_large:
        raise DomainError(str(_l(
            "Re-expressed per 1 %(code)s, the rate of %(others)s would be too large: change those rates first.",
            code=currency.code, others=", ".join(sorted(too_large)),
        )))
    for other in others:
        other.is_default = False
        if other.id in rates:
            other.exchange_rate = rates[other.id]
    session.flush()


def refuse_delete_currency(currency: Currency) -> None:
    if currency.is_default:
        raise DomainError(str(_l("The default currency cannot be deleted.")))
    if currency_in_use(currency.id):
        raise DomainError(str(_l("This currency is used by clients, prices or documents and cannot be deleted.")))


# --- home companies --------------------------------------------------------------------------------------

LOGO_MAX_BYTES = 256 * 1024
LOGO_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "svg": "image/svg+xml"}
TEXT_MAX = 4000  # bank details, PDF footer
NUMBER_MAX = 60  # Invoice.number
_COMPANY_TEXT = {
    name: getattr(HomeCompany, name)
    for name in ("name", "company_name", "address1", "address2", "city", "postcode", "email", "website")
}
_SAFE_FORMAT = set(string.ascii_letters + string.digits + " -_/.#:{}")


def number_settings_fields(doc_type: str) -> tuple[str, str, str]:
    return f"{doc_type}_format", f"{doc_type}_padding", f"{doc_type}_reset"


def check_numbering(data: Mapping[str, Any], doc_type: str) -> dict[str, Any]:
    """Format / padding / reset of one document type (numbering.check_format), plus: printable characters
    (letters, digits, space and - _ / . # :), and the longest number must fit the 60-character column."""
    f_field, p_field, r_field = number_settings_fields(doc_type)
    fmt = str(data.get(f_field) or "").strip()
    reset = str(data.get(r_field) or "").strip()
    raw_padding = str(data.get(p_field) if data.get(p_field) is not None else "").strip()
    errors: dict[str, str] = {}
    padding = int(raw_padding) if re.fullmatch(r"[0-9]{1,2}", raw_padding) else -1
    if not fmt:
        errors[f_field] = str(_l("This field is required."))
    elif len(fmt) > NUMBER_MAX or set(fmt) - _SAFE_FORMAT:
        errors[f_field] = str(_l("Up to %(n)s letters, digits, spaces, the tokens and - _ / . # :", n=NUMBER_MAX))
    try:
        check_format(fmt or "{NUMBER}", padding, reset)
    except DomainError as exc:
        mapping = {"format": f_field, "padding": p_field, "reset": r_field}
        for key, message in exc.errors.items():
            errors.setdefault(mapping.get(key, f_field), message)
    if not errors:
        longest = format_number(fmt, padding, 10 ** max(padding, 9) - 1, dt.date(2099, 12, 31))
        if len(longest) > NUMBER_MAX:
            errors[f_field] = str(_l("Numbers of this format would exceed %(n)s characters.", n=NUMBER_MAX))
    if errors:
        raise DomainError(errors)
    return {f_field: fmt, p_field: padding, r_field: reset}


def check_website(url: str, field: str = "website") -> str:
    url = (url or "").strip()
    if not url:
        return ""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname or "." not in parts.hostname \
            or any(ch.isspace() for ch in url):
        raise DomainError({field: str(_l("Enter a web address such as https://example.com."))})
    return parts.geturl()


def check_home_company(data: Mapping[str, Any], current: HomeCompany | None = None) -> dict[str, Any]:
    """Validate a home company's legal details, contact, texts, default flag and numbering; returns the
    column values (the logo is handled by `logo_data_uri`). Raises DomainError with every field error."""
    session = get_session()
    errors: dict[str, str] = {}
    values: dict[str, Any] = {
        name: str(data.get(name) or "").strip()
        for name in ("name", "company_name", "address1", "address2", "city", "postcode", "country", "region",
                     "tax_id", "email", "phone", "website")
    }
    for name in ("bank_details", "pdf_footer"):
        values[name] = str(data.get(name) or "").strip().replace("\r\n", "\n")
        if len(values[name]) > TEXT_MAX:
            errors[name] = str(_l("At most %(count)d characters.", count=TEXT_MAX))
    check_texts(errors, values, ("name", "company_name", "address1", "city", "country"), _COMPANY_TEXT)
    if "name" not in errors:
        clash = select(HomeCompany.id).where(HomeCompany.name == values["name"])
        if current is not None and current.id is not None:
            clash = clash.where(HomeCompany.id != current.id)
        if session.scalar(clash) is not None:
            errors["name"] = str(_l("Another home company has this name."))
    country = collect(errors, check_country, values["country"]) if values["country"] else ""
    values["country"] = country or ""
    values["region"] = (collect(errors, check_region, country, values["region"]) or "") if country else ""
    if values["tax_id"]:
        values["tax_id"] = (collect(errors, normalize_tax_id, values["tax_id"], country or "") or "") \
            if country else values["tax_id"]
    if values["email"]:
        values["email"] = collect(errors, normalize_email, values["email"]) or ""
    values["phone"] = collect(errors, normalize_phone, values["phone"], country or None) or ""
    values["website"] = collect(errors, check_website, values["website"]) or ""
    for doc_type in INVOICE_TYPES:
        numbering = collect(errors, check_numbering, data, doc_type)
        if numbering:
            values.update(numbering)

    default_id = session.scalar(select(HomeCompany.id).where(HomeCompany.is_default.is_(True)).limit(1))
    is_default = is_true(data.get("is_default"))
    if not is_default:
        if default_id is None:
            is_default = True
        elif current is not None and current.id == default_id:
            errors["is_default"] = str(_l("One home company is the default: make another one the default instead."))
    values["is_default"] = is_default
    if errors:
        raise DomainError(errors)
    return values


def make_default_company(company: HomeCompany) -> None:
    """`company` becomes the only default (before the save is committed)."""
    query = update(HomeCompany).where(HomeCompany.is_default.is_(True))
    if company.id is not None:
        query = query.where(HomeCompany.id != company.id)
    get_session().execute(query.values(is_default=False).execution_options(synchronize_session="fetch"))


def refuse_delete_company(company: HomeCompany) -> None:
    session = get_session()
    if session.scalar(select(Invoice.id).where(Invoice.home_company_id == company.id).limit(1)) is not None:
        raise DomainError(str(_l("This home company has issued documents and cannot be deleted.")))
    rules = session.scalar(select(func.count(TaxRule.id)).where(TaxRule.home_company_id == company.id))
    if rules:
        raise DomainError(str(_l("%(n)s tax rules bill through this home company: change or delete them first.",
                                 n=rules)))
    if company.is_default and session.scalar(select(HomeCompany.id).where(HomeCompany.id != company.id).limit(1)):
        raise DomainError(str(_l("Make another home company the default before deleting this one.")))


def logo_data_uri(content: bytes) -> str:
    """An uploaded logo → data: URI. PNG, JPEG or SVG (recognised by content, not by name), at most
    LOGO_MAX_BYTES; an SVG must be plain drawing: no scripts, event handlers, external references, DTDs."""
    if not content:
        raise DomainError({"logo": str(_l("The file is empty."))})
    if len(content) > LOGO_MAX_BYTES:
        raise DomainError({"logo": str(_l("The logo may be at most %(kb)s KB.", kb=LOGO_MAX_BYTES // 1024))})
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        kind = "png"
    elif content.startswith(b"\xff\xd8\xff"):
        kind = "jpeg"
    elif _is_safe_svg(content):
        kind = "svg"
    else:
        raise DomainError({"logo": str(_l("Upload a PNG, JPEG or SVG image."))})
    return f"data:{LOGO_TYPES[kind]};base64,{base64.b64encode(content).decode('ascii')}"


_SVG_NS = "{http://www.w3.org/2000/svg}"


def _is_safe_svg(content: bytes) -> bool:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if re.search(r"<!DOCTYPE|<!ENTITY|<\?xml-stylesheet", text, re.IGNORECASE):
        return False
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return False
    if root.tag not in ("svg", f"{_SVG_NS}svg"):
        return False
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1].lower() if isinstance(element.tag, str) else ""
        if tag in ("script", "foreignobject", "iframe", "embed", "object"):
            return False
        for attr, value in element.attrib.items():
            name = attr.rsplit("}", 1)[-1].lower()
            if name.startswith("on"):
                return False
            if name == "href" and not value.strip().startswith(("#", "data:image/")):
                return False
            if "javascript:" in value.lower() or "url(http" in value.lower().replace(" ", ""):
                return False
        if tag == "style" and re.search(r"@import|url\(\s*['\"]?(?!#|data:)", element.text or "", re.IGNORECASE):
            return False
    return True
