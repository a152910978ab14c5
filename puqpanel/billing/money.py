"""Money rules: Decimal only, half-up rounding at documented points.

- ledger amounts, rates and prices: 4 places (`ledger`)
- invoice item amounts, tax lines and totals: 2 places (`invoice`)
"""
from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from flask_babel import lazy_gettext as _l

from ..domain import DomainError
from ..models.base import MONEY_MAX

LEDGER_PLACES = Decimal("0.0001")
INVOICE_PLACES = Decimal("0.01")
ZERO = Decimal("0.0000")
HUNDRED = Decimal(100)
_AMOUNT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def ledger(value) -> Decimal:
    """Round to the ledger's 4 places, half-up."""
    return Decimal(value).quantize(LEDGER_PLACES, rounding=ROUND_HALF_UP)


def invoice(value) -> Decimal:
    """Round to the invoice's 2 places, half-up."""
    return Decimal(value).quantize(INVOICE_PLACES, rounding=ROUND_HALF_UP)


def tax_amount(base: Decimal, rate_percent: Decimal) -> Decimal:
    """One tax line: base × rate / 100, rounded to 2 places half-up."""
    return invoice(Decimal(base) * Decimal(rate_percent) / HUNDRED)


def convert(amount: Decimal, from_rate: Decimal, to_rate: Decimal) -> Decimal:
    """An amount in a currency with `from_rate` (units per 1 default unit) expressed in one with `to_rate`,
    rounded to 4 places."""
    if not from_rate:
        raise ValueError("exchange rate must not be zero")
    return ledger(Decimal(amount) * Decimal(to_rate) / Decimal(from_rate))


def parse_amount(raw, field: str = "amount", *, places: Decimal = LEDGER_PLACES, allow_negative: bool = False,
                 allow_zero: bool = False) -> Decimal:
    """User input → Decimal, or DomainError({field: message}). Refuses more decimals than `places`, NaN,
    infinity and amounts beyond MONEY_MAX; accepts a decimal comma."""
    text = str(raw if raw is not None else "").strip().replace(" ", "").replace(",", ".")
    if not text:
        raise DomainError({field: str(_l("This field is required."))})
    if not _AMOUNT.fullmatch(text):  # ASCII digits only: Decimal() would also take "1_000", "1e5", "٣"
        raise DomainError({field: str(_l("Enter an amount such as 12.50."))})
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        raise DomainError({field: str(_l("Enter an amount such as 12.50."))}) from None
    if not value.is_finite():
        raise DomainError({field: str(_l("Enter an amount such as 12.50."))})
    if abs(value) >= MONEY_MAX:  # before quantize: 1e400 would overflow the decimal context
        raise DomainError({field: str(_l("The amount is too large."))})
    if value != value.quantize(places, rounding=ROUND_HALF_UP):
        raise DomainError({field: str(_l("At most %(n)s decimal places.", n=-places.as_tuple().exponent))})
    if value < 0 and not allow_negative:
        raise DomainError({field: str(_l("The amount must not be negative."))})
    if value == 0 and not allow_zero:
        raise DomainError({field: str(_l("The amount must not be zero."))})
    return value.quantize(places)
