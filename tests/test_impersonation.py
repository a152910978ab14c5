"""Staff "Login as Client" (views.impersonation, domain.impersonation): start, banner, stop, expiry, the
activity rows with both identities, money actions recording the impersonator, the client's own login
statistics untouched, and every refusal (non-staff, no permission, staff targets, other clients' links,
inactive targets, forged session keys, CSRF, GET)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from flask import g
from sqlalchemy import func, select

from conftest import PASSWORD, csrf_token, make_user
from puqpanel.billing import clock, invoicing, payments
from puqpanel.domain import client_users, login_sessions
from puqpanel.domain.clients import find_login
from puqpanel.models import ActivityLog, ClientUser, LoginSession, Transaction, User, UserSecurity
from puqpanel.security import IMPERSONATION
from test_invoicing import home  # noqa: F401  (fixture)
from test_login import session_of

T0 = dt.datetime(2030, 5, 4, 10, 0, 0)
BANNER = "You are signed in as"


@pytest.fixture()
def frozen():
    with clock.frozen_at(T0) as moment:
        yield moment


@pytest.fixture()
def owned(db, new_client):
    """(client, owner login) with the owner's password PASSWORD."""
    client = new_client(password=PASSWORD)
    return client, find_login(client.users[0].user.email)


def started(db) -> list[ActivityLog]:
    db.expire_all()
    return list(db.scalars(select(ActivityLog).where(ActivityLog.action == "impersonation.start")).unique())


def start(browser, client_id: int, link: int | str = "owner", reason: str = ""):
    """POST the "Login as" form of the client's Summary page (its CSRF token)."""
    return browser.post(f"/impersonate/{client_id}/{link}", {"reason": reason})


def test_login_as_owner_banner_stop_and_activity(db, staff, owned, make_browser, frozen):
    client, owner = owned
    support = make_browser("support")
    support_sid = session_of(support)["puq_sid"]
    summary = support.get(f"/clients/{client.id}")
    assert "Login as Owner" in summary.text and f"/impersonate/{client.id}/owner" in summary.text
    resp = support.client.post(f"/impersonate/{client.id}/owner",
                               data={"reason": "Ticket #42", "csrf_token": csrf_token(summary.text)})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/client/dashboard")

    state = session_of(support)
    assert state["_user_id"] == str(owner.id)
    assert state["puq_impersonator_id"] == staff["support"].id
    assert state["puq_impersonation_client_id"] == client.id and state["puq_client_id"] == client.id
    assert state["puq_impersonation_started"] == T0.isoformat()
    db.expire_all()
    assert db.get(LoginSession, support_sid).end_reason == "rotated"
    row = db.get(LoginSession, state["puq_sid"])
    assert (row.user_id, row.impersonator_id, row.ended_at) == (owner.id, staff["support"].id, None)
    [entry] = started(db)
    assert (entry.client_id, entry.actor_id, entry.impersonator_id) == (client.id, staff["support"].id, None)
    assert entry.object_type == "user" and entry.object_id == owner.id
    assert entry.changes == {"staff": "support@staff.test", "target": owner.email, "reason": "Ticket #42"}
    # the client's own statistics and login history are untouched
    user = db.get(User, owner.id)
    assert not user.login_count and user.last_login is None
    assert login_sessions.history(owner.id) == []

    dashboard = support.get("/client/dashboard")
    assert dashboard.status_code == 200
    assert f"{BANNER} Anna {owner.last_name} ({owner.email})" in dashboard.text
    assert "Return to admin" in dashboard.text and "/impersonate/stop" in dashboard.text
    # no staff pages while impersonating
    for url in ("/clients/", f"/clients/{client.id}", f"/clients/{client.id}/users"):
        assert support.get(url).status_code == 403, url

    impersonated_cookie = support.client.get_cookie("session").value
    resp = support.post("/impersonate/stop")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/clients/{client.id}")
    state = session_of(support)
    assert state["_user_id"] == str(staff["support"].id)
    assert not any(key in state for key in login_sessions.IMPERSONATION_KEYS)
    assert support.get(f"/clients/{client.id}").status_code == 200
    assert BANNER not in support.get(f"/clients/{client.id}").text
    db.expire_all()
    stop = db.scalar(select(ActivityLog).where(ActivityLog.action == "impersonation.stop"))
    assert (stop.client_id, stop.actor_id, stop.impersonator_id) == (client.id, owner.id, staff["support"].id)
    assert stop.changes == {"staff": "support@staff.test", "target": owner.email}
    assert db.get(LoginSession, row.id).end_reason == "rotated"
    # the impersonated session's cookie no longer works
    support.client.set_cookie("session", impersonated_cookie)
    resp = support.get("/client/dashboard")
    assert resp.status_code == 302 and "/login/" in resp.headers["Location"]
    user = db.get(User, owner.id)
    assert not user.login_count and user.last_login is None


def test_login_as_a_linked_user_from_the_users_tab(db, staff, owned, browser, frozen):
    client, owner = owned
    link, _password = client_users.create_and_associate(client, "member@example.com", "Mia", "Member",
                                                        ["manage_invoices"], PASSWORD)
    browser.login("admin")
    users_tab = browser.get(f"/clients/{client.id}/users")
    assert f"/impersonate/{client.id}/{link.id}" in users_tab.text and "Login as" in users_tab.text
    resp = start(browser, client.id, link.id)
    assert resp.status_code == 302
    assert session_of(browser)["_user_id"] == str(link.user_id)
    assert f"{BANNER} Mia Member (member@example.com)" in browser.get("/client/dashboard").text


def test_directory_rows_offer_login_as_owner_only_with_the_permission(db, staff, owned, make_browser):
    client, _owner = owned
    assert f"/impersonate/{client.id}/owner" in make_browser("support").get("/clients/").text
    billing = make_browser("billing")
    assert f"/impersonate/{client.id}/owner" not in billing.get("/clients/").text
    assert "Login as Owner" not in billing.get(f"/clients/{client.id}").text
    assert "/impersonate/" not in billing.get(f"/clients/{client.id}/users").text


def test_staff_without_the_permission_and_client_logins_are_refused(db, staff, owned, new_client, make_browser):
    client, owner = owned
    other = new_client(password=PASSWORD)
    for name in ("billing", "manager1"):
        b = make_browser(name)
        assert start(b, client.id).status_code == 403, name
        assert session_of(b)["_user_id"] == str(staff[name].id)
    client_browser = make_browser(owner.username)
    assert start(client_browser, other.id).status_code == 403
    assert start(client_browser, client.id).status_code == 403
    anonymous = make_browser()
    anonymous.get("/login/")
    resp = start(anonymous, client.id)
    assert resp.status_code == 302 and "/login/" in resp.headers["Location"]
    assert started(db) == []


def test_staff_accounts_and_mixed_logins_are_not_targets(db, staff, owned, browser):
    client, owner = owned
    # a staff login linked to the client (forced in; the screens refuse it)
    db.add(ClientUser(client_id=client.id, user_id=staff["manager1"].id, is_owner=False, permissions=[]))
    db.commit()
    staff_link = db.scalar(select(ClientUser.id).where(ClientUser.user_id == staff["manager1"].id))
    browser.login("support")
    resp = start(browser, client.id, staff_link)
    assert resp.status_code == 403 and "Only client logins" in resp.text
    # a client login that was also given a staff role
    user = db.get(User, owner.id)
    user.roles.append(db.get(User, staff["support"].id).roles[0])
    db.commit()
    assert start(browser, client.id).status_code == 403
    # a login not marked as a client login
    user.roles = [r for r in user.roles if r.name == "Client"]
    db.get(UserSecurity, owner.id).is_client_login = False
    db.commit()
    assert start(browser, client.id).status_code == 403
    assert started(db) == []
    assert session_of(browser)["_user_id"] == str(staff["support"].id)


def test_inactive_target_and_other_clients_links_are_refused(db, staff, owned, new_client, browser):
    client, owner = owned
    other = new_client(password=PASSWORD)
    other_link = other.users[0].id
    browser.login("support")
    assert start(browser, client.id, other_link).status_code == 404
    assert start(browser, 999999).status_code == 404
    assert start(browser, client.id, 999999).status_code == 404
    db.get(User, owner.id).active = False
    db.commit()
    assert start(browser, client.id).status_code == 403
    assert start(browser, client.id, reason="x" * 256).status_code == 403  # refused before the reason
    db.get(User, owner.id).active = True
    db.commit()
    resp = start(browser, client.id, reason="x" * 256)
    assert resp.status_code == 400 and "255" in resp.text
    assert started(db) == []


def test_client_outside_the_staff_scope_is_404(app, db, staff, owned, browser):
    client, _owner = owned
    sm = app.appbuilder.sm
    role = sm.add_role("ScopedSupport")
    for perm, view in (("can_list", "Client"), ("can_show", "Client"), ("can_impersonate", IMPERSONATION)):
        sm.add_permission_role(role, sm.find_permission_view_menu(perm, view))
    make_user("scoped", "ScopedSupport")
    browser.login("scoped")
    assert start(browser, client.id).status_code == 404
    client.manager_id = db.scalar(select(User.id).where(User.username == "scoped"))
    db.commit()
    assert start(browser, client.id).status_code == 302
    assert session_of(browser)["puq_impersonator_id"] == client.manager_id


def test_csrf_and_methods(db, staff, owned, browser):
    client, _owner = owned
    browser.login("support")
    for url in (f"/impersonate/{client.id}/owner", f"/impersonate/{client.id}/{client.users[0].id}",
                "/impersonate/stop"):
        assert browser.client.post(url, data={"reason": ""}).status_code == 400, url
        assert browser.get(url).status_code == 405, url
    assert started(db) == []
    assert browser.post("/impersonate/stop").status_code == 404  # not impersonating
    assert session_of(browser)["_user_id"] == str(staff["support"].id)


def test_forged_impersonation_key_logs_out(db, staff, owned, make_browser):
    client, owner = owned
    client_browser = make_browser(owner.username)
    assert client_browser.get("/client/dashboard").status_code == 200
    with client_browser.client.session_transaction() as sess:
        sess["puq_impersonator_id"] = staff["admin"].id
    resp = client_browser.get("/client/dashboard")
    assert resp.status_code == 302 and "/login/" in resp.headers["Location"]
    assert "_user_id" not in session_of(client_browser)
    # a staff session with a forged key is logged out the same way (no stop, nothing logged)
    admin = make_browser("admin")
    with admin.client.session_transaction() as sess:
        sess["puq_impersonator_id"] = staff["support"].id
    assert admin.get("/clients/").status_code == 302
    assert db.scalar(select(func.count()).select_from(ActivityLog)
                     .where(ActivityLog.action.like("impersonation.%"))) == 0


def test_impersonation_ends_itself_after_the_configured_time(app, db, staff, owned, browser, monkeypatch):
    monkeypatch.setitem(app.config, "PUQPANEL_IMPERSONATION_MINUTES", 30)
    client, owner = owned
    with clock.frozen_at(T0):
        browser.login("support")
        assert start(browser, client.id).status_code == 302
    with clock.frozen_at(T0 + dt.timedelta(minutes=29, seconds=59)):
        assert browser.get("/client/dashboard").status_code == 200
    with clock.frozen_at(T0 + dt.timedelta(minutes=30)):
        resp = browser.get("/client/dashboard")
        assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/clients/{client.id}")
        state = session_of(browser)
        assert state["_user_id"] == str(staff["support"].id) and "puq_impersonator_id" not in state
        page = browser.get(resp.headers["Location"])
        assert page.status_code == 200 and "ended after 30 minutes" in page.text
    db.expire_all()
    entry = db.scalar(select(ActivityLog).where(ActivityLog.action == "impersonation.expire"))
    assert (entry.client_id, entry.actor_id, entry.impersonator_id) == (client.id, owner.id, staff["support"].id)
    assert entry.changes["minutes"] == 30 and entry.changes["staff"] == "support@staff.test"


def test_default_expiry_is_sixty_minutes(db, staff, owned, browser):
    client, _owner = owned
    with clock.frozen_at(T0):
        browser.login("support")
        start(browser, client.id)
    with clock.frozen_at(T0 + dt.timedelta(minutes=59)):
        assert browser.get("/client/dashboard").status_code == 200
    with clock.frozen_at(T0 + dt.timedelta(minutes=60)):
        assert browser.get("/client/dashboard").status_code == 302
    assert session_of(browser)["_user_id"] == str(staff["support"].id)


def test_money_actions_of_the_impersonated_session_record_the_impersonator(app, db, staff, owned, browser, home):
    client, owner = owned
    with clock.frozen_at(T0):
        browser.login("support")
        assert start(browser, client.id).status_code == 302
        cookie = browser.client.get_cookie("session").value
        with app.test_request_context("/client/dashboard", headers={"Cookie": f"session={cookie}"}):
            g.__dict__.clear()  # a fresh request: no user cached from earlier test-client requests
            assert app.preprocess_request() is None  # the session guard lets the impersonated session pass
            proforma = invoicing.create_add_funds_proforma(client, "25")
            payments.record_payment(proforma, gateway="bank_transfer", external_id="IMP-1",
                                    amount=proforma.total)
    db.expire_all()
    created = db.scalar(select(ActivityLog).where(ActivityLog.action == "invoice.create"))
    assert (created.actor_id, created.impersonator_id) == (owner.id, staff["support"].id)
    rows = list(db.scalars(select(Transaction).where(Transaction.client_id == client.id)))
    assert rows and all((t.author_id, t.impersonator_id) == (owner.id, staff["support"].id) for t in rows)
    assert sum(t.net for t in rows) == Decimal("25.00")


def test_logout_while_impersonating_logs_the_stop_and_ends_the_session(db, staff, owned, browser):
    client, owner = owned
    browser.login("support")
    start(browser, client.id)
    sid = session_of(browser)["puq_sid"]
    browser.get("/logout/")
    db.expire_all()
    assert db.get(LoginSession, sid).end_reason == "logout"
    stop = db.scalar(select(ActivityLog).where(ActivityLog.action == "impersonation.stop"))
    assert (stop.actor_id, stop.impersonator_id) == (owner.id, staff["support"].id) and stop.changes["logout"]
    assert browser.get("/clients/").status_code == 302
