"""Reference data: currencies, home companies (issuing legal entities) and tax rules."""
from __future__ import annotations

from decimal import Decimal

from flask_appbuilder import Model
from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Money, TimestampMixin


class Currency(Model):
    __tablename__ = "puq_currency"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(3), unique=True, nullable=False)  # ISO 4217
    prefix: Mapped[str] = mapped_column(String(8), default="", nullable=False)
    suffix: Mapped[str] = mapped_column(String(8), default="", nullable=False)
    minor_units: Mapped[int] = mapped_column(Integer, default=2, nullable=False)
    # Units of this currency per 1 unit of the default currency.
    exchange_rate: Mapped[Decimal] = mapped_column(Money, default=Decimal("1"), nullable=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)

    def __repr__(self) -> str:
        return self.code


class HomeCompany(TimestampMixin, Model):
    """The provider's legal entity that issues documents."""

    __tablename__ = "puq_home_company"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    company_name: Mapped[str] = mapped_column(String(200), nullable=False)
    address1: Mapped[str] = mapped_column(String(200), default="", nullable=False)
    address2: Mapped[str] = mapped_column(String(200), default="", nullable=False)
    city: Mapped[str] = mapped_column(String(100), default="", nullable=False)
    postcode: Mapped[str] = mapped_column(String(20), default="", nullable=False)
    country: Mapped[str] = mapped_column(String(2), nullable=False)
    region: Mapped[str] = mapped_column(String(10), default="", nullable=False)
    tax_id: Mapped[str] = mapped_column(String(50), default="", nullable=False)
    bank_details: Mapped[str] = mapped_column(Text, default="", nullable=False)
    pdf_footer: Mapped[str] = mapped_column(Text, default="", nullable=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    email: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    phone: Mapped[str] = mapped_column(String(30), default="", nullable=False)
    website: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    # Logo as a data: URI (PNG/JPEG/SVG), embedded in the PDF's HTML as is.
    logo: Mapped[str] = mapped_column(Text, default="", nullable=False)
    # Per document type: number format with tokens {YEAR} {MONTH} {DAY} {NUMBER}, zero padding of
    # {NUMBER}, and when the counter restarts at 1 (never | monthly | yearly).
    proforma_format: Mapped[str] = mapped_column(String(60), default="PF-{YEAR}-{NUMBER}", nullable=False)
    proforma_padding: Mapped[int] = mapped_column(Integer, default=5, nullable=False)
    proforma_reset: Mapped[str] = mapped_column(String(10), default="yearly", nullable=False)
    invoice_format: Mapped[str] = mapped_column(String(60), default="INV-{YEAR}-{NUMBER}", nullable=False)
    invoice_padding: Mapped[int] = mapped_column(Integer, default=5, nullable=False)
    invoice_reset: Mapped[str] = mapped_column(String(10), default="yearly", nullable=False)
    credit_note_format: Mapped[str] = mapped_column(String(60), default="CN-{YEAR}-{NUMBER}", nullable=False)
    credit_note_padding: Mapped[int] = mapped_column(Integer, default=5, nullable=False)
    credit_note_reset: Mapped[str] = mapped_column(String(10), default="yearly", nullable=False)

    def __repr__(self) -> str:
        return self.name


# Client categories of tax rules ("" in a rule = any category).
TAX_CATEGORIES = ("private", "company", "company_tax_id")


class TaxRule(Model):
    """client category × country × region → home company and up to three taxes; most specific wins."""

    __tablename__ = "puq_tax_rule"
    __table_args__ = (UniqueConstraint("category", "country", "region", name="uq_tax_rule_scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # private | company | company_tax_id | "" (any)
    category: Mapped[str] = mapped_column(String(20), default="", nullable=False)
    country: Mapped[str] = mapped_column(String(2), default="", nullable=False)  # "" = any
    region: Mapped[str] = mapped_column(String(10), default="", nullable=False)  # "" = any
    home_company_id: Mapped[int] = mapped_column(ForeignKey("puq_home_company.id"), nullable=False)
    tax1_name: Mapped[str] = mapped_column(String(30), default="", nullable=False)
    tax1_rate: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"), nullable=False)
    tax2_name: Mapped[str] = mapped_column(String(30), default="", nullable=False)
    tax2_rate: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"), nullable=False)
    tax3_name: Mapped[str] = mapped_column(String(30), default="", nullable=False)
    tax3_rate: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"), nullable=False)

    home_company: Mapped[HomeCompany] = relationship()

    def __repr__(self) -> str:
        return f"{self.category or '*'}/{self.country or '*'}/{self.region or '*'}"
