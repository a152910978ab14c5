"""The password step of the form login (views.auth.PuqAuthDBView) and the JSON API login without 2FA:
server-side session row, FAB's login statistics, inactive logins, safe next URLs, logout, JWT refresh."""
from __future__ import annotations

import jwt
from sqlalchemy import select

from conftest import PASSWORD, csrf_token, make_user
from puqpanel.domain.clients import find_login
from puqpanel.models import ActivityLog, LoginSession, User

INVALID = "Invalid login. Please try again."
TOO_MANY = "Too many attempts, try again later."


def submit_login(browser, username: str, password: str = PASSWORD, next_url: str | None = None):
    """POST the real login form (token from a fresh GET); returns the response, not followed."""
    url = "/login/" if next_url is None else f"/login/?next={next_url}"
    page = browser.client.get(url)
    if page.status_code != 200:  # already signed in: FAB redirects
        return page
    return browser.client.post(url, data={"username": username, "password": password,
                                          "csrf_token": csrf_token(page.text)})


def session_of(browser) -> dict:
    with browser.client.session_transaction() as sess:
        return dict(sess)


def live_sessions(db, user_id: int) -> list[LoginSession]:
    db.expire_all()
    return list(db.scalars(select(LoginSession).where(LoginSession.user_id == user_id,
                                                      LoginSession.ended_at.is_(None))))


def api_login(client, username: str, password: str = PASSWORD, **extra):
    return client.post("/api/v1/security/login",
                       json={"username": username, "password": password, "provider": "db", **extra})


def test_form_login_starts_a_server_side_session_and_counts_the_login(db, staff, browser):
    resp = submit_login(browser, "support")
    assert resp.status_code == 302
    rows = live_sessions(db, staff["support"].id)
    assert len(rows) == 1
    row = rows[0]
    assert len(row.id) >= 43 and row.impersonator_id is None and row.ip == "127.0.0.1"
    assert session_of(browser)["puq_sid"] == row.id
    user = db.get(User, staff["support"].id)
    assert user.login_count == 1 and user.last_login is not None and user.fail_login_count == 0
    assert browser.get("/clients/").status_code == 200


def test_wrong_password_counts_on_the_user_and_keeps_the_generic_message(db, staff, browser):
    resp = submit_login(browser, "support", "wrong-pass1!")
    assert resp.status_code == 302 and "/login/" in resp.headers["Location"]
    page = browser.get(resp.headers["Location"])
    assert INVALID in page.text
    db.expire_all()
    user = db.get(User, staff["support"].id)
    assert user.fail_login_count == 1 and not user.login_count
    assert live_sessions(db, user.id) == []
    assert browser.get("/clients/").status_code == 302  # not signed in


def test_inactive_login_is_refused_like_a_wrong_password(db, staff, browser):
    user = db.get(User, staff["support"].id)
    user.active = False
    db.commit()
    resp = submit_login(browser, "support")
    assert resp.status_code == 302 and "/login/" in resp.headers["Location"]
    assert INVALID in browser.get(resp.headers["Location"]).text
    assert live_sessions(db, staff["support"].id) == []


def test_next_url_is_followed_only_when_safe(db, staff, make_browser):
    inside = make_browser()
    resp = submit_login(inside, "admin", next_url="/clients/")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/clients/")
    outside = make_browser()
    resp = submit_login(outside, "admin", next_url="https://evil.example/steal")
    assert resp.status_code == 302 and "evil.example" not in resp.headers["Location"]


def test_client_login_is_logged_on_its_client(db, new_client, browser):
    client = new_client(password=PASSWORD)
    owner = find_login(client.users[0].user.email)
    resp = submit_login(browser, owner.username)
    assert resp.status_code == 302 and "/login" not in resp.headers["Location"]
    entry = db.scalar(select(ActivityLog).where(ActivityLog.action == "user.login"))
    assert entry.client_id == client.id and entry.actor_id == owner.id and entry.impersonator_id is None


def test_logout_ends_the_session_row(db, staff, browser):
    browser.login("billing")
    sid = session_of(browser)["puq_sid"]
    assert browser.get("/logout/").status_code == 302
    db.expire_all()
    row = db.get(LoginSession, sid)
    assert row.ended_at is not None and row.end_reason == "logout"
    assert "puq_sid" not in session_of(browser)
    assert browser.get("/clients/").status_code == 302


def test_api_login_without_2fa_gives_working_tokens(app, db, staff):
    client = app.test_client()
    resp = api_login(client, "admin", refresh=True)
    assert resp.status_code == 200, resp.json
    access, refresh = resp.json["access_token"], resp.json["refresh_token"]
    claims = jwt.decode(access, options={"verify_signature": False})
    assert claims["sub"] == str(staff["admin"].id)
    assert client.get("/api/v1/security/roles/", headers={"Authorization": f"Bearer {access}"}).status_code == 200
    assert client.get("/api/v1/security/roles/").status_code == 401
    # the refresh endpoint takes only a refresh token, which only a full login hands out
    assert client.post("/api/v1/security/refresh",
                       headers={"Authorization": f"Bearer {access}"}).status_code in (401, 422)
    assert client.post("/api/v1/security/refresh").status_code == 401
    fresh = client.post("/api/v1/security/refresh", headers={"Authorization": f"Bearer {refresh}"})
    assert fresh.status_code == 200 and fresh.json["access_token"]
    db.expire_all()
    assert db.get(User, staff["admin"].id).login_count == 1
    assert live_sessions(db, staff["admin"].id) == []  # the API is token based, no browser session


def test_api_login_wrong_password_and_bad_payloads(app, db, staff):
    client = app.test_client()
    assert api_login(client, "admin", "nope-nope1!").status_code == 401
    assert api_login(client, "ghost").status_code == 401
    assert client.post("/api/v1/security/login", data="username=admin").status_code == 400
    assert client.post("/api/v1/security/login", json=["admin"]).status_code == 400
    assert client.post("/api/v1/security/login", json={"username": "admin"}).status_code == 400
    assert client.post("/api/v1/security/login",
                       json={"username": "admin", "password": PASSWORD, "provider": "ldap"}).status_code in (400, 401)


def test_staff_user_created_by_make_user_logs_in_through_the_browser_fixture(db, browser):
    make_user("ops", "Support")
    browser.login("ops")
    assert browser.get("/clients/").status_code == 200
