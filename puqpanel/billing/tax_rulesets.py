"""One-click tax rule sets: EU VAT (for a home company in the EU) and Canada GST/HST/PST/QST.

EU (electronically supplied services, VAT Directive art. 58 and the One-Stop Shop since 2021): a private
customer, and a company customer without a VAT id (treated as a consumer), pay the VAT of the customer's
member state at its standard rate. A company with a VAT id pays the same rate; when its id validated in VIES
and its member state differs from the home company's, `tax.tax_for_client` turns that into a reverse charge
(no VAT, legal note) — so a rule never has to encode it and an "invalid" VIES answer revokes it at once.
Each member state gets one rule per client category (three rules), so an admin can change one category
without touching the others. Customers outside the EU are not covered: without a rule they are billed by the
default home company without tax (supplies to non-EU customers are outside the scope of EU VAT).

Canada: federal GST 5 % everywhere (also the country-wide rule for a client without a province), HST in the
harmonised provinces (ON 13 %, NB / NL / PE 15 %, NS 14 % since 1 April 2025), GST + a provincial sales tax in
BC (PST 7 %), MB (RST 7 %) and SK (PST 6 %), GST + QST 9.975 % in Quebec; the territories and Alberta GST only.
Rules apply to every client category ("" = any), since Canada has no reverse charge for these supplies.

Rates are today's standard rates (checked at the time of writing); installing again updates existing rules
of the same scope (category, country, region) to these values and this home company, so re-running after a
rate change is how the set is refreshed. The caller commits (views wrap the call in `transaction()`).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..domain import DomainError
from ..domain.session import get_session
from ..models import TAX_CATEGORIES, HomeCompany, TaxRule
from .tax import EU_COUNTRIES, MAX_TAXES

# Standard VAT rates of the 27 EU member states (ISO 3166 codes; Greece is GR here, EL in VIES).
EU_VAT_RATES = {
    "AT": "20", "BE": "21", "BG": "20", "HR": "25", "CY": "19", "CZ": "21", "DK": "25", "EE": "24",
    "FI": "25.5", "FR": "20", "DE": "19", "GR": "24", "HU": "27", "IE": "23", "IT": "22", "LV": "21",
    "LT": "21", "LU": "17", "MT": "18", "NL": "21", "PL": "23", "PT": "23", "RO": "21", "SK": "23",
    "SI": "22", "ES": "21", "SE": "25",
}
assert set(EU_VAT_RATES) == EU_COUNTRIES

CANADA_GST = (("GST", "5"),)
# Canada by province / territory: up to two named taxes (federal GST or harmonised HST, provincial tax).
CANADA_TAXES = {
    "CA-AB": (("GST", "5"),),
    "CA-BC": (("GST", "5"), ("PST", "7")),
    "CA-MB": (("GST", "5"), ("RST", "7")),
    "CA-NB": (("HST", "15"),),
    "CA-NL": (("HST", "15"),),
    "CA-NS": (("HST", "14"),),
    "CA-NT": (("GST", "5"),),
    "CA-NU": (("GST", "5"),),
    "CA-ON": (("HST", "13"),),
    "CA-PE": (("HST", "15"),),
    "CA-QC": (("GST", "5"), ("QST", "9.975")),
    "CA-SK": (("GST", "5"), ("PST", "6")),
    "CA-YT": (("GST", "5"),),
}


@dataclass
class InstallResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged


def eu_rule_specs() -> list[dict]:
    """(category, country, "") → VAT at the member state's standard rate, for every category."""
    return [
        _spec(category, country, "", (("VAT", rate),))
        for country, rate in EU_VAT_RATES.items()
        for category in TAX_CATEGORIES
    ]


def canada_rule_specs() -> list[dict]:
    """("", CA, "") → GST 5 %, and one rule per province / territory."""
    specs = [_spec("", "CA", "", CANADA_GST)]
    specs += [_spec("", "CA", region, taxes) for region, taxes in CANADA_TAXES.items()]
    return specs


def install_eu_rules(home_company: HomeCompany, *, overwrite: bool = True) -> InstallResult:
    """EU VAT rules billed by `home_company` (which must be in the EU). Idempotent."""
    if home_company.country not in EU_COUNTRIES:
        raise DomainError({"home_company_id": str(_l("EU VAT rules need a home company in the EU."))})
    return install(home_company, eu_rule_specs(), overwrite=overwrite)


def install_canada_rules(home_company: HomeCompany, *, overwrite: bool = True) -> InstallResult:
    """Canadian GST / HST / PST / QST rules billed by `home_company` (which must be in Canada). Idempotent."""
    if home_company.country != "CA":
        raise DomainError({"home_company_id": str(_l("Canada rules need a home company in Canada."))})
    return install(home_company, canada_rule_specs(), overwrite=overwrite)


def install(home_company: HomeCompany, specs: Iterable[dict], *, overwrite: bool = True) -> InstallResult:
    """Create the rules of `specs` that are missing; with `overwrite` also set existing rules of the same
    scope to the spec's taxes and `home_company` (else they are left as they are). Flushes, never commits."""
    session = get_session()
    existing = {(r.category, r.country, r.region): r for r in session.scalars(select(TaxRule))}
    result = InstallResult()
    for spec in specs:
        values = dict(spec, home_company_id=home_company.id)
        rule = existing.get((spec["category"], spec["country"], spec["region"]))
        if rule is None:
            session.add(TaxRule(**values))
            result.created += 1
        elif overwrite and any(_differs(getattr(rule, k), v) for k, v in values.items()):
            for key, value in values.items():
                setattr(rule, key, value)
            result.updated += 1
        else:
            result.unchanged += 1
    session.flush()
    return result


def _spec(category: str, country: str, region: str, taxes) -> dict:
    spec = dict(category=category, country=country, region=region)
    for n in range(1, MAX_TAXES + 1):
        name, rate = taxes[n - 1] if n <= len(taxes) else ("", "0")
        spec[f"tax{n}_name"], spec[f"tax{n}_rate"] = name, Decimal(rate)
    return spec


def _differs(current, wanted) -> bool:
    if isinstance(wanted, Decimal):
        return Decimal(current or 0) != wanted
    return current != wanted
