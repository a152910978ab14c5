"""Display helpers shared by every puqpanel screen (also Jinja globals: puq_money, puq_status_badge,
puq_color_badge, puq_status_label)."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

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


def money(amount: Decimal | None, currency=None) -> str:
    """Amount in the currency's minor units (half-up) with its prefix/suffix, else its code."""
    minor_units = getattr(currency, "minor_units", 2)
    places = Decimal(1).scaleb(-max(0, int(minor_units if minor_units is not None else 2)))
    value = Decimal(amount or 0).quantize(places, rounding=ROUND_HALF_UP)
    sign = "-" if value < 0 else ""
    text = f"{abs(value):,}"
    if currency is None:
        return f"{sign}{text}"
    if currency.prefix or currency.suffix:
        return f"{sign}{currency.prefix}{text}{currency.suffix}"
    return f"{sign}{text} {currency.code}"


def register_template_helpers(app) -> None:
    app.jinja_env.globals.update(
        puq_money=money,
        puq_status_badge=status_badge,
        puq_status_label=status_label,
        puq_color_badge=color_badge,
    )
