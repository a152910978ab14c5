"""Which home company bills a client and which taxes apply.

Rules map client category × country × region to a home company and up to three named taxes; the most
specific rule wins (region > country > category), no rule → the default home company without tax. EU
reverse charge: home company in the EU, client a company in another member state whose VAT id validated
(VIES) → no tax and the legal note on the invoice. A tax-exempt client pays no tax.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from sqlalchemy import or_, select

from ..domain import DomainError
from ..domain.session import get_session
from ..models import Client, HomeCompany, TaxRule
from .money import tax_amount

# EU member states (ISO 3166 codes; VIES says EL for GR).
EU_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)
REVERSE_CHARGE_NOTE = "Reverse charge: VAT to be accounted for by the recipient (Art. 196 Directive 2006/112/EC)."


@dataclass
class TaxDecision:
    home_company: HomeCompany
    taxes: list[tuple[str, Decimal]] = field(default_factory=list)  # (name, rate %), at most three
    reverse_charge: bool = False
    note: str = ""
    rule: TaxRule | None = None


def client_category(client: Client) -> str:
    """private | company (no tax id) | company_tax_id."""
    if not client.company_name:
        return "private"
    return "company_tax_id" if client.tax_id else "company"


def client_location(client: Client) -> tuple[str, str]:
    """(country, region) of the client's billing address."""
    address = client.billing_address
    if address is None:
        return "", ""
    return address.country or "", address.region or ""


def _specificity(rule: TaxRule) -> tuple[int, int, int]:
    return (1 if rule.region else 0, 1 if rule.country else 0, 1 if rule.category else 0)


def find_rule(category: str, country: str, region: str) -> TaxRule | None:
    """The most specific rule matching the category, country and region (each "" in a rule = any)."""
    session = get_session()
    candidates = session.scalars(
        select(TaxRule).where(
            or_(TaxRule.category == "", TaxRule.category == category),
            or_(TaxRule.country == "", TaxRule.country == country),
            or_(TaxRule.region == "", TaxRule.region == region),
        )
    ).all()
    return max(candidates, key=_specificity, default=None)


def default_home_company() -> HomeCompany:
    session = get_session()
    company = session.scalars(
        select(HomeCompany).order_by(HomeCompany.is_default.desc(), HomeCompany.id).limit(1)
    ).first()
    if company is None:
        raise DomainError(str(_l("No home company is configured: add one under Billing → Home Companies.")))
    return company


def reverse_charge_applies(client: Client, company: HomeCompany) -> bool:
    country, _region = client_location(client)
    return (
        bool(client.company_name and client.tax_id)
        and client.vies_status == "valid"
        and company.country in EU_COUNTRIES
        and country in EU_COUNTRIES
        and country != company.country
    )


def tax_for_client(client: Client) -> TaxDecision:
    """Home company and taxes for a document issued to `client` now."""
    country, region = client_location(client)
    rule = find_rule(client_category(client), country, region)
    company = rule.home_company if rule is not None else default_home_company()
    decision = TaxDecision(home_company=company, rule=rule)
    if client.tax_exempt:
        return decision
    if reverse_charge_applies(client, company):
        decision.reverse_charge = True
        decision.note = REVERSE_CHARGE_NOTE
        return decision
    if rule is not None:
        for i in (1, 2, 3):
            name = getattr(rule, f"tax{i}_name")
            if name:
                decision.taxes.append((name, getattr(rule, f"tax{i}_rate")))
    return decision


def tax_lines(subtotal: Decimal, decision: TaxDecision) -> list[tuple[str, Decimal, Decimal]]:
    """(name, rate, amount) per tax, each amount subtotal × rate / 100 rounded to 2 places half-up."""
    return [(name, rate, tax_amount(subtotal, rate)) for name, rate in decision.taxes]
