"""Services and invoices, as far as client management reads them (the billing issue completes them)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask_appbuilder import Model
from sqlalchemy import DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import ZERO, Money, utcnow

SERVICE_STATUSES = ("pending", "active", "suspended", "terminated", "cancelled", "fraud")
INVOICE_TYPES = ("proforma", "invoice", "credit_note")
INVOICE_STATUSES = ("draft", "unpaid", "paid", "invoiced", "refunded", "canceled")


class Service(Model):
    __tablename__ = "puq_service"
    __table_args__ = (Index("ix_puq_service_client_status", "client_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("puq_client.id", ondelete="RESTRICT"), nullable=False)
    status: Mapped[str] = mapped_column(String(20), default="pending", nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class Invoice(Model):
    __tablename__ = "puq_invoice"
    __table_args__ = (Index("ix_puq_invoice_client_status", "client_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("puq_client.id", ondelete="RESTRICT"), nullable=False)
    type: Mapped[str] = mapped_column(String(20), default="proforma", nullable=False)
    status: Mapped[str] = mapped_column(String(20), default="draft", nullable=False)
    total: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
