"""Client area: Company Profile (modify_profile), through the real forms with CSRF, on the real database."""
from __future__ import annotations

import re

import pytest
from conftest import PASSWORD
from sqlalchemy import func, select
from test_vies import FR_OTHER, FR_VAT, answer, server  # noqa: F401  (server is a fixture)

from puqpanel.domain.client_self_service import profile_form_data
from puqpanel.models import ActivityLog, Client, ClientAddress, CustomField, CustomFieldValue, User

PROFILE = "/client/profile/"
SAVE = "/client/profile/save"


def link_login(client, email: str, permissions, password: str = PASSWORD):
    """A second client login linked to `client` with these permission keys (the staff domain path)."""
    from puqpanel.domain.client_users import create_and_associate

    link, _password = create_and_associate(client, email, "Linked", "User", permissions, password)
    return link


def payload(client, **overrides) -> dict:
    data = dict(profile_form_data(client))
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def fresh(db, client) -> Client:
    db.expire_all()
    return db.get(Client, client.id)


def updates(db, client) -> list[ActivityLog]:
    db.expire_all()
    return list(db.scalars(
        select(ActivityLog).where(ActivityLog.client_id == client.id, ActivityLog.action == "client.update")
        .order_by(ActivityLog.id)
    ).unique())


def log_count(db) -> int:
    db.expire_all()
    return db.scalar(select(func.count(ActivityLog.id)))


@pytest.fixture()
def owner(new_client, make_browser):
    client = new_client(company_name="Schmidt GmbH", password=PASSWORD)
    return client, make_browser("owner1@example.com")


def test_profile_shows_the_clients_values(db, owner):
    client, browser = owner
    page = browser.get(PROFILE)
    assert page.status_code == 200
    for text in ('value="Anna"', 'value="Schmidt GmbH"', 'value="+49301234567"', 'value="Hauptstr. 1"',
                 'value="Berlin"', '<option value="DE" selected', '<option value="DE-BE" selected'):
        assert text in page.text, text
    assert "saving them activates your account" in page.text  # the client is still new
    # placeholders are attributes (they were escaped into the tag: placeholder=&#34;…&#34;)
    assert 'placeholder="Leave empty if you are not a company"' in page.text
    assert 'placeholder="+49 30 123456"' in page.text and "&#34;" not in page.text
    # The nav marks the page and the form posts to the save route with a CSRF token.
    assert 'action="/client/profile/save"' in page.text and 'name="csrf_token"' in page.text


def test_first_save_applies_fields_and_address_activates_and_logs_one_diff(db, owner):
    client, browser = owner
    assert client.status == "new"
    before_logs = log_count(db)
    resp = browser.post_form(SAVE, payload(
        client, firstname="Anne", company_name="Schmidt & Co KG", phone="0171 1234567", language="en",
        billing_address1="Neue Str. 5", billing_address2="Hinterhaus", billing_city="Potsdam",
        billing_postcode="14467", billing_country="de", billing_region="de-bb", tax_id="DE136695976",
    ), form_url=PROFILE)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(PROFILE)
    client = fresh(db, client)
    billing = client.billing_address
    assert (client.firstname, client.company_name, client.phone, client.status, client.tax_id) == (
        "Anne", "Schmidt & Co KG", "+491711234567", "active", "DE136695976")
    assert (billing.address1, billing.address2, billing.city, billing.postcode, billing.country, billing.region) == (
        "Neue Str. 5", "Hinterhaus", "Potsdam", "14467", "DE", "DE-BB")
    entries = updates(db, client)
    assert len(entries) == 1  # one row for profile, address and status together
    entry = entries[0]
    owner_user = db.scalar(select(User).where(User.username == "owner1@example.com"))
    assert entry.actor_id == owner_user.id and entry.impersonator_id is None
    assert entry.changes["status"] == ["new", "active"]
    assert entry.changes["billing_city"] == ["Berlin", "Potsdam"]
    assert entry.changes["phone"] == ["+49301234567", "+491711234567"]
    assert entry.changes["firstname"] == ["Anna", "Anne"]
    assert "lastname" not in entry.changes
    # The tax id was checked in VIES after the commit (the test VIES port is closed: "unavailable").
    assert client.vies_error == "CONNECTION_ERROR"
    # Only the update row (and VIES writes no row for an unavailable answer) was added.
    assert log_count(db) == before_logs + 1
    assert "Profile saved." in browser.get(PROFILE).text


def test_an_unchanged_save_of_an_active_client_writes_nothing(db, owner):
    client, browser = owner
    browser.post_form(SAVE, payload(client), form_url=PROFILE)  # first save: new → active
    assert fresh(db, client).status == "active"
    count = log_count(db)
    resp = browser.post_form(SAVE, payload(fresh(db, client)), form_url=PROFILE)
    assert resp.status_code == 302
    assert log_count(db) == count
    assert "Nothing changed." in browser.get(PROFILE).text


@pytest.mark.parametrize("overrides, field, message", [
    ({"phone": "12"}, "phone", "valid phone number"),
    ({"tax_id": "DE123"}, "tax_id", "not a valid VAT number"),
    ({"billing_country": "XX"}, "billing_country", "valid country"),
    ({"billing_region": "FR-IDF"}, "billing_region", "region of the selected country"),
    ({"firstname": "  "}, "firstname", "required"),
    ({"company_name": "x" * 201}, "company_name", "At most 200"),
    ({"billing_city": ""}, "billing_city", "required"),
    ({"language": "xx"}, "language", "offered languages"),
])
def test_invalid_input_is_400_with_the_error_and_nothing_written(db, owner, overrides, field, message):
    client, browser = owner
    count = log_count(db)
    resp = browser.post_form(SAVE, payload(client, **{"lastname": "Changed", **overrides}), form_url=PROFILE)
    assert resp.status_code == 400
    assert message in resp.text
    assert re.search(rf'has-error">\s*<label class="control-label" for="{field}"', resp.text), field
    assert "nothing was saved" in resp.text
    client = fresh(db, client)
    assert (client.firstname, client.lastname, client.status, client.billing_address.city) == (
        "Anna", "Schmidt1", "new", "Berlin")
    assert log_count(db) == count


def test_a_tax_id_of_another_client_is_refused(db, owner, new_client):
    client, browser = owner
    new_client(tax_id="DE136695976")
    resp = browser.post_form(SAVE, payload(client, tax_id="DE 136 695 976"), form_url=PROFILE)
    assert resp.status_code == 400 and "Another client already has this tax id." in resp.text
    assert fresh(db, client).tax_id is None


def test_staff_only_fields_posted_by_the_client_are_ignored(db, owner, staff):
    client, browser = owner
    client.national_id = "ID-1"
    client.admin_notes = "staff note"
    db.commit()
    before = {name: getattr(fresh(db, client), name) for name in (
        "credit_limit", "national_id", "manager_id", "currency_id", "blocked", "blocked_reason", "admin_notes",
        "group_id", "parent_id", "never_auto_suspend", "tax_exempt", "is_reseller", "balance")}
    resp = browser.post_form(SAVE, payload(
        client, credit_limit="99999", status="fraud", national_id="HACKED", manager_id=str(staff["admin"].id),
        currency_id="999", blocked="1", blocked_reason="x", admin_notes="mine now", group_id="1", parent_id="1",
        never_auto_suspend="1", tax_exempt="1", is_reseller="1", balance="1000000", tag_ids="1",
    ), form_url=PROFILE)
    assert resp.status_code == 302
    client = fresh(db, client)
    assert {name: getattr(client, name) for name in before} == before
    assert client.status == "active"  # only the first-save rule moves the status, never the posted value
    assert client.tags == []
    assert set(updates(db, client)[0].changes) == {"status"}


def test_injection_texts_are_stored_verbatim_and_shown_escaped(db, owner):
    client, browser = owner
    evil = '<script>alert(1)</script>{{ 7*7 }}"\'; DROP TABLE puq_client;--'
    resp = browser.post_form(SAVE, payload(client, company_name=evil[:200], billing_address2="<b>x</b>{% raw %}"),
                             form_url=PROFILE)
    assert resp.status_code == 302
    client = fresh(db, client)
    assert client.company_name == evil and client.billing_address.address2 == "<b>x</b>{% raw %}"
    page = browser.get(PROFILE).text
    assert "<script>alert(1)</script>" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;{{ 7*7 }}" in page  # escaped, and not evaluated (no 49)
    assert "&lt;b&gt;x&lt;/b&gt;{% raw %}" in page


def test_a_changed_eu_vat_id_is_checked_in_vies(db, server, new_client, make_browser):  # noqa: F811
    server.answer(FR_VAT, 200, answer(True, "VALID", name="EXEMPLE SARL"))
    client = new_client(country="FR", region="", city="Paris", phone="", company_name="Exemple SARL", tax_id=FR_VAT,
                        password=PASSWORD)
    assert fresh(db, client).vies_status == "valid"
    browser = make_browser("owner1@example.com")
    server.requests.clear()
    server.answer(FR_OTHER, 200, answer(True, "VALID", name="AUTRE SARL"))
    resp = browser.post_form(SAVE, payload(fresh(db, client), tax_id=FR_OTHER), form_url=PROFILE)
    assert resp.status_code == 302
    client = fresh(db, client)
    assert (client.tax_id, client.vies_status, client.vies_name) == (FR_OTHER, "valid", "AUTRE SARL")
    assert len(server.requests) == 1 and FR_OTHER[2:] in server.requests[0]
    # A save that leaves the tax id (and the country) alone asks VIES nothing.
    server.requests.clear()
    browser.post_form(SAVE, payload(client, firstname="Jean"), form_url=PROFILE)
    assert server.requests == [] and fresh(db, client).firstname == "Jean"
    # Moving the billing address to another member state forgets the answer and asks again.
    server.answer(FR_OTHER, 200, answer(False, "INVALID"))
    resp = browser.post_form(SAVE, payload(fresh(db, client), billing_country="NL", billing_city="Amsterdam"),
                             form_url=PROFILE)
    assert resp.status_code == 302 and len(server.requests) == 1
    client = fresh(db, client)
    assert (client.billing_address.country, client.vies_status, client.vies_name) == ("NL", "invalid", "")
    # A VAT id that is not valid for the client's country is refused on the form.
    resp = browser.post_form(SAVE, payload(client, tax_id="123456789B01"), form_url=PROFILE)
    assert resp.status_code == 400 and "not a valid VAT number for NL" in resp.text


def test_client_visible_custom_fields_only(db, owner):
    client, browser = owner
    visible = CustomField(name="Purchase order", field_type="text", client_visible=True, regex=r"PO-\d+")
    flag = CustomField(name="Newsletter", field_type="bool", client_visible=True)
    hidden = CustomField(name="Risk score", field_type="number", client_visible=False)
    db.add_all([visible, flag, hidden])
    db.flush()
    db.add(CustomFieldValue(client_id=client.id, field_id=hidden.id, value="7"))
    db.commit()
    page = browser.get(PROFILE).text
    assert "Purchase order" in page and "Newsletter" in page and "Risk score" not in page
    bad = browser.post_form(SAVE, payload(client, **{f"cf_{visible.id}": "nope"}), form_url=PROFILE)
    assert bad.status_code == 400 and "required format" in bad.text
    resp = browser.post_form(SAVE, payload(client, **{f"cf_{visible.id}": "PO-42", f"cf_{flag.id}": "1",
                                                      f"cf_{hidden.id}": "0"}), form_url=PROFILE)
    assert resp.status_code == 302
    db.expire_all()
    values = {row.field_id: row.value for row in db.scalars(select(CustomFieldValue))}
    assert values == {visible.id: "PO-42", flag.id: "1", hidden.id: "7"}
    changes = updates(db, client)[0].changes
    assert changes["custom: Purchase order"] == ["", "PO-42"] and changes["custom: Newsletter"] == ["0", "1"]
    assert not any("Risk" in key for key in changes)


def test_without_modify_profile_the_profile_is_403_and_not_in_the_nav(db, new_client, make_browser):
    client = new_client()
    link_login(client, "helper@example.com", ["manage_users"])
    browser = make_browser("helper@example.com")
    assert browser.get(PROFILE).status_code == 403
    assert browser.get("/client/profile/regions/DE").status_code == 403
    resp = browser.post(SAVE, payload(client, firstname="Mallory"))
    assert resp.status_code == 403
    assert fresh(db, client).firstname == "Anna"
    users_page = browser.get("/client/users/")
    assert users_page.status_code == 200
    assert "/client/profile/" not in users_page.text and "/client/users/" in users_page.text
    # With the key the same login may open and save it.
    link_login(new_client(), "editor@example.com", ["modify_profile"])
    assert make_browser("editor@example.com").get(PROFILE).status_code == 200


def test_post_without_csrf_is_400_and_get_on_save_is_405(db, owner):
    client, browser = owner
    resp = browser.client.post(SAVE, data=payload(client, firstname="NoToken"))
    assert resp.status_code == 400
    assert fresh(db, client).firstname == "Anna"
    assert browser.get(SAVE).status_code == 405


def test_regions_of_a_country_as_json(db, owner):
    _client, browser = owner
    data = browser.get("/client/profile/regions/PL").get_json()
    assert {"code": "PL-14", "name": "Mazowieckie"} in data["regions"]
    assert browser.get("/client/profile/regions/ZZ").get_json() == {"regions": []}
    assert browser.get("/client/profile/regions/%3Cscript%3E").get_json() == {"regions": []}


def test_staff_users_do_not_reach_the_client_profile(db, owner, make_browser, staff):
    client, _browser = owner
    for name in ("admin", "support"):
        browser = make_browser(name)
        # Support lacks the ClientArea permission (403); Admin holds every permission but is linked to no
        # client (404). Either way no client's profile.
        assert browser.get(PROFILE).status_code in (403, 404)
        assert browser.post(SAVE, payload(client, firstname="Staff")).status_code in (403, 404)
    assert fresh(db, client).firstname == "Anna"
    assert db.scalar(select(func.count(ClientAddress.id))) == 1
