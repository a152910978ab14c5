"""Password reset by e-mailed link: the same answer for known and unknown addresses, a link valid 60
minutes and once, the password policy, throttling per address and per IP."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from conftest import PASSWORD, csrf_token, make_user
from puqpanel.billing import clock
from puqpanel.models import ActivityLog, AuthThrottle, EmailOutbox, LoginSession, User

NEW_PASSWORD = "Brand-new7"
T0 = dt.datetime(2030, 5, 1, 9, 0)


@pytest.fixture()
def owner(new_client):
    client = new_client(password=PASSWORD)
    return client.users[0].user.email, client


def outbox(db) -> list[EmailOutbox]:
    db.expire_all()
    return db.scalars(select(EmailOutbox).order_by(EmailOutbox.id)).all()


def reset_link(db) -> str:
    mail = outbox(db)[-1]
    assert mail.kind == "password_reset"
    match = re.search(r"http://localhost:8080(/account/reset/[A-Za-z0-9_.\-]+)", mail.body)  # PUQPANEL_PUBLIC_URL
    assert match, mail.body
    return match.group(1)


def ask(browser, email: str):
    return browser.post_form("/account/forgot", {"email": email})


def body(resp) -> str:
    return re.sub(r'name="csrf_token"[^>]*value="[^"]+"', "", resp.text)


def password_of(db, email: str) -> str:
    db.expire_all()
    return db.scalars(select(User.password).where(User.email == email)).one()


def test_reset_flow_end_to_end(db, owner, make_browser):
    email, client = owner
    elsewhere = make_browser(email)  # another signed-in browser of the login
    assert elsewhere.get("/account/").status_code == 200
    public = make_browser()
    assert public.get("/account/forgot").status_code == 200
    with clock.frozen_at(T0):
        resp = ask(public, email.upper())
    assert resp.status_code == 200 and "puq-reset-sent" in resp.text
    mail = outbox(db)[-1]
    assert mail.to_address == email and mail.client_id is None
    link = reset_link(db)
    with clock.frozen_at(T0 + dt.timedelta(minutes=59)):
        page = public.get(link)
        assert page.status_code == 200 and email in page.text
        # policy and repeat checked; nothing changed
        resp = public.post_form(link, {"password": "short", "password_repeat": "short"})
        assert resp.status_code == 400 and "At least" in resp.text
        resp = public.post_form(link, {"password": NEW_PASSWORD, "password_repeat": NEW_PASSWORD + "x"})
        assert resp.status_code == 400 and "do not match" in resp.text
        assert check_password_hash(password_of(db, email), PASSWORD)
        resp = public.post_form(link, {"password": NEW_PASSWORD, "password_repeat": NEW_PASSWORD})
        assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert check_password_hash(password_of(db, email), NEW_PASSWORD)
    entry = db.scalars(select(ActivityLog).where(ActivityLog.action == "user.password_reset")).one()
    assert entry.client_id == client.id and entry.object_id == entry.actor_id
    # the link works once
    with clock.frozen_at(T0 + dt.timedelta(minutes=59)):
        again = public.get(link)
        assert again.status_code == 400 and "puq-reset-invalid" in again.text
        assert public.post(link, {"password": "Third-pass3", "password_repeat": "Third-pass3"}).status_code == 400
    assert check_password_hash(password_of(db, email), NEW_PASSWORD)
    # every session of the login ended; the new password signs in
    user_id = db.scalars(select(User.id).where(User.email == email)).one()
    assert db.scalar(select(func.count()).select_from(LoginSession).where(
        LoginSession.user_id == user_id, LoginSession.ended_at.is_(None))) == 0
    assert elsewhere.get("/account/").status_code == 302
    fresh = make_browser()
    fresh.login(email, NEW_PASSWORD)
    assert fresh.get("/account/").status_code == 200


def test_unknown_address_gets_the_same_answer(db, owner, make_browser):
    email, _client = owner
    known = ask(make_browser(), email)
    unknown = ask(make_browser(), "nobody@example.com")
    invalid = ask(make_browser(), "not an address")
    assert known.status_code == unknown.status_code == invalid.status_code == 200
    assert body(known) == body(unknown) == body(invalid)
    assert [m.to_address for m in outbox(db)] == [email]


def test_known_and_unknown_addresses_cost_the_same_commits(app, db, owner, make_browser):
    """No extra round trip for a known address: its mail is committed with the throttle counts (a commit of
    its own made the answer for a known address measurably slower)."""
    from sqlalchemy import event

    from puqpanel.extensions import db as fsa

    email, _client = owner
    counts = []
    for address in (email, "nobody@example.com"):
        browser = make_browser()
        page = browser.get("/account/forgot")
        commits = []
        listener = lambda conn: commits.append(1)  # noqa: E731
        event.listen(fsa.engine, "commit", listener)
        try:
            browser.client.post("/account/forgot", data={"email": address, "csrf_token": csrf_token(page.text)})
        finally:
            event.remove(fsa.engine, "commit", listener)
        counts.append(len(commits))
    assert [m.to_address for m in outbox(db)] == [email]
    assert counts[0] == counts[1]


def test_the_link_uses_the_configured_address_never_the_request_host(app, db, owner, make_browser, monkeypatch):
    """A forged Host header must not put an attacker's host into the mailed link (the token would go there)."""
    email, _client = owner
    monkeypatch.setitem(app.config, "PUQPANEL_PUBLIC_URL", "https://panel.example.com/")
    public = make_browser().client
    page = public.get("/account/forgot", base_url="http://evil.example")
    resp = public.post("/account/forgot", base_url="http://evil.example",
                       data={"email": email, "csrf_token": csrf_token(page.text)})
    assert resp.status_code == 200
    [mail] = outbox(db)
    assert "evil.example" not in mail.body
    assert re.search(r"https://panel\.example\.com/account/reset/[A-Za-z0-9_.\-]+", mail.body), mail.body


def test_staff_may_reset_inactive_logins_get_no_mail(db, staff, make_browser):
    resp = ask(make_browser(), "billing@staff.test")
    assert resp.status_code == 200
    assert [m.to_address for m in outbox(db)] == ["billing@staff.test"]
    blocked = make_user("blocked", "Support", email="blocked@example.com")
    blocked.active = False
    db.commit()
    resp2 = ask(make_browser(), "blocked@example.com")
    assert resp2.status_code == 200 and body(resp2) == body(resp)
    assert len(outbox(db)) == 1


def test_expired_link_is_refused(db, owner, make_browser):
    email, _client = owner
    public = make_browser()
    with clock.frozen_at(T0):
        ask(public, email)
    link = reset_link(db)
    with clock.frozen_at(T0 + dt.timedelta(minutes=61)):
        page = public.get(link)
        assert page.status_code == 400 and "invalid or has expired" in page.text
        resp = public.post(link, {"password": NEW_PASSWORD, "password_repeat": NEW_PASSWORD})
        assert resp.status_code == 400
    assert check_password_hash(password_of(db, email), PASSWORD)


def test_tampered_or_foreign_links_are_refused(db, owner, make_browser):
    email, _client = owner
    public = make_browser()
    ask(public, email)
    link = reset_link(db)
    token = link.rsplit("/", 1)[1]
    tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    assert public.get(tampered).status_code == 400
    assert public.get("/account/reset/not-a-token").status_code == 400
    # a token signed with another salt (e.g. an e-mail confirmation) is no reset token
    from flask import current_app
    from itsdangerous import URLSafeTimedSerializer

    forged = URLSafeTimedSerializer(current_app.secret_key, salt="other").dumps({"uid": 1, "fp": "x"})
    assert public.get(f"/account/reset/{forged}").status_code == 400
    assert public.get(f"/account/reset/{token}").status_code == 200
    assert check_password_hash(password_of(db, email), PASSWORD)


def test_a_password_change_voids_an_outstanding_link(db, owner, make_browser):
    email, _client = owner
    public = make_browser()
    ask(public, email)
    link = reset_link(db)
    browser = make_browser(email)
    resp = browser.post_form("/account/password/save", {"current_password": PASSWORD, "password": NEW_PASSWORD,
                                                        "password_repeat": NEW_PASSWORD},
                             form_url="/account/password")
    assert resp.status_code == 302
    assert public.get(link).status_code == 400


def test_reset_requests_are_throttled_per_address(db, owner, make_browser):
    email, _client = owner
    public = make_browser()
    statuses = [ask(public, email).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    assert len(outbox(db)) == 5
    unknown = [ask(public, "nobody@example.com").status_code for _ in range(6)]
    assert unknown == statuses  # an unknown address is throttled the same way
    locked = ask(public, email)
    assert locked.status_code == 429 and "puq-reset-sent" in locked.text
    assert len(outbox(db)) == 5


def test_reset_requests_are_throttled_per_ip(db, owner, make_browser):
    email, _client = owner
    public = make_browser()
    statuses = [ask(public, f"someone{i}@example.com").status_code for i in range(50)]
    assert statuses == [200] * 50
    assert ask(public, email).status_code == 429
    assert outbox(db) == []
    assert db.get(AuthThrottle, "ip:127.0.0.1").failures == 50
    other_ip = make_browser()
    resp = other_ip.post_form("/account/forgot", {"email": email}, environ_base={"REMOTE_ADDR": "10.0.0.7"})
    assert resp.status_code == 200 and len(outbox(db)) == 1


def test_forgot_and_reset_need_post_with_csrf(db, owner, make_browser):
    email, _client = owner
    public = make_browser()
    assert public.client.post("/account/forgot", data={"email": email}).status_code == 400
    ask(public, email)
    link = reset_link(db)
    resp = public.client.post(link, data={"password": NEW_PASSWORD, "password_repeat": NEW_PASSWORD})
    assert resp.status_code == 400
    assert check_password_hash(password_of(db, email), PASSWORD)
    assert public.client.put("/account/forgot").status_code == 405
