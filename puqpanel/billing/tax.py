"""Which home company bills a client and which taxes apply.

Rules map client category × country × region to a home company and up to three named taxes; the most
specific rule wins (region > country > category; "" in a rule = any), no rule → the default home company
without tax. EU reverse charge: home company in the EU, client a company with a VAT id of another member
state (the state of its billing address) whose last conclusive VIES check was "valid" → no tax and the legal
note on the invoice; a later "invalid" answer revokes it for every document issued afterwards. A tax-exempt
client pays no tax (the rule still chooses the home company).

Tax amounts: each line is subtotal × rate / 100 rounded to 2 places half-up on its own (Quebec's QST is
levied on the price, not on price + GST, since 2013), see `tax_lines`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping

from flask_babel import lazy_gettext as _l
from sqlalchemy import or_, select

from ..domain import DomainError, collect
from ..domain.session import get_session
from ..domain.validation import check_country, check_region, parse_id
from ..models import TAX_CATEGORIES, Client, HomeCompany, TaxRule
from .money import HUNDRED, parse_amount, tax_amount

# EU member states (ISO 3166 codes; VIES says EL for GR).
EU_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)


def N_(message: str) -> str:
    """Marks a string for extraction (scripts/translations.sh) without translating it here."""
    return message


# Stored in English in the document's snapshot; translated when shown (invoice page, PDF).
REVERSE_CHARGE_NOTE = N_("Reverse charge: VAT to be accounted for by the recipient (Art. 196 Directive 2006/112/EC).")
MAX_TAXES = 3
TAX_NAME_LENGTH = 30
CATEGORY_LABELS = {
    "": _l("Any client"),
    "private": _l("Private person"),
    "company": _l("Company without tax id"),
    "company_tax_id": _l("Company with tax id"),
}
RULE_FIELDS = ("category", "country", "region", "home_company_id") + tuple(
    f"tax{i}_{part}" for i in range(1, MAX_TAXES + 1) for part in ("name", "rate")
)


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


def vies_country_code(country: str) -> str:
    """The VIES / VAT-number prefix of an ISO 3166 country (EL for Greece)."""
    country = (country or "").upper()
    return "EL" if country == "GR" else country


def vat_number_country(tax_id: str | None, country: str) -> str:
    """ISO country of a VAT number: its letter prefix (EL → GR), else the given (billing) country."""
    text = (tax_id or "").strip().upper()
    if len(text) > 2 and text[:2].isalpha():
        return "GR" if text[:2] == "EL" else text[:2]
    return (country or "").upper()


def _specificity(rule: TaxRule) -> tuple[int, int, int]:
    return (1 if rule.region else 0, 1 if rule.country else 0, 1 if rule.category else 0)


def find_rule(category: str, country: str, region: str) -> TaxRule | None:
    """The most specific rule matching the category, country and region (each "" in a rule = any).

    Region beats country beats category: a (any category, CA, CA-QC) rule wins over (private, CA, any).
    The unique scope (category, country, region) leaves at most one rule per specificity."""
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
    """Home company in the EU; the client a company with a VAT id that VIES last answered "valid"; the VAT
    id's member state is the client's billing country and differs from the home company's country."""
    country, _region = client_location(client)
    return (
        bool(client.company_name and client.tax_id)
        and client.vies_status == "valid"
        and company.country in EU_COUNTRIES
        and country in EU_COUNTRIES
        and vat_number_country(client.tax_id, country) == country
        and country != company.country
    )


def rule_taxes(rule: TaxRule | None) -> list[tuple[str, Decimal]]:
    """(name, rate %) of a rule's named taxes, in order."""
    if rule is None:
        return []
    taxes = []
    for i in range(1, MAX_TAXES + 1):
        name = getattr(rule, f"tax{i}_name")
        if name:
            taxes.append((name, Decimal(getattr(rule, f"tax{i}_rate"))))
    return taxes


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
    decision.taxes = rule_taxes(rule)
    return decision


def tax_lines(subtotal: Decimal, decision: TaxDecision) -> list[tuple[str, Decimal, Decimal]]:
    """(name, rate, amount) per tax, each amount subtotal × rate / 100 rounded to 2 places half-up."""
    return [(name, rate, tax_amount(subtotal, rate)) for name, rate in decision.taxes]


# --- rule validation (staff screens, API, rule sets) ------------------------------------------------------


def parse_number(raw: Any, field_name: str, **kwargs) -> Decimal:
    """money.parse_amount, with inputs too long for the decimal context (e.g. 30 digits, 1e400: its quantize
    raises InvalidOperation) refused like any other bad amount."""
    try:
        return parse_amount(raw, field_name, **kwargs)
    except ArithmeticError:
        raise DomainError({field_name: str(_l("Enter an amount such as 12.50."))}) from None


def parse_rate(raw: Any, field_name: str) -> Decimal:
    """A tax rate in percent: 0 to 100 with at most 4 decimal places."""
    rate = parse_number(raw, field_name, allow_zero=True)
    if rate > HUNDRED:
        raise DomainError({field_name: str(_l("A rate is between 0 and 100."))})
    return rate


def check_rule(data: Mapping[str, Any], rule_id: int | None = None) -> dict[str, Any]:
    """Validate a tax rule given as form-like values (RULE_FIELDS); returns the column values.

    Category one of TAX_CATEGORIES or "" (any); country "" (any) or ISO 3166-1; region "" (any) or a
    subdivision of that country; an existing home company; up to three taxes, each a name of at most 30
    characters with a rate of 0–100 % (≤ 4 places), filled in order, names distinct; the scope (category,
    country, region) unique. Raises DomainError with every field error."""
    errors: dict[str, str] = {}
    text = {name: str(data.get(name) if data.get(name) is not None else "").strip() for name in RULE_FIELDS}
    values: dict[str, Any] = {}

    category = text["category"]
    if category not in ("", *TAX_CATEGORIES):
        errors["category"] = str(_l("Choose a client category."))
    values["category"] = category

    country = text["country"].upper()
    if country:
        country = collect(errors, check_country, country) or ""
    values["country"] = country
    region = text["region"].upper()
    if region and not country and "country" not in errors:
        errors["region"] = str(_l("Choose the country of the region."))
    elif region and country:
        region = collect(errors, check_region, country, region) or ""
    values["region"] = region if country else ""

    company_id = collect(errors, parse_id, text["home_company_id"], "home_company_id", True)
    if company_id is not None and get_session().get(HomeCompany, company_id) is None:
        errors["home_company_id"] = str(_l("Choose a home company."))
    values["home_company_id"] = company_id

    names_seen: set[str] = set()
    gap_at = None
    for i in range(1, MAX_TAXES + 1):
        name_field, rate_field = f"tax{i}_name", f"tax{i}_rate"
        name, raw_rate = text[name_field], text[rate_field]
        values[name_field], values[rate_field] = "", Decimal("0")
        if not name:
            if raw_rate and collect(errors, parse_rate, raw_rate, rate_field):  # a non-zero rate
                errors[name_field] = str(_l("Name the tax of this rate."))
            gap_at = gap_at or i
            continue
        if gap_at is not None:
            errors[f"tax{gap_at}_name"] = str(_l("Fill the taxes in order: this one comes first."))
        if len(name) > TAX_NAME_LENGTH:
            errors[name_field] = str(_l("At most %(count)d characters.", count=TAX_NAME_LENGTH))
        elif name.lower() in names_seen:
            errors[name_field] = str(_l("Each tax of a rule needs its own name."))
        names_seen.add(name.lower())
        values[name_field] = name
        if not raw_rate:
            errors[rate_field] = str(_l("Give the rate in percent."))
        else:
            values[rate_field] = collect(errors, parse_rate, raw_rate, rate_field)

    if not errors:
        clash = select(TaxRule.id).where(
            TaxRule.category == values["category"], TaxRule.country == values["country"],
            TaxRule.region == values["region"],
        )
        if rule_id is not None:
            clash = clash.where(TaxRule.id != rule_id)
        if get_session().scalar(clash) is not None:
            errors["category"] = str(_l("A rule for this category, country and region already exists."))
    if errors:
        raise DomainError(errors)
    return values


def format_rate(rate: Decimal) -> str:
    """9.9750 → "9.975", 20.0000 → "20"."""
    return f"{Decimal(rate).normalize():f}"


def describe_taxes(rule: TaxRule) -> str:
    """"GST 5 % + QST 9.975 %", or "—" for a rule without tax."""
    return " + ".join(f"{name} {format_rate(rate)} %" for name, rate in rule_taxes(rule)) or "—"
