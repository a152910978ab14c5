"""The client area and "Login as Client" end to end in headless Debian Chromium (Playwright).

A client owner opens the Verification Center from the menu, adds an authenticator app (the key read from the
page's #totp-secret), confirms it and turns 2FA on (recovery codes shown), signs out, signs in with password
and code, tops up from Add Funds, pays the proforma on the test gateway's hosted page, sees the paid invoice
and downloads its PDF. Then a staff admin (its own browser context) opens the client's Summary, uses "Login as
Owner" (answering the reason prompt), sees the banner, returns to admin and finds the start and the stop with
both identities in the client's Activity tab.

The billing clock (a process-wide setting the live server's threads read too) is stepped by 30 seconds
between the TOTP codes, so each code belongs to a step not used before and the test never waits for one.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import PASSWORD
from puqpanel.billing import clock
from test_browser import live_server, page  # noqa: F401  (fixtures)
from test_invoicing import home  # noqa: F401  (fixture)
from test_mfa import code_at

pytestmark = pytest.mark.browser

SHOTS = Path("/tmp/puq-shots")


def snap(page, name: str) -> None:  # noqa: F811
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page, base: str, username: str) -> None:  # noqa: F811
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit], button[type=submit]")


def test_client_2fa_top_up_pdf_and_staff_login_as_owner(live_server, page, db, staff, new_client, home):  # noqa: F811
    from puqpanel.models import ActivityLog, Client, Invoice, MfaRecoveryCode, UserSecurity

    base = live_server
    client = new_client(company_name="Browser Client GmbH", firstname="Clara", lastname="Kunde",
                        password=PASSWORD)
    owner = client.users[0].user
    start = clock.now().replace(microsecond=0)
    moments = iter(start + dt.timedelta(seconds=30 * i) for i in range(10))

    with contextlib.ExitStack() as stack:
        def step() -> dt.datetime:
            """Move the clock on to the next 30-second TOTP step."""
            return stack.enter_context(clock.frozen_at(next(moments)))

        now = step()
        # -- the owner signs in and opens the Verification Center from the menu ---------------------------------
        sign_in(page, base, owner.username)
        page.wait_for_url(f"{base}/client/dashboard")
        assert "Browser Client GmbH" in page.inner_text("body")
        page.click("a:has-text('My Account')")
        page.wait_for_url(f"{base}/account/")
        page.click("a:has-text('Verification Center')")
        page.wait_for_url(f"{base}/account/security")

        # -- adds an authenticator app, reading the key from the page -------------------------------------------
        page.fill("#totp-name", "Clara's phone")
        page.click("form.puq-add-totp [type=submit]")
        page.wait_for_selector("#totp-secret")
        assert page.locator(".puq-totp-qr svg").count() == 1
        snap(page, "01-totp-setup")
        secret = page.inner_text("#totp-secret").strip()
        assert re.fullmatch(r"[A-Z2-7]{16,}", secret), secret
        page.fill("form.puq-confirm-totp input[name=code]", code_at(secret, now))
        page.click("form.puq-confirm-totp [type=submit]")
        page.wait_for_selector("tr.puq-mfa-method")
        assert "Clara's phone" in page.inner_text("table.puq-mfa-methods")
        assert page.locator("#totp-secret").count() == 0  # the key is not shown again

        # -- turns 2FA on with the next step's code; ten recovery codes are shown once --------------------------
        now = step()
        page.click("a:has-text('Two-factor authentication')")
        page.wait_for_url(f"{base}/account/security/2fa")
        page.fill("form.puq-enable-2fa input[name=code]", code_at(secret, now))
        page.click("form.puq-enable-2fa [type=submit]")
        page.wait_for_selector(".puq-recovery-codes")
        codes = page.locator(".puq-recovery-code").all_inner_texts()
        assert len(codes) == 10 and len(set(codes)) == 10
        assert page.inner_text(".puq-2fa-status").strip() == "on"
        snap(page, "02-recovery-codes")
        db.expire_all()
        assert db.get(UserSecurity, owner.id).two_factor_enabled
        assert len(db.scalars(select(MfaRecoveryCode).where(MfaRecoveryCode.user_id == owner.id)).all()) == 10
        page.reload()
        assert page.locator(".puq-recovery-code").count() == 0  # shown once

        # -- signs out, signs in with password and a code -------------------------------------------------------
        page.goto(f"{base}/logout/")
        now = step()
        sign_in(page, base, owner.username)
        page.wait_for_url(f"{base}/login/2fa")
        assert page.url.endswith("/login/2fa")
        page.goto(f"{base}/client/dashboard")  # the second step can't be skipped
        assert "/login/" in page.url and "/client/dashboard" not in page.url.split("?")[0]
        page.goto(f"{base}/login/2fa")
        snap(page, "03-second-step")
        page.fill("#puq-code", code_at(secret, now))
        page.click(".puq-two-factor form [type=submit]")
        page.wait_for_url(f"{base}/client/dashboard")

        # -- tops up from Add Funds -----------------------------------------------------------------------------
        page.click("a:has-text('Add Funds')")
        page.wait_for_url(f"{base}/client/add-funds/**")
        page.fill("#puq-add-funds-amount", "100")
        page.wait_for_function(
            "document.querySelector('.puq-q-total').textContent.indexOf('123') !== -1")  # 23 % VAT, live quote
        snap(page, "04-add-funds")
        page.click("button.puq-top-up")
        page.wait_for_url(re.compile(r".*/client/invoices/\d+#pay$"))
        db.expire_all()
        proforma = db.scalar(select(Invoice).where(Invoice.client_id == client.id, Invoice.type == "proforma"))
        assert proforma.status == "unpaid" and proforma.total == Decimal("123.00")
        assert proforma.number in page.inner_text("body")

        # -- pays it on the test gateway's hosted page -----------------------------------------------------------
        page.click("a.puq-pay-test")
        page.wait_for_url(f"{base}/client/invoices/{proforma.id}/pay/test")
        assert page.input_value("#puq-gw-amount") == "123.00"
        snap(page, "05-test-gateway")
        page.click("form.puq-gw-form button[type=submit]")
        page.wait_for_url(re.compile(r".*/client/invoices/\d+$"))
        db.expire_all()
        invoice = db.scalar(select(Invoice).where(Invoice.proforma_id == proforma.id))
        assert invoice is not None and invoice.status == "paid"
        assert page.url.endswith(f"/client/invoices/{invoice.id}")
        body = page.inner_text("body")
        assert invoice.number in body and "Paid" in body and page.locator("a.puq-pay-now").count() == 0
        snap(page, "06-paid-invoice")
        assert db.get(Client, client.id).balance == Decimal("100")

        # -- the paid invoice is listed, and its PDF downloads ---------------------------------------------------
        with page.expect_download() as download_info:
            page.click("#puq-pdf")
        download = download_info.value
        assert Path(download.path()).read_bytes().startswith(b"%PDF")
        assert download.suggested_filename.endswith(".pdf")
        page.goto(f"{base}/client/invoices/?tab=paid")
        assert invoice.number in page.inner_text("table")

        # -- a staff admin, in its own browser context, logs in as the owner ------------------------------------
        staff_context = page.context.browser.new_context(viewport={"width": 1400, "height": 1000})
        stack.callback(staff_context.close)
        admin = staff_context.new_page()
        admin.set_default_timeout(15000)
        sign_in(admin, base, "admin")
        admin.wait_for_url(f"{base}/clients/**")
        admin.goto(f"{base}/clients/{client.id}")
        prompts = []

        def answer(dialog):
            prompts.append((dialog.type, dialog.message))
            dialog.accept("Ticket 4711")

        admin.once("dialog", answer)
        admin.click("form.puq-impersonate button:has-text('Login as Owner')")
        admin.wait_for_url(f"{base}/client/dashboard")
        assert prompts and prompts[0][0] == "prompt" and "Reason" in prompts[0][1]
        banner = admin.inner_text(".puq-impersonation-banner")
        assert f"You are signed in as Clara Kunde ({owner.email})" in banner
        assert "Browser Client GmbH" in admin.inner_text("body")
        snap(admin, "07-impersonation-banner")
        # the staff pages are closed meanwhile
        resp = admin.goto(f"{base}/clients/")
        assert resp.status == 403
        admin.goto(f"{base}/client/dashboard")

        # -- returns to admin: back on the client's record -------------------------------------------------------
        admin.click("button.puq-return-to-admin")
        admin.wait_for_url(f"{base}/clients/{client.id}")
        assert admin.locator(".puq-impersonation-banner").count() == 0
        assert "Login as Owner" in admin.inner_text("body")

        # -- the Activity tab shows the start and the stop with both identities ----------------------------------
        admin.goto(f"{base}/clients/{client.id}/activity")
        snap(admin, "08-activity")
        rows = admin.locator("tr.puq-activity-row")
        texts = [rows.nth(i).inner_text() for i in range(rows.count())]
        start_row = next(t for t in texts if "impersonation.start" in t)
        stop_row = next(t for t in texts if "impersonation.stop" in t)
        assert "admin" in start_row
        assert "Ticket 4711" in start_row and owner.email in start_row and "admin@staff.test" in start_row
        assert owner.username in stop_row and "as impersonated by admin" in stop_row
        db.expire_all()
        entries = {e.action: e for e in db.scalars(select(ActivityLog).where(
            ActivityLog.client_id == client.id, ActivityLog.action.like("impersonation.%")))}
        assert (entries["impersonation.start"].actor_id, entries["impersonation.start"].impersonator_id) == (
            staff["admin"].id, None)
        assert (entries["impersonation.stop"].actor_id, entries["impersonation.stop"].impersonator_id) == (
            owner.id, staff["admin"].id)

        # the owner's own browser is still signed in as itself, without a banner
        page.goto(f"{base}/client/dashboard")
        assert page.locator(".puq-impersonation-banner").count() == 0
        assert "Browser Client GmbH" in page.inner_text("body")
