"""Billing end to end in headless Debian Chromium: a staff admin adds a service to a client, creates an
add-funds proforma, records its payment, sees the paid invoice, the ledger row and the new balance, activates
the service from that balance, and downloads the invoice PDF (checked with pdftotext)."""
from __future__ import annotations

import subprocess
from decimal import Decimal

import pytest
from sqlalchemy import select

from conftest import PASSWORD
from test_browser import live_server, page, shot  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


@pytest.fixture()
def catalog(db, eur):
    from puqpanel.models import HomeCompany, Product, ProductPrice, TaxRule

    home = HomeCompany(name="Main", company_name="PUQ Cloud GmbH", country="DE", city="Berlin",
                       address1="Alexanderplatz 1", postcode="10178", tax_id="DE136695976",
                       bank_details="IBAN DE02 1203 0000 0000 2020 51", is_default=True)
    db.add(home)
    db.flush()
    db.add(TaxRule(category="", country="DE", region="", home_company_id=home.id,
                   tax1_name="VAT", tax1_rate=Decimal("19")))
    product = Product(name="Cloud VPS S", hourly_billing=True)
    db.add(product)
    db.flush()
    db.add(ProductPrice(product_id=product.id, currency_id=eur.id, period="monthly", base=Decimal("5.00")))
    db.commit()
    return product


def test_staff_bills_a_client_end_to_end(live_server, page, staff, db, new_client, catalog):  # noqa: F811
    from puqpanel.models import Invoice, Transaction

    client = new_client(company_name="Browser Billing GmbH", firstname="Greta", lastname="Berg")
    base = f"{live_server}/clients/{client.id}"
    page.goto(f"{live_server}/login/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(f"{live_server}/clients/**")

    # Add a service: product → price in the client's currency → save.
    page.goto(f"{base}/services")
    page.click("button.puq-add-service")
    modal = page.locator("#service-add-modal")
    modal.wait_for(state="visible")
    modal.locator("select[name=price_id]").select_option(label="Cloud VPS S — Monthly – €5.00")
    modal.locator("input[name=client_label]").fill("web-1")
    shot(page, "10-add-service")
    modal.locator("[type=submit]").click()
    page.wait_for_load_state()
    row = page.locator("tr.puq-service-row").first
    assert row.get_attribute("data-status") == "pending"

    # Create an add-funds proforma of 100.00 net (+19 % VAT).
    page.goto(f"{base}/invoices")
    page.click("#puq-add-funds-open")
    page.locator("#add-funds-modal").wait_for(state="visible")
    page.fill("#puq-add-funds-amount", "100")
    shot(page, "11-add-funds")
    page.locator("#add-funds-modal [type=submit]").click()
    page.wait_for_load_state()
    db.expire_all()
    proforma = db.scalar(select(Invoice).where(Invoice.client_id == client.id, Invoice.type == "proforma"))
    assert proforma.status == "unpaid" and proforma.total == Decimal("119.00") and proforma.number

    # Record its payment on the proforma's page.
    page.goto(f"{base}/invoices/{proforma.id}")
    page.click("#puq-payment-open")
    payment = page.locator("#payment-modal")
    payment.wait_for(state="visible")
    payment.locator("select[name=gateway]").select_option("bank_transfer")
    payment.locator("input[name=external_id]").fill("BANK-2026-0001")
    assert payment.locator("input[name=amount]").input_value() == "119.00"
    shot(page, "12-record-payment")
    payment.locator("[type=submit]").click()
    page.wait_for_load_state()

    db.expire_all()
    paid = db.scalar(select(Invoice).where(Invoice.proforma_id == proforma.id))
    assert paid is not None and paid.type == "invoice" and paid.status == "paid"
    assert db.get(Invoice, proforma.id).status == "invoiced"

    # The paid invoice is on the Invoices tab.
    page.goto(f"{base}/invoices")
    shot(page, "13-invoices")
    assert paid.number in page.inner_text("body")

    # The ledger row and the new balance.
    page.goto(f"{base}/transactions")
    shot(page, "14-transactions")
    text = page.inner_text("body")
    assert "BANK-2026-0001" in text and "€100.00" in text
    page.goto(base)
    assert "€100.00" in page.inner_text(".puq-balance")

    # Activate the service from the balance (setup 0, first month charged).
    page.goto(f"{base}/services")
    page.click("button.puq-activate")
    page.locator("#service-activate-modal").wait_for(state="visible")
    page.locator("#service-activate-modal [type=submit]").click()
    page.wait_for_load_state()
    assert page.locator("tr.puq-service-row").first.get_attribute("data-status") == "active"
    shot(page, "15-service-active")
    charge = db.scalar(select(Transaction).where(Transaction.client_id == client.id, Transaction.type == "charge"))
    assert charge is not None and charge.net < 0

    # Download the paid invoice's PDF.
    page.goto(f"{base}/invoices/{paid.id}")
    shot(page, "16-invoice-detail")
    with page.expect_download() as download_info:
        page.click("#puq-pdf")
    download = download_info.value
    assert download.suggested_filename == f"invoice-{paid.number}.pdf".replace("/", "-")
    path = download.path()
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert paid.number in text and "Browser Billing GmbH" in text and "119.00" in text

    # The Summary's quick actions open the modal on their tab.
    page.goto(base)
    page.click("a.puq-suspend-all")
    page.locator("#service-suspend_all-modal").wait_for(state="visible")
    page.goto(base)
    page.click("a.puq-new-invoice")
    page.locator("#new-invoice-modal").wait_for(state="visible")
    shot(page, "17-summary-new-invoice")
