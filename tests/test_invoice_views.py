"""Staff Invoices tab: list, detail, every action through the real forms (CSRF on), PDF download, row
scoping (404), permissions (403), CSRF (400), POST-only routes (405) and refused input (400 + message)."""
from __future__ import annotations

import re
from contextlib import contextmanager
from decimal import Decimal
from types import SimpleNamespace

import pytest
from sqlalchemy import event, select

from puqpanel.billing import invoicing, payments
from puqpanel.extensions import db as fsa
from puqpanel.models import ActivityLog, Client, Invoice, InvoiceItem, Payment, Transaction

from test_invoicing import add_funds, count, frozen, home, items  # noqa: F401

D = Decimal


def money(value: str) -> str:
    """An EUR amount as the screens print it (the app's formatter)."""
    from flask import current_app

    from puqpanel.models import Currency

    eur = fsa.session.scalar(select(Currency).where(Currency.code == "EUR"))
    return current_app.jinja_env.globals["puq_money"](D(value), eur)


def make_documents(client):
    """A draft (to edit/publish), a second draft (to delete), two unpaid proformas (cancel / pay) and a
    paid invoice (refund) for `client`."""
    draft = invoicing.new_invoice(client, items(("Draft work", "2", "10")))
    draft2 = invoicing.new_invoice(client, items(("Other draft", "1", "5")))
    unpaid = add_funds(client, "100")
    unpaid2 = add_funds(client, "50")
    paid_proforma = add_funds(client, "100")
    invoice = payments.record_payment(paid_proforma, gateway="bank_transfer", external_id=f"W-{client.id}",
                                      amount=paid_proforma.total).invoice
    return SimpleNamespace(client=client, draft=draft, draft2=draft2, unpaid=unpaid, unpaid2=unpaid2,
                           paid_proforma=paid_proforma, invoice=invoice)


@pytest.fixture()
def world(db, staff, new_client, home, frozen):
    return {
        manager: make_documents(new_client(company_name=f"{manager.title()} GmbH", email=f"o-{manager}@example.com",
                                           manager_id=staff[manager].id))
        for manager in ("manager1", "manager2")
    }


def base(w) -> str:
    return f"/clients/{w.client.id}/invoices"


def doc_url(w, document, tail="") -> str:
    return f"{base(w)}/{document.id}{tail}"


def get_urls(w) -> list[str]:
    return [base(w), doc_url(w, w.unpaid), doc_url(w, w.invoice), doc_url(w, w.draft), doc_url(w, w.invoice, "/pdf")]


def post_actions(w) -> list[tuple[str, dict]]:
    """Every POST route for this client's documents with a valid payload, in an order that works."""
    return [
        (doc_url(w, w.draft, "/update"), {"description": ["Edited", "Second"], "quantity": ["1", "3"],
                                          "unit_price": ["10", "2.50"], "notes": "n", "due_date": ""}),
        (doc_url(w, w.draft, "/publish"), {}),
        (doc_url(w, w.draft2, "/delete"), {}),
        (doc_url(w, w.unpaid, "/cancel"), {}),
        (doc_url(w, w.unpaid2, "/payments"), {"gateway": "bank_transfer", "external_id": f"BANK-{w.client.id}",
                                              "amount": "61.50", "fee": "0.50", "paid_date": "2026-03-09"}),
        (doc_url(w, w.invoice, "/refund"), {"amount": "10", "reason": "Goodwill"}),
        (f"{base(w)}/add-funds", {"amount": "25"}),
        (f"{base(w)}/new", {"description": ["Item"], "quantity": ["1"], "unit_price": ["9.99"]}),
    ]


def snapshot(db):
    db.expire_all()
    return (
        count(db, Invoice), count(db, InvoiceItem), count(db, Payment), count(db, Transaction), count(db, ActivityLog),
        sorted((i.id, i.status, i.number, i.total) for i in db.scalars(select(Invoice))),
    )


@contextmanager
def statements():
    seen: list[str] = []

    def listen(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(fsa.engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(fsa.engine, "before_cursor_execute", listen)


# -- list --------------------------------------------------------------------------------------------------
def test_list_shows_every_column_in_one_query(app, db, world, make_browser):
    admin = make_browser("admin")
    w = world["manager1"]
    with statements() as seen:
        page = admin.get(base(w))
    assert page.status_code == 200
    html = page.text
    # The rows come from one SELECT of documents with currency and home company joined (no N+1).
    invoice_queries = [s for s in seen if re.match(r"\s*SELECT puq_invoice\.id\b", s)]
    assert len(invoice_queries) == 1, invoice_queries
    assert "puq_home_company" in invoice_queries[0] and "puq_currency" in invoice_queries[0]
    assert not [s for s in seen if re.match(r"\s*SELECT puq_home_company\.", s)]
    rows = re.findall(r'<tr class="puq-invoice-row" data-invoice-id="(\d+)"', html)
    assert len(rows) == 6  # 2 drafts, 3 proformas (one of them invoiced), 1 invoice
    for label in ("PROFORMA", "INVOICE", "Draft", "Unpaid", "Paid", "Invoiced", "Main"):
        assert label in html, label
    assert w.unpaid.number in html and w.invoice.number in html
    assert re.search(r'puq-total">\s*' + re.escape(money("123")), html)
    assert re.search(r'puq-outstanding">\s*' + re.escape(money("61.50")), html)
    assert "2026-03-10" in html and "2026-03-17" in html
    assert "Create Add Funds Proforma" in html and "New Invoice" in html
    assert f"Min {money('10')}, max {money('10000')}" in html
    # filters
    only_invoices = admin.get(f"{base(w)}?type=invoice").text
    assert re.findall(r'data-invoice-id="(\d+)"', only_invoices) == [str(w.invoice.id)]
    unpaid = admin.get(f"{base(w)}?status=unpaid").text
    assert sorted(re.findall(r'data-invoice-id="(\d+)"', unpaid)) == sorted([str(w.unpaid.id), str(w.unpaid2.id)])
    assert "No documents found" in admin.get(f"{base(w)}?type=credit_note").text
    assert admin.get(f"{base(w)}?type=bogus&status=%00x&page=abc").status_code in (200, 400)


def test_detail_pages(app, db, world, make_browser):
    admin = make_browser("admin")
    w = world["manager1"]
    proforma = admin.get(doc_url(w, w.unpaid)).text
    assert w.unpaid.number in proforma and "Add funds" in proforma and "VAT 23%" in proforma
    assert money("123") in proforma and "Record Payment" in proforma and "Cancel Proforma" in proforma
    assert "IBAN PL61" in proforma and "How to pay" in proforma  # bank-transfer instructions
    assert "Pay with test gateway" in proforma and "Refund" not in proforma
    assert "Manager1 GmbH" in proforma and "PUQ Cloud Sp. z o.o." in proforma

    invoice = admin.get(doc_url(w, w.invoice)).text
    assert w.invoice.number in invoice and w.paid_proforma.number in invoice
    assert "puq-payment-row" in invoice and f"W-{w.client.id}" in invoice and "puq-ledger-row" in invoice
    assert "Refund" in invoice and "Record Payment" not in invoice and 'id="puq-pdf"' in invoice
    paid_proforma = admin.get(doc_url(w, w.paid_proforma)).text
    assert "puq-link-invoice" in paid_proforma and w.invoice.number in paid_proforma

    draft = admin.get(doc_url(w, w.draft)).text
    assert "Publish" in draft and "Edit Draft" in draft and 'id="puq-pdf"' not in draft
    assert 'value="Draft work"' in draft and 'value="2"' in draft and 'value="10.00"' in draft

    note = payments.refund(w.invoice, "10", "Goodwill")
    credit = admin.get(doc_url(w, note)).text
    assert note.number in credit and "puq-link-refunded" in credit and "Refund of invoice" in credit
    assert "puq-link-credit-note" in admin.get(doc_url(w, w.invoice)).text


def test_reverse_charge_note_on_the_detail_page(app, db, world, make_browser):
    w = world["manager1"]
    client = db.get(Client, w.client.id)
    client.tax_id, client.vies_status = "DE136695976", "valid"
    db.commit()
    proforma = add_funds(client, "100")
    page = make_browser("admin").get(doc_url(w, proforma)).text
    assert "puq-reverse-charge" in page and "Reverse charge" in page and "VAT 23%" not in page


# -- actions -----------------------------------------------------------------------------------------------
def test_add_funds_modal(app, db, world, make_browser):
    admin = make_browser("admin")
    w = world["manager1"]
    resp = admin.post_form(f"{base(w)}/add-funds", {"amount": "25,50"}, form_url=base(w))
    assert resp.status_code == 302
    db.expire_all()
    created = db.scalar(select(Invoice).where(Invoice.client_id == w.client.id).order_by(Invoice.id.desc()))
    assert resp.headers["Location"].endswith(doc_url(w, created))
    assert (created.kind, created.status, created.subtotal, created.total) == ("add_funds", "unpaid", D("25.50"),
                                                                              D("31.37"))
    before = snapshot(db)
    for amount, message in (("5", "between"), ("abc", "Enter an amount"), ("", "required"), ("1e400", "Enter an amount"), ("9" * 30, "too large")):
        bad = admin.post_form(f"{base(w)}/add-funds", {"amount": amount}, form_url=base(w))
        assert bad.status_code == 400 and message in bad.text, amount
        assert 'modal("show")' in bad.text and "#add-funds-modal" in bad.text
    assert snapshot(db) == before


def test_new_invoice_with_several_rows(app, db, world, make_browser):
    admin = make_browser("admin")
    w = world["manager1"]
    resp = admin.post_form(f"{base(w)}/new", {
        "description": ["Setup", "Hours", ""], "quantity": ["1", "2.5", ""], "unit_price": ["100", "40", ""],
        "notes": "Project X", "due_date": "2026-04-01",
    }, form_url=base(w))
    assert resp.status_code == 302
    db.expire_all()
    draft = db.scalar(select(Invoice).where(Invoice.notes == "Project X"))
    assert [(i.description, i.amount) for i in draft.items] == [("Setup", D("100.00")), ("Hours", D("100.00"))]
    assert draft.status == "draft" and draft.total == D("246.00") and str(draft.due_date) == "2026-04-01"
    before = snapshot(db)
    bad = admin.post_form(f"{base(w)}/new", {"description": ["", "B"], "quantity": ["1", "x"],
                                            "unit_price": ["5", "1"], "due_date": "soon"}, form_url=base(w))
    assert bad.status_code == 400
    assert "This field is required." in bad.text and "Enter an amount such as 12.50." in bad.text
    assert "Enter a date as YYYY-MM-DD." in bad.text and 'value="B"' in bad.text  # posted rows kept
    empty = admin.post_form(f"{base(w)}/new", {}, form_url=base(w))
    assert empty.status_code == 400 and "Add at least one item." in empty.text
    # a NUL byte in the second value of a repeated field (PostgreSQL can't store it: it was a 500 there)
    nul = admin.post_form(f"{base(w)}/new", {"description": ["ok", "b\x00d"], "quantity": ["1", "1"],
                                            "unit_price": ["1", "1"]}, form_url=base(w))
    assert nul.status_code == 400
    assert admin.get(f"{base(w)}?status=paid&status=%00").status_code == 400
    assert snapshot(db) == before


def test_edit_publish_delete_and_cancel(app, db, world, make_browser):
    admin = make_browser("admin")
    w = world["manager1"]
    page = doc_url(w, w.draft)
    resp = admin.post_form(doc_url(w, w.draft, "/update"), {"description": ["Edited"], "quantity": ["3"],
                                                            "unit_price": ["1.10"], "notes": "x"}, form_url=page)
    assert resp.status_code == 302
    db.expire_all()
    assert [i.description for i in db.get(Invoice, w.draft.id).items] == ["Edited"]
    assert db.get(Invoice, w.draft.id).total == D("4.06")  # 3.30 + 0.759 → 0.76
    bad = admin.post_form(doc_url(w, w.draft, "/update"), {"description": ["E"], "quantity": ["0"],
                                                           "unit_price": ["1"]}, form_url=page)
    assert bad.status_code == 400 and "must not be zero" in bad.text and "#edit-modal" in bad.text
    assert admin.post_form(doc_url(w, w.draft, "/publish"), {}, form_url=page).status_code == 302
    db.expire_all()
    assert db.get(Invoice, w.draft.id).status == "unpaid" and db.get(Invoice, w.draft.id).number == "PF-2026-00007"
    again = admin.post_form(doc_url(w, w.draft, "/publish"), {}, form_url=page)
    assert again.status_code == 400 and "Only a draft can be changed" in again.text
    resp = admin.post_form(doc_url(w, w.draft2, "/delete"), {}, form_url=page)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(base(w))
    assert db.get(Invoice, w.draft2.id) is None
    assert admin.post_form(doc_url(w, w.unpaid, "/cancel"), {}, form_url=page).status_code == 302
    db.expire_all()
    assert db.get(Invoice, w.unpaid.id).status == "canceled"
    refused = admin.post_form(doc_url(w, w.invoice, "/cancel"), {}, form_url=page)
    assert refused.status_code == 400 and "Only an unpaid proforma can be canceled." in refused.text
    assert admin.post_form(doc_url(w, w.invoice, "/delete"), {}, form_url=page).status_code == 400


def test_record_payment_modal(app, db, world, make_browser):
    admin = make_browser("admin")
    w = world["manager1"]
    page = doc_url(w, w.unpaid2)  # total 61.50
    url = doc_url(w, w.unpaid2, "/payments")
    payload = {"gateway": "bank_transfer", "external_id": "BANK-1", "amount": "20", "fee": "", "paid_date": ""}
    resp = admin.post_form(url, payload, form_url=page)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(page)
    before = snapshot(db)
    duplicate = admin.post_form(url, payload, form_url=page)
    assert duplicate.status_code == 400 and "already recorded" in duplicate.text
    # a transaction id of another manager's client: refused without naming that client's document
    other = world["manager2"]
    manager = make_browser("manager1")
    leak = manager.post_form(url, {**payload, "external_id": f"W-{other.client.id}"}, form_url=page)
    assert leak.status_code == 400 and "already recorded for another client" in leak.text
    assert other.invoice.number not in leak.text
    for change, message in (
        ({"amount": "41.51"}, "outstanding"), ({"amount": "x"}, "Enter an amount"), ({"gateway": "cash"}, "gateway"),
        ({"external_id": ""}, "required"), ({"paid_date": "2026-03-11"}, "future"), ({"paid_date": "3/9"}, "YYYY"),
        ({"fee": "25"}, "fee may not exceed"),
    ):
        bad = admin.post_form(url, {**payload, "external_id": "BANK-2", **change}, form_url=page)
        assert bad.status_code == 400 and message in bad.text, change
        assert "#payment-modal" in bad.text
    assert snapshot(db) == before
    done = admin.post_form(url, {**payload, "external_id": "BANK-2", "amount": "41.50", "fee": "1.25",
                                 "paid_date": "2026-03-01"}, form_url=page)
    assert done.status_code == 302
    db.expire_all()
    invoice = db.scalar(select(Invoice).where(Invoice.proforma_id == w.unpaid2.id))
    assert done.headers["Location"].endswith(doc_url(w, invoice))
    assert invoice.status == "paid" and str(invoice.paid_date) == "2026-03-01"
    assert db.get(Client, w.client.id).balance == D("150.0000")  # 100 (world) + 50


def test_refund_modal(app, db, world, make_browser):
    admin = make_browser("admin")
    w = world["manager1"]
    page = doc_url(w, w.invoice)
    url = doc_url(w, w.invoice, "/refund")
    before = snapshot(db)
    for payload, message in (({"amount": "100.01", "reason": "r"}, "can be refunded"),
                             ({"amount": "10", "reason": ""}, "required"), ({"amount": "0", "reason": "r"}, "zero")):
        bad = admin.post_form(url, payload, form_url=page)
        assert bad.status_code == 400 and message in bad.text and "#refund-modal" in bad.text
    assert snapshot(db) == before
    resp = admin.post_form(url, {"amount": "100", "reason": "Closed"}, form_url=page)
    assert resp.status_code == 302
    db.expire_all()
    assert db.get(Invoice, w.invoice.id).status == "refunded"
    note = db.scalar(select(Invoice).where(Invoice.type == "credit_note"))
    assert note.number == "CN-2026-00001" and note.total == D("123.00")
    assert db.get(Client, w.client.id).balance == D("0.0000")


def test_pdf_download(app, db, world, make_browser):
    admin = make_browser("admin")
    w = world["manager1"]
    resp = admin.get(doc_url(w, w.invoice, "/pdf"))
    assert resp.status_code == 200 and resp.mimetype == "application/pdf" and resp.data.startswith(b"%PDF")
    assert f'filename=invoice-{w.invoice.number}.pdf' in resp.headers["Content-Disposition"]
    assert admin.get(doc_url(w, w.draft, "/pdf")).status_code == 404  # a draft has no number to print


def test_pdf_failure_is_flashed_not_a_500(app, db, world, make_browser, monkeypatch):
    monkeypatch.setitem(app.config, "PUQPANEL_WKHTMLTOPDF", "/nonexistent/wkhtmltopdf")
    admin = make_browser("admin")
    w = world["manager1"]
    resp = admin.get(doc_url(w, w.invoice, "/pdf"))
    assert resp.status_code == 302 and resp.headers["Location"].endswith(doc_url(w, w.invoice))
    assert "wkhtmltopdf" in admin.get(doc_url(w, w.invoice)).text


# -- scope, permissions, CSRF ------------------------------------------------------------------------------
def test_manager_gets_404_for_another_managers_client_on_every_route(app, db, world, make_browser):
    m1 = make_browser("manager1")
    own, foreign = world["manager1"], world["manager2"]
    token_page = base(own)
    for url in get_urls(foreign):
        assert m1.get(url).status_code == 404, url
    before = snapshot(db)
    from conftest import csrf_token

    token = csrf_token(m1.get(token_page).text)
    for url, payload in post_actions(foreign):
        expected = 403 if url.endswith("/refund") else 404  # no refund permission at all: 403 before scope
        assert m1.client.post(url, data=dict(payload, csrf_token=token)).status_code == expected, url
    assert snapshot(db) == before
    for url, payload in post_actions(own):  # the same routes work on its own client
        resp = m1.client.post(url, data=dict(payload, csrf_token=token))
        expected = 403 if url.endswith("/refund") else 302  # managers may not refund
        assert resp.status_code == expected, (url, resp.text[:300])


def test_another_clients_document_id_is_404_on_every_route(app, db, world, make_browser):
    admin = make_browser("admin")  # reaches both clients: only the id pairing is wrong
    own, foreign = world["manager1"], world["manager2"]
    mixed = SimpleNamespace(**dict(vars(foreign), client=own.client))  # own client id, foreign documents
    for url in get_urls(mixed)[1:]:
        assert admin.get(url).status_code == 404, url
    from conftest import csrf_token

    token = csrf_token(admin.get(base(own)).text)
    before = snapshot(db)
    for url, payload in post_actions(mixed)[:6]:
        assert admin.client.post(url, data=dict(payload, csrf_token=token)).status_code == 404, url
    assert snapshot(db) == before
    assert admin.get(f"{base(own)}/99999999").status_code == 404
    assert admin.get(f"{base(own)}/99999999999").status_code == 404  # beyond a 32-bit id
    assert admin.get("/clients/99999/invoices").status_code == 404


def test_support_reads_but_every_post_is_403(app, db, world, make_browser):
    support = make_browser("support")
    w = world["manager2"]
    for url in get_urls(w):
        assert support.get(url).status_code == 200, url
    html = support.get(base(w)).text + support.get(doc_url(w, w.unpaid)).text + support.get(doc_url(w, w.invoice)).text
    for hidden in ("Create Add Funds Proforma", "puq-new-invoice-open", "puq-payment-open", "puq-refund-open",
                   "puq-cancel", "Pay with test gateway"):
        assert hidden not in html, hidden
    before = snapshot(db)
    for url, payload in post_actions(w):
        assert support.post(url, payload).status_code == 403, url
    assert snapshot(db) == before


def test_invoices_tab_is_linked_from_the_record(app, db, world, make_browser):
    from puqpanel.views.client_record import TABS

    assert ("invoices", "ClientInvoicesView.invoices") in [(k, e) for k, e, _l in TABS]
    admin_page = make_browser("admin").get(f"/clients/{world['manager1'].client.id}").text
    assert base(world["manager1"]) in admin_page  # the tab links here


def test_posts_need_csrf_and_gets_on_post_routes_are_405(app, db, world, make_browser):
    admin = make_browser("admin")
    w = world["manager1"]
    before = snapshot(db)
    for url, payload in post_actions(w):
        assert admin.client.post(url, data=payload).status_code == 400, url
        assert admin.get(url).status_code == 405, url
    assert snapshot(db) == before


def test_anonymous_is_sent_to_login(app, db, world, browser):
    w = world["manager1"]
    for url in get_urls(w):
        resp = browser.get(url)
        assert resp.status_code == 302 and "/login/" in resp.headers["Location"], url
