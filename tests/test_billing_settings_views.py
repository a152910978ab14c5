"""Staff billing settings screens: Currencies, Home Companies, Tax Rules (+ one-click rule sets) and the
Number Series report — through the real forms (CSRF on); bad input is a form error and writes nothing."""
from __future__ import annotations

import base64
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from puqpanel.billing.numbering import assign_number
from puqpanel.models import Currency, HomeCompany, Invoice, TaxRule

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
SAFE_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
EVIL_SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
EVIL_SVG2 = b'<svg xmlns="http://www.w3.org/2000/svg"><image href="https://evil.example/x.png"/></svg>'


@pytest.fixture()
def admin(browser, staff):
    browser.login("admin")
    return browser


def field_errors(html: str) -> str:
    """The text of the form's error messages."""
    return " | ".join(re.findall(r'class="[^"]*(?:text-danger|help-block)[^"]*"[^>]*>\s*([^<]+?)\s*<', html))


def company_form(**overrides) -> dict:
    data = {
        "name": "Demo", "company_name": "Demo GmbH", "address1": "Friedrichstr. 1", "city": "Berlin",
        "postcode": "10117", "country": "DE", "region": "DE-BE", "tax_id": "DE136695976",
        "email": "Billing@Demo.Example", "phone": "030 1234567", "website": "demo.example",
        "bank_details": "IBAN DE89 3704 0044 0532 0130 00", "pdf_footer": "Demo GmbH · HRB 1",
        "proforma_format": "PF-{YEAR}-{NUMBER}", "proforma_padding": "5", "proforma_reset": "yearly",
        "invoice_format": "INV/{YEAR}/{MONTH}/{NUMBER}", "invoice_padding": "4", "invoice_reset": "monthly",
        "credit_note_format": "CN-{NUMBER}", "credit_note_padding": "6", "credit_note_reset": "never",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def add_company(browser, **overrides):
    return browser.post_form("/homecompanyview/add", company_form(**overrides))


# --- currencies ------------------------------------------------------------------------------------------


def test_add_currency_normalises_the_code_and_rate(admin, db, eur):
    resp = admin.post_form("/currencyview/add", {"code": "usd", "prefix": "$", "suffix": "", "minor_units": "2",
                                                 "exchange_rate": "1,085"})
    assert resp.status_code == 302, field_errors(resp.text)
    usd = db.scalar(select(Currency).where(Currency.code == "USD"))
    assert (usd.prefix, usd.minor_units, usd.exchange_rate, usd.is_default) == ("$", 2, Decimal("1.0850"), False)
    page = admin.get("/currencyview/list/").text
    assert "USD" in page and "1.085" in page


BAD_CURRENCIES = [
    ({"code": "XYZ"}, "ISO 4217"),
    ({"code": "EURO"}, "ISO 4217"),
    ({"code": "EUR"}, "already exists"),
    ({"exchange_rate": "0"}, "must not be zero"),
    ({"exchange_rate": "-1"}, "must not be negative"),
    ({"exchange_rate": "1.23456"}, "At most 4 decimal places"),
    ({"exchange_rate": "abc"}, "Enter an amount"),
    ({"exchange_rate": "1e400"}, "Enter an amount such as 12.50."),
    ({"exchange_rate": "9" * 30}, "The amount is too large"),
    ({"minor_units": "9"}, "Between 0 and 4"),
    ({"minor_units": ""}, "Between 0 and 4"),
    ({"prefix": "TOOLONGPREFIX"}, "At most 8 characters"),
    ({"is_default": "y", "exchange_rate": "1"}, "then make it the default"),
]


def test_bad_currency_input_is_a_form_error(admin, db, eur):
    for data, message in BAD_CURRENCIES:
        form = {"code": "USD", "prefix": "$", "suffix": "", "minor_units": "2", "exchange_rate": "1.085", **data}
        resp = admin.post_form("/currencyview/add", form)
        assert resp.status_code == 200, data
        assert message in resp.text, (data, field_errors(resp.text))
    assert db.scalar(select(func.count(Currency.id))) == 1


def test_switching_the_default_currency_re_expresses_the_rates(admin, db, eur):
    db.add_all([Currency(code="USD", prefix="$", exchange_rate=Decimal("1.0850")),
                Currency(code="PLN", suffix=" zł", exchange_rate=Decimal("4.2700"))])
    db.commit()
    usd = db.scalar(select(Currency).where(Currency.code == "USD"))
    resp = admin.post_form(f"/currencyview/edit/{usd.id}", {"code": "USD", "prefix": "$", "suffix": "",
                                                            "minor_units": "2", "exchange_rate": "1.085",
                                                            "is_default": "y"})
    assert resp.status_code == 302, field_errors(resp.text)
    db.expire_all()
    rates = {c.code: (c.exchange_rate, c.is_default) for c in db.scalars(select(Currency))}
    # 1 / 1.085 = 0.92166 → 0.9217; 4.27 / 1.085 = 3.93548 → 3.9355
    assert rates == {"USD": (Decimal("1.0000"), True), "EUR": (Decimal("0.9217"), False),
                     "PLN": (Decimal("3.9355"), False)}
    # The default can't be unticked, and its rate stays 1.
    form = {"code": "USD", "prefix": "$", "suffix": "", "minor_units": "2", "exchange_rate": "1"}
    resp = admin.post_form(f"/currencyview/edit/{usd.id}", form)
    assert resp.status_code == 200 and "make another one the default" in resp.text
    resp = admin.post_form(f"/currencyview/edit/{usd.id}", {**form, "is_default": "y", "exchange_rate": "2"})
    assert resp.status_code == 200 and "exchange rate is 1" in resp.text
    db.expire_all()
    assert db.scalar(select(func.count(Currency.id)).where(Currency.is_default.is_(True))) == 1


def test_default_switch_that_would_overflow_a_rate_is_refused(admin, db, eur):
    db.add_all([Currency(code="IDR", exchange_rate=Decimal("9999999999999")),
                Currency(code="KWD", exchange_rate=Decimal("0.0001"))])
    db.commit()
    kwd = db.scalar(select(Currency).where(Currency.code == "KWD"))
    resp = admin.post_form(f"/currencyview/edit/{kwd.id}", {"code": "KWD", "prefix": "", "suffix": "",
                                                            "minor_units": "3", "exchange_rate": "0.0001",
                                                            "is_default": "y"})
    assert resp.status_code in (200, 302)
    for _ in range(3):  # FAB flashes the refusal and redirects (list → index → directory)
        if resp.status_code != 302:
            break
        resp = admin.get(resp.headers["Location"])
    assert "would be too large" in resp.text and "INSERT" not in resp.text and "UPDATE" not in resp.text
    db.expire_all()
    rates = {c.code: (c.exchange_rate, c.is_default) for c in db.scalars(select(Currency))}
    assert rates["EUR"][1] is True and rates["KWD"] == (Decimal("0.0001"), False)
    assert rates["IDR"][0] == Decimal("9999999999999")


def test_currencies_in_use_or_default_are_not_deleted(admin, db, eur, new_client):
    client = new_client()
    assert client.currency_id == eur.id
    usd = Currency(code="USD", exchange_rate=Decimal("1.1"))
    db.add(usd)
    db.commit()
    resp = admin.post_form(f"/currencyview/edit/{eur.id}", {"code": "GBP", "prefix": "", "suffix": " €",
                                                           "minor_units": "2", "exchange_rate": "1",
                                                           "is_default": "y"})
    assert resp.status_code == 200 and "in use" in resp.text
    admin.post(f"/currencyview/delete/{eur.id}")
    db.expire_all()
    assert db.get(Currency, eur.id) is not None
    admin.post(f"/currencyview/delete/{usd.id}")  # unused: deleted
    db.expire_all()
    assert db.scalar(select(Currency.code).order_by(Currency.code)) == "EUR"
    assert db.scalar(select(func.count(Currency.id))) == 1


# --- home companies --------------------------------------------------------------------------------------


def test_add_home_company_with_logo_and_numbering(admin, db):
    resp = admin.post_form("/homecompanyview/add", {**company_form(), "logo": (io.BytesIO(PNG), "logo.png")})
    assert resp.status_code == 302, field_errors(resp.text)
    company = db.scalar(select(HomeCompany))
    assert (company.email, company.phone, company.website, company.tax_id, company.is_default) == (
        "billing@demo.example", "+49301234567", "https://demo.example", "DE136695976", True)  # the first: default
    assert company.logo == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert (company.invoice_format, company.invoice_padding, company.invoice_reset) == (
        "INV/{YEAR}/{MONTH}/{NUMBER}", 4, "monthly")

    show = admin.get(f"/homecompanyview/show/{company.id}").text
    today = dt.date.today()
    assert f"INV/{today.year}/{today.month:02d}/0001" in show and "CN-000001" in show
    assert '<img src="data:image/png;base64,' in show
    edit = admin.get(f"/homecompanyview/edit/{company.id}").text
    assert 'data-puq-example="invoice"' in edit and "puq-number-example" in edit  # the live example script
    assert 'data-regions-url="/clients/regions/XX"' in edit
    assert base64.b64encode(PNG).decode() not in edit.split("<img", 1)[0]  # the file input carries no value

    # Editing without a new file keeps the logo; "remove" clears it; an SVG is accepted.
    resp = admin.post_form(f"/homecompanyview/edit/{company.id}", company_form(is_default="y", city="Potsdam",
                                                                             region="DE-BB"))
    assert resp.status_code == 302, field_errors(resp.text)
    db.expire_all()
    assert (company.city, company.region, company.logo.startswith("data:image/png")) == ("Potsdam", "DE-BB", True)
    resp = admin.post_form(f"/homecompanyview/edit/{company.id}", {**company_form(is_default="y"),
                                                                  "logo": (io.BytesIO(SAFE_SVG), "logo.svg")})
    assert resp.status_code == 302, field_errors(resp.text)
    db.expire_all()
    assert company.logo.startswith("data:image/svg+xml;base64,")
    resp = admin.post_form(f"/homecompanyview/edit/{company.id}", company_form(is_default="y", remove_logo="y"))
    db.expire_all()
    assert resp.status_code == 302 and company.logo == ""


BAD_COMPANIES = [
    ({"name": ""}, "This field is required"),
    ({"country": "XX"}, "Choose a valid country"),
    ({"region": "FR-75C"}, "Choose a region of the selected country"),
    ({"tax_id": "DE123"}, "not a valid VAT number"),
    ({"email": "not-an-email"}, "valid email"),
    ({"phone": "12"}, "valid phone"),
    ({"website": "javascript:alert(1)"}, "web address"),
    ({"invoice_format": "INV-{YEAR}"}, "{NUMBER} exactly once"),
    ({"invoice_format": "INV-{NUMBER}"}, "monthly reset needs"),
    ({"proforma_format": "PF-{YR}-{NUMBER}"}, "Unknown token"),
    ({"proforma_padding": "13"}, "Padding must be between"),
    ({"credit_note_reset": "weekly"}, "Choose never, monthly or yearly"),
    ({"credit_note_format": "CN<b>{NUMBER}</b>"}, "letters, digits"),
    ({"pdf_footer": "x" * 4001}, "At most 4000 characters"),
    ({"email": "billing@demo%.example"}, "valid email"),  # the message quotes the bad "%"
]


def test_bad_home_company_input_is_a_form_error(admin, db):
    for overrides, message in BAD_COMPANIES:
        resp = add_company(admin, **overrides)
        assert resp.status_code == 200, overrides
        assert message in resp.text, (overrides, field_errors(resp.text))
    assert db.scalar(select(func.count(HomeCompany.id))) == 0


BAD_LOGOS = [
    (b"GIF89a\x01\x00\x01\x00", "logo.gif", "PNG, JPEG or SVG"),
    (b"hello", "logo.png", "PNG, JPEG or SVG"),
    (EVIL_SVG, "logo.svg", "PNG, JPEG or SVG"),
    (EVIL_SVG2, "logo.svg", "PNG, JPEG or SVG"),
    (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaa">]><svg xmlns="http://www.w3.org/2000/svg">&a;</svg>',
     "logo.svg", "PNG, JPEG or SVG"),
    (PNG + b"\0" * (256 * 1024), "big.png", "at most 256 KB"),
]


def test_bad_logos_are_refused(admin, db):
    for content, name, message in BAD_LOGOS:
        resp = admin.post_form("/homecompanyview/add", {**company_form(), "logo": (io.BytesIO(content), name)})
        assert resp.status_code == 200, content[:40]
        assert message in resp.text, (content[:40], field_errors(resp.text))
    assert db.scalar(select(func.count(HomeCompany.id))) == 0


def test_one_default_home_company_and_guarded_deletes(admin, db, new_client):
    assert add_company(admin).status_code == 302
    first = db.scalar(select(HomeCompany))
    assert add_company(admin, name="Maple", company_name="Maple Inc", country="CA", region="CA-ON", tax_id="",
                       phone="+1 416 555 0100", is_default="y").status_code == 302
    db.expire_all()
    second = db.scalar(select(HomeCompany).where(HomeCompany.name == "Maple"))
    assert (first.is_default, second.is_default) == (False, True)
    resp = admin.post_form(f"/homecompanyview/edit/{second.id}", company_form(
        name="Maple", company_name="Maple Inc", country="CA", region="CA-ON", tax_id="", phone="+1 416 555 0100"))
    assert resp.status_code == 200 and "make another one the default" in resp.text

    # The default can't be deleted while others exist; nor a company tax rules or documents use.
    admin.post(f"/homecompanyview/delete/{second.id}")
    db.add(TaxRule(category="", country="FR", region="", home_company_id=first.id, tax1_name="VAT",
                   tax1_rate=Decimal("20")))
    db.commit()
    admin.post(f"/homecompanyview/delete/{first.id}")
    db.expire_all()
    assert db.scalar(select(func.count(HomeCompany.id))) == 2
    db.execute(text("DELETE FROM puq_tax_rule"))
    client = new_client()
    invoice = Invoice(client_id=client.id, home_company=first, currency_id=client.currency_id, type="invoice")
    db.add(invoice)
    assign_number(invoice, dt.date(2026, 1, 1))
    db.commit()
    admin.post(f"/homecompanyview/delete/{first.id}")
    db.expire_all()
    assert db.get(HomeCompany, first.id) is not None


# --- tax rules -------------------------------------------------------------------------------------------


@pytest.fixture()
def companies(db):
    de = HomeCompany(name="Demo GmbH", company_name="Demo GmbH", country="DE", is_default=True)
    ca = HomeCompany(name="Maple Inc", company_name="Maple Inc", country="CA", region="CA-ON")
    db.add_all([de, ca])
    db.commit()
    return de, ca


def rule_form(company, **overrides):
    data = {"category": "", "country": "CA", "region": "CA-QC", "home_company_id": str(company.id),
            "tax1_name": "GST", "tax1_rate": "5", "tax2_name": "QST", "tax2_rate": "9.975",
            "tax3_name": "", "tax3_rate": ""}
    data.update(overrides)
    return data


def test_add_and_edit_tax_rule(admin, db, companies):
    _de, ca = companies
    resp = admin.post_form("/taxruleview/add", rule_form(ca))
    assert resp.status_code == 302, field_errors(resp.text)
    rule = db.scalar(select(TaxRule))
    assert (rule.country, rule.region, rule.tax2_name, rule.tax2_rate, rule.home_company_id) == (
        "CA", "CA-QC", "QST", Decimal("9.975"), ca.id)
    assert "GST 5 % + QST 9.975 %" in admin.get("/taxruleview/list/").text
    edit = admin.get(f"/taxruleview/edit/{rule.id}").text
    assert 'value="9.975"' in edit and '<option selected value="CA-QC">' in edit
    resp = admin.post_form(f"/taxruleview/edit/{rule.id}", rule_form(ca, tax2_rate="9.98"))
    assert resp.status_code == 302
    db.expire_all()
    assert rule.tax2_rate == Decimal("9.98")


BAD_RULES = [
    ({"tax1_rate": "101"}, "between 0 and 100"),
    ({"tax1_rate": "5.12345"}, "At most 4 decimal places"),
    ({"region": "DE-BY"}, "Choose a region of the selected country"),
    ({"country": "", "region": "CA-QC"}, "Choose the country of the region"),
    ({"category": "vip"}, "Choose a client category"),
    ({"home_company_id": "99999"}, "Choose a home company"),
    ({"tax1_name": "X" * 31}, "At most 30 characters"),
    ({"tax3_rate": "2"}, "Name the tax of this rate"),
    ({"tax2_rate": "9" * 30}, "The amount is too large"),
]


def test_bad_tax_rule_input_is_a_form_error(admin, db, companies):
    for overrides, message in BAD_RULES:
        resp = admin.post_form("/taxruleview/add", rule_form(companies[1], **overrides))
        assert resp.status_code == 200, overrides
        assert message in resp.text, (overrides, field_errors(resp.text))
    assert db.scalar(select(func.count(TaxRule.id))) == 0


def test_duplicate_scope_is_a_form_error(admin, db, companies):
    assert admin.post_form("/taxruleview/add", rule_form(companies[1])).status_code == 302
    resp = admin.post_form("/taxruleview/add", rule_form(companies[0]))
    assert resp.status_code == 200 and "already exists" in resp.text
    assert db.scalar(select(func.count(TaxRule.id))) == 1


def test_install_rule_sets_from_the_list_page(admin, db, companies):
    de, ca = companies
    page = admin.get("/taxruleview/list/").text
    assert "Install EU VAT rules" in page and "Install Canada rules" in page
    resp = admin.post_form("/taxruleview/install", {"home_company_id": str(de.id), "ruleset": "eu"},
                           form_url="/taxruleview/list/", follow_redirects=True)
    assert "81 created, 0 updated, 0 unchanged" in resp.text
    resp = admin.post_form("/taxruleview/install", {"home_company_id": str(ca.id), "ruleset": "canada"},
                           form_url="/taxruleview/list/", follow_redirects=True)
    assert "14 created" in resp.text
    resp = admin.post_form("/taxruleview/install", {"home_company_id": str(ca.id), "ruleset": "canada"},
                           form_url="/taxruleview/list/", follow_redirects=True)
    assert "0 created, 0 updated, 14 unchanged" in resp.text
    assert db.scalar(select(func.count(TaxRule.id))) == 95

    for data, message in (
        ({"home_company_id": str(ca.id), "ruleset": "eu"}, "need a home company in the EU"),
        ({"home_company_id": str(de.id), "ruleset": "canada"}, "need a home company in Canada"),
        ({"home_company_id": "99999", "ruleset": "eu"}, "Choose a home company and a rule set"),
        ({"home_company_id": str(de.id), "ruleset": "mars"}, "Choose a home company and a rule set"),
        ({"home_company_id": "x", "ruleset": "eu"}, "Not a valid choice"),
    ):
        resp = admin.post_form("/taxruleview/install", data, form_url="/taxruleview/list/", follow_redirects=True)
        assert resp.status_code == 200 and message in resp.text, data
    assert db.scalar(select(func.count(TaxRule.id))) == 95
    assert admin.get("/taxruleview/install").status_code == 405  # a state change is never a GET


def test_settings_screens_need_their_permissions(make_browser, staff, db, eur, companies):
    billing = make_browser("billing")
    for url in ("/currencyview/list/", "/homecompanyview/list/", "/taxruleview/list/", "/taxruleview/add",
                "/billing/number-series/"):
        assert billing.get(url).status_code == 200, url
    for user in ("support", "manager1"):
        other = make_browser(user)
        for url in ("/currencyview/list/", "/homecompanyview/add", "/taxruleview/list/"):
            assert other.get(url).status_code == 403, (user, url)
        resp = other.post("/taxruleview/install", {"home_company_id": str(companies[0].id), "ruleset": "eu"})
        assert resp.status_code == 403
        resp = other.post("/currencyview/add", {"code": "USD", "minor_units": "2", "exchange_rate": "1.1"})
        assert resp.status_code == 403
        assert other.get("/billing/number-series/").status_code == 200  # show on ClientBilling
    assert db.scalar(select(func.count(TaxRule.id))) == 0
    assert db.scalar(select(func.count(Currency.id))) == 1


# --- number series ---------------------------------------------------------------------------------------


def test_number_series_report_shows_gaps_in_red(admin, db, companies, new_client):
    de, _ca = companies
    client = new_client()
    assert "No document has been numbered yet" in admin.get("/billing/number-series/").text
    ids = []
    for _ in range(4):
        invoice = Invoice(client_id=client.id, home_company=de, currency_id=client.currency_id, type="invoice")
        db.add(invoice)
        assign_number(invoice, dt.date(2026, 5, 1))
        db.commit()
        ids.append(invoice.id)
    page = admin.get("/billing/number-series/").text
    assert "Demo GmbH" in page and "2026" in page and "no gaps" in page and "puq-gap" not in page
    db.execute(text("DELETE FROM puq_invoice WHERE id IN (:a, :b)"), {"a": ids[1], "b": ids[2]})
    db.commit()
    page = admin.get("/billing/number-series/").text
    assert re.search(r'class="text-danger puq-gap"><strong>Missing:</strong>\s*2–3</span>', page)


def test_delete_is_post_only(admin, db, eur):
    usd = Currency(code="USD", exchange_rate=Decimal("1.1"))
    db.add(usd)
    db.commit()
    assert admin.get(f"/currencyview/delete/{usd.id}").status_code == 405
    assert admin.get("/currencyview/download/x").status_code == 404
    db.expire_all()
    assert db.get(Currency, usd.id) is not None
    assert admin.post(f"/currencyview/delete/{usd.id}").status_code == 302
    db.expire_all()
    assert db.get(Currency, usd.id) is None


@pytest.mark.parametrize("base", ["/currencyview", "/homecompanyview", "/taxruleview"])
def test_fab_raw_arguments_are_checked(admin, db, eur, base):
    """FAB hands ids, page numbers and filter values to the database as they come: on PostgreSQL an id
    beyond the integer range, a negative page or a text compared with a boolean column was a 500."""
    name = {"/currencyview": "CurrencyView", "/homecompanyview": "HomeCompanyView", "/taxruleview": "TaxRuleView"}
    for pk in ("99999999999", "abc", "-1", "1.5"):
        assert admin.get(f"{base}/show/{pk}").status_code == 404
        assert admin.get(f"{base}/edit/{pk}").status_code == 404
        assert admin.post(f"{base}/edit/{pk}", {"name": "x"}).status_code == 404
        assert admin.post(f"{base}/delete/{pk}").status_code == 404
    view = name[base]
    for query in (f"page_{view}=-1", f"page_{view}=abc", f"psize_{view}=-5", f"psize_{view}=100000",
                  f"page_{view}=99999999999999"):
        assert admin.get(f"{base}/list/?{query}").status_code == 400, query
    assert admin.get(f"{base}/list/?page_{view}=0&psize_{view}=50").status_code == 200
    assert db.scalar(select(func.count()).select_from(Currency)) == 1


# --- in a real browser: the live example number and the country → region options ---------------------------


@pytest.fixture()
def live_server(app, db):
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.mark.browser
def test_home_company_form_shows_a_live_example_and_regions_in_chromium(live_server, staff, db):
    import os

    from playwright.sync_api import sync_playwright

    from conftest import PASSWORD

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=os.environ.get("PUQPANEL_CHROMIUM", "/usr/bin/chromium"),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"],
        )
        page = chromium.new_page()
        page.set_default_timeout(15000)
        page.goto(f"{live_server}/login/")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_load_state()
        page.goto(f"{live_server}/homecompanyview/add")
        year = dt.date.today().year
        example = page.locator("#invoice_format + p.puq-number-example")
        page.fill("#invoice_format", "INV/{YEAR}/{NUMBER}")
        page.fill("#invoice_padding", "3")
        assert example.inner_text() == f"Example: INV/{year}/001"
        page.fill("#invoice_padding", "6")
        assert example.inner_text() == f"Example: INV/{year}/000001"
        page.select_option("select[name=country]", "CA")
        page.wait_for_selector("select[name=region] option[value='CA-QC']", state="attached")
        page.select_option("select[name=region]", "CA-QC")
        # The other series start from the defaults, and their examples show them.
        assert page.locator("#credit_note_format + p.puq-number-example").inner_text() == f"Example: CN-{year}-00001"
        for name, value in {"name": "Maple", "company_name": "Maple Inc", "address1": "1 Rue", "city": "Québec"}.items():
            page.fill(f"#{name}", value)
        page.click("form [type=submit]")
        page.wait_for_load_state()
        chromium.close()
    company = db.scalar(select(HomeCompany))
    assert (company.country, company.region, company.invoice_format, company.invoice_padding) == (
        "CA", "CA-QC", "INV/{YEAR}/{NUMBER}", 6)
    assert (company.proforma_format, company.proforma_padding, company.proforma_reset) == ("PF-{YEAR}-{NUMBER}", 5,
                                                                                          "yearly")
