"""The catalog: products' prices per currency × billing period, and their conversion by exchange rate.

A price row holds three amounts (4 places, ≥ 0): setup (charged once when the service is activated), base
(charged per period) and idle (charged per period instead of base while the service is idle). One row per
product × currency × period (unique key in the database, checked here first for a readable error).

Conversion (`convert_product_prices`): when `product.convert_prices` is on, the default currency's rows are
the source of truth; every other currency gets, for each period of a default row, a row whose amounts are
default amount × currency rate / default rate (money.convert, 4 places half-up) and `converted_at` set.
Rows of other currencies are then read-only in the price screen (the next conversion would overwrite
them). Rows of periods the default currency no longer offers are left alone (services may still use them;
delete them by hand when unused).
"""
from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select, update
from sqlalchemy.orm import contains_eager

from ..domain import DomainError, NotFound, activity
from ..domain.session import get_session, transaction
from ..domain.validation import parse_id
from ..models import PERIODS, Currency, Product, ProductPrice, Service
from ..models.base import MONEY_MAX
from . import clock
from .money import ZERO, convert, parse_amount

PERIOD_LABELS = {
    "one_time": _l("One-time"),
    "hourly": _l("Hourly"),
    "daily": _l("Daily"),
    "weekly": _l("Weekly"),
    "biweekly": _l("Bi-weekly"),
    "monthly": _l("Monthly"),
    "quarterly": _l("Quarterly"),
    "semiannually": _l("Semi-annually"),
    "annually": _l("Annually"),
    "biennially": _l("Biennially"),
    "triennially": _l("Triennially"),
}
AMOUNT_FIELDS = ("setup", "base", "idle")
# Delays are whole hours; ten years is plenty and keeps dates computable.
MAX_DELAY_HOURS = 87600


def period_label(period: str) -> str:
    return str(PERIOD_LABELS.get(period, period))


def _period_order(price: ProductPrice) -> int:
    return PERIODS.index(price.period) if price.period in PERIODS else len(PERIODS)


def default_currency() -> Currency | None:
    return get_session().scalar(select(Currency).where(Currency.is_default.is_(True)).order_by(Currency.id))


def _lock_product(product_id: int) -> Product:
    """The product row under a write lock until commit (PG: FOR UPDATE; SQLite: a no-op UPDATE first), so
    two conversions / price edits of one product are serialised."""
    session = get_session()
    if session.get_bind().dialect.name == "postgresql":
        query = select(Product).where(Product.id == product_id).with_for_update(of=Product)
    else:
        session.execute(update(Product).where(Product.id == product_id).values(id=Product.id))
        query = select(Product).where(Product.id == product_id)
    product = session.scalars(query.execution_options(populate_existing=True)).first()
    if product is None:
        raise NotFound(str(_l("Product not found.")))
    return product


# -- reading ---------------------------------------------------------------------------------------------------

def product_prices(product: Product) -> list[ProductPrice]:
    """Every price of the product (currency joined), by currency code then period order."""
    rows = list(get_session().scalars(select(ProductPrice).where(ProductPrice.product_id == product.id)))
    return sorted(rows, key=lambda p: (p.currency.code, _period_order(p)))


def prices_for(product: Product, currency: Currency) -> list[ProductPrice]:
    """The product's prices in that currency, in period order."""
    rows = get_session().scalars(
        select(ProductPrice).where(ProductPrice.product_id == product.id, ProductPrice.currency_id == currency.id)
    )
    return sorted(rows, key=_period_order)


def orderable_prices(currency: Currency) -> list[ProductPrice]:
    """Prices in `currency` of every product that is not retired (product loaded with them, one query),
    ordered by product name then period — the Add Service form's choices."""
    rows = get_session().scalars(
        select(ProductPrice)
        .join(ProductPrice.product)
        .options(contains_eager(ProductPrice.product))
        .where(ProductPrice.currency_id == currency.id, Product.retired.is_(False))
        .order_by(Product.name, Product.id)
    ).unique()
    return sorted(rows, key=lambda p: (p.product.name, p.product_id, _period_order(p)))


def services_per_price(product: Product) -> dict[int, int]:
    """{price id: number of services using it} for the product's prices."""
    rows = get_session().execute(
        select(Service.price_id, func.count())
        .join(ProductPrice, ProductPrice.id == Service.price_id)
        .where(ProductPrice.product_id == product.id)
        .group_by(Service.price_id)
    )
    return {price_id: count for price_id, count in rows}


# -- product settings ------------------------------------------------------------------------------------------

def check_product_settings(data: Mapping[str, Any]) -> dict[str, str]:
    """Field errors of a product's settings (the product form validates the same bounds)."""
    errors: dict[str, str] = {}
    for name in ("termination_delay_hours", "cancellation_delay_hours"):
        value = data.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_DELAY_HOURS:
            errors[name] = str(_l("Whole hours from 0 to %(max)d.", max=MAX_DELAY_HOURS))
    from . import provisioning

    if data.get("module") not in provisioning.names():
        errors["module"] = str(_l("Not a valid choice."))
    return errors


# -- price rows ------------------------------------------------------------------------------------------------

def parse_amounts(data: Mapping[str, Any]) -> dict[str, Decimal]:
    """setup / base / idle from a form: Decimal ≥ 0 with at most 4 places; base is required, a blank setup
    or idle means 0. DomainError with every bad field at once."""
    errors: dict[str, str] = {}
    amounts: dict[str, Decimal] = {}
    for name in AMOUNT_FIELDS:
        raw = data.get(name)
        if name != "base" and not str(raw if raw is not None else "").strip():
            amounts[name] = ZERO
            continue
        try:
            amounts[name] = parse_amount(raw, name, allow_zero=True)
        except DomainError as exc:
            errors.update(exc.errors)
    if errors:
        raise DomainError(errors)
    return amounts


def _check_editable(product: Product, currency: Currency) -> None:
    if product.convert_prices and not currency.is_default:
        raise DomainError(str(_l(
            "Prices in %(code)s are converted from the default currency for this product; edit the default "
            "currency's price or turn conversion off.", code=currency.code,
        )))


def get_price(product: Product, price_id: int) -> ProductPrice:
    price = get_session().scalar(
        select(ProductPrice).where(ProductPrice.id == price_id, ProductPrice.product_id == product.id)
    )
    if price is None:
        raise NotFound(str(_l("Price not found.")))
    return price


def add_price(product: Product, data: Mapping[str, Any]) -> ProductPrice:
    """A new price row: currency_id, period, setup, base, idle from a form."""
    errors: dict[str, str] = {}
    currency = None
    try:
        currency_id = parse_id(data.get("currency_id"), "currency_id", required=True)
        currency = get_session().get(Currency, currency_id)
        if currency is None:
            errors["currency_id"] = str(_l("Not a valid choice."))
    except DomainError as exc:
        errors.update(exc.errors)
    period = str(data.get("period") or "")
    if period not in PERIODS:
        errors["period"] = str(_l("Not a valid choice."))
    try:
        amounts = parse_amounts(data)
    except DomainError as exc:
        errors.update(exc.errors)
    if errors:
        raise DomainError(errors)
    with transaction():
        product = _lock_product(product.id)
        _check_editable(product, currency)
        exists = get_session().scalar(
            select(ProductPrice.id).where(
                ProductPrice.product_id == product.id,
                ProductPrice.currency_id == currency.id,
                ProductPrice.period == period,
            )
        )
        if exists:
            raise DomainError({"period": str(_l("This product already has a %(period)s price in %(code)s.",
                                                period=period_label(period), code=currency.code))})
        price = ProductPrice(product_id=product.id, currency_id=currency.id, period=period, **amounts)
        get_session().add(price)
        get_session().flush()
        activity.record("product.price_add", object_type="product", object_id=product.id,
                        changes={"price_id": price.id, "currency": currency.code, "period": period,
                                 **{k: str(v) for k, v in amounts.items()}})
    return price


def update_price(product: Product, price_id: int, data: Mapping[str, Any]) -> dict[str, list]:
    """New amounts for an existing price (its currency and period are fixed: services refer to it).
    Returns the changes {field: [before, after]}."""
    price = get_price(product, price_id)
    amounts = parse_amounts(data)
    with transaction():
        product = _lock_product(product.id)
        price = get_price(product, price_id)
        _check_editable(product, price.currency)
        before = activity.snapshot(price, AMOUNT_FIELDS)
        for name, value in amounts.items():
            setattr(price, name, value)
        changes = activity.diff(before, activity.snapshot(price, AMOUNT_FIELDS))
        if changes:
            price.converted_at = None
            activity.record("product.price_update", object_type="product", object_id=product.id,
                            changes={"price_id": price.id, **changes})
    return changes


def delete_price(product: Product, price_id: int) -> None:
    """Delete a price no service uses (otherwise retire the product: its services keep their price)."""
    with transaction():
        product = _lock_product(product.id)
        price = get_price(product, price_id)
        used = get_session().scalar(select(func.count()).select_from(Service).where(Service.price_id == price.id))
        if used:
            raise DomainError(str(_l("%(count)d services use this price; it cannot be deleted.", count=used)))
        activity.record("product.price_delete", object_type="product", object_id=product.id,
                        changes={"price_id": price.id, "currency": price.currency.code, "period": price.period})
        get_session().delete(price)


# -- conversion ------------------------------------------------------------------------------------------------

def convert_product_prices(product: Product) -> int:
    """(Re)derive every non-default currency's prices of the product from its default-currency prices by
    exchange rate (see the module doc). Commits; returns how many rows were created or changed.
    DomainError when the product does not convert, or there is no default currency / default price."""
    if not product.convert_prices:
        raise DomainError(str(_l("This product does not convert its prices.")))
    session = get_session()
    with transaction():
        product = _lock_product(product.id)
        default = default_currency()
        if default is None:
            raise DomainError(str(_l("No default currency is configured.")))
        if not default.exchange_rate or default.exchange_rate <= 0:
            raise DomainError(str(_l("The default currency has no exchange rate.")))
        rows = list(session.scalars(select(ProductPrice).where(ProductPrice.product_id == product.id)))
        sources = {p.period: p for p in rows if p.currency_id == default.id}
        if not sources:
            raise DomainError(str(_l("The product has no price in the default currency (%(code)s).",
                                     code=default.code)))
        existing = {(p.currency_id, p.period): p for p in rows}
        targets = session.scalars(
            select(Currency).where(Currency.id != default.id, Currency.exchange_rate > 0).order_by(Currency.code)
        )
        now = clock.now()
        changed = 0
        for currency in targets:
            for period, source in sources.items():
                amounts = {name: convert(getattr(source, name), default.exchange_rate, currency.exchange_rate)
                           for name in AMOUNT_FIELDS}
                if any(value >= MONEY_MAX for value in amounts.values()):  # beyond what a price column holds
                    raise DomainError(str(_l(
                        "The %(period)s price converted to %(code)s is too large; lower the default currency's "
                        "price or turn conversion off.", period=period_label(period), code=currency.code,
                    )))
                row = existing.get((currency.id, period))
                if row is None:
                    row = ProductPrice(product_id=product.id, currency_id=currency.id, period=period)
                    session.add(row)
                elif all(getattr(row, name) == value for name, value in amounts.items()) and row.converted_at:
                    continue
                for name, value in amounts.items():
                    setattr(row, name, value)
                row.converted_at = now
                changed += 1
        if changed:
            activity.record("product.convert_prices", object_type="product", object_id=product.id,
                            changes={"changed": changed, "source": default.code})
    return changed


def convert_all_prices() -> int:
    """convert_product_prices for every product with conversion on (one commit per product); products
    that can't convert (no default price) are skipped. Returns the number of rows created or changed."""
    ids = list(get_session().scalars(select(Product.id).where(Product.convert_prices.is_(True)).order_by(Product.id)))
    changed = 0
    for product_id in ids:
        product = get_session().get(Product, product_id)
        if product is None:
            continue
        try:
            changed += convert_product_prices(product)
        except DomainError:
            continue
    return changed
