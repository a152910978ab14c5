"""Display helpers shared by every puqpanel screen (also Jinja globals: puq_money, puq_status_badge,
puq_color_badge, puq_status_label)."""
from __future__ import annotations

import copy
from decimal import ROUND_HALF_UP, Decimal

from babel import Locale, UnknownLocaleError
from babel.numbers import get_minus_sign_symbol, is_currency
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from markupsafe import Markup

STATUS_LABELS = {
    "new": _l("New"),
    "active": _l("Active"),
    "inactive": _l("Inactive"),
    "suspended": _l("Suspended"),
    "closed": _l("Closed"),
    "fraud": _l("Fraud"),
}
STATUS_CLASSES = {
    "new": "label-info",
    "active": "label-success",
    "inactive": "label-default",
    "suspended": "label-warning",
    "closed": "label-primary",
    "fraud": "label-danger",
}


def status_label(status: str) -> str:
    return str(STATUS_LABELS.get(status, status))


def status_badge(status: str) -> Markup:
    return Markup('<span class="label {} puq-status">{}</span>').format(
        STATUS_CLASSES.get(status, "label-default"), status_label(status)
    )


def color_badge(name: str, color: str) -> Markup:
    """A colour-coded badge; colours are validated as #rrggbb where they are stored."""
    return Markup('<span class="badge" style="background-color:{}">{}</span>').format(color, name)


def _locale(locale=None) -> Locale:
    """The given locale, else the request's (Flask-Babel), else English."""
    if locale is None:
        try:
            locale = get_locale()
        except (RuntimeError, KeyError):  # outside an app context / Babel not initialised
            locale = None
    if isinstance(locale, Locale):
        return locale
    try:
        return Locale.parse(str(locale or "en").replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        return Locale.parse("en")


def money(amount: Decimal | None, currency=None, locale=None) -> str:
    """An amount formatted per currency and locale.

    Rounded half-up to the currency's minor units first, then Babel's currency pattern of the locale
    (the request's unless `locale` is given) with exactly that many decimals: "€1,234.50" in en,
    "1.234,50 €" in de. A code Babel doesn't know (not ISO 4217) falls back to the currency's prefix /
    suffix (else "1,234.50 XYZ") with the locale's number format. Without a currency: the number alone.
    """
    minor_units = getattr(currency, "minor_units", 2)
    minor_units = min(8, max(0, int(minor_units if minor_units is not None else 2)))
    value = Decimal(amount or 0).quantize(Decimal(1).scaleb(-minor_units), rounding=ROUND_HALF_UP)
    loc = _locale(locale)
    code = str(getattr(currency, "code", "") or "").upper()
    if currency is not None and code and is_currency(code):
        pattern = copy.copy(loc.currency_formats["standard"])
        pattern.frac_prec = (minor_units, minor_units)
        return pattern.apply(value, loc, currency=code, currency_digits=False)
    pattern = copy.copy(loc.decimal_formats[None])
    pattern.frac_prec = (minor_units, minor_units)
    text = pattern.apply(abs(value), loc)
    sign = get_minus_sign_symbol(loc) if value < 0 else ""
    if currency is None:
        return f"{sign}{text}"
    if currency.prefix or currency.suffix:
        return f"{sign}{currency.prefix}{text}{currency.suffix}"
    return f"{sign}{text} {code}".strip()


def register_template_helpers(app) -> None:
    app.jinja_env.globals.update(
        puq_money=money,
        puq_status_badge=status_badge,
        puq_status_label=status_label,
        puq_color_badge=color_badge,
    )
