"""Shared column types and mixins."""
from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import BigInteger, DateTime, Numeric, func
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

MONEY_PLACES = Decimal("0.0001")
_SCALE = 10_000
# Largest amount accepted from input: fits NUMERIC(20, 4) and the scaled BIGINT (≈ 9.2e14) alike.
MONEY_MAX = Decimal("100000000000000")  # 1e14


class Money(TypeDecorator):
    """Exact Decimal with 4 places: NUMERIC(20, 4) on PostgreSQL, a scaled BIGINT elsewhere.

    SQLite has no exact decimal type (NUMERIC affinity degrades to REAL), so there the value is kept as
    an integer number of 1/10000 units; sums and differences stay exact in SQL on both backends.
    """

    impl = Numeric(20, 4)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(20, 4, asdecimal=True))
        return dialect.type_descriptor(BigInteger())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = Decimal(value).quantize(MONEY_PLACES, rounding=ROUND_HALF_UP)
        if dialect.name == "postgresql":
            return value
        return int(value * _SCALE)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "postgresql":
            return Decimal(value).quantize(MONEY_PLACES)
        return (Decimal(int(value)) / _SCALE).quantize(MONEY_PLACES)


ZERO = Decimal("0.0000")


def utcnow() -> dt.datetime:
    """Naive UTC timestamp (all DateTime columns hold UTC)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime, default=utcnow, server_default=func.now(), nullable=False, index=True
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime, default=utcnow, onupdate=utcnow, server_default=func.now(), nullable=False
    )
