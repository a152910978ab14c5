"""Tax selection, reverse charge, exemption, rule validation and the one-click EU / Canada rule sets, with
exact expected values."""
from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from puqpanel.billing import tax, tax_rulesets
from puqpanel.billing.tax import (
    REVERSE_CHARGE_NOTE,
    check_rule,
    client_category,
    default_home_company,
    find_rule,
    reverse_charge_applies,
    tax_for_client,
    tax_lines,
)
from puqpanel.domain import DomainError
from puqpanel.models import HomeCompany, TaxRule

D = Decimal


@pytest.fixture(autouse=True)
def no_real_vies(app):
    """Clients made with a VAT id get a VIES check after the save: aim it at a closed local port."""
    saved = app.config.get("PUQPANEL_VIES_URL")
    app.config["PUQPANEL_VIES_URL"] = "http://127.0.0.1:9"
    yield
    if saved is None:
        app.config.pop("PUQPANEL_VIES_URL", None)
    else:
        app.config["PUQPANEL_VIES_URL"] = saved


def company(db, name, country, region="", default=False):
    row = HomeCompany(name=name, company_name=f"{name} Ltd", country=country, region=region, is_default=default)
    db.add(row)
    db.commit()
    return row


def rule(db, home, category="", country="", region="", *taxes):
    values = dict(category=category, country=country, region=region, home_company_id=home.id)
    for n, (name, rate) in enumerate(taxes, start=1):
        values[f"tax{n}_name"], values[f"tax{n}_rate"] = name, D(rate)
    row = TaxRule(**values)
    db.add(row)
    db.commit()
    return row


@pytest.fixture()
def de_company(db):
    return company(db, "Demo GmbH", "DE", "DE-BE", default=True)


def make(new_client, country, region="", company_name="", tax_id="", city="Town"):
    return new_client(country=country, region=region, city=city, phone="", company_name=company_name, tax_id=tax_id)


def set_vies(db, client, status):
    client.vies_status = status
    db.commit()


# --- selection -------------------------------------------------------------------------------------------


def test_most_specific_rule_wins_region_over_country_over_category(db, de_company, new_client):
    other = company(db, "World Inc", "US")
    rule(db, other)  # any / any / any
    rule(db, de_company, "private", "", "", ("VAT", "10"))
    rule(db, de_company, "", "DE", "", ("VAT", "19"))
    rule(db, de_company, "private", "DE", "", ("VAT", "16"))
    rule(db, de_company, "", "DE", "DE-BE", ("VAT", "7"))

    berlin_private = make(new_client, "DE", "DE-BE")
    bavaria_private = make(new_client, "DE", "DE-BY")
    bavaria_company = make(new_client, "DE", "DE-BY", company_name="Muster AG")
    french_private = make(new_client, "FR")
    french_company = make(new_client, "FR", company_name="Exemple SARL")

    assert tax_for_client(berlin_private).taxes == [("VAT", D("7"))]  # region beats private + country
    assert tax_for_client(bavaria_private).taxes == [("VAT", D("16"))]  # private + country beats country
    assert tax_for_client(bavaria_company).taxes == [("VAT", D("19"))]
    assert tax_for_client(french_private).taxes == [("VAT", D("10"))]  # category only
    decision = tax_for_client(french_company)  # only the catch-all matches
    assert (decision.home_company.name, decision.taxes, decision.rule.country) == ("World Inc", [], "")
    assert find_rule("company", "JP", "").home_company_id == other.id


def test_no_rule_falls_back_to_the_default_home_company_without_tax(db, new_client):
    with pytest.raises(DomainError):
        default_home_company()
    company(db, "First", "GB")
    default = company(db, "Second", "DE", default=True)
    client = make(new_client, "IT")
    decision = tax_for_client(client)
    assert (decision.home_company.id, decision.taxes, decision.rule, decision.reverse_charge) == (
        default.id, [], None, False)
    assert tax_lines(D("100.00"), decision) == []


def test_client_categories(db, eur, new_client):
    assert client_category(make(new_client, "DE")) == "private"
    assert client_category(make(new_client, "DE", company_name="A GmbH")) == "company"
    assert client_category(make(new_client, "DE", company_name="B GmbH", tax_id="DE136695976")) == "company_tax_id"


# --- reverse charge --------------------------------------------------------------------------------------


def test_reverse_charge_needs_eu_company_vat_id_validated_and_another_member_state(db, de_company, new_client):
    tax_rulesets.install_eu_rules(de_company)
    db.commit()
    french = make(new_client, "FR", company_name="Exemple SARL", tax_id="FR40303265045")

    assert french.vies_status != "valid"  # the VIES check (closed port) left it unchecked
    assert tax_for_client(french).taxes == [("VAT", D("20"))]  # not validated: French VAT (OSS)
    set_vies(db, french, "valid")
    decision = tax_for_client(french)
    assert (decision.reverse_charge, decision.taxes, decision.note) == (True, [], REVERSE_CHARGE_NOTE)
    assert decision.home_company.id == de_company.id
    assert tax_lines(D("100.00"), decision) == []
    set_vies(db, french, "invalid")  # a later invalid answer revokes it
    assert tax_for_client(french).reverse_charge is False
    assert tax_for_client(french).taxes == [("VAT", D("20"))]

    domestic = make(new_client, "DE", company_name="Muster AG", tax_id="DE136695976")
    set_vies(db, domestic, "valid")
    assert tax_for_client(domestic).reverse_charge is False  # same member state as the home company
    assert tax_for_client(domestic).taxes == [("VAT", D("19"))]

    # A French address with a German VAT id: the id's member state is the home company's — no reverse charge.
    mismatch = make(new_client, "FR", company_name="Mixte SARL", tax_id="DE129273398")
    set_vies(db, mismatch, "valid")
    assert reverse_charge_applies(mismatch, de_company) is False

    private_with_id = make(new_client, "AT", tax_id="ATU13585627")  # no company name: a private person
    set_vies(db, private_with_id, "valid")
    assert tax_for_client(private_with_id).reverse_charge is False
    assert tax_for_client(private_with_id).taxes == [("VAT", D("20"))]


def test_no_reverse_charge_outside_the_eu(db, new_client):
    ca = company(db, "Maple Inc", "CA", "CA-ON", default=True)
    french = make(new_client, "FR", company_name="Exemple SARL", tax_id="FR61954506077")
    set_vies(db, french, "valid")
    assert reverse_charge_applies(french, ca) is False  # home company outside the EU
    de = company(db, "Demo GmbH", "DE")
    swiss = make(new_client, "CH", company_name="Beispiel AG", tax_id="CHE-116.281.710 MWST")
    set_vies(db, swiss, "valid")
    assert reverse_charge_applies(swiss, de) is False  # client outside the EU


def test_tax_exempt_client_pays_nothing_but_keeps_the_rule_company(db, de_company, new_client):
    ca = company(db, "Maple Inc", "CA", "CA-ON")
    tax_rulesets.install_canada_rules(ca)
    db.commit()
    client = make(new_client, "CA", "CA-QC", city="Montréal")
    client.tax_exempt = True
    db.commit()
    decision = tax_for_client(client)
    assert (decision.home_company.id, decision.taxes, decision.reverse_charge, decision.note) == (ca.id, [], False, "")
    assert decision.rule.region == "CA-QC"


# --- Canada, rounding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("region, expected", [
    ("CA-QC", [("GST", D("5"), D("5.00")), ("QST", D("9.975"), D("9.98"))]),
    ("CA-ON", [("HST", D("13"), D("13.00"))]),
    ("CA-NS", [("HST", D("14"), D("14.00"))]),
    ("CA-NB", [("HST", D("15"), D("15.00"))]),
    ("CA-BC", [("GST", D("5"), D("5.00")), ("PST", D("7"), D("7.00"))]),
    ("CA-MB", [("GST", D("5"), D("5.00")), ("RST", D("7"), D("7.00"))]),
    ("CA-SK", [("GST", D("5"), D("5.00")), ("PST", D("6"), D("6.00"))]),
    ("CA-AB", [("GST", D("5"), D("5.00"))]),
    ("", [("GST", D("5"), D("5.00"))]),
])
def test_canadian_provinces_on_100(db, de_company, new_client, region, expected):
    ca = company(db, "Maple Inc", "CA", "CA-ON")
    tax_rulesets.install_canada_rules(ca)
    db.commit()
    client = make(new_client, "CA", region, company_name="Érable Inc", city="Somewhere")
    decision = tax_for_client(client)
    assert decision.home_company.id == ca.id
    assert tax_lines(D("100.00"), decision) == expected


def test_each_tax_line_rounds_half_up_on_two_places_on_its_own(db, de_company, new_client):
    ca = company(db, "Maple Inc", "CA", "CA-ON")
    tax_rulesets.install_canada_rules(ca)
    db.commit()
    quebec = tax_for_client(make(new_client, "CA", "CA-QC", city="Québec"))
    # 2.50 × 5 % = 0.125 → 0.13 (half-up; half-even would give 0.12); 2.50 × 9.975 % = 0.249375 → 0.25
    assert tax_lines(D("2.50"), quebec) == [("GST", D("5"), D("0.13")), ("QST", D("9.975"), D("0.25"))]
    # 10.50 × 9.975 % = 1.047375 → 1.05; QST is on the price, not on price + GST
    assert [line[2] for line in tax_lines(D("10.50"), quebec)] == [D("0.53"), D("1.05")]
    assert [line[2] for line in tax_lines(D("0.10"), quebec)] == [D("0.01"), D("0.01")]  # 0.005 → 0.01


def test_eu_private_clients_pay_their_own_countrys_vat(db, de_company, new_client):
    tax_rulesets.install_eu_rules(de_company)
    db.commit()
    expected = {"FR": "20", "HU": "27", "LU": "17", "FI": "25.5", "GR": "24", "DE": "19"}
    for country, rate in expected.items():
        decision = tax_for_client(make(new_client, country))
        assert decision.taxes == [("VAT", D(rate))], country
        assert decision.home_company.id == de_company.id
    finland = tax_for_client(make(new_client, "FI", company_name="Oy Ab"))
    assert tax_lines(D("100.00"), finland) == [("VAT", D("25.5"), D("25.50"))]


# --- rule sets -------------------------------------------------------------------------------------------


def test_rule_sets_are_idempotent_and_refresh_changed_rules(db, de_company):
    first = tax_rulesets.install_eu_rules(de_company)
    db.commit()
    assert (first.created, first.updated, first.unchanged) == (81, 0, 0)  # 27 states × 3 categories
    again = tax_rulesets.install_eu_rules(de_company)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 81)

    edited = db.scalar(select(TaxRule).where(TaxRule.country == "FR", TaxRule.category == "private"))
    edited.tax1_rate = D("5.5")
    db.commit()
    kept = tax_rulesets.install_eu_rules(de_company, overwrite=False)
    assert (kept.created, kept.updated, kept.unchanged) == (0, 0, 81)
    assert db.get(TaxRule, edited.id).tax1_rate == D("5.5")
    refreshed = tax_rulesets.install_eu_rules(de_company)
    db.commit()
    assert (refreshed.created, refreshed.updated) == (0, 1)
    assert db.get(TaxRule, edited.id).tax1_rate == D("20")

    ca = company(db, "Maple Inc", "CA", "CA-ON")
    result = tax_rulesets.install_canada_rules(ca)
    db.commit()
    assert (result.created, result.total) == (14, 14)  # the country rule + 13 provinces and territories
    assert db.scalar(select(func.count(TaxRule.id))) == 95
    quebec = db.scalar(select(TaxRule).where(TaxRule.region == "CA-QC"))
    assert (quebec.category, quebec.tax1_name, quebec.tax1_rate, quebec.tax2_name, quebec.tax2_rate,
            quebec.tax3_name) == ("", "GST", D("5"), "QST", D("9.975"), "")


def test_rule_sets_refuse_a_company_of_the_wrong_country(db, de_company):
    ca = company(db, "Maple Inc", "CA", "CA-ON")
    with pytest.raises(DomainError) as eu:
        tax_rulesets.install_eu_rules(ca)
    with pytest.raises(DomainError) as canada:
        tax_rulesets.install_canada_rules(de_company)
    assert "home_company_id" in eu.value.errors and "home_company_id" in canada.value.errors
    assert db.scalar(select(func.count(TaxRule.id))) == 0


# --- rule validation -------------------------------------------------------------------------------------


def good(home, **overrides):
    data = {"category": "", "country": "ca", "region": "ca-qc", "home_company_id": str(home.id),
            "tax1_name": "GST", "tax1_rate": "5", "tax2_name": "QST", "tax2_rate": "9,975",
            "tax3_name": "", "tax3_rate": ""}
    data.update(overrides)
    return data


def errors_of(data, rule_id=None):
    with pytest.raises(DomainError) as exc:
        check_rule(data, rule_id)
    return exc.value.errors


def test_check_rule_normalises_a_good_rule(db, de_company):
    values = check_rule(good(de_company))
    assert values == {
        "category": "", "country": "CA", "region": "CA-QC", "home_company_id": de_company.id,
        "tax1_name": "GST", "tax1_rate": D("5.0000"), "tax2_name": "QST", "tax2_rate": D("9.9750"),
        "tax3_name": "", "tax3_rate": D("0"),
    }
    assert check_rule(good(de_company, country="", region="", tax1_name="", tax1_rate="", tax2_name="",
                           tax2_rate="", category="private"))["tax1_name"] == ""
    assert check_rule(good(de_company, tax1_rate="100", tax2_rate="0"))["tax1_rate"] == D("100")


@pytest.mark.parametrize("overrides, field", [
    ({"category": "reseller"}, "category"),
    ({"country": "XX"}, "country"),
    ({"region": "DE-BY"}, "region"),
    ({"country": "", "region": "CA-QC"}, "region"),
    ({"home_company_id": ""}, "home_company_id"),
    ({"home_company_id": "999999"}, "home_company_id"),
    ({"home_company_id": "1e3"}, "home_company_id"),
    ({"tax1_rate": "100.01"}, "tax1_rate"),
    ({"tax1_rate": "-1"}, "tax1_rate"),
    ({"tax1_rate": "5.12345"}, "tax1_rate"),
    ({"tax1_rate": "NaN"}, "tax1_rate"),
    ({"tax1_rate": ""}, "tax1_rate"),
    ({"tax1_name": "T" * 31}, "tax1_name"),
    ({"tax2_name": "gst"}, "tax2_name"),
    ({"tax1_name": "", "tax1_rate": ""}, "tax1_name"),  # tax 2 without tax 1
    ({"tax3_rate": "3"}, "tax3_name"),  # a rate without a name
])
def test_check_rule_refusals(db, de_company, overrides, field):
    assert field in errors_of(good(de_company, **overrides))


def test_check_rule_refuses_a_second_rule_of_the_same_scope(db, de_company):
    existing = rule(db, de_company, "", "CA", "CA-QC", ("GST", "5"))
    assert "category" in errors_of(good(de_company))
    assert check_rule(good(de_company), existing.id)["region"] == "CA-QC"  # editing the rule itself


def test_describe_taxes(db, de_company):
    row = rule(db, de_company, "", "CA", "CA-QC", ("GST", "5"), ("QST", "9.975"))
    assert tax.describe_taxes(row) == "GST 5 % + QST 9.975 %"
    assert tax.describe_taxes(rule(db, de_company)) == "—"
