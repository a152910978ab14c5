"""Invoice PDFs: real wkhtmltopdf, read back with pdftotext (Debian poppler-utils)."""
from __future__ import annotations

import datetime as dt
import subprocess
from decimal import Decimal

import pytest

from puqpanel.billing import pdf
from puqpanel.billing.tax import REVERSE_CHARGE_NOTE
from puqpanel.domain import DomainError
from puqpanel.models import HomeCompany, Invoice, InvoiceItem

# A 2×2 red PNG.
LOGO = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==")


def pdf_text(data: bytes) -> str:
    assert data.startswith(b"%PDF")
    result = subprocess.run(["pdftotext", "-layout", "-", "-"], input=data, capture_output=True, check=True)
    return result.stdout.decode("utf-8")


@pytest.fixture()
def home(db):
    company = HomeCompany(
        name="Main", company_name="PUQ Hosting GmbH", address1="Cloudweg 5", city="Hamburg", postcode="20095",
        country="DE", tax_id="DE123456789", bank_details="IBAN DE89 3704 0044 0532 0130 00\nBIC COBADEFFXXX",
        pdf_footer="PUQ Hosting GmbH · Amtsgericht Hamburg HRB 12345", is_default=True, logo=LOGO,
    )
    db.add(company)
    db.commit()
    return company


def snapshot(client) -> dict:
    billing = client.billing_address if hasattr(client, "billing_address") else None
    return {
        "id": client.id, "company_name": client.company_name, "firstname": client.firstname,
        "lastname": client.lastname, "tax_id": client.tax_id or "",
        "address1": getattr(billing, "address1", "Hauptstr. 1"), "city": getattr(billing, "city", "Berlin"),
        "country": "DE", "region": "DE-BE",
    }


def make_invoice(db, client, home, eur, **overrides) -> Invoice:
    data = dict(
        client_id=client.id, home_company_id=home.id, currency_id=eur.id, type="invoice", kind="add_funds",
        status="paid", number="INV-2026-00042", issue_date=dt.date(2026, 11, 23), paid_date=dt.date(2026, 11, 23),
        subtotal=Decimal("100.00"), tax1_name="VAT", tax1_rate=Decimal("19"), tax1_amount=Decimal("19.00"),
        total=Decimal("119.00"), amount_paid=Decimal("119.00"),
        client_snapshot=snapshot(client),
        company_snapshot={"company_name": home.company_name, "address1": home.address1, "city": home.city,
                          "postcode": home.postcode, "country": home.country, "tax_id": home.tax_id},
    )
    data.update(overrides)
    invoice = Invoice(**data)
    invoice.items.append(InvoiceItem(position=1, description="Add funds", quantity=Decimal("1"),
                                     unit_price=Decimal("100.00"), amount=Decimal("100.00")))
    db.add(invoice)
    db.commit()
    return invoice


def test_paid_invoice_pdf_has_number_client_and_total(db, new_client, home, eur):
    client = new_client(company_name="Schmidt Cloud GmbH")
    invoice = make_invoice(db, client, home, eur)
    text = pdf_text(pdf.render_pdf(invoice))
    assert "INV-2026-00042" in text
    assert "Schmidt Cloud GmbH" in text
    assert "119.00 €" in text
    assert "Invoice" in text and "PUQ Hosting GmbH" in text and "DE123456789" in text
    assert "Amtsgericht Hamburg HRB 12345" in text  # footer in the body
    assert "VAT 19%" in text and "19.00 €" in text and "100.00 €" in text
    assert "IBAN" not in text  # bank details only on unpaid proformas
    assert REVERSE_CHARGE_NOTE not in text
