"""Invoice PDFs: documents issued through the billing domain, rendered by the real wkhtmltopdf and read back
with pdftotext / pdfimages (Debian poppler-utils). No mocks."""
from __future__ import annotations

import subprocess
from decimal import Decimal

import pytest
from flask import current_app
from flask_babel import force_locale
from jinja2 import ChoiceLoader, DictLoader

from puqpanel.billing import invoicing, payments, pdf
from puqpanel.billing.tax import REVERSE_CHARGE_NOTE
from puqpanel.domain import DomainError
from puqpanel.models import HomeCompany, Invoice, TaxRule

# A 2×2 red PNG.
LOGO = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAAN"
        "HQEDasKb6QAAAABJRU5ErkJggg==")


def m(value: str, currency, language: str = "en") -> str:
    """An amount as documents print it (the app's money formatter in the document's language)."""
    with force_locale(language):
        return current_app.jinja_env.globals["puq_money"](Decimal(value), currency)


def pdf_text(data: bytes) -> str:
    assert data.startswith(b"%PDF")
    result = subprocess.run(["pdftotext", "-layout", "-", "-"], input=data, capture_output=True, check=True)
    return result.stdout.decode("utf-8")


def pdf_image_count(data: bytes, tmp_path) -> int:
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    result = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, check=True, text=True)
    return len(result.stdout.splitlines()) - 2  # two header lines


@pytest.fixture()
def home(db):
    """The default home company (Hamburg) with a 19 % VAT rule for German clients."""
    company = HomeCompany(
        name="Main", company_name="PUQ Hosting GmbH", address1="Cloudweg 5", city="Hamburg", postcode="20095",
        country="DE", tax_id="DE123456789", bank_details="IBAN DE89 3704 0044 0532 0130 00\nBIC COBADEFFXXX",
        pdf_footer="PUQ Hosting GmbH · Amtsgericht Hamburg HRB 12345", is_default=True, logo=LOGO,
        website="https://puq.example",
    )
    db.add(company)
    db.flush()
    db.add(TaxRule(category="", country="DE", region="", home_company_id=company.id, tax1_name="VAT",
                   tax1_rate=Decimal("19")))
    db.commit()
    return company


def pay(proforma: Invoice, external_id: str = "TX-1") -> Invoice:
    result = payments.record_payment(proforma, gateway="bank_transfer", external_id=external_id,
                                     amount=proforma.total)
    assert result.created and result.invoice.type == "invoice" and result.invoice.status == "paid"
    return result.invoice


def test_paid_invoice_pdf_has_number_client_and_total(db, new_client, home, eur, tmp_path):
    client = new_client(company_name="Schmidt Cloud GmbH", postcode="10115")
    proforma = invoicing.create_add_funds_proforma(client, "100.00")
    invoice = pay(proforma)
    data = pdf.render_pdf(invoice)
    text = pdf_text(data)
    assert invoice.number and invoice.number in text
    assert "Schmidt Cloud GmbH" in text
    assert m("119.00", eur) in text  # total: 100.00 + 19 % VAT
    assert "Invoice" in text and "PAID" in text
    assert "PUQ Hosting GmbH" in text and "DE123456789" in text and "Cloudweg 5" in text
    assert "Hauptstr. 1" in text and "10115 Berlin" in text and "Germany" in text  # billing address
    assert "Add funds" in text and "VAT 19%" in text and m("19.00", eur) in text and m("100.00", eur) in text
    assert "Amtsgericht Hamburg HRB 12345" in text  # the footer is part of the body
    assert "IBAN" not in text  # bank details only on unpaid proformas
    assert REVERSE_CHARGE_NOTE not in text
    assert pdf_image_count(data, tmp_path) == 1  # the data: URI logo
    assert pdf.pdf_filename(invoice) == f"invoice-{invoice.number}.pdf"


def test_unpaid_proforma_shows_due_date_bank_details_and_outstanding(db, new_client, home, eur):
    client = new_client()
    proforma = invoicing.create_add_funds_proforma(client, "20.00")
    payments.record_payment(proforma, gateway="bank_transfer", external_id="PART-1", amount="3.80")
    db.refresh(proforma)
    text = pdf_text(pdf.render_pdf(proforma))
    assert proforma.number in text and "Proforma" in text and "UNPAID" in text  # status badge, uppercase
    assert "Due date" in text and "IBAN DE89 3704 0044 0532 0130 00" in text and "BIC COBADEFFXXX" in text
    # total, paid, outstanding
    assert m("23.80", eur) in text and m("3.80", eur) in text and m("20.00", eur) in text
    assert f"Anna {client.lastname}" in text  # a private client's legal name is the person
    assert pdf.pdf_filename(proforma) == f"proforma-{proforma.number}.pdf"


def test_snapshot_editing_the_client_later_changes_nothing(db, new_client, home, eur):
    client = new_client(company_name="Old Name GmbH")
    invoice = pay(invoicing.create_add_funds_proforma(client, "50.00"))
    before = pdf_text(pdf.render_pdf(invoice))
    client.company_name = "New Name AG"
    client.billing_address.address1 = "Neue Allee 99"
    client.billing_address.city = "Leipzig"
    db.commit()
    after = pdf_text(pdf.render_pdf(invoice))
    assert "Old Name GmbH" in after and "Hauptstr. 1" in after and "Berlin" in after
    assert "New Name AG" not in after and "Neue Allee 99" not in after and "Leipzig" not in after
    assert after == before
    # A document issued now carries the new details.
    fresh = invoicing.create_add_funds_proforma(client, "50.00")
    assert "New Name AG" in pdf_text(pdf.render_pdf(fresh))


def test_reverse_charge_note_and_no_tax(db, new_client, home, eur):
    client = new_client(company_name="Client SARL", country="FR", region="", city="Paris",
                        address1="1 rue de Rivoli", tax_id="FR40303265045")
    client.vies_status = "valid"
    db.commit()
    invoice = pay(invoicing.create_add_funds_proforma(client, "80.00"))
    assert invoice.reverse_charge
    text = pdf_text(pdf.render_pdf(invoice))
    assert " ".join(REVERSE_CHARGE_NOTE.split()) in " ".join(text.split())
    assert "FR40303265045" in text and "Client SARL" in text and "France" in text
    assert "VAT" not in text.replace("VAT to be accounted", "")  # no tax line
    assert m("80.00", eur) in text


def test_several_items_and_three_tax_lines(db, new_client, home, eur):
    db.add(TaxRule(category="", country="CA", region="CA-QC", home_company_id=home.id, tax1_name="GST",
                   tax1_rate=Decimal("5"), tax2_name="QST", tax2_rate=Decimal("9.975"), tax3_name="Eco",
                   tax3_rate=Decimal("0.5")))
    db.commit()
    client = new_client(country="CA", region="CA-QC", city="Montréal", address1="1 rue Sainte-Catherine",
                        phone="")
    draft = invoicing.new_invoice(client, [
        {"description": "Server rack unit", "quantity": "2", "unit_price": "40.00"},
        {"description": "Remote hands (hours)", "quantity": "1.5", "unit_price": "60.00"},
    ], notes="Thank you for your order.")
    proforma = invoicing.publish(draft)
    text = pdf_text(pdf.render_pdf(proforma))
    amounts = [m(value, eur) for value in ("80.00", "90.00", "170.00", "8.50", "16.96", "0.85", "196.31")]
    for expected in ("Server rack unit", "Remote hands (hours)", "1.5", "GST 5%", "QST 9.975%", "Eco 0.5%", *amounts,
                     "Montréal", "Quebec", "Canada", "Thank you for your order."):
        assert expected in text, expected


def test_client_content_is_escaped_and_nothing_external_loads(db, new_client, home, eur, tmp_path):
    client = new_client(company_name='<img src="file:///etc/hostname">Evil & Co <b>Ltd</b>')
    invoice = pay(invoicing.create_add_funds_proforma(client, "10.00"))
    html = pdf.render_html(invoice)
    assert '<img src="file:///etc/hostname">' not in html and "&lt;img" in html
    data = pdf.render_pdf(invoice)
    assert '<img src="file:///etc/hostname">Evil & Co <b>Ltd</b>' in pdf_text(data)
    assert pdf_image_count(data, tmp_path) == 1  # only the logo


def test_logo_must_be_an_inline_image(db, new_client, home, eur, tmp_path):
    home.logo = "file:///etc/hostname"
    db.commit()
    invoice = pay(invoicing.create_add_funds_proforma(new_client(), "10.00"))
    assert "file:///etc/hostname" not in pdf.render_html(invoice)
    assert pdf_image_count(pdf.render_pdf(invoice), tmp_path) == 0


def test_template_per_home_company_and_type(app, db, new_client, home, eur):
    client = new_client()
    proforma = invoicing.create_add_funds_proforma(client, "10.00")
    invoice = pay(proforma)
    names = pdf.template_names(invoice)
    assert names == [f"puqpanel/pdf/company_{home.id}_invoice.html", f"puqpanel/pdf/company_{home.id}.html",
                     "puqpanel/pdf/invoice.html", "puqpanel/pdf/document.html"]
    original = app.jinja_env.loader
    app.jinja_env.loader = ChoiceLoader([DictLoader({
        f"puqpanel/pdf/company_{home.id}_invoice.html":
            '{% extends "puqpanel/pdf/document.html" %}{% block title %}<h1>Custom invoice '
            '{{ invoice.number }}</h1>{% endblock %}',
        f"puqpanel/pdf/company_{home.id}.html": "<p>Company-wide {{ title }} {{ invoice.number }}</p>",
    }), original])
    app.jinja_env.cache.clear()
    try:
        text = pdf_text(pdf.render_pdf(invoice))
        assert f"Custom invoice {invoice.number}" in text and "PUQ Hosting GmbH" in text
        assert pdf.render_html(proforma).strip() == f"<p>Company-wide Proforma {proforma.number}</p>"
    finally:
        app.jinja_env.loader = original
        app.jinja_env.cache.clear()
    assert "Custom invoice" not in pdf.render_html(invoice)


def test_document_language_follows_the_client(db, new_client, home, eur):
    client = new_client(language="de")
    invoice = pay(invoicing.create_add_funds_proforma(client, "10.00"))
    assert pdf.document_language(invoice) == "de"
    assert '<html lang="de">' in pdf.render_html(invoice)


def test_credit_note_pdf(db, new_client, home, eur):
    client = new_client(company_name="Refund GmbH")
    invoice = pay(invoicing.create_add_funds_proforma(client, "40.00"))
    credit_note = payments.refund(invoice, "40.00", "Customer request")
    text = pdf_text(pdf.render_pdf(credit_note))
    assert credit_note.number in text and "Credit Note" in text and "Refund GmbH" in text
    assert m("47.60", eur) in text
    assert pdf.pdf_filename(credit_note) == f"credit_note-{credit_note.number}.pdf"


def test_filename_is_safe(db, new_client, home, eur):
    document = Invoice(id=7, type="invoice", number="INV/2026/../00012 ä")
    assert pdf.pdf_filename(document) == "invoice-INV-2026-..-00012.pdf"
    assert pdf.pdf_filename(Invoice(id=8, type="proforma", number=None)) == "proforma-draft-8.pdf"
    assert pdf.pdf_filename(Invoice(id=9, type="credit_note", number="///")) == "credit_note-draft-9.pdf"


def test_missing_wkhtmltopdf_is_a_clear_error(app, db, new_client, home, eur, monkeypatch):
    invoice = pay(invoicing.create_add_funds_proforma(new_client(), "10.00"))
    with monkeypatch.context() as config:
        config.setitem(app.config, "PUQPANEL_WKHTMLTOPDF", "/nonexistent/wkhtmltopdf")
        with pytest.raises(DomainError, match="wkhtmltopdf is not installed"):
            pdf.render_pdf(invoice)
    assert pdf.render_pdf(invoice).startswith(b"%PDF")


def test_templates_cannot_read_local_files_or_the_network(app, db, new_client, home, eur, tmp_path):
    import http.server
    import threading

    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"REMOTE-CONTENT")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = tmp_path / "secret.txt"
    secret.write_text("LOCAL-SECRET-CONTENT")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    invoice = pay(invoicing.create_add_funds_proforma(new_client(), "10.00"))
    original = app.jinja_env.loader
    app.jinja_env.loader = ChoiceLoader([DictLoader({
        f"puqpanel/pdf/company_{home.id}.html":
            f'<p>Number {{{{ invoice.number }}}}</p><iframe src="file://{secret}"></iframe>'
            f'<img src="file://{secret}"><img src="{base}/logo.png"><iframe src="{base}/page"></iframe>'
            f'<link rel="stylesheet" href="{base}/style.css">',
    }), original])
    app.jinja_env.cache.clear()
    try:
        text = pdf_text(pdf.render_pdf(invoice))
    finally:
        app.jinja_env.loader = original
        app.jinja_env.cache.clear()
        server.shutdown()
    assert f"Number {invoice.number}" in text
    assert "LOCAL-SECRET-CONTENT" not in text and "REMOTE-CONTENT" not in text
    assert requests == []


def test_renderer_failure_and_timeout_are_clear_errors(app, db, new_client, home, eur, monkeypatch):
    invoice = pay(invoicing.create_add_funds_proforma(new_client(), "10.00"))
    with monkeypatch.context() as config:
        config.setitem(app.config, "PUQPANEL_WKHTMLTOPDF", "/bin/false")  # a real binary that fails
        with pytest.raises(DomainError, match="The PDF could not be rendered."):
            pdf.render_pdf(invoice)
    with monkeypatch.context() as config:
        config.setitem(app.config, "PUQPANEL_PDF_TIMEOUT", 0.01)  # wkhtmltopdf is killed
        with pytest.raises(DomainError, match="in time"):
            pdf.render_pdf(invoice)
