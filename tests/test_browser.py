"""End to end in headless Debian Chromium (Playwright; never `playwright install`).

A staff admin logs in, creates a client with a billing address, finds it by part of its email, opens its
record, adds a shipping address and a note, and sees both in the Activity tab.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from conftest import PASSWORD

CHROMIUM = os.environ.get("PUQPANEL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = pytest.mark.browser


@pytest.fixture()
def live_server(app, db):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture()
def page():
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: scripts/test.sh installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"],
        )
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(15000)
        yield page
        context.close()
        browser.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_staff_creates_client_and_works_its_record(live_server, page, staff, db, eur):
    page.goto(f"{live_server}/login/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(f"{live_server}/clients/**")

    # Create a client with a billing address.
    page.goto(f"{live_server}/clients/add")
    page.fill("input[name=email]", "marta.kowalska@browser-test.example")
    page.fill("input[name=firstname]", "Marta")
    page.fill("input[name=lastname]", "Kowalska")
    page.fill("input[name=company_name]", "Kowalska Hosting")
    page.fill("input[name=phone]", "+48 22 123 45 67")
    page.fill("input[name=address1]", "ul. Marszałkowska 1")
    page.fill("input[name=city]", "Warszawa")
    page.fill("input[name=postcode]", "00-001")
    page.select_option("select[name=country]", "PL")
    page.wait_for_selector("select[name=region] option[value='PL-14']", state="attached")
    page.select_option("select[name=region]", "PL-14")
    shot(page, "01-create-client")
    page.click("form#create-client [type=submit]")
    page.wait_for_url(f"{live_server}/clients/*")
    assert "Kowalska" in page.content()

    # Find it by part of its email.
    page.goto(f"{live_server}/clients/")
    page.fill("input[name=q]", "kowalska@browser")
    page.press("input[name=q]", "Enter")
    page.wait_for_load_state()
    shot(page, "02-directory-search")
    page.click("a:has-text('Marta Kowalska')")
    page.wait_for_url(f"{live_server}/clients/*")
    client_url = page.url.split("?")[0].rstrip("/")

    # Add a shipping address through the modal.
    page.goto(f"{client_url}/addresses")
    page.click("[data-target='#address-modal-new']")
    modal = page.locator("#address-modal-new")
    modal.wait_for(state="visible")
    modal.locator("select[name=type]").select_option("shipping")
    modal.locator("input[name=name]").fill("Warehouse")
    modal.locator("input[name=address1]").fill("ul. Portowa 5")
    modal.locator("input[name=city]").fill("Gdańsk")
    modal.locator("input[name=postcode]").fill("80-001")
    modal.locator("select[name=country]").select_option("PL")
    page.wait_for_selector("#address-modal-new select[name=region] option[value='PL-22']", state="attached")
    modal.locator("select[name=region]").select_option("PL-22")
    shot(page, "03-address-modal")
    modal.locator("[type=submit]").click()
    page.wait_for_load_state()
    assert "Warehouse" in page.content()

    # Add a note.
    page.goto(f"{client_url}/notes")
    page.fill("textarea[name=body]", "Called about the migration window.")
    page.click("form.puq-note-form [type=submit]")
    page.wait_for_load_state()
    assert "Called about the migration window." in page.content()

    # Both show in the Activity tab.
    page.goto(f"{client_url}/activity")
    shot(page, "04-activity")
    text = page.inner_text("body")
    assert "address" in text.lower() and "Warehouse" in text
    assert "note" in text.lower() and "Called about the migration window." in text
