"""Catalog: products and their prices per currency and billing period."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask_appbuilder import Model
from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import ZERO, Money, TimestampMixin
from .reference import Currency

# Billing periods and their length in hours (one_time has none). Order is the display order.
PERIOD_HOURS: dict[str, int | None] = {
    "one_time": None,
    "hourly": 1,
    "daily": 24,
    "weekly": 168,
    "biweekly": 336,
    "monthly": 720,
    "quarterly": 2160,
    "semiannually": 4320,
    "annually": 8760,
    "biennially": 17520,
    "triennially": 26280,
}
PERIODS = tuple(PERIOD_HOURS)
# Calendar months per period for month-based periods (the paid-until date advances by calendar months).
PERIOD_MONTHS = {"monthly": 1, "quarterly": 3, "semiannually": 6, "annually": 12, "biennially": 24, "triennially": 36}


class Product(TimestampMixin, Model):
    __tablename__ = "puq_product"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(150), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(Text, default="", nullable=False)
    # Monthly prices of this product are charged per started hour (monthly ÷ (days in month × 24)).
    hourly_billing: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    termination_delay_hours: Mapped[int] = mapped_column(Integer, default=48, nullable=False)
    cancellation_delay_hours: Mapped[int] = mapped_column(Integer, default=48, nullable=False)
    # Prices in other currencies are derived from the default currency's by exchange rate.
    convert_prices: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # Provisioning module name (the billing engine calls it); "none" does nothing.
    module: Mapped[str] = mapped_column(String(50), default="none", nullable=False)
    retired: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)  # not orderable any more

    prices: Mapped[list["ProductPrice"]] = relationship(
        back_populates="product", cascade="all, delete-orphan", order_by="ProductPrice.id"
    )

    def __repr__(self) -> str:
        return self.name


class ProductPrice(Model):
    """One orderable price: a product in a currency for a period, with setup, base and idle amounts."""

    __tablename__ = "puq_product_price"
    __table_args__ = (UniqueConstraint("product_id", "currency_id", "period", name="uq_product_price"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("puq_product.id", ondelete="CASCADE"), nullable=False)
    currency_id: Mapped[int] = mapped_column(ForeignKey("puq_currency.id"), nullable=False, index=True)
    period: Mapped[str] = mapped_column(String(20), nullable=False)
    setup: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    base: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    idle: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    # Set when the amounts were derived from the default currency's price (convert_prices).
    converted_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)

    product: Mapped[Product] = relationship(back_populates="prices")
    currency: Mapped[Currency] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"{self.product_id}/{self.period}/{self.currency_id}"
