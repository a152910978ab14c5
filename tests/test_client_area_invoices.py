"""Client area Invoices: the list (tabs, search, sort, pages, no drafts, no N+1), a document's page, Pay now
(bank-transfer instructions; the test gateway's hosted page and its signed callback), the PDF — and the
refusals: another client's document or an own draft → 404 with nothing changed, no CSRF token → 400, GET on
a POST route → 405, a login without manage_invoices → 403, injection text in search / sort → no effect."""
from __future__ import annotations

import re
from decimal import Decimal
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from puqpanel.billing import invoicing, payments
from puqpanel.billing.tax import REVERSE_CHARGE_NOTE
from puqpanel.domain.client_users import associate_existing, create_and_associate
from puqpanel.models import ActivityLog, Client, Invoice, InvoiceItem, Payment, Transaction

from conftest import PASSWORD
from test_invoice_views import statements
from test_invoicing import add_funds, count, frozen, home, items  # noqa: F401

D = Decimal
LIST = "/client/invoices/"
OWNER = "owner1@example.com"  # owner of `mine` (the first client made)


def doc(document, tail="") -> str:
    return f"/client/invoices/{document.id}{tail}"


def money(value: str) -> str:
    from flask import current_app

    from puqpanel.extensions import db as fsa
    from puqpanel.models import Currency

    eur = fsa.session.scalar(select(Currency).where(Currency.code == "EUR"))
    return current_app.jinja_env.globals["puq_money"](D(value), eur)


def documents_of(client, tag: str):
    """Of every kind a client sees, plus a draft it must not see: an unpaid proforma (100 net, 123 total),
    a paid invoice (from a second proforma) with a partial credit note, a canceled proforma, a draft."""
    unpaid = add_funds(client, "100")
    paid_proforma = add_funds(client, "200")
    invoice = payments.record_payment(paid_proforma, gateway="bank_transfer", external_id=f"W-{tag}",
                                      amount=paid_proforma.total).invoice
    credit_note = payments.refund(invoice, "20", "Goodwill")
    canceled = invoicing.cancel(add_funds(client, "50"))
    draft = invoicing.new_invoice(client, items(("Secret draft work", "1", "77")))
    return SimpleNamespace(client=client, unpaid=unpaid, paid_proforma=paid_proforma, invoice=invoice,
                           credit_note=credit_note, canceled=canceled, draft=draft)


@pytest.fixture()
def world(db, new_client, home, frozen):
    mine = documents_of(new_client(company_name="Mine GmbH", password=PASSWORD), "mine")
    other = documents_of(new_client(company_name="Other GmbH", password=PASSWORD), "other")
    return SimpleNamespace(mine=mine, other=other)


@pytest.fixture()
def owner(world, make_browser):
    return make_browser(OWNER)


def row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="puq-invoice-row" data-invoice-id="(\d+)"', html)]


def state(db):
    """Everything a refused request must leave as it was."""
    db.expire_all()
    return (
        count(db, Invoice), count(db, InvoiceItem), count(db, Payment), count(db, Transaction), count(db, ActivityLog),
        sorted((i.id, i.status, i.number, i.amount_paid) for i in db.scalars(select(Invoice))),
        sorted((c.id, c.balance) for c in db.scalars(select(Client))),
    )


def balance(db, client) -> Decimal:
    db.expire_all()
    return db.get(Client, client.id).balance


# -- list --------------------------------------------------------------------------------------------------
def test_list_shows_the_clients_issued_documents_never_drafts(app, db, world, owner):
    w = world.mine
    page = owner.get(LIST)
    assert page.status_code == 200
    html = page.text
    visible = [w.unpaid, w.paid_proforma, w.invoice, w.credit_note, w.canceled]
    assert sorted(row_ids(html)) == sorted(d.id for d in visible)
    assert w.draft.id not in row_ids(html) and "Secret draft work" not in html
    for document in visible:
        assert document.number in html
    for document in vars(world.other).values():  # nothing of the other client
        if isinstance(document, Invoice):
            assert document.id not in row_ids(html)
            assert not document.number or document.number not in html
    assert re.search(r'puq-total">\s*' + re.escape(money("123")), html)
    assert re.search(r'puq-outstanding">\s*' + re.escape(money("123")), html)
    assert f'href="{doc(w.unpaid)}#pay"' in html  # Pay Now only on the unpaid proforma
    assert html.count('class="btn btn-success btn-xs puq-pay-now"') == 1
    assert f'href="{doc(w.invoice, "/pdf")}"' in html
    # tab counts
    for tab, n in (("all", 5), ("unpaid", 1), ("paid", 1), ("refunded", 1)):
        assert re.search(rf'puq-tab-{tab}"[^>]*>[^<]*<span class="badge">{n}</span>', html), tab


@pytest.mark.parametrize("tab,expected", [
    ("unpaid", ["unpaid"]),
    ("paid", ["invoice"]),
    ("refunded", ["credit_note"]),
    ("all", ["unpaid", "paid_proforma", "invoice", "credit_note", "canceled"]),
])
def test_tabs(app, db, world, owner, tab, expected):
    html = owner.get(f"{LIST}?tab={tab}").text
    assert sorted(row_ids(html)) == sorted(getattr(world.mine, name).id for name in expected)


def test_fully_refunded_invoice_is_under_refunded(app, db, world, owner):
    payments.refund(world.mine.invoice, "180", "Rest")
    html = owner.get(f"{LIST}?tab=refunded").text
    db.expire_all()
    notes = db.scalars(select(Invoice.id).where(Invoice.client_id == world.mine.client.id,
                                                Invoice.type == "credit_note")).all()
    assert sorted(row_ids(html)) == sorted([world.mine.invoice.id, *notes])
    assert row_ids(owner.get(f"{LIST}?tab=paid").text) == []


def test_search_by_number(app, db, world, owner):
    w = world.mine
    html = owner.get(f"{LIST}?q={w.invoice.number}").text
    assert row_ids(html) == [w.invoice.id]
    html = owner.get(f"{LIST}?q={w.invoice.number.lower()}").text  # case-insensitive
    assert row_ids(html) == [w.invoice.id]
    html = owner.get(f"{LIST}?q=PF-&tab=unpaid").text  # search within a tab
    assert row_ids(html) == [w.unpaid.id]
    # the other client's number finds nothing here
    assert row_ids(owner.get(f"{LIST}?q={world.other.invoice.number}").text) == []
    # LIKE wildcards are literal characters
    for term in ("%", "_", "PF%2026", "\\"):
        resp = owner.get(LIST, query_string={"q": term})
        assert resp.status_code == 200 and row_ids(resp.text) == [], term
        assert "No documents found" in resp.text


def test_sort_by_each_whitelisted_column(app, db, world, owner):
    w = world.mine
    by_total = row_ids(owner.get(f"{LIST}?sort=total&dir=asc").text)
    totals = {d.id: d.total for d in (w.unpaid, w.paid_proforma, w.invoice, w.credit_note, w.canceled)}
    assert [totals[i] for i in by_total] == sorted(totals.values())
    assert row_ids(owner.get(f"{LIST}?sort=total&dir=desc").text) == list(reversed(by_total))
    by_number = row_ids(owner.get(f"{LIST}?sort=number&dir=asc").text)
    numbers = {d.id: d.number for d in (w.unpaid, w.paid_proforma, w.invoice, w.credit_note, w.canceled)}
    assert [numbers[i] for i in by_number] == sorted(numbers.values())
    # due date: the credit note has none and comes last either way
    for direction in ("asc", "desc"):
        by_due = row_ids(owner.get(f"{LIST}?sort=due_date&dir={direction}").text)
        assert by_due[-1] == w.credit_note.id
    # default: newest issue date first, ties by id descending
    default = row_ids(owner.get(LIST).text)
    assert default == sorted(totals, reverse=True)
    assert row_ids(owner.get(f"{LIST}?sort=date&dir=asc").text) == sorted(totals)


INJECTIONS = [
    "' OR '1'='1", "1; DROP TABLE puq_invoice; --", "total desc, (SELECT 1)", "{{ 7*7 }}", "${7*7}",
    "<script>alert(1)</script>", "number) UNION SELECT * FROM ab_user --", "\x00", "é" * 300,
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_text_in_search_and_sort_has_no_effect(app, db, world, owner, text):
    default = row_ids(owner.get(LIST).text)
    before = state(db)
    for params in ({"sort": text}, {"dir": text}, {"tab": text}, {"page": text}):
        resp = owner.get(LIST, query_string=params)
        assert resp.status_code in (200, 400), params  # a NUL byte is refused before the view (400)
        if resp.status_code == 200:
            assert row_ids(resp.text) == default, params
    by_total = row_ids(owner.get(f"{LIST}?sort=total&dir=desc").text)
    resp = owner.get(LIST, query_string={"sort": "total", "dir": text})
    assert resp.status_code == 400 or row_ids(resp.text) == by_total
    resp = owner.get(LIST, query_string={"q": text})
    assert resp.status_code in (200, 400) and row_ids(resp.text) == []
    assert "<script>alert(1)</script>" not in resp.text and 'value="49"' not in resp.text
    assert state(db) == before


def test_list_pages_and_reads_rows_in_one_query(app, db, world, owner):
    client = world.mine.client
    for _i in range(25):
        add_funds(client, "10")
    owner.get(LIST)  # the login's first page loads what later pages reuse
    with statements() as seen:
        first = owner.get(LIST)
    rows = row_ids(first.text)
    assert len(rows) == 25 and "?tab=all" in first.text and "page=2" in first.text
    # one SELECT of documents (currency and home company joined) + one for the tab counts; nothing per row
    invoice_selects = [s for s in seen if re.match(r"\s*SELECT puq_invoice\.id\b", s)]
    assert len(invoice_selects) == 1, invoice_selects
    assert "puq_currency" in invoice_selects[0] and "puq_home_company" in invoice_selects[0]
    assert not [s for s in seen if re.match(r"\s*SELECT (puq_currency|puq_home_company|puq_invoice_item)\.", s)]
    second = owner.get(f"{LIST}?page=2")
    assert len(row_ids(second.text)) == 5 and "page=1" in second.text
    assert not set(rows) & set(row_ids(second.text))
    # the statement count does not grow with the rows
    with statements() as few:
        owner.get(f"{LIST}?tab=paid")
    assert len(few) == len(seen)
    assert owner.get(f"{LIST}?page=999").status_code == 200


# -- one document ------------------------------------------------------------------------------------------
def test_paid_invoice_page(app, db, world, owner):
    w = world.mine
    resp = owner.get(doc(w.invoice))
    assert resp.status_code == 200
    html = resp.text
    assert w.invoice.number in html and "Paid" in html
    assert "Add funds" in html and "VAT 23%" in html
    assert money("200") in html and money("46") in html and money("246") in html
    assert "Mar 10, 2026" in html  # issue / paid date (Babel, the request's locale)
    assert re.search(r'puq-payment-row">.*W-mine.*' + re.escape(money("246")), html, re.S)
    assert "PUQ Cloud Sp. z o.o." in html and "Mine GmbH" in html
    assert f'href="{doc(w.paid_proforma)}"' in html and f'href="{doc(w.credit_note)}"' in html
    assert "puq-pay-now" not in html and 'id="pay"' not in html
    assert f'href="{doc(w.invoice, "/pdf")}"' in html


def test_unpaid_proforma_page_offers_pay_now(app, db, world, owner):
    w = world.mine
    html = owner.get(doc(w.unpaid)).text
    assert "puq-pay-now" in html and 'id="pay"' in html
    assert "Bank transfer" in html and "IBAN PL61 1090 1014 0000 0712 1981 2874" in html
    assert re.search(r"Reference</th><td[^>]*>" + re.escape(w.unpaid.number), html)
    assert f'href="{doc(w.unpaid, "/pay/test")}"' in html
    assert re.search(r'puq-invoice-outstanding">' + re.escape(money("123")), html)
    assert "Mar 17, 2026" in html  # due date
    # a canceled proforma and an invoiced one are not payable
    for document in (w.canceled, w.paid_proforma):
        page = owner.get(doc(document)).text
        assert "puq-pay-now" not in page and "/pay/test" not in page


def test_pay_now_lists_only_the_offered_gateways(app, db, world, owner, monkeypatch):
    monkeypatch.setitem(app.config, "PUQPANEL_GATEWAYS", ("bank_transfer",))
    html = owner.get(doc(world.mine.unpaid)).text
    assert "Bank transfer" in html and "/pay/test" not in html
    before = state(db)
    assert owner.get(doc(world.mine.unpaid, "/pay/test")).status_code == 404
    assert owner.post(doc(world.mine.unpaid, "/pay/test/confirm"), {"amount": "123"}).status_code == 404
    assert state(db) == before


def test_reverse_charge_note_is_shown(app, db, new_client, home, frozen, make_browser):
    client = new_client(company_name="Kunde GmbH", password=PASSWORD)
    client.tax_id = "DE136695976"
    client.vies_status = "valid"
    db.commit()
    proforma = add_funds(client, "200")
    html = make_browser(OWNER).get(doc(proforma)).text
    assert "puq-legal-note" in html and REVERSE_CHARGE_NOTE in html
    assert "puq-tax-line" not in html


def test_pdf_download(app, db, world, owner):
    w = world.mine
    resp = owner.get(doc(w.invoice, "/pdf"))
    assert resp.status_code == 200 and resp.mimetype == "application/pdf"
    assert resp.data.startswith(b"%PDF")
    disposition = resp.headers["Content-Disposition"]
    assert disposition.startswith("attachment") and f"invoice-{w.invoice.number}.pdf" in disposition
    credit = owner.get(doc(w.credit_note, "/pdf"))
    assert credit.status_code == 200 and credit.data.startswith(b"%PDF")


def test_pdf_renderer_failure_is_a_message_not_a_500(app, db, world, owner, monkeypatch):
    monkeypatch.setitem(app.config, "PUQPANEL_WKHTMLTOPDF", "/nonexistent/wkhtmltopdf")
    resp = owner.get(doc(world.mine.invoice, "/pdf"))
    assert resp.status_code == 302 and resp.headers["Location"].endswith(doc(world.mine.invoice))
    assert "wkhtmltopdf" in owner.get(doc(world.mine.invoice)).text


# -- paying with the test gateway --------------------------------------------------------------------------
def pay_form(browser, document, amount=None):
    """The hosted page's form values (CSRF token, payment token, amount) as a browser would submit them."""
    page = browser.get(doc(document, "/pay/test"))
    assert page.status_code == 200
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
    value = re.search(r'id="puq-gw-amount" name="amount" value="([^"]*)"', page.text).group(1)
    from conftest import csrf_token

    return {"csrf_token": csrf_token(page.text), "token": token, "amount": value if amount is None else amount}


def test_pay_with_the_test_gateway(app, db, world, owner):
    w = world.mine
    start = balance(db, w.client)
    form = pay_form(owner, w.unpaid)
    assert form["amount"] == "123.00"  # the outstanding amount
    resp = owner.client.post(doc(w.unpaid, "/pay/test/confirm"), data=form)
    assert resp.status_code == 302
    db.expire_all()
    paid = db.scalar(select(Invoice).where(Invoice.proforma_id == w.unpaid.id))
    assert paid.type == "invoice" and paid.status == "paid" and paid.number.startswith("INV-")
    assert resp.headers["Location"].endswith(doc(paid))
    payment = db.scalar(select(Payment).where(Payment.proforma_id == w.unpaid.id))
    assert payment.gateway == "test" and payment.amount == D("123.00") and payment.net == D("100.0000")
    assert payment.external_id == f"test-c{w.unpaid.id}-{form['token']}" and payment.client_id == w.client.id
    assert balance(db, w.client) == start + D("100")
    page = owner.get(doc(paid)).text
    assert "Paid: invoice" in page and paid.number in page and payment.external_id in page
    assert db.get(Invoice, w.unpaid.id).status == "invoiced"


def test_partial_payment_stays_on_the_proforma(app, db, world, owner):
    w = world.mine
    resp = owner.client.post(doc(w.unpaid, "/pay/test/confirm"), data=pay_form(owner, w.unpaid, "23.00"))
    assert resp.status_code == 302 and resp.headers["Location"].endswith(doc(w.unpaid))
    db.expire_all()
    assert db.get(Invoice, w.unpaid.id).status == "unpaid"
    form = pay_form(owner, w.unpaid)
    assert form["amount"] == "100.00"
    resp = owner.client.post(doc(w.unpaid, "/pay/test/confirm"), data=form)
    db.expire_all()
    assert db.get(Invoice, w.unpaid.id).status == "invoiced"
    assert count(db, Payment, Payment.proforma_id == w.unpaid.id) == 2


def test_paying_twice_with_the_same_form_records_one_payment(app, db, world, owner):
    w = world.mine
    form = pay_form(owner, w.unpaid)
    first = owner.client.post(doc(w.unpaid, "/pay/test/confirm"), data=form)
    after_first = state(db)
    second = owner.client.post(doc(w.unpaid, "/pay/test/confirm"), data=form)
    assert state(db) == after_first  # same callback: nothing more written
    assert second.status_code == 302 and second.headers["Location"] == first.headers["Location"]
    assert "already recorded" in owner.get(second.headers["Location"]).text
    assert count(db, Payment, Payment.client_id == w.client.id, Payment.gateway == "test") == 1


@pytest.mark.parametrize("amount,message", [
    ("abc", "Enter an amount"), ("0", "must not be zero"), ("-5", "must not be negative"),
    ("1.234", "decimal places"), ("1e400", "Enter an amount"), ("", "required"),
    ("123.01", "is outstanding"), ("99999999999999999999", "too large"),
])
def test_bad_payment_amounts_are_refused(app, db, world, owner, amount, message):
    w = world.mine
    before = state(db)
    resp = owner.client.post(doc(w.unpaid, "/pay/test/confirm"), data=pay_form(owner, w.unpaid, amount))
    assert resp.status_code == 400 and "puq-form-error" in resp.text and message in resp.text, resp.text[-3000:]
    assert state(db) == before


def test_a_document_with_nothing_to_pay(app, db, world, owner):
    w = world.mine
    before = state(db)
    for document in (w.invoice, w.canceled, w.paid_proforma, w.credit_note):
        page = owner.get(doc(document, "/pay/test"))
        assert page.status_code == 200 and "Nothing to pay" in page.text and "puq-gw-form" not in page.text
        resp = owner.post(doc(document, "/pay/test/confirm"), {"amount": "10", "token": "x" * 20})
        assert resp.status_code == 400 and "Nothing to pay" in resp.text
    assert state(db) == before


# -- refusals ----------------------------------------------------------------------------------------------
def routes(document) -> list[tuple[str, str]]:
    return [("GET", doc(document)), ("GET", doc(document, "/pdf")), ("GET", doc(document, "/pay/test")),
            ("POST", doc(document, "/pay/test/confirm"))]


def test_another_clients_documents_are_404_and_nothing_changes(app, db, world, owner):
    before = state(db)
    for document in (world.other.unpaid, world.other.invoice, world.other.credit_note, world.other.draft):
        for method, url in routes(document):
            if method == "GET":
                resp = owner.get(url)
            else:
                resp = owner.post(url, {"amount": "123.00", "token": "t" * 20})
            assert resp.status_code == 404, (method, url)
    for method, url in routes(SimpleNamespace(id=987654)):
        resp = owner.get(url) if method == "GET" else owner.post(url, {"amount": "1"})
        assert resp.status_code == 404, url
    assert state(db) == before
    # the other owner still pays its own proforma
    other = owner.client.application.test_client()
    from conftest import Browser

    b = Browser(other)
    b.login("owner2@example.com")
    assert b.client.post(doc(world.other.unpaid, "/pay/test/confirm"),
                         data=pay_form(b, world.other.unpaid)).status_code == 302


def test_own_draft_is_404_everywhere(app, db, world, owner):
    before = state(db)
    for method, url in routes(world.mine.draft):
        resp = owner.get(url) if method == "GET" else owner.post(url, {"amount": "94.71", "token": "d" * 20})
        assert resp.status_code == 404, url
    assert state(db) == before


def test_a_login_of_two_clients_reaches_only_the_current_ones_documents(app, db, world, owner):
    associate_existing(world.other.client, OWNER, ["manage_invoices"])
    before = state(db)
    assert owner.get(doc(world.other.unpaid)).status_code == 404  # current client: its own (owned first)
    assert owner.post(doc(world.other.unpaid, "/pay/test/confirm"), {"amount": "123"}).status_code == 404
    assert state(db) == before
    with owner.client.session_transaction() as session:  # what the client switcher stores
        session["puq_client_id"] = world.other.client.id
    assert owner.get(doc(world.other.unpaid)).status_code == 200
    assert owner.get(doc(world.mine.unpaid)).status_code == 404


def test_confirm_needs_csrf_and_post(app, db, world, owner):
    w = world.mine
    before = state(db)
    form = pay_form(owner, w.unpaid)
    del form["csrf_token"]
    assert owner.client.post(doc(w.unpaid, "/pay/test/confirm"), data=form).status_code == 400
    assert owner.get(doc(w.unpaid, "/pay/test/confirm")).status_code == 405
    for url in (LIST, doc(w.unpaid), doc(w.invoice, "/pdf"), doc(w.unpaid, "/pay/test")):
        assert owner.post(url, {}).status_code == 405, url
    assert state(db) == before


def test_without_manage_invoices_every_route_is_403(app, db, world, make_browser):
    w = world.mine
    create_and_associate(w.client, "clerk@example.com", "Carl", "Clerk", ["manage_services", "manage_users"],
                         PASSWORD)
    clerk = make_browser("clerk@example.com")
    before = state(db)
    assert clerk.get(LIST).status_code == 403
    for method, url in routes(w.unpaid):
        resp = clerk.get(url) if method == "GET" else clerk.post(url, {"amount": "123.00", "token": "c" * 20})
        assert resp.status_code == 403, url
    assert state(db) == before
    # with the key the same login gets in
    create_and_associate(w.client, "payer@example.com", "Pia", "Payer", ["manage_invoices"], PASSWORD)
    payer = make_browser("payer@example.com")
    assert payer.get(LIST).status_code == 200 and payer.get(doc(w.unpaid)).status_code == 200


def test_staff_have_no_client_area(app, db, world, staff, make_browser):
    admin = make_browser("admin")
    assert admin.get(LIST).status_code in (403, 404)
    assert admin.get(doc(world.mine.unpaid)).status_code in (403, 404)
