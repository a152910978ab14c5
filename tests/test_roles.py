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
