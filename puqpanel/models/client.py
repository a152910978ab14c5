"""The client aggregate: client, groups, tags, addresses, users, notes, custom fields."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Optional

from flask_appbuilder import Model
from flask_appbuilder.security.sqla.models import User
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import ZERO, Money, TimestampMixin, utcnow
from .reference import Currency

CLIENT_STATUSES = ("new", "active", "inactive", "suspended", "closed", "fraud")
ADDRESS_TYPES = ("billing", "shipping", "service")
# The eight client-user permission keys of DESIGN.md, in display order.
CLIENT_PERMISSIONS = (
    "modify_profile",
    "manage_users",
    "manage_services",
    "manage_domains",
    "manage_invoices",
    "support_tickets",
    "manage_affiliate",
    "place_orders",
)
CUSTOM_FIELD_TYPES = ("text", "number", "select", "bool", "date")


class ClientGroup(Model):
    __tablename__ = "puq_client_group"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    color: Mapped[str] = mapped_column(String(7), default="#6c757d", nullable=False)
    description: Mapped[str] = mapped_column(Text, default="", nullable=False)

    def __repr__(self) -> str:
        return self.name


class Tag(Model):
    __tablename__ = "puq_tag"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True, nullable=False)
    color: Mapped[str] = mapped_column(String(7), default="#0d6efd", nullable=False)

    def __repr__(self) -> str:
        return self.name


client_tag = Table(
    "puq_client_tag",
    Model.metadata,
    Column("client_id", ForeignKey("puq_client.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("puq_tag.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Client(TimestampMixin, Model):
    """The billable account. Its balance is maintained only by ledger rows (billing package)."""

    __tablename__ = "puq_client"
    __table_args__ = (
        Index("ix_puq_client_status_created", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    firstname: Mapped[str] = mapped_column(String(100), nullable=False)
    lastname: Mapped[str] = mapped_column(String(100), nullable=False)
    company_name: Mapped[str] = mapped_column(String(200), default="", nullable=False)
    tax_id: Mapped[Optional[str]] = mapped_column(String(50), unique=True, nullable=True)
    national_id: Mapped[str] = mapped_column(String(50), default="", nullable=False)  # ID/SSN, staff only
    phone: Mapped[str] = mapped_column(String(20), default="", nullable=False, index=True)  # E.164
    language: Mapped[str] = mapped_column(String(5), default="en", nullable=False)
    currency_id: Mapped[int] = mapped_column(ForeignKey("puq_currency.id"), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(20), default="new", nullable=False)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    blocked_reason: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    never_auto_suspend: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    credit_limit: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    balance: Mapped[Decimal] = mapped_column(Money, default=ZERO, nullable=False)
    tax_exempt: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # Result of the last conclusive VIES check of tax_id: unchecked | valid | invalid (an unavailable
    # answer never overwrites it); reverse charge needs "valid".
    vies_status: Mapped[str] = mapped_column(String(10), default="unchecked", nullable=False)
    vies_checked_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    vies_name: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    vies_error: Mapped[str] = mapped_column(String(60), default="", nullable=False)  # last unavailable answer
    admin_notes: Mapped[str] = mapped_column(Text, default="", nullable=False)
    group_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("puq_client_group.id", ondelete="SET NULL"), nullable=True, index=True
    )
    manager_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("ab_user.id", ondelete="SET NULL"), nullable=True, index=True
    )
    parent_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("puq_client.id", ondelete="SET NULL"), nullable=True, index=True
    )
    is_reseller: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    latitude: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    longitude: Mapped[Optional[float]] = mapped_column(Float, nullable=True)

    currency: Mapped[Currency] = relationship(lazy="joined")
    group: Mapped[Optional[ClientGroup]] = relationship()
    manager: Mapped[Optional[User]] = relationship(foreign_keys=[manager_id])
    parent: Mapped[Optional["Client"]] = relationship(remote_side=[id])
    tags: Mapped[list[Tag]] = relationship(secondary=client_tag, order_by="Tag.name")
    addresses: Mapped[list["ClientAddress"]] = relationship(
        back_populates="client", cascade="all, delete-orphan", order_by="ClientAddress.id"
    )
    users: Mapped[list["ClientUser"]] = relationship(
        back_populates="client", cascade="all, delete-orphan", order_by="ClientUser.id"
    )

    @property
    def name(self) -> str:
        return f"{self.firstname} {self.lastname}".strip()

    @property
    def display_name(self) -> str:
        return self.company_name or self.name

    @property
    def billing_address(self) -> Optional["ClientAddress"]:
        return next((a for a in self.addresses if a.type == "billing"), None)

    @property
    def owner(self) -> Optional[User]:
        return next((cu.user for cu in self.users if cu.is_owner), None)

    def __repr__(self) -> str:
        return f"#{self.id} {self.display_name}"


class ClientAddress(TimestampMixin, Model):
    __tablename__ = "puq_client_address"
    __table_args__ = (
        Index("ix_puq_client_address_client_type", "client_id", "type"),
        Index("ix_puq_client_address_country", "country"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("puq_client.id", ondelete="CASCADE"), nullable=False)
    type: Mapped[str] = mapped_column(String(20), nullable=False)
    name: Mapped[str] = mapped_column(String(100), default="", nullable=False)
    contact_name: Mapped[str] = mapped_column(String(200), default="", nullable=False)
    contact_phone: Mapped[str] = mapped_column(String(20), default="", nullable=False)
    contact_email: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    address1: Mapped[str] = mapped_column(String(200), nullable=False)
    address2: Mapped[str] = mapped_column(String(200), default="", nullable=False)
    city: Mapped[str] = mapped_column(String(100), nullable=False)
    postcode: Mapped[str] = mapped_column(String(20), default="", nullable=False)
    country: Mapped[str] = mapped_column(String(2), nullable=False)  # ISO 3166-1 alpha-2
    region: Mapped[str] = mapped_column(String(10), default="", nullable=False)  # ISO 3166-2 code

    client: Mapped[Client] = relationship(back_populates="addresses")


class ClientUser(TimestampMixin, Model):
    """Links a login (FAB user) to a client, with the owner flag and the client-user permission keys."""

    __tablename__ = "puq_client_user"
    __table_args__ = (UniqueConstraint("client_id", "user_id", name="uq_client_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("puq_client.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False, index=True)
    is_owner: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    permissions: Mapped[list] = mapped_column(JSON, default=list, nullable=False)

    client: Mapped[Client] = relationship(back_populates="users")
    user: Mapped[User] = relationship(lazy="joined")

    def has_permission(self, key: str) -> bool:
        return self.is_owner or key in (self.permissions or [])


class ClientNote(Model):
    """Append-only staff note."""

    __tablename__ = "puq_client_note"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(
        ForeignKey("puq_client.id", ondelete="CASCADE"), nullable=False, index=True
    )
    author_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"), nullable=True)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    sticky: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)

    author: Mapped[Optional[User]] = relationship()


class CustomField(Model):
    """Admin-defined typed field shown on every client record."""

    __tablename__ = "puq_custom_field"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    field_type: Mapped[str] = mapped_column(String(10), default="text", nullable=False)
    options: Mapped[str] = mapped_column(Text, default="", nullable=False)  # select: one option a line
    required: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    regex: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    client_visible: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    sort_order: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    description: Mapped[str] = mapped_column(String(255), default="", nullable=False)

    @property
    def option_list(self) -> list[str]:
        return [o.strip() for o in (self.options or "").splitlines() if o.strip()]

    def __repr__(self) -> str:
        return self.name


class CustomFieldValue(Model):
    __tablename__ = "puq_custom_field_value"
    __table_args__ = (UniqueConstraint("client_id", "field_id", name="uq_custom_field_value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("puq_client.id", ondelete="CASCADE"), nullable=False)
    field_id: Mapped[int] = mapped_column(
        ForeignKey("puq_custom_field.id", ondelete="CASCADE"), nullable=False, index=True
    )
    value: Mapped[str] = mapped_column(Text, default="", nullable=False)

    field: Mapped[CustomField] = relationship(lazy="joined")
