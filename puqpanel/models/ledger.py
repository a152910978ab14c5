"""The ledger: immutable money movements of a client. The client's balance is the sum of their `net`."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Optional

from flask_appbuilder import Model
from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, event, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import ZERO, Money, utcnow
from .reference import Currency

TRANSACTION_TYPES = ("charge", "payment", "refund", "adjustment")
# 64-bit ids on PostgreSQL (a billing run writes millions of rows); SQLite's rowid is already 64-bit.
LedgerId = BigInteger().with_variant(Integer(), "sqlite")


class Transaction(Model):
    """One ledger row. Never updated or deleted (mapper events here, triggers in the database); a
    correction is a new row. balance_before/after chain per client: each row's before is the previous
    row's after, and after - before == net."""

    __tablename__ = "puq_transaction"
    __table_args__ = (
        Index("ix_puq_transaction_client_id", "client_id", "id"),
        # One charge per service and period start: a re-run or a second worker can't charge twice.
        Index(
            "uq_puq_transaction_service_period",
            "service_id",
            "period_start",
            unique=True,
            postgresql_where=text("type = 'charge'"),
            sqlite_where=text("type = 'charge'"),
        ),
    )

    id: Mapped[int] = mapped_column(LedgerId, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("puq_client.id", ondelete="RESTRICT"), nullable=False)
    type: Mapped[str] = mapped_column(String(20), nullable=False)
    gross: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    net: Mapped[Decimal] = mapped_column(Money, nullable=False)  # signed: + credits the balance, - debits it
    fees: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    balance_before: Mapped[Decimal] = mapped_column(Money, nullable=False)
    balance_after: Mapped[Decimal] = mapped_column(Money, nullable=False)
    currency_id: Mapped[int] = mapped_column(ForeignKey("puq_currency.id"), nullable=False)
    description: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    service_id: Mapped[Optional[int]] = mapped_column(ForeignKey("puq_service.id"), nullable=True)
    period_start: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    period_stop: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    gateway: Mapped[str] = mapped_column(String(50), default="", nullable=False)
    external_id: Mapped[str] = mapped_column(String(100), default="", nullable=False)
    invoice_id: Mapped[Optional[int]] = mapped_column(ForeignKey("puq_invoice.id"), nullable=True, index=True)
    author_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ab_user.id"), nullable=True)
    impersonator_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ab_user.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False, index=True)

    currency: Mapped[Currency] = relationship(lazy="joined")


def _refuse_change(mapper, connection, target):
    raise ValueError("ledger rows are immutable: post a correcting transaction instead")


event.listen(Transaction, "before_update", _refuse_change)
event.listen(Transaction, "before_delete", _refuse_change)
