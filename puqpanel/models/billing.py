"""Services, invoices (proformas, invoices, credit notes), their items and payments, document counters."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Optional

from flask_appbuilder import Model
from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import ZERO, Money, utcnow
from .catalog import Product, ProductPrice
from .reference import Currency, HomeCompany

SERVICE_STATUSES = ("pending", "active", "suspended", "terminated", "cancelled", "fraud")
PROVISION_STATUSES = ("pending", "deploying", "completed", "error", "suspended", "terminated", "cancelled")
# Why a service is suspended: only non-payment suspensions are lifted by the billing engine.
SUSPENSION_KINDS = ("non_payment", "staff")
INVOICE_TYPES = ("proforma", "invoice", "credit_note")
INVOICE_STATUSES = ("draft", "unpaid", "paid", "invoiced", "refunded", "canceled")
# add_funds: paying it credits the balance. items: a bill for goods / work; when paid, its net is also
# charged from the balance (the payment credits, the charge debits: the balance is unchanged).
INVOICE_KINDS = ("add_funds", "items")
NUMBER_RESETS = ("never", "monthly", "yearly")


class Service(Model):
    __tablename__ = "puq_service"
    __table_args__ = (
        Index("ix_puq_service_client_status", "client_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("puq_client.id", ondelete="RESTRICT"), nullable=False)
    product_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("puq_product.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    price_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("puq_product_price.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String(20), default="pending", nullable=False)
    status_reason: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    suspension_kind: Mapped[str] = mapped_column(String(20), default="", nullable=False)
    provision_status: Mapped[str] = mapped_column(String(20), default="pending", nullable=False)
    provision_error: Mapped[str] = mapped_column(Text, default="", nullable=False)
    client_label: Mapped[str] = mapped_column(String(150), default="", nullable=False)
    admin_label: Mapped[str] = mapped_column(String(150), default="", nullable=False)
    admin_notes: Mapped[str] = mapped_column(Text, default="", nullable=False)
    idle: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)  # order date
    activated_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    suspended_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    terminated_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    cancelled_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    termination_requested_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    termination_request_reason: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    # Charged up to here (the billing engine charges in advance from this timestamp on).
    paid_until: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    # Set once the setup fee was charged (so it is never charged twice).
    setup_charged: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # Day of the month that month-based periods end on (Jan 31 → Feb 28 → Mar 31); NULL: the activation
    # day. Billing resumed after a suspension re-anchors on the day it resumed.
    billing_anchor_day: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)

    product: Mapped[Optional[Product]] = relationship()
    price: Mapped[Optional[ProductPrice]] = relationship()


class DocumentCounter(Model):
    """Last number issued per home company × document type × reset period ("" never resets, "2026",
    "2026-11"). Taking a number updates this row inside the issuing transaction: the row lock serialises
    concurrent issuers and a rollback gives the number back, so a series has no gap and no duplicate."""

    __tablename__ = "puq_document_counter"

    home_company_id: Mapped[int] = mapped_column(
        ForeignKey("puq_home_company.id", ondelete="CASCADE"), primary_key=True
    )
    doc_type: Mapped[str] = mapped_column(String(20), primary_key=True)
    period_key: Mapped[str] = mapped_column(String(10), primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class Invoice(Model):
    __tablename__ = "puq_invoice"
    __table_args__ = (
        Index("ix_puq_invoice_client_status", "client_id", "status"),
        # The reminders job reads unpaid documents only.
        Index("ix_puq_invoice_unpaid", "id", postgresql_where=text("status = 'unpaid'"),
              sqlite_where=text("status = 'unpaid'")),
        UniqueConstraint("home_company_id", "type", "number", name="uq_invoice_number"),
        UniqueConstraint("home_company_id", "type", "number_period", "number_seq", name="uq_invoice_number_seq"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("puq_client.id", ondelete="RESTRICT"), nullable=False)
    home_company_id: Mapped[int] = mapped_column(ForeignKey("puq_home_company.id"), nullable=False, index=True)
    currency_id: Mapped[int] = mapped_column(ForeignKey("puq_currency.id"), nullable=False)
    type: Mapped[str] = mapped_column(String(20), default="proforma", nullable=False)
    kind: Mapped[str] = mapped_column(String(20), default="add_funds", nullable=False)
    status: Mapped[str] = mapped_column(String(20), default="draft", nullable=False)
    # Assigned when the document reaches its numbered state; number_seq is the counter value behind it.
    number: Mapped[Optional[str]] = mapped_column(String(60), nullable=True, index=True)
    number_period: Mapped[Optional[str]] = mapped_column(String(10), nullable=True)
    number_seq: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    issue_date: Mapped[Optional[dt.date]] = mapped_column(Date, nullable=True)
    due_date: Mapped[Optional[dt.date]] = mapped_column(Date, nullable=True)
    paid_date: Mapped[Optional[dt.date]] = mapped_column(Date, nullable=True)
    subtotal: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    tax1_name: Mapped[str] = mapped_column(String(30), default="", nullable=False)
    tax1_rate: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    tax1_amount: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    tax2_name: Mapped[str] = mapped_column(String(30), default="", nullable=False)
    tax2_rate: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    tax2_amount: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    tax3_name: Mapped[str] = mapped_column(String(30), default="", nullable=False)
    tax3_rate: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    tax3_amount: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    total: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    # Gross amount received so far (payments of a proforma; outstanding = total - amount_paid).
    amount_paid: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    reverse_charge: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    notes: Mapped[str] = mapped_column(Text, default="", nullable=False)
    # Legal details frozen when the document was issued (editing the client later changes nothing here).
    client_snapshot: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)
    company_snapshot: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)
    # proforma → the paid invoice it became; credit note → the invoice it refunds.
    proforma_id: Mapped[Optional[int]] = mapped_column(ForeignKey("puq_invoice.id"), nullable=True, index=True)
    refunds_invoice_id: Mapped[Optional[int]] = mapped_column(ForeignKey("puq_invoice.id"), nullable=True, index=True)
    created_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    canceled_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)

    currency: Mapped[Currency] = relationship(lazy="joined")
    home_company: Mapped[HomeCompany] = relationship(lazy="joined")
    items: Mapped[list["InvoiceItem"]] = relationship(
        back_populates="invoice", cascade="all, delete-orphan", order_by="InvoiceItem.position"
    )
    payments: Mapped[list["Payment"]] = relationship(
        back_populates="invoice", order_by="Payment.id", foreign_keys="Payment.invoice_id"
    )

    @property
    def outstanding(self) -> Decimal:
        return max(self.total - self.amount_paid, ZERO)

    @property
    def tax_lines(self) -> list[tuple[str, Decimal, Decimal]]:
        """(name, rate %, amount) of the named tax lines."""
        lines = []
        for i in (1, 2, 3):
            name = getattr(self, f"tax{i}_name")
            if name:
                lines.append((name, getattr(self, f"tax{i}_rate"), getattr(self, f"tax{i}_amount")))
        return lines


class InvoiceItem(Model):
    __tablename__ = "puq_invoice_item"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("puq_invoice.id", ondelete="CASCADE"), nullable=False, index=True)
    position: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    description: Mapped[str] = mapped_column(String(255), nullable=False)
    quantity: Mapped[Decimal] = mapped_column(Money, default=Decimal("1"), nullable=False)
    unit_price: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    amount: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)  # quantity × unit price, 2 places
    service_id: Mapped[Optional[int]] = mapped_column(ForeignKey("puq_service.id", ondelete="SET NULL"), nullable=True)

    invoice: Mapped[Invoice] = relationship(back_populates="items")


class Payment(Model):
    """Money received for a document through a gateway. One gateway transaction id is recorded once."""

    __tablename__ = "puq_payment"
    __table_args__ = (UniqueConstraint("gateway", "external_id", name="uq_payment_gateway_txn"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("puq_client.id", ondelete="RESTRICT"), nullable=False, index=True)
    # The proforma it paid, then (when fully paid) the invoice the proforma became.
    invoice_id: Mapped[int] = mapped_column(ForeignKey("puq_invoice.id"), nullable=False, index=True)
    proforma_id: Mapped[Optional[int]] = mapped_column(ForeignKey("puq_invoice.id"), nullable=True)
    gateway: Mapped[str] = mapped_column(String(50), nullable=False)
    external_id: Mapped[str] = mapped_column(String(100), nullable=False)
    amount: Mapped[Decimal] = mapped_column(Money, nullable=False)  # gross received
    fee: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    net: Mapped[Decimal] = mapped_column(Money, nullable=False)  # the part credited to the balance (tax excluded)
    paid_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False)
    transaction_id: Mapped[Optional[int]] = mapped_column(ForeignKey("puq_transaction.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)

    invoice: Mapped[Invoice] = relationship(back_populates="payments", foreign_keys=[invoice_id])

