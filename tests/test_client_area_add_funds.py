"""Client area Add Funds: the recommended amount, the limits, the quote (taxes, total, balance after) rendered
for the prefilled amount and served as JSON for the page's script, Top Up Now → proforma → paid with the test
gateway → paid invoice, ledger row, balance and PDF — and the refusals: amounts out of bounds or malformed
(clear message, nothing written), another client never touched, no CSRF token → 400, no manage_invoices →
403."""
from __future__ import annotations

import re
from decimal import Decimal

import pytest
from sqlalchemy import select

from puqpanel.models import ActivityLog, Client, Invoice, Payment, Transaction, User
from puqpanel.domain.client_users import create_and_associate

from conftest import PASSWORD
from test_client_area_invoices import pay_form
from test_invoicing import count, frozen, home, seed_balance  # noqa: F401

D = Decimal
PAGE = "/client/add-funds/"
QUOTE = "/client/add-funds/quote"
OWNER = "owner1@example.com"


def money(value: str) -> str:
    from flask import current_app

    from puqpanel.extensions import db as fsa
    from puqpanel.models import Currency

    eur = fsa.session.scalar(select(Currency).where(Currency.code == "EUR"))
    return current_app.jinja_env.globals["puq_money"](D(value), eur)


@pytest.fixture()
def mine(db, new_client, home, frozen):
    return new_client(company_name="Mine GmbH", password=PASSWORD)


@pytest.fixture()
def other(db, mine, new_client):
    client = new_client(company_name="Other GmbH", password=PASSWORD)
    seed_balance(client, "40")
    return client


@pytest.fixture()
def owner(mine, other, make_browser):
    return make_browser(OWNER)


def state(db):
    db.expire_all()
    return (count(db, Invoice), count(db, Payment), count(db, Transaction), count(db, ActivityLog),
            sorted((c.id, c.balance) for c in db.scalars(select(Client))))


def balance(db, client) -> Decimal:
    db.expire_all()
    return db.get(Client, client.id).balance


def figure(html: str, css: str) -> str:
    match = re.search(rf'class="[^"]*{css}[^"]*">(?:<strong>)?([^<]*)<', html)
    assert match, css
    return match.group(1).strip()


# -- the page ----------------------------------------------------------------------------------------------
def test_page_shows_recommendation_limits_and_the_prefilled_quote(app, db, mine, owner):
    resp = owner.get(PAGE)
    assert resp.status_code == 200
    html = resp.text
    # nothing due: no recommendation banner (nothing is needed); the minimum is prefilled
    assert "puq-recommended" not in html and money("10") in html
    assert 'id="puq-add-funds-amount" name="amount" value="10.00"' in html
    assert f"Min {money('10')}, max {money('10000')}" in html and money("100000") in html
    assert "EUR" in figure(html, "puq-add-funds-currency")
    # server-rendered figures (23 % VAT of the home fixture)
    assert figure(html, "puq-q-net") == money("10")
    assert re.search(r"VAT 23%</th><td[^>]*>" + re.escape(money("2.30")), html)
    assert figure(html, "puq-q-total") == money("12.30")
    assert figure(html, "puq-q-after") == money("10")
    assert "Top Up Now" in html
    # the live script: nonce'd inline script calling the quote endpoint
    assert re.search(r'<script nonce="[^"]*">\s*\(function \(\) \{', html) and '"/client/add-funds/quote"' in html


def test_recommendation_covers_a_negative_balance(app, db, mine, owner):
    seed_balance(mine, "-57.25")
    html = owner.get(PAGE).text
    assert re.search(r"Recommended amount: " + re.escape(money("57.25")), html)
    assert 'name="amount" value="57.25"' in html
    assert figure(html, "puq-q-after") == money("0")
    assert figure(html, "puq-q-total") == money("70.42")  # 57.25 + 13.17 VAT (half-up)
    other = owner.get(f"{PAGE}?amount=100").text
    assert "puq-use-recommended" in other  # another amount typed: the recommendation is offered as a link


def test_amount_in_the_address_prefills_the_form(app, db, mine, owner):
    html = owner.get(f"{PAGE}?amount=100").text
    assert 'name="amount" value="100"' in html
    assert figure(html, "puq-q-total") == money("123")
    assert "puq-use-recommended" not in html  # nothing is due: no recommendation to offer
    bad = owner.get(f"{PAGE}?amount=abc")
    assert bad.status_code == 200 and "Enter an amount such as 12.50." in bad.text
    assert figure(bad.text, "puq-q-total") == "—"


def test_balance_at_its_maximum_closes_the_form(app, db, mine, owner):
    seed_balance(mine, "100000")
    html = owner.get(PAGE).text
    assert "puq-add-funds-closed" in html and "puq-add-funds-form" not in html and "puq-recommended" not in html
    resp = owner.post(PAGE, {"amount": "10"})
    assert resp.status_code == 400 and "no funds can be added now" in resp.text


# -- quote endpoint ----------------------------------------------------------------------------------------
def test_quote_json(app, db, mine, owner):
    seed_balance(mine, "5.5")
    resp = owner.get(QUOTE, query_string={"amount": "99.99"})
    assert resp.status_code == 200
    data = resp.get_json()
    assert data["net"] == "99.99" and data["total"] == "122.99" and data["currency"] == "EUR"
    assert data["taxes"] == [{"name": "VAT", "rate": "23", "amount": "23.00", "amount_text": money("23.00")}]
    assert D(data["balance_after"]) == D("105.49") and data["balance_after_text"] == money("105.49")
    assert data["total_text"] == money("122.99") and data["reverse_charge"] is False


def test_round_tax_rates_print_plainly(app, db, mine, owner, home):
    from puqpanel.models import TaxRule

    db.scalar(select(TaxRule)).tax1_rate = D("20")
    db.commit()
    html = owner.get(f"{PAGE}?amount=50").text
    assert re.search(r"VAT 20%</th><td[^>]*>" + re.escape(money("10")), html)
    assert owner.get(QUOTE, query_string={"amount": "50"}).get_json()["taxes"][0]["rate"] == "20"


def test_quote_and_top_up_act_on_the_current_client_only(app, db, mine, other, owner):
    # a client id in the request is not an input: the link's client is used
    data = owner.get(QUOTE, query_string={"amount": "10", "client_id": other.id}).get_json()
    assert D(data["balance_after"]) == D("10")  # mine (0), not the other client's 40
    resp = owner.post(PAGE, {"amount": "10", "client_id": str(other.id)})
    assert resp.status_code == 302
    db.expire_all()
    assert count(db, Invoice, Invoice.client_id == other.id) == 0
    assert count(db, Invoice, Invoice.client_id == mine.id) == 1


BAD_AMOUNTS = [
    ("9.99", "Enter an amount between"),  # below the minimum
    ("10000.01", "Enter an amount between"),  # above the top-up maximum
    ("abc", "Enter an amount such as 12.50."),
    ("-10", "must not be negative"),
    ("10.001", "At most 2 decimal places."),
    ("", "This field is required."),
    ("1e400", "Enter an amount such as 12.50."),
    ("0", "must not be zero"),
    ("' OR 1=1 --", "Enter an amount such as 12.50."),
    ("{{ 7*7 }}", "Enter an amount such as 12.50."),
]


@pytest.mark.parametrize("amount,message", BAD_AMOUNTS)
def test_bad_amounts_are_refused_with_a_message_and_write_nothing(app, db, mine, owner, amount, message):
    before = state(db)
    quote = owner.get(QUOTE, query_string={"amount": amount})
    assert quote.status_code == 400 and message in quote.get_json()["error"]
    assert message in quote.get_json()["errors"]["amount"]
    resp = owner.post(PAGE, {"amount": amount})
    assert resp.status_code == 400 and message in resp.text and "puq-field-error" in resp.text
    assert figure(resp.text, "puq-q-total") == "—"
    assert state(db) == before


def test_amount_above_the_maximum_balance_is_refused(app, db, mine, owner):
    seed_balance(mine, "99950")
    before = state(db)
    quote = owner.get(QUOTE, query_string={"amount": "50.01"})
    assert quote.status_code == 400 and "The balance may not exceed" in quote.get_json()["error"]
    resp = owner.post(PAGE, {"amount": "50.01"})
    assert resp.status_code == 400 and "The balance may not exceed" in resp.text
    assert state(db) == before
    assert owner.get(QUOTE, query_string={"amount": "50"}).status_code == 200  # exactly up to the maximum


def test_quote_without_an_amount_is_400(app, db, mine, owner):
    resp = owner.get(QUOTE)
    assert resp.status_code == 400 and resp.get_json()["error"] == "This field is required."


# -- refusals ----------------------------------------------------------------------------------------------
def test_top_up_needs_a_csrf_token(app, db, mine, owner):
    before = state(db)
    assert owner.client.post(PAGE, data={"amount": "100"}).status_code == 400
    assert state(db) == before
    assert owner.client.post(QUOTE, data={"amount": "100"}).status_code == 405  # the quote is GET only


def test_without_manage_invoices_add_funds_is_403(app, db, mine, owner, make_browser):
    create_and_associate(mine, "viewer@example.com", "Vera", "Viewer", ["manage_services", "modify_profile"],
                         PASSWORD)
    viewer = make_browser("viewer@example.com")
    before = state(db)
    assert viewer.get(PAGE).status_code == 403
    assert viewer.get(QUOTE, query_string={"amount": "10"}).status_code == 403
    assert viewer.post(PAGE, {"amount": "100"}).status_code == 403
    assert state(db) == before


# -- end to end --------------------------------------------------------------------------------------------
def test_top_up_then_pay_with_the_test_gateway(app, db, mine, owner):
    start = balance(db, mine)
    resp = owner.post_form(PAGE, {"amount": "100"})
    assert resp.status_code == 302
    db.expire_all()
    proforma = db.scalar(select(Invoice).where(Invoice.client_id == mine.id))
    assert proforma.type == "proforma" and proforma.status == "unpaid" and proforma.kind == "add_funds"
    assert proforma.subtotal == D("100.00") and proforma.total == D("123.00")
    assert resp.headers["Location"].endswith(f"/client/invoices/{proforma.id}#pay")
    owner_user = db.scalar(select(User).where(User.username == OWNER))
    created = db.scalar(select(ActivityLog).where(ActivityLog.action == "invoice.create"))
    assert created.actor_id == owner_user.id and created.client_id == mine.id and created.impersonator_id is None
    page = owner.get(f"/client/invoices/{proforma.id}").text
    assert proforma.number in page and "puq-pay-now" in page and f"/client/invoices/{proforma.id}/pay/test" in page
    assert balance(db, mine) == start  # nothing credited before payment

    paid = owner.client.post(f"/client/invoices/{proforma.id}/pay/test/confirm", data=pay_form(owner, proforma))
    assert paid.status_code == 302
    db.expire_all()
    invoice = db.scalar(select(Invoice).where(Invoice.proforma_id == proforma.id))
    assert invoice.type == "invoice" and invoice.status == "paid" and invoice.number.startswith("INV-")
    assert paid.headers["Location"].endswith(f"/client/invoices/{invoice.id}")
    row = db.scalar(select(Transaction).where(Transaction.client_id == mine.id, Transaction.type == "payment"))
    assert row.net == D("100.0000") and row.gross == D("123.0000") and row.gateway == "test"
    assert row.author_id == owner_user.id and row.impersonator_id is None
    assert balance(db, mine) == start + D("100")
    page = owner.get(paid.headers["Location"]).text
    assert invoice.number in page and "puq-pay-now" not in page
    pdf = owner.get(f"/client/invoices/{invoice.id}/pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert pdf.headers["Content-Disposition"].startswith("attachment")
    # the balance after the top-up is what the page now shows
    assert re.search(r'puq-balance">.*?' + re.escape(money("100")), owner.get(PAGE).text)
