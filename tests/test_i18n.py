"""Translations: complete catalogs for the required strings, compiled .mo files, FAB's language switch.

The .mo files are build output (scripts/translations.sh compile; scripts/test.sh and CI run it). When one is
missing or older than its .po, the fixture compiles it here with Babel's own API, so the test also works
from a bare `pytest`.
"""
from __future__ import annotations

import os
import re
import tempfile

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from puqpanel.paths import TRANSLATIONS_DIR

from conftest import PASSWORD
from test_invoicing import frozen, home  # noqa: F401  (fixtures of the billing page test)
from test_login_2fa import T1, enable_totp, post_code, start_2fa_login
from test_mfa import code_at

LANGUAGES = ("en", "de", "fr", "pl", "uk")
TRANSLATED = ("de", "fr", "pl", "uk")  # en is the source language

# Strings every catalog must translate: menus, client statuses, the create-client form, domain errors, record tabs,
# billing, the billing engine (Automation page, jobs, reminders).
REQUIRED = [
    # menus
    "Clients", "Manage Clients", "Client Groups", "Custom Fields",
    # statuses as displayed
    "New", "Active", "Inactive", "Suspended", "Closed", "Fraud",
    # client form labels
    "Owner email", "Password", "First name", "Last name", "Company", "Tax ID", "Phone", "Language", "Currency",
    "Status", "Group", "Manager", "Tags", "Address 1", "Address 2", "City", "Postcode", "Country",
    "State / Region", "Billing address",
    # domain error messages
    "This field is required.",
    "Choose a valid country.",
    "Choose a region of the selected country.",
    "Another client already has this tax id.",
    "A user with this email already exists.",
    "Client not found.",
    # client record tabs (puqpanel/views/client_record.py; "Custom Fields" is listed with the menus)
    "Summary", "Profile", "Addresses", "Users", "Notes", "Activity",
    # billing: record tabs, menus, documents, statuses, actions
    "Services", "Invoices", "Transactions", "Billing", "Products", "Currencies", "Home Companies", "Tax Rules",
    "Number Series", "Proforma", "Invoice", "Credit Note", "Unpaid", "Paid", "Pending", "Terminated",
    "Balance", "Outstanding", "Add Service", "Suspend All Services", "Create Add Funds Proforma", "New Invoice",
    "Record Payment", "Refund", "Create Transaction", "Setup fee", "Bank transfer",
    "Insufficient funds: activation needs %(needed)s (setup and first period); balance plus credit limit is "
    "%(available)s.",
    "Reverse charge: VAT to be accounted for by the recipient (Art. 196 Directive 2006/112/EC).",
    # billing engine: the Automation page, job labels, run statuses, reminder e-mails
    "Automation", "Run now", "Billing cycle", "Cancel unpaid orders", "Create services", "Unsuspend services",
    "Charge services", "Suspend services", "Terminate services", "Revalidate VAT ids", "Overdue reminders",
    "Send e-mail", "Running", "Succeeded", "Failed", "Interrupted", "Last run", "Next run", "Billing moment",
    "Not paid within the cancellation delay", "Insufficient funds for the next charge",
    "Payment reminder: %(document)s %(number)s is due on %(date)s",
    "Overdue: %(document)s %(number)s was due on %(date)s",
    "%(document)s %(number)s for %(amount)s was due on %(date)s and has not been paid yet.",
    "If you have paid already, please disregard this message.",
    # client area, account security (2FA), the login's second step, Login as Client
    "Dashboard", "Add Funds", "Company Profile", "Recurring cost breakdown", "Recommended Add Funds",
    "Request termination", "Termination requested.", "Invite a user",
    "My Account", "Change Password", "Verification Center", "Two-Factor Authentication", "Two-factor authentication",
    "Your recovery codes", "Verification code", "Enter the 6-digit code from your authenticator app.",
    "You can also use one of your recovery codes.", "Forgot your password?", "Invalid code. Please try again.",
    "Login as Client", "Login as Owner", "Return to admin", "You are signed in as %(name)s (%(email)s)",
]

# Words spelled the same in some of the languages (German "Status" and "Tags", French "Clients", "Notes",
# "Services" and "Transactions").
SAME_IN_SOME_LANGUAGES = {"Status", "Tags", "Clients", "Notes", "Services", "Transactions"}

# What the menu category "Clients" and the group list title read in each language.
CLIENTS_LABEL = {"en": "Clients", "de": "Kunden", "fr": "Clients", "pl": "Klienci", "uk": "Клієнти"}
GROUPS_LABEL = {"en": "Client Groups", "de": "Kundengruppen", "fr": "Groupes de clients", "pl": "Grupy klientów",
                "uk": "Групи клієнтів"}


def _po_path(lang: str) -> str:
    return os.path.join(TRANSLATIONS_DIR, lang, "LC_MESSAGES", "messages.po")


def _read(lang: str):
    with open(_po_path(lang), "rb") as fh:
        return read_po(fh, locale=lang)


def _template():
    with open(os.path.join(TRANSLATIONS_DIR, "messages.pot"), "rb") as fh:
        return read_po(fh)


def _compile_missing() -> None:
    for lang in LANGUAGES:
        po = _po_path(lang)
        mo = po[:-3] + ".mo"
        if os.path.exists(mo) and os.path.getmtime(mo) >= os.path.getmtime(po):
            continue
        catalog = _read(lang)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(mo), suffix=".mo.tmp")
        with os.fdopen(fd, "wb") as fh:
            write_mo(fh, catalog, use_fuzzy=True)
        os.replace(tmp, mo)  # atomic: another test process may be reading it


@pytest.fixture(scope="module")
def compiled(app):
    _compile_missing()
    # Flask-Babel caches merged catalogs per locale; drop anything loaded before the compile.
    app.extensions["babel"].instance.domain_instance.cache.clear()
    return app


def _visible(html: str) -> str:
    """Page text without tags, scripts and attributes, whitespace collapsed."""
    html = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", html)
    return " ".join(re.sub(r"(?s)<[^>]+>", " ", html).split())


def test_every_catalog_translates_the_required_strings():
    pot_ids = {m.id for m in _template() if m.id}
    missing_from_code = [s for s in REQUIRED if s not in pot_ids]
    assert not missing_from_code, f"not extracted (run scripts/translations.sh extract update): {missing_from_code}"
    for lang in TRANSLATED:
        catalog = _read(lang)
        problems = []
        for msgid in REQUIRED:
            message = catalog.get(msgid)
            if message is None:
                problems.append(f"{msgid!r} not in the catalog")
            elif not message.string:
                problems.append(f"{msgid!r} untranslated")
            elif message.fuzzy:
                problems.append(f"{msgid!r} fuzzy")
            elif message.string == msgid and msgid not in SAME_IN_SOME_LANGUAGES:
                problems.append(f"{msgid!r} left in English")
        assert not problems, f"{lang}: " + "; ".join(problems)


def test_catalogs_match_the_template_and_keep_placeholders():
    pot_ids = {m.id for m in _template() if m.id}
    for lang in LANGUAGES:
        catalog = _read(lang)
        ids = {m.id for m in catalog if m.id}
        assert pot_ids <= ids, f"{lang}: run scripts/translations.sh update; missing {sorted(map(str, pot_ids - ids))[:5]}"
        # Babel's checkers: a translation must use the same %(name)s placeholders as its msgid.
        errors = [(m.id, [str(e) for e in errs]) for m, errs in catalog.check()]
        assert not errors, f"{lang}: {errors}"


def test_english_catalog_is_complete():
    catalog = _read("en")
    untranslated = [m.id for m in catalog if m.id and not m.string]
    assert not untranslated, untranslated


def test_language_switch_changes_the_page(compiled, browser, staff):
    browser.login("admin")
    page_url = "/clientgroupview/list/"

    def menu_and_title():
        resp = browser.get(page_url)
        assert resp.status_code == 200
        return _visible(resp.text)

    english = menu_and_title()
    assert "Client Groups" in english and "Kundengruppen" not in english

    for lang in ("de", "uk", "pl", "fr", "en"):
        resp = browser.get(f"/lang/{lang}")
        assert resp.status_code == 302
        text = menu_and_title()
        assert GROUPS_LABEL[lang] in text, lang
        assert CLIENTS_LABEL[lang] in text, lang
        others = {GROUPS_LABEL[o] for o in LANGUAGES if o != lang and GROUPS_LABEL[o] != GROUPS_LABEL[lang]}
        assert not [o for o in others if o in text], f"{lang}: another language's label on the page"
        with browser.client.session_transaction() as session:
            assert session["locale"] == lang

    assert browser.get("/lang/xx").status_code == 404


def test_language_switch_translates_fab_and_puqpanel_strings_together(compiled, browser, staff):
    """Flask-Babel merges FAB's catalog with puqpanel's: both are German after /lang/de."""
    browser.login("admin")
    browser.get("/lang/de")
    text = _visible(browser.get("/clientgroupview/list/").text)
    assert "Kundengruppen" in text  # puqpanel's catalog
    assert "Abmelden" in text  # FAB's own "Logout"


def test_domain_errors_are_translated(compiled, app, db):
    from flask_babel import force_locale

    from puqpanel.domain import DomainError
    from puqpanel.domain.validation import check_country

    with app.test_request_context("/"):
        for lang, expected in (("de", "Land"), ("uk", "країну"), ("en", "Choose a valid country.")):
            with force_locale(lang):
                with pytest.raises(DomainError) as exc:
                    check_country("XX")
                assert expected in exc.value.errors["country"], (lang, exc.value.errors)


def test_billing_pages_are_translated(compiled, browser, staff, new_client, home, frozen):
    """The Invoices tab, a proforma and a paid invoice (with its ledger rows) read in German after /lang/de."""
    from puqpanel.billing import invoicing, payments

    client = new_client(company_name="Kunde GmbH")
    unpaid = invoicing.create_add_funds_proforma(client, "100")
    paid = invoicing.create_add_funds_proforma(client, "50")
    invoice = payments.record_payment(paid, gateway="bank_transfer", external_id="I18N-1", amount=paid.total).invoice
    browser.login("admin")
    assert browser.get("/lang/de").status_code == 302

    listing = _visible(browser.get(f"/clients/{client.id}/invoices").text)
    for german in ("Rechnungen", "Transaktionen", "Neue Rechnung", "Aufladungs-Proforma erstellen",
                   "PROFORMA-RECHNUNG", "Unbezahlt", "Ausstellungsdatum", "Eigene Firma"):
        assert german in listing, german
    assert "Create Add Funds Proforma" not in listing and "Unpaid" not in listing

    proforma = _visible(browser.get(f"/clients/{client.id}/invoices/{unpaid.id}").text)
    for german in ("Zahlung erfassen", "Zahlungshinweise", "Banküberweisung", "Verwendungszweck", "Zwischensumme"):
        assert german in proforma, german
    assert "Record Payment" not in proforma

    paid_page = _visible(browser.get(f"/clients/{client.id}/invoices/{invoice.id}").text)
    for german in ("Rechnung", "Bezahlt", "Buchungen", "Zahlung", "Erstattung"):
        assert german in paid_page, german
    # ledger row types are labels, not the stored keys
    assert not re.search(r"\b(charge|payment)\b", paid_page), paid_page

    ledger = browser.get(f"/clients/{client.id}/transactions").text
    assert "Transaktion anlegen" in _visible(ledger)
    assert re.search(r"<br>Banküberweisung</small>", ledger)  # the gateway's label, not "bank_transfer"


def test_automation_page_is_translated(compiled, browser, staff, db):
    """The Automation page (jobs, run statuses, triggers, counts) reads in German after /lang/de."""
    import datetime as dt

    from puqpanel.models import AutomationRun

    started = dt.datetime(2026, 3, 2, 10, 0)
    db.add(AutomationRun(job="charge", trigger="beat", status="succeeded", at=started, started_at=started,
                         finished_at=started + dt.timedelta(seconds=3), counts={"periods": 2}, errors=""))
    db.commit()
    browser.login("admin")
    assert browser.get("/lang/de").status_code == 302

    resp = browser.get("/automation/")
    assert resp.status_code == 200
    page = _visible(resp.text)
    for german in ("Automatisierung", "Abrechnungszyklus", "Dienste abrechnen", "Dienste suspendieren",
                   "Zahlungserinnerungen", "Letzter Lauf", "Nächster Lauf", "Erfolgreich", "Zeitplan",
                   "Belastete Zeiträume", "Jetzt ausführen", "Letzte Läufe"):
        assert german in page, german
    for english in ("Charge services", "Billing cycle", "Last run", "Succeeded", "Periods charged", "Run now"):
        assert english not in page, english


def test_client_area_dashboard_is_translated(compiled, make_browser, new_client):
    """A client owner's dashboard (navigation, header, cost breakdown, recommended add funds) reads in German."""
    new_client(password=PASSWORD)
    owner = make_browser("owner1@example.com")
    assert owner.get("/lang/de").status_code == 302
    resp = owner.get("/client/dashboard")
    assert resp.status_code == 200
    page = _visible(resp.text)
    for german in ("Übersicht", "Dienste", "Rechnungen", "Transaktionen", "Guthaben aufladen", "Firmenprofil",
                   "Guthaben", "Kreditlimit", "Aufschlüsselung der laufenden Kosten", "Empfohlene Aufladung",
                   "Guthaben in den letzten 30 Tagen"):
        assert german in page, german
    for english in ("Dashboard", "Add Funds", "Company Profile", "Credit limit", "Recurring cost breakdown"):
        assert english not in page, english


def test_login_second_step_and_account_security_are_translated(compiled, db, browser, new_client):
    """The language chosen before signing in stays through the 2FA step; the account's 2FA page is German too."""
    from puqpanel.billing import clock
    from puqpanel.domain.clients import find_login

    client = new_client(password=PASSWORD)
    owner = find_login(client.users[0].user.email)
    secret = enable_totp(db, owner)
    assert browser.get("/lang/de").status_code == 302
    assert "Passwort vergessen?" in _visible(browser.get("/login/").text)
    with clock.frozen_at(T1):
        start_2fa_login(browser, owner.username)
        step = _visible(browser.get("/login/2fa").text)
        for german in ("Zwei-Faktor-Authentifizierung", "6-stelligen Code aus Ihrer Authenticator-App",
                       "Wiederherstellungscodes", "Bestätigungscode", "Bestätigen", "Von vorn beginnen"):
            assert german in step, german
        assert "authenticator app" not in step and "Verification code" not in step
        assert post_code(browser, code_at(secret, T1)).status_code == 302
        resp = browser.get("/account/security/2fa")
    assert resp.status_code == 200
    account = _visible(resp.text)
    for german in ("Mein Konto", "Passwort ändern", "Verifizierungscenter", "Unbenutzte Wiederherstellungscodes",
                   "Zwei-Faktor-Authentifizierung deaktivieren", "Neue Wiederherstellungscodes erstellen"):
        assert german in account, german
    assert "Turn off two-factor authentication" not in account and "My Account" not in account
