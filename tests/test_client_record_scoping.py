"""Row scoping and permissions of the client record: every tab, every action."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from conftest import csrf_token
from puqpanel.models import ActivityLog, Client, ClientAddress, ClientNote, ClientUser, CustomField

from test_client_record import ADDRESS, profile_payload

GET_TABS = ("", "/profile", "/addresses", "/users", "/notes", "/custom-fields", "/activity")


@pytest.fixture()
def world(db, staff, new_client):
    db.add(CustomField(name="Contract no", field_type="text"))
    db.commit()
    clients = {
        manager: new_client(email=f"owner-{manager}@example.com", firstname="Ann", lastname=manager,
                            address1="Main 1", manager_id=staff[manager].id)
        for manager in ("manager1", "manager2")
    }
    # one extra non-owner link and one shipping address on each client
    for manager, client in clients.items():
        extra = new_client(email=f"extra-{manager}@example.com", firstname="Ext", lastname=manager, address1="Side 2",
                           city="Bonn", region="")
        db.add(ClientUser(client_id=client.id, user_id=extra.users[0].user_id, permissions=["manage_services"]))
        db.add(ClientAddress(client_id=client.id, type="shipping", address1="Dock 3", city="Kiel", country="DE"))
    db.commit()
    return clients


def _ids(db, client):
    db.expire_all()
    shipping = db.scalar(select(ClientAddress.id).where(ClientAddress.client_id == client.id,
                                                        ClientAddress.type == "shipping"))
    billing = db.scalar(select(ClientAddress.id).where(ClientAddress.client_id == client.id,
                                                       ClientAddress.type == "billing"))
    member = db.scalar(select(ClientUser.id).where(ClientUser.client_id == client.id, ClientUser.is_owner.is_(False)))
    owner = db.scalar(select(ClientUser.id).where(ClientUser.client_id == client.id, ClientUser.is_owner.is_(True)))
    return shipping, billing, member, owner


def post_actions(db, client) -> list[tuple[str, dict]]:
    """Every POST route of the record for this client, with a valid payload."""
    shipping, billing, member, owner = _ids(db, client)
    base = f"/clients/{client.id}"
    cf = db.scalar(select(CustomField.id))
    return [
        (f"{base}/profile/save", profile_payload(client, company_name="Scoped Ltd")),
        (f"{base}/addresses/create", ADDRESS),
        (f"{base}/addresses/{shipping}/update", dict(ADDRESS, city="Lübeck", region="DE-SH")),
        (f"{base}/addresses/{billing}/update", {k: v for k, v in ADDRESS.items() if k != "type"}),
        (f"{base}/users/associate", {"mode": "new", "email": f"new{client.id}@example.com", "firstname": "N",
                                     "lastname": "U", "permissions": ["manage_services"]}),
        (f"{base}/users/{member}/permissions", {"permissions": ["manage_invoices"]}),
        (f"{base}/notes/add", {"body": "scoped note"}),
        (f"{base}/custom-fields/save", {f"cf_{cf}": "X-1"}),
        (f"{base}/addresses/{shipping}/delete", {}),
        (f"{base}/users/{member}/transfer", {}),
        (f"{base}/users/{owner}/unlink", {}),  # the former owner, after the transfer above
    ]


def _token(browser, url):
    return csrf_token(browser.get(url).text)


def _snapshot(db):
    db.expire_all()
    return (
        db.scalar(select(func.count()).select_from(ActivityLog)),
        db.scalar(select(func.count()).select_from(ClientAddress)),
        db.scalar(select(func.count()).select_from(ClientUser)),
        db.scalar(select(func.count()).select_from(ClientNote)),
        sorted(db.scalars(select(Client.company_name))),
    )


def test_manager_gets_404_on_every_url_of_another_managers_client(app, db, world, make_browser):
    m1 = make_browser("manager1")
    own, foreign = world["manager1"], world["manager2"]
    token = _token(m1, f"/clients/{own.id}/notes")
    for tail in GET_TABS:
        assert m1.get(f"/clients/{foreign.id}{tail}").status_code == 404, tail
    before = _snapshot(db)
    for action_url, payload in post_actions(db, foreign):
        resp = m1.client.post(action_url, data=dict(payload, csrf_token=token))
        assert resp.status_code == 404, action_url
    assert _snapshot(db) == before

    # ...while the same routes work on its own client.
    for tail in GET_TABS:
        assert m1.get(f"/clients/{own.id}{tail}").status_code == 200, tail
    for action_url, payload in post_actions(db, own):
        resp = m1.client.post(action_url, data=dict(payload, csrf_token=token))
        assert resp.status_code in (200, 302), action_url
        if resp.status_code == 200:  # only the new-login response (password shown once) renders directly
            assert "puq-new-password" in resp.text, action_url
    db.expire_all()
    assert db.get(Client, own.id).company_name == "Scoped Ltd"
    assert db.scalar(select(ClientNote.body).where(ClientNote.client_id == own.id)) == "scoped note"
    actions = {e.action for e in db.scalars(select(ActivityLog).where(ActivityLog.client_id == own.id)).unique()}
    assert {"client.update", "address.create", "address.update", "address.delete", "client_user.create",
            "client_user.update", "note.create", "custom_fields.update", "client.owner_transfer",
            "client_user.unlink"} <= actions


def test_manager_cannot_pick_a_parent_outside_its_scope(app, db, world, make_browser):
    m1 = make_browser("manager1")
    own, foreign = world["manager1"], world["manager2"]
    resp = m1.post_form(f"/clients/{own.id}/profile/save", profile_payload(own, parent_id=str(foreign.id)),
                        form_url=f"/clients/{own.id}/profile")
    assert resp.status_code == 200 and "Unknown client" in resp.text
    db.expire_all()
    assert db.get(Client, own.id).parent_id is None


def test_staff_with_access_all_reaches_every_client(app, db, world, make_browser):
    billing = make_browser("billing")
    for client in world.values():
        for tail in GET_TABS:
            assert billing.get(f"/clients/{client.id}{tail}").status_code == 200, tail


def test_support_views_and_writes_notes_but_cannot_change_anything_else(app, db, world, make_browser):
    support = make_browser("support")
    client = world["manager2"]
    for tail in GET_TABS:
        assert support.get(f"/clients/{client.id}{tail}").status_code == 200, tail
    profile = support.get(f"/clients/{client.id}/profile").text
    assert ">Save</button>" not in profile
    assert "Create Address" not in support.get(f"/clients/{client.id}/addresses").text
    assert "Associate User" not in support.get(f"/clients/{client.id}/users").text

    token = _token(support, f"/clients/{client.id}/notes")
    before = _snapshot(db)
    for action_url, payload in post_actions(db, client):
        resp = support.client.post(action_url, data=dict(payload, csrf_token=token))
        if action_url.endswith("/notes/add"):
            assert resp.status_code == 302
        else:
            assert resp.status_code == 403, action_url
    after = _snapshot(db)
    assert after[3] == before[3] + 1  # the note
    assert after[0] == before[0] + 1  # its log row, nothing else
    assert after[1:3] == before[1:3] and after[4] == before[4]


def test_posts_without_csrf_are_400_and_gets_on_post_routes_are_405(app, db, world, make_browser):
    admin = make_browser("admin")
    client = world["manager1"]
    before = _snapshot(db)
    for action_url, payload in post_actions(db, client):
        assert admin.client.post(action_url, data=payload).status_code == 400, action_url
        assert admin.get(action_url).status_code == 405, action_url
    assert _snapshot(db) == before


def test_anonymous_is_sent_to_login(app, db, world, browser):
    client = world["manager1"]
    resp = browser.get(f"/clients/{client.id}")
    assert resp.status_code == 302 and "/login/" in resp.headers["Location"]


def test_manager_cannot_change_or_remove_the_manager(app, db, world, staff, make_browser):
    m1 = make_browser("manager1")
    own = world["manager1"]
    form = m1.get(f"/clients/{own.id}/profile").text
    assert re.search(r'<select class="form-control" id="manager_id"\s+disabled>', form)
    assert f'<input type="hidden" name="manager_id" value="{staff["manager1"].id}">' in form
    for value in (str(staff["manager2"].id), ""):
        resp = m1.post_form(f"/clients/{own.id}/profile/save",
                            profile_payload(own, manager_id=value, company_name="Handed Over"),
                            form_url=f"/clients/{own.id}/profile")
        assert resp.status_code == 200 and "may change the manager" in resp.text
    db.expire_all()
    assert (db.get(Client, own.id).manager_id, db.get(Client, own.id).company_name) == (staff["manager1"].id, "")
    # an unchanged manager saves fine; staff who reach every client may reassign
    assert m1.post_form(f"/clients/{own.id}/profile/save", profile_payload(own, company_name="Kept"),
                        form_url=f"/clients/{own.id}/profile").status_code == 302
    admin = make_browser("admin")
    assert re.search(r'<select class="form-control" id="manager_id" name="manager_id"\s*>',
                     admin.get(f"/clients/{own.id}/profile").text)
    assert admin.post_form(f"/clients/{own.id}/profile/save",
                           profile_payload(own, manager_id=str(staff["manager2"].id)),
                           form_url=f"/clients/{own.id}/profile").status_code == 302
    db.expire_all()
    assert db.get(Client, own.id).manager_id == staff["manager2"].id


def test_manager_saves_a_profile_whose_parent_is_outside_its_scope(app, db, world, make_browser):
    own, foreign = world["manager1"], world["manager2"]
    own.parent_id = foreign.id  # set by someone who reaches both
    foreign.company_name = "Secret Holding"
    db.commit()
    m1 = make_browser("manager1")
    summary = m1.get(f"/clients/{own.id}").text
    profile = m1.get(f"/clients/{own.id}/profile").text
    for page in (summary, profile):
        assert "Secret Holding" not in page
    assert re.search(rf'class="puq-parent">#{foreign.id}<', summary)
    resp = m1.post_form(f"/clients/{own.id}/profile/save", profile_payload(own, company_name="Still Mine"),
                        form_url=f"/clients/{own.id}/profile")
    assert resp.status_code == 302
    db.expire_all()
    assert (db.get(Client, own.id).company_name, db.get(Client, own.id).parent_id) == ("Still Mine", foreign.id)
    # ...but it cannot pick another client outside its scope, nor re-pick this one once removed
    resp = m1.post_form(f"/clients/{own.id}/profile/save", profile_payload(own, parent_id=""),
                        form_url=f"/clients/{own.id}/profile")
    assert resp.status_code == 302
    resp = m1.post_form(f"/clients/{own.id}/profile/save", profile_payload(own, parent_id=str(foreign.id)),
                        form_url=f"/clients/{own.id}/profile")
    assert resp.status_code == 200 and "Unknown client" in resp.text


NEUTRAL = "No client login with this email can be linked to this client."


def test_manager_cannot_link_or_probe_logins_outside_its_scope(app, db, world, staff, make_browser, new_client):
    foreign = world["manager2"]
    staff["support"].email = "support@example.com"  # a staff account with a deliverable-looking address
    db.commit()
    m2 = make_browser("manager2")
    users_url = f"/clients/{foreign.id}/users"
    before = _snapshot(db)
    answers = {}
    for email in ("owner-manager1@example.com", "OWNER-MANAGER1@example.com", "nobody@example.com",
                  "support@example.com", "manager1@staff.test"):
        resp = m2.post_form(f"/clients/{foreign.id}/users/associate",
                            {"mode": "existing", "email": email, "permissions": ["manage_services"]},
                            form_url=users_url)
        assert resp.status_code == 200, email
        answers[email] = re.search(r'puq-field-error">([^<]*)<', resp.text).group(1)
    assert set(answers.values()) == {NEUTRAL}, answers
    # create-new with a taken address: the same answer, nothing created
    for email in ("owner-manager1@example.com", "support@example.com"):
        resp = m2.post_form(f"/clients/{foreign.id}/users/associate",
                            {"mode": "new", "email": email, "firstname": "X", "lastname": "Y"}, form_url=users_url)
        assert resp.status_code == 200 and NEUTRAL in resp.text and "already exists" not in resp.text, email
    assert _snapshot(db) == before
    db.expire_all()
    assert foreign.owner.email == "owner-manager2@example.com"

    # A login whose links are all within manager2's scope can be linked (here: its own client's extra login
    # is linked to manager1's client too, so it is not; a fresh login of manager2's client is).
    m2.post_form(f"/clients/{foreign.id}/users/associate",
                 {"mode": "new", "email": "fresh@example.com", "firstname": "F", "lastname": "R"}, form_url=users_url)
    second = new_client(email="second-owner@example.com", firstname="S", lastname="O", address1="A 1",
                        manager_id=staff["manager2"].id)
    resp = m2.post_form(f"/clients/{second.id}/users/associate",
                        {"mode": "existing", "email": "fresh@example.com"}, form_url=f"/clients/{second.id}/users")
    assert resp.status_code == 302
    # an admin may link the other manager's owner login
    admin = make_browser("admin")
    resp = admin.post_form(f"/clients/{foreign.id}/users/associate",
                           {"mode": "existing", "email": "owner-manager1@example.com"}, form_url=users_url)
    assert resp.status_code == 302
