"""Staff permissions are FAB permissions: an admin composes new staff roles from them."""
from __future__ import annotations

from conftest import make_user


def test_custom_staff_role_from_fab_permissions(app, db, make_browser):
    sm = app.appbuilder.sm
    role = sm.add_role("Auditor")
    for perm, view in [("can_list", "Client"), ("can_show", "Client"), ("menu_access", "Clients"),
                       ("menu_access", "Manage Clients")]:
        sm.add_permission_role(role, sm.find_permission_view_menu(perm, view))
    db.commit()
    make_user("auditor", "Auditor")
    auditor = make_browser("auditor")
    assert auditor.get("/clients/").status_code == 200
    assert auditor.get("/clients/add").status_code == 403
    assert auditor.get("/clients/export.csv").status_code == 403


def test_client_role_has_no_staff_screens(app, db, make_browser):
    make_user("someclient", "Client")
    client_user = make_browser("someclient")
    assert client_user.get("/clients/").status_code == 403
    assert client_user.get("/clientgroupview/list/").status_code == 403


def test_anonymous_is_sent_to_login(app, db, browser):
    resp = browser.get("/clients/")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_session_csrf_token_is_accepted_so_403s_are_real(app, db, staff, make_browser):
    """Browser.post's token is valid: an allowed POST succeeds, so a 403 elsewhere is the permission check."""
    from puqpanel.domain.clients import NewClient, create_client
    from puqpanel.models import ClientNote, Currency

    db.add(Currency(code="EUR", is_default=True))
    db.commit()
    client, _ = create_client(NewClient(email="c@example.com", firstname="C", lastname="D", address1="A 1",
                                        city="Berlin", country="DE"))
    support = make_browser("support")
    resp = support.post(f"/clients/{client.id}/notes/add", {"body": "Checked."})
    assert resp.status_code == 302
    assert db.query(ClientNote).filter_by(client_id=client.id).count() == 1
    assert support.post(f"/clients/{client.id}/profile/save", {"firstname": "X"}).status_code == 403
    assert make_browser("support").client.post(f"/clients/{client.id}/notes/add", data={"body": "x"}).status_code == 400


def test_client_area_menu_entry_for_client_logins_only(app, db, staff, new_client, make_browser):
    new_client()
    owner = make_browser("owner1@example.com")
    page = owner.get("/account/").text
    assert 'href="/client/dashboard"' in page and "Client Area" in page and "My Account" in page
    admin_page = make_browser("admin").get("/account/").text
    assert "Client Area" not in admin_page and "My Account" in admin_page
