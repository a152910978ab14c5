"""Staff client record: every tab, every change through the real forms (CSRF on), logged before → after."""
from __future__ import annotations

import re
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from puqpanel.domain.profile import profile_form_data
from puqpanel.models import (
    CLIENT_PERMISSIONS,
    ActivityLog,
    Client,
    ClientAddress,
    ClientGroup,
    ClientNote,
    ClientUser,
    Currency,
    CustomField,
    CustomFieldValue,
    HomeCompany,
    Invoice,
    Service,
    Tag,
    User,
    UserSecurity,
)


@pytest.fixture()
def client_row(new_client):
    return new_client(company_name="Schmidt GmbH")


@pytest.fixture()
def admin(browser, staff):
    browser.login("admin")
    return browser


def url(client, tail=""):
    return f"/clients/{client.id}{tail}"


def profile_payload(client, **overrides) -> dict:
    data = profile_form_data(client)
    payload = {}
    for key, value in data.items():
        if isinstance(value, bool):
            if value:
                payload[key] = "1"
        elif value is None:
            payload[key] = ""
        else:
            payload[key] = value
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def logs(db, client, action=None):
    query = select(ActivityLog).where(ActivityLog.client_id == client.id).order_by(ActivityLog.id)
    if action:
        query = query.where(ActivityLog.action == action)
    db.expire_all()
    return list(db.scalars(query).unique())


# -- tabs --------------------------------------------------------------------------------------------------
def test_every_tab_renders_for_admin(app, db, admin, client_row):
    group = ClientGroup(name="VIP", color="#ff0000")
    tag = Tag(name="Priority", color="#00ff00")
    db.add_all([group, tag, CustomField(name="Contract no", field_type="text")])
    client_row.group = group
    client_row.tags = [tag]
    home = HomeCompany(name="Main", company_name="PUQ Hosting GmbH", country="DE", is_default=True)
    db.add(home)
    db.flush()
    document = dict(client_id=client_row.id, home_company_id=home.id, currency_id=client_row.currency_id, type="proforma")
    db.add(Invoice(**document, status="unpaid", total=Decimal("12.50")))
    db.add(Invoice(**document, status="unpaid", total=Decimal("17.25"), amount_paid=Decimal("10")))  # 7.25 due
    db.add(Invoice(**document, status="paid", total=Decimal("100"), amount_paid=Decimal("100")))
    db.add_all([Service(client_id=client_row.id, status="active"), Service(client_id=client_row.id, status="active"),
                Service(client_id=client_row.id, status="pending"), Service(client_id=client_row.id, status="terminated")])
    db.commit()

    page = admin.get(url(client_row))
    assert page.status_code == 200
    html = page.text
    assert "Schmidt GmbH" in html and client_row.users[0].user.email in html
    assert "Hauptstr. 1" in html and "VIP" in html and "Priority" in html
    assert re.search(r'puq-outstanding">\s*€19\.75', html), "outstanding = still due on unpaid documents"
    assert re.search(r'puq-active-services">\s*2<', html)
    assert re.search(r'puq-services-in-use">\s*3<', html)  # active + pending
    assert re.search(r'puq-balance">\s*€0\.00', html)
    for tail, marker in [
        ("/profile", 'name="firstname"'),
        ("/addresses", "puq-addresses"),
        ("/users", "puq-users"),
        ("/notes", "puq-note-form"),
        ("/custom-fields", "Contract no"),
        ("/activity", "client.create"),
    ]:
        resp = admin.get(url(client_row, tail))
        assert resp.status_code == 200, tail
        assert marker in resp.text, tail
        assert "nav-tabs" in resp.text


def test_unknown_client_is_404(app, db, admin, client_row):
    assert admin.get("/clients/999999").status_code == 404
    assert admin.get("/clients/999999/profile").status_code == 404


# -- profile -----------------------------------------------------------------------------------------------
def test_profile_update_applies_every_field_and_logs_one_diff(app, db, admin, client_row, staff, new_client):
    other = new_client()
    group = ClientGroup(name="VIP", color="#ff0000")
    tag1, tag2 = Tag(name="Priority", color="#00ff00"), Tag(name="Legacy", color="#0000ff")
    usd = Currency(code="USD", prefix="$")
    db.add_all([group, tag1, tag2, usd])
    db.commit()
    payload = profile_payload(
        client_row,
        firstname="Anne",
        company_name="Schmidt AG",
        tax_id="DE 136 695 976",
        national_id="X123",
        phone="+49 30 7654321",
        language="de",
        currency_id=str(usd.id),
        credit_limit="250.50",
        admin_notes="Pays late",
        status="active",
        blocked="1",
        blocked_reason="Chargeback",
        never_auto_suspend="1",
        tax_exempt="1",
        group_id=str(group.id),
        tag_ids=[str(tag1.id), str(tag2.id)],
        manager_id=str(staff["manager1"].id),
        parent_id=str(other.id),
        is_reseller="1",
        latitude="52.52",
        longitude="13.405",
    )
    resp = admin.post_form(url(client_row, "/profile/save"), payload, form_url=url(client_row, "/profile"))
    assert resp.status_code == 302, resp.text[:2000]
    db.expire_all()
    c = db.get(Client, client_row.id)
    assert (c.firstname, c.company_name, c.tax_id, c.national_id, c.phone) == (
        "Anne", "Schmidt AG", "DE136695976", "X123", "+49307654321")
    assert (c.language, c.currency.code, c.credit_limit, c.status) == ("de", "USD", Decimal("250.5000"), "active")
    assert c.blocked and c.blocked_reason == "Chargeback" and c.never_auto_suspend and c.is_reseller
    assert c.tax_exempt
    assert c.group_id == group.id and sorted(t.name for t in c.tags) == ["Legacy", "Priority"]
    assert c.manager_id == staff["manager1"].id and c.parent_id == other.id
    assert (c.latitude, c.longitude) == (52.52, 13.405)

    [entry] = logs(db, client_row, "client.update")
    assert entry.actor.username == "admin"
    assert entry.changes["status"] == ["new", "active"]
    assert entry.changes["credit_limit"] == ["0.0000", "250.5000"]
    assert entry.changes["firstname"] == ["Anna", "Anne"]
    assert entry.changes["tags"] == [[], ["Legacy", "Priority"]]
    assert entry.changes["blocked_reason"] == ["", "Chargeback"]
    assert entry.changes["tax_exempt"] == [False, True]
    assert "lastname" not in entry.changes

    # Saving the unchanged form writes no log row.
    resp = admin.post_form(url(client_row, "/profile/save"), profile_payload(c), form_url=url(client_row, "/profile"))
    assert resp.status_code == 302
    assert len(logs(db, client_row, "client.update")) == 1


@pytest.mark.parametrize(
    "overrides, field_error",
    [
        ({"tax_id": "DE123"}, "not a valid VAT number"),
        ({"blocked": "1", "blocked_reason": ""}, "reason for blocking"),
        ({"credit_limit": "-1"}, "cannot be negative"),
        ({"credit_limit": "abc"}, "Enter an amount"),
        ({"parent_id": "SELF"}, "cannot be its own parent"),
        ({"latitude": "95", "longitude": "10"}, "Must be between"),
        ({"firstname": ""}, "This field is required"),
        ({"phone": "12"}, "valid phone number"),
        ({"status": "bogus"}, "Unknown status"),
    ],
)
def test_invalid_profile_input_shows_errors_and_changes_nothing(app, db, admin, client_row, overrides, field_error):
    if overrides.get("parent_id") == "SELF":
        overrides = {"parent_id": str(client_row.id)}
    overrides = dict(overrides, company_name="Changed Ltd", status=overrides.get("status", "active"))
    resp = admin.post_form(url(client_row, "/profile/save"), profile_payload(client_row, **overrides),
                           form_url=url(client_row, "/profile"))
    assert resp.status_code == 200
    assert field_error in resp.text
    assert "nothing was saved" in resp.text
    assert 'value="Changed Ltd"' in resp.text  # the form keeps what was typed
    db.expire_all()
    c = db.get(Client, client_row.id)
    assert (c.company_name, c.status, c.credit_limit, c.parent_id, c.blocked) == (
        "Schmidt GmbH", "new", Decimal("0"), None, False)
    assert logs(db, client_row, "client.update") == []


def test_profile_refuses_duplicate_tax_id_cycles_and_inactive_manager(app, db, admin, client_row, staff, new_client):
    parent = new_client(tax_id="DE136695976")
    child_payload = profile_payload(client_row, parent_id=str(parent.id))
    assert admin.post_form(url(client_row, "/profile/save"), child_payload,
                           form_url=url(client_row, "/profile")).status_code == 302
    # parent → client_row would close a cycle
    resp = admin.post_form(url(parent, "/profile/save"), profile_payload(parent, parent_id=str(client_row.id)),
                           form_url=url(parent, "/profile"))
    assert "cycle" in resp.text
    resp = admin.post_form(url(client_row, "/profile/save"), profile_payload(client_row, tax_id="DE136695976"),
                           form_url=url(client_row, "/profile"))
    assert "already has this tax id" in resp.text
    staff["manager2"].active = False
    db.commit()
    resp = admin.post_form(url(client_row, "/profile/save"),
                           profile_payload(client_row, manager_id=str(staff["manager2"].id)),
                           form_url=url(client_row, "/profile"))
    assert "active staff user" in resp.text
    owner_id = client_row.users[0].user_id
    resp = admin.post_form(url(client_row, "/profile/save"), profile_payload(client_row, manager_id=str(owner_id)),
                           form_url=url(client_row, "/profile"))
    assert "active staff user" in resp.text
    db.expire_all()
    assert db.get(Client, parent.id).parent_id is None
    assert db.get(Client, client_row.id).manager_id is None


# -- addresses ---------------------------------------------------------------------------------------------
ADDRESS = dict(type="shipping", name="Warehouse", contact_name="Max", contact_phone="030 5555555",
               contact_email="Max@Example.com", address1="Lagerweg 5", address2="", city="Hamburg",
               postcode="20095", country="DE", region="DE-HH")


def test_shipping_address_create_edit_delete(app, db, admin, client_row):
    resp = admin.post_form(url(client_row, "/addresses/create"), ADDRESS, form_url=url(client_row, "/addresses"))
    assert resp.status_code == 302
    db.expire_all()
    address = db.scalar(select(ClientAddress).where(ClientAddress.client_id == client_row.id,
                                                    ClientAddress.type == "shipping"))
    assert (address.contact_phone, address.contact_email, address.region) == ("+49305555555", "max@example.com", "DE-HH")
    page = admin.get(url(client_row, "/addresses")).text
    assert "Lagerweg 5" in page and f'id="address-modal-{address.id}"' in page

    resp = admin.post_form(url(client_row, f"/addresses/{address.id}/update"),
                           dict(ADDRESS, type="service", city="Bremen", region="DE-HB"),
                           form_url=url(client_row, "/addresses"))
    assert resp.status_code == 302
    db.expire_all()
    address = db.get(ClientAddress, address.id)
    assert (address.type, address.city, address.region) == ("service", "Bremen", "DE-HB")

    resp = admin.post_form(url(client_row, f"/addresses/{address.id}/delete"), {},
                           form_url=url(client_row, "/addresses"))
    assert resp.status_code == 302
    db.expire_all()
    assert db.get(ClientAddress, address.id) is None

    actions = [(e.action, e.changes) for e in logs(db, client_row) if e.object_type == "address"]
    assert [a for a, _c in actions] == ["address.create", "address.update", "address.delete"]
    assert actions[1][1]["city"] == ["Hamburg", "Bremen"]
    assert actions[1][1]["type"] == ["shipping", "service"]


def test_billing_address_cannot_be_deleted_nor_retyped(app, db, admin, client_row):
    billing = client_row.billing_address
    page = admin.get(url(client_row, "/addresses")).text
    assert f"/addresses/{billing.id}/delete" not in page  # no delete button
    modal = page.split(f'id="address-modal-{billing.id}"')[1].split('class="modal fade')[0]
    assert re.search(r'<select class="form-control" name="type"\s+disabled', modal)

    resp = admin.post_form(url(client_row, f"/addresses/{billing.id}/delete"), {}, form_url=url(client_row, "/addresses"),
                           follow_redirects=True)
    assert "billing address cannot be deleted" in resp.text
    resp = admin.post_form(url(client_row, f"/addresses/{billing.id}/update"),
                           dict(ADDRESS, type="shipping"), form_url=url(client_row, "/addresses"))
    assert resp.status_code == 200 and "cannot change its type" in resp.text
    # a second billing address is refused too
    resp = admin.post_form(url(client_row, "/addresses/create"), dict(ADDRESS, type="billing"),
                           form_url=url(client_row, "/addresses"))
    assert "exactly one billing address" in resp.text
    db.expire_all()
    rows = db.scalars(select(ClientAddress).where(ClientAddress.client_id == client_row.id)).all()
    assert [(a.type, a.city) for a in rows] == [("billing", "Berlin")]
    # Editing the billing address without a type (the disabled select posts none) keeps it billing.
    payload = {k: v for k, v in ADDRESS.items() if k != "type"}
    resp = admin.post_form(url(client_row, f"/addresses/{billing.id}/update"), payload,
                           form_url=url(client_row, "/addresses"))
    assert resp.status_code == 302
    db.expire_all()
    assert (db.get(ClientAddress, billing.id).type, db.get(ClientAddress, billing.id).city) == ("billing", "Hamburg")


def test_bad_address_reopens_modal_with_errors_and_writes_nothing(app, db, admin, client_row):
    before = db.scalar(select(func.count()).select_from(ActivityLog))
    resp = admin.post_form(url(client_row, "/addresses/create"), dict(ADDRESS, region="FR-75", city=""),
                           form_url=url(client_row, "/addresses"))
    assert resp.status_code == 200
    assert "Choose a region of the selected country" in resp.text and "This field is required" in resp.text
    assert '$("#address-modal-new").modal("show")' in resp.text
    assert 'value="Lagerweg 5"' in resp.text
    assert db.scalar(select(func.count()).select_from(ClientAddress)) == 1
    assert db.scalar(select(func.count()).select_from(ActivityLog)) == before


def test_address_of_another_client_is_404(app, db, admin, client_row, new_client):
    other = new_client()
    foreign = other.billing_address
    admin.post_form(url(other, "/addresses/create"), ADDRESS, form_url=url(other, "/addresses"))
    db.expire_all()
    foreign_shipping = db.scalar(select(ClientAddress).where(ClientAddress.client_id == other.id,
                                                             ClientAddress.type == "shipping"))
    for address in (foreign, foreign_shipping):
        assert admin.post_form(url(client_row, f"/addresses/{address.id}/update"), ADDRESS,
                               form_url=url(client_row, "/addresses")).status_code == 404
        assert admin.post_form(url(client_row, f"/addresses/{address.id}/delete"), {},
                               form_url=url(client_row, "/addresses")).status_code == 404
    db.expire_all()
    assert db.get(ClientAddress, foreign_shipping.id).city == "Hamburg"


def test_address_modal_loads_regions_from_the_directory_endpoint(app, db, admin, client_row):
    page = admin.get(url(client_row, "/addresses")).text
    assert 'data-regions-url="/clients/regions/XX"' in page
    assert "/regions.js" in page  # the one shared script, reading {"country": cc, "regions": [{"code", "name"}]}
    resp = admin.get("/clients/regions/DE")
    assert resp.status_code == 200 and {"code": "DE-BE", "name": "Berlin"} in resp.json["regions"]


# -- users -------------------------------------------------------------------------------------------------
def _link_of(db, client, email) -> ClientUser | None:
    db.expire_all()
    return db.scalar(select(ClientUser).join(User, User.id == ClientUser.user_id)
                     .where(ClientUser.client_id == client.id, User.email == email))


def test_associate_existing_client_login_and_manage_it(app, db, admin, client_row, new_client):
    new_client(email="bob@example.com")  # bob owns another client; his login gets linked here too
    db.get(UserSecurity, client_row.users[0].user_id).two_factor_enabled = True  # made by create_login
    db.commit()
    users_url = url(client_row, "/users")
    resp = admin.post_form(url(client_row, "/users/associate"),
                           {"mode": "existing", "email": "BOB@example.com", "permissions": ["manage_services", "place_orders"]},
                           form_url=users_url)
    assert resp.status_code == 302, resp.text[:3000]
    link = _link_of(db, client_row, "bob@example.com")
    assert not link.is_owner and link.permissions == ["manage_services", "place_orders"]
    page = admin.get(users_url).text
    assert "Manage Services" in page and "Place Orders / Upgrades / Cancellations" in page
    owner_row = page.split('class="puq-user-row"')[1]
    assert ">Enabled<" in owner_row  # the owner has 2FA on
    assert ">Disabled<" in page.split('class="puq-user-row"')[2]
    for key in CLIENT_PERMISSIONS:
        assert f'value="{key}"' in page

    # change permissions
    resp = admin.post_form(url(client_row, f"/users/{link.id}/permissions"),
                           {"permissions": ["support_tickets", "manage_invoices"]}, form_url=users_url)
    assert resp.status_code == 302
    assert _link_of(db, client_row, "bob@example.com").permissions == ["manage_invoices", "support_tickets"]

    # transfer ownership
    old_owner_email = db.get(Client, client_row.id).owner.email
    resp = admin.post_form(url(client_row, f"/users/{link.id}/transfer"), {}, form_url=users_url)
    assert resp.status_code == 302
    new_owner = _link_of(db, client_row, "bob@example.com")
    old_owner = _link_of(db, client_row, old_owner_email)
    assert new_owner.is_owner and new_owner.permissions == list(CLIENT_PERMISSIONS)
    assert not old_owner.is_owner
    assert db.scalar(select(func.count()).select_from(ClientUser).where(
        ClientUser.client_id == client_row.id, ClientUser.is_owner.is_(True))) == 1

    # the owner cannot be unlinked; the former owner can
    resp = admin.post_form(url(client_row, f"/users/{new_owner.id}/unlink"), {}, form_url=users_url,
                           follow_redirects=True)
    assert "owner cannot be unlinked" in resp.text
    assert _link_of(db, client_row, "bob@example.com") is not None
    resp = admin.post_form(url(client_row, f"/users/{old_owner.id}/unlink"), {}, form_url=users_url)
    assert resp.status_code == 302
    assert _link_of(db, client_row, old_owner_email) is None
    assert db.scalar(select(User).where(User.email == old_owner_email)) is not None  # the login stays

    actions = [e.action for e in logs(db, client_row) if e.object_type == "client_user"]
    assert actions == ["client_user.link", "client_user.update", "client.owner_transfer", "client_user.unlink"]
    transfer = logs(db, client_row, "client.owner_transfer")[0]
    assert transfer.changes == {"owner": [old_owner_email, "bob@example.com"]}


def test_create_new_login_shows_password_once(app, db, admin, client_row):
    resp = admin.post_form(url(client_row, "/users/associate"),
                           {"mode": "new", "email": "carol@example.com", "firstname": "Carol", "lastname": "Ng",
                            "permissions": ["manage_users"]},
                           form_url=url(client_row, "/users"))
    assert resp.status_code == 200
    match = re.search(r'puq-new-password">.*?<code>([^<]+)</code>', resp.text, re.S)
    assert match
    link = _link_of(db, client_row, "carol@example.com")
    assert link.permissions == ["manage_users"] and not link.is_owner
    assert db.get(UserSecurity, link.user_id).is_client_login
    assert app.appbuilder.sm.auth_user_db("carol@example.com", match.group(1)) is not None
    assert "puq-new-password" not in admin.get(url(client_row, "/users")).text
    assert logs(db, client_row, "client_user.create")[0].changes["email"] == "carol@example.com"


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"mode": "existing", "email": "admin@staff.test"}, "No client login with this email can be linked"),
        ({"mode": "existing", "email": "nobody@example.com"}, "No client login with this email can be linked"),
        ({"mode": "existing", "email": "OWNER"}, "already linked"),
        ({"mode": "new", "email": "OWNER", "firstname": "A", "lastname": "B"}, "already exists"),
        ({"mode": "new", "email": "dan@example.com", "firstname": "", "lastname": "B"}, "This field is required"),
        ({"mode": "new", "email": "dan@example.com", "firstname": "F" * 65, "lastname": "B"}, "At most 64 characters"),
        ({"mode": "new", "email": "d" * 120 + "@example.com", "firstname": "F", "lastname": "B"},
         "At most 128 characters"),
        ({"mode": "existing", "email": "x@example.com", "permissions": ["root"]}, "Unknown permission"),
    ],
)
def test_associate_refusals(app, db, admin, client_row, payload, message):
    if payload["email"] == "OWNER":
        payload = dict(payload, email=client_row.owner.email)
    links_before = db.scalar(select(func.count()).select_from(ClientUser))
    users_before = db.scalar(select(func.count()).select_from(User))
    resp = admin.post_form(url(client_row, "/users/associate"), payload, form_url=url(client_row, "/users"))
    assert resp.status_code == 200
    assert message in resp.text
    assert '$("#user-modal-new").modal("show")' in resp.text
    assert db.scalar(select(func.count()).select_from(ClientUser)) == links_before
    assert db.scalar(select(func.count()).select_from(User)) == users_before


def test_user_link_of_another_client_is_404(app, db, admin, client_row, new_client):
    other = new_client()
    foreign = other.users[0]
    for action in ("permissions", "transfer", "unlink"):
        resp = admin.post_form(url(client_row, f"/users/{foreign.id}/{action}"), {}, form_url=url(client_row, "/users"))
        assert resp.status_code == 404, action


# -- notes -------------------------------------------------------------------------------------------------
def test_notes_append_only_and_sticky_in_yellow_on_summary(app, db, admin, client_row):
    notes_url = url(client_row, "/notes")
    assert admin.post_form(url(client_row, "/notes/add"), {"body": "Called about invoice"},
                           form_url=notes_url).status_code == 302
    assert admin.post_form(url(client_row, "/notes/add"), {"body": "VIP — handle with care", "sticky": "1"},
                           form_url=notes_url).status_code == 302
    resp = admin.post_form(url(client_row, "/notes/add"), {"body": "   "}, form_url=notes_url)
    assert resp.status_code == 200 and "This field is required" in resp.text
    assert db.scalar(select(func.count()).select_from(ClientNote)) == 2

    page = admin.get(notes_url).text
    assert page.index("VIP — handle with care") < page.index("Called about invoice")  # newest first
    assert "admin" in page
    summary = admin.get(url(client_row)).text
    sticky = re.search(r'<div class="alert alert-warning puq-sticky-note".*?</div>\s*</div>', summary, re.S).group(0)
    assert "VIP — handle with care" in sticky
    assert "Called about invoice" not in summary
    # append-only: no edit/delete routes exist
    note_id = db.scalar(select(ClientNote.id))
    for tail in (f"/notes/{note_id}/delete", f"/notes/{note_id}/edit"):
        assert admin.post_form(url(client_row, tail), {}, form_url=notes_url).status_code in (404, 405)
    assert [e.changes["sticky"] for e in logs(db, client_row, "note.create")] == [False, True]


# -- custom fields -----------------------------------------------------------------------------------------
@pytest.fixture()
def custom_fields(db):
    fields = {
        "contract": CustomField(name="Contract no", field_type="text", required=True, regex=r"C-\d{4}", sort_order=1),
        "seats": CustomField(name="Seats", field_type="number", sort_order=2, client_visible=True),
        "since": CustomField(name="Customer since", field_type="date", sort_order=3),
        "tier": CustomField(name="Tier", field_type="select", options="Gold\nSilver", sort_order=4),
        "nda": CustomField(name="NDA signed", field_type="bool", sort_order=5),
    }
    db.add_all(fields.values())
    db.commit()
    return fields


def _cf(fields, **values):
    return {f"cf_{fields[k].id}": v for k, v in values.items()}


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(contract=""), "This field is required"),
        (dict(contract="X-1"), "does not have the required format"),
        (dict(contract="C-1234", seats="many"), "Enter a number"),
        (dict(contract="C-1234", since="31.12.2020"), "YYYY-MM-DD"),
        (dict(contract="C-1234", since="2021-02-30"), "YYYY-MM-DD"),
        (dict(contract="C-1234", tier="Bronze"), "Choose one of the options"),
    ],
)
def test_custom_field_validation(app, db, admin, client_row, custom_fields, values, message):
    resp = admin.post_form(url(client_row, "/custom-fields/save"), _cf(custom_fields, **values),
                           form_url=url(client_row, "/custom-fields"))
    assert resp.status_code == 200 and message in resp.text
    assert db.scalar(select(func.count()).select_from(CustomFieldValue)) == 0
    assert logs(db, client_row, "custom_fields.update") == []


def test_custom_fields_saved_upserted_and_logged(app, db, admin, client_row, custom_fields):
    form_url = url(client_row, "/custom-fields")
    page = admin.get(form_url).text
    assert page.index("Contract no") < page.index("Seats") < page.index("NDA signed")
    assert "Staff only" in page and "Client-visible" in page
    resp = admin.post_form(url(client_row, "/custom-fields/save"),
                           _cf(custom_fields, contract="C-0001", seats="3", since="2020-01-31", tier="Gold", nda="1"),
                           form_url=form_url)
    assert resp.status_code == 302
    resp = admin.post_form(url(client_row, "/custom-fields/save"),
                           _cf(custom_fields, contract="C-0002", seats="3", since="2020-01-31", tier="Silver"),
                           form_url=form_url)
    assert resp.status_code == 302
    db.expire_all()
    stored = {v.field.name: v.value for v in db.scalars(select(CustomFieldValue))}
    assert stored == {"Contract no": "C-0002", "Seats": "3", "Customer since": "2020-01-31", "Tier": "Silver",
                      "NDA signed": "0"}
    first, second = logs(db, client_row, "custom_fields.update")
    assert first.changes["Contract no"] == ["", "C-0001"]
    assert second.changes == {"Contract no": ["C-0001", "C-0002"], "Tier": ["Gold", "Silver"], "NDA signed": ["1", "0"]}


# -- activity ----------------------------------------------------------------------------------------------
def test_activity_tab_shows_changes_with_actor_and_ip(app, db, admin, client_row):
    admin.post_form(url(client_row, "/profile/save"), profile_payload(client_row, status="active", credit_limit="100"),
                    form_url=url(client_row, "/profile"))
    admin.post_form(url(client_row, "/addresses/create"), ADDRESS, form_url=url(client_row, "/addresses"))
    admin.post_form(url(client_row, "/notes/add"), {"body": "hello"}, form_url=url(client_row, "/notes"))
    page = admin.get(url(client_row, "/activity")).text
    assert "status: new → active" in page
    assert "credit_limit: 0.0000 → 100.0000" in page
    assert "address.create" in page and "city: Hamburg" in page
    assert "note.create" in page
    rows = page.split('class="puq-activity-row"')[1:]
    assert "note.create" in rows[0]  # newest first
    assert "client.create" in rows[-1]
    assert all("127.0.0.1" in row for row in rows[:3])
    assert all("admin" in row for row in rows[:3])


def test_activity_is_paginated_in_one_query(app, db, admin, client_row):
    from puqpanel.domain import activity

    for i in range(60):
        activity.record("test.event", client_id=client_row.id, description=f"event {i}")
    db.commit()
    page1 = admin.get(url(client_row, "/activity")).text
    assert page1.count('class="puq-activity-row"') == 50 and "page=2" in page1
    page2 = admin.get(url(client_row, "/activity?page=2")).text
    assert page2.count('class="puq-activity-row"') == 11 and "client.create" in page2

    from sqlalchemy import event

    statements = []

    def count(conn, cursor, statement, *args):
        if "puq_activity_log" in statement:
            statements.append(statement)

    engine = db.get_bind()
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert admin.get(url(client_row, "/activity")).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1


# -- review fixes: bounds, round trips ------------------------------------------------------------------------
HUGE = str(2**31)  # one past the largest row id


def test_oversized_ids_in_record_urls_are_404(app, db, admin, client_row):
    for tail in ("", "/profile", "/addresses", "/users", "/notes", "/custom-fields", "/activity"):
        assert admin.get(f"/clients/{HUGE}{tail}").status_code == 404, tail
        assert admin.get(f"/clients/{10**20}{tail}").status_code == 404, tail
    users_url = url(client_row, "/users")
    for tail in (f"/addresses/{HUGE}/update", f"/addresses/{10**20}/delete", f"/users/{HUGE}/permissions",
                 f"/users/{10**20}/transfer", f"/users/{HUGE}/unlink"):
        assert admin.post_form(url(client_row, tail), ADDRESS, form_url=users_url).status_code == 404, tail
    assert admin.post_form(f"/clients/{HUGE}/notes/add", {"body": "x"}, form_url=users_url).status_code == 404


@pytest.mark.parametrize("field", ["currency_id", "group_id", "manager_id", "parent_id", "tag_ids"])
@pytest.mark.parametrize("value", [HUGE, str(10**20), "-1", "1e3"])
def test_oversized_ids_in_the_profile_form_are_field_errors(app, db, admin, client_row, field, value):
    posted = [value] if field == "tag_ids" else value
    payload = profile_payload(client_row, company_name="Changed Ltd", **{field: posted})
    resp = admin.post_form(url(client_row, "/profile/save"), payload, form_url=url(client_row, "/profile"))
    assert resp.status_code == 200 and "nothing was saved" in resp.text
    assert re.search(rf'has-error">\s*<label class="control-label" for="{field}"', resp.text), field
    db.expire_all()
    assert db.get(Client, client_row.id).company_name == "Schmidt GmbH"


def test_activity_page_number_is_bounded(app, db, admin, client_row):
    for page in (str(10**20), "-5", "abc", str(2**63)):
        resp = admin.get(url(client_row, f"/activity?page={page}"))
        assert resp.status_code == 200, page
    assert "client.create" in admin.get(url(client_row, "/activity?page=-5")).text  # read as page 1


def test_credit_limit_keeps_its_four_places_through_an_unchanged_save(app, db, admin, client_row):
    client_row.credit_limit = Decimal("12.3457")
    db.commit()
    form = admin.get(url(client_row, "/profile")).text
    assert re.search(r'name="credit_limit" value="12\.3457"', form)
    resp = admin.post_form(url(client_row, "/profile/save"), profile_payload(client_row),
                           form_url=url(client_row, "/profile"))
    assert resp.status_code == 302
    db.expire_all()
    assert db.get(Client, client_row.id).credit_limit == Decimal("12.3457")
    assert logs(db, client_row, "client.update") == []
    # whole cents are shown with two places, and round-trip the same way
    client_row = db.get(Client, client_row.id)
    client_row.credit_limit = Decimal("250.5")
    db.commit()
    assert re.search(r'name="credit_limit" value="250\.50"', admin.get(url(client_row, "/profile")).text)
    admin.post_form(url(client_row, "/profile/save"), profile_payload(client_row), form_url=url(client_row, "/profile"))
    assert logs(db, client_row, "client.update") == []


def test_summary_shows_a_visible_parent_by_name(app, db, admin, client_row, new_client):
    parent = new_client(firstname="Paula", lastname="Parent", company_name="Parent Holding")
    client_row.parent_id = parent.id
    db.commit()
    summary = admin.get(url(client_row)).text
    assert "Parent Holding" in summary and f"/clients/{parent.id}\"" in summary


@pytest.mark.parametrize(
    "value, message",
    [
        ("a" * 30 + "!", "does not have the required format"),  # exponential backtracking in (a+)+$
        ("a" * 1001, "At most 1000 characters"),
    ],
)
def test_custom_field_regex_is_time_and_length_bounded(app, db, admin, client_row, value, message):
    import time

    field = CustomField(name="Code", field_type="text", regex=r"(a+)+$")
    db.add(field)
    db.commit()
    started = time.monotonic()
    resp = admin.post_form(url(client_row, "/custom-fields/save"), {f"cf_{field.id}": value},
                           form_url=url(client_row, "/custom-fields"))
    assert time.monotonic() - started < 10
    assert resp.status_code == 200 and message in resp.text
    assert db.scalar(select(func.count()).select_from(CustomFieldValue)) == 0
    ok = admin.post_form(url(client_row, "/custom-fields/save"), {f"cf_{field.id}": "aaa"},
                         form_url=url(client_row, "/custom-fields"))
    assert ok.status_code == 302


@pytest.mark.parametrize("value", ["1e999999999", "1e31", "1e-31", "NaN", "Infinity"])
def test_number_custom_field_refuses_huge_exponents(app, db, admin, client_row, value):
    field = CustomField(name="Seats", field_type="number")
    db.add(field)
    db.commit()
    resp = admin.post_form(url(client_row, "/custom-fields/save"), {f"cf_{field.id}": value},
                           form_url=url(client_row, "/custom-fields"))
    assert resp.status_code == 200 and "nothing was saved" in resp.text
    assert db.scalar(select(func.count()).select_from(CustomFieldValue)) == 0
