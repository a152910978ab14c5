"""The second sign-in step on the form login and on the JSON API login: TOTP, e-mailed and recovery codes,
replay, skipping the step, five wrong codes, expiry of the pending login, "send another code"."""
from __future__ import annotations

import datetime as dt

import jwt
import pyotp
from sqlalchemy import func, select

from conftest import PASSWORD, csrf_token
from puqpanel.billing import clock
from puqpanel.domain import mfa
from puqpanel.domain.clients import find_login
from puqpanel.models import EmailOutbox, LoginSession, MfaMethod, User, UserSecurity
from test_login import TOO_MANY, api_login, live_sessions, session_of, submit_login
from test_mfa import add_email, code_at, mailed_code

T0 = dt.datetime(2030, 1, 1, 12, 0, 15)  # 15 s into a 30-second step
T1 = T0 + dt.timedelta(minutes=3)
PENDING = "puq_2fa_pending"


def enable_totp(db, user, at: dt.datetime = T0) -> str:
    """A confirmed default authenticator and 2FA on (rows written directly); returns the secret."""
    secret = pyotp.random_base32()
    db.add(MfaMethod(user_id=user.id, kind="totp", name="Phone", secret=secret, is_default=True, confirmed_at=at))
    security = db.get(UserSecurity, user.id) or UserSecurity(user_id=user.id)
    security.two_factor_enabled = True
    db.add(security)
    db.commit()
    return secret


def other_code(code: str) -> str:
    return "000000" if code != "000000" else "111111"


def client_owner(new_client):
    client = new_client(password=PASSWORD)
    return client, find_login(client.users[0].user.email)


def post_code(browser, code: str):
    page = browser.client.get("/login/2fa")
    assert page.status_code == 200, page.status_code
    return browser.client.post("/login/2fa", data={"code": code, "csrf_token": csrf_token(page.text)})


def start_2fa_login(browser, username: str, next_url: str | None = None):
    resp = submit_login(browser, username, next_url=next_url)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login/2fa"), resp.headers.get("Location")
    return resp


def test_form_login_with_totp_end_to_end(db, new_client, browser):
    client, owner = client_owner(new_client)
    secret = enable_totp(db, owner)
    with clock.frozen_at(T1):
        start_2fa_login(browser, owner.username, next_url="/client/dashboard")
        state = session_of(browser)
        assert state[PENDING]["uid"] == owner.id and state[PENDING]["next"] == "/client/dashboard"
        assert "_user_id" not in state and "puq_sid" not in state
        db.expire_all()
        assert not db.get(User, owner.id).login_count  # not counted before the second step
        page = browser.get("/login/2fa")
        assert page.status_code == 200 and "authenticator app" in page.text
        resp = post_code(browser, code_at(secret, T1))
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/client/dashboard")
    state = session_of(browser)
    assert PENDING not in state and state["_user_id"] == str(owner.id)
    [row] = live_sessions(db, owner.id)
    assert state["puq_sid"] == row.id and row.impersonator_id is None
    assert db.get(User, owner.id).login_count == 1
    assert browser.get("/login/").status_code == 302  # signed in: the login page sends on
    assert browser.get("/client/dashboard").status_code == 200


def test_skipping_the_second_step_is_not_signed_in(db, staff, new_client, make_browser):
    client, owner = client_owner(new_client)
    enable_totp(db, owner)
    enable_totp(db, staff["admin"])
    client_browser, staff_browser = make_browser(), make_browser()
    with clock.frozen_at(T1):
        start_2fa_login(client_browser, owner.username)
        start_2fa_login(staff_browser, "admin")
        for browser, url in ((client_browser, "/client/dashboard"), (staff_browser, "/clients/"),
                             (staff_browser, "/client/dashboard"), (client_browser, "/clients/")):
            resp = browser.get(url)
            assert resp.status_code == 302 and "/login/" in resp.headers["Location"], (url, resp.status_code)
        resp = client_browser.post("/client/switch", {"client_id": str(client.id)})
        assert resp.status_code == 302 and "/login/" in resp.headers["Location"]
        # a second password step does not sign in either; the login form is shown again, not skipped
        assert staff_browser.get("/login/").status_code == 200
    assert db.scalar(select(func.count()).select_from(LoginSession)) == 0


def test_api_login_needs_the_code(app, db, staff):
    secret = enable_totp(db, staff["admin"])
    client = app.test_client()
    with clock.frozen_at(T1):
        missing = api_login(client, "admin", refresh=True)
        wrong = api_login(client, "admin", otp=other_code(code_at(secret, T1)), refresh=True)
        right = api_login(client, "admin", otp=code_at(secret, T1), refresh=True)
        replayed = api_login(client, "admin", otp=code_at(secret, T1))
    assert missing.status_code == 401
    assert missing.json == {"message": "Two-factor code required", "mfa_required": True}
    assert wrong.status_code == 401 and "access_token" not in wrong.json and wrong.json["mfa_required"] is True
    assert "refresh_token" not in missing.json and "refresh_token" not in wrong.json
    assert right.status_code == 200, right.json
    assert replayed.status_code == 401 and "access_token" not in replayed.json
    token = right.json["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == str(staff["admin"].id)
    assert client.get("/api/v1/security/roles/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    refreshed = client.post("/api/v1/security/refresh",
                            headers={"Authorization": f"Bearer {right.json['refresh_token']}"})
    assert refreshed.status_code == 200
    # a wrong password with a right code is still a wrong password
    with clock.frozen_at(T1 + dt.timedelta(seconds=30)):
        assert api_login(client, "admin", "wrong-pass1!",
                         otp=code_at(secret, T1 + dt.timedelta(seconds=30))).status_code == 401


def test_api_five_wrong_codes_lock_the_code_step(app, db, staff):
    secret = enable_totp(db, staff["admin"])
    client = app.test_client()
    with clock.frozen_at(T1):
        bad = other_code(code_at(secret, T1))
        answers = [api_login(client, "admin", otp=bad).status_code for _ in range(5)]
        locked = api_login(client, "admin", otp=code_at(secret, T1))
    assert answers == [401] * 4 + [429]
    assert locked.status_code == 429 and "access_token" not in locked.json


def test_totp_replay_on_the_login_step_is_refused(db, staff, browser):
    secret = enable_totp(db, staff["support"])
    with clock.frozen_at(T1):
        code = code_at(secret, T1)
        start_2fa_login(browser, "support")
        assert post_code(browser, code).status_code == 302
        browser.get("/logout/")
        start_2fa_login(browser, "support")
        replay = post_code(browser, code)
        assert replay.status_code == 400 and "Invalid code" in replay.text
        assert "_user_id" not in session_of(browser)
    later = T1 + dt.timedelta(seconds=30)
    with clock.frozen_at(later):
        assert post_code(browser, code_at(secret, later)).status_code == 302
    assert session_of(browser)["_user_id"] == str(staff["support"].id)


def test_five_wrong_codes_give_429_and_drop_the_pending_login(db, staff, browser):
    secret = enable_totp(db, staff["support"])
    with clock.frozen_at(T1):
        bad = other_code(code_at(secret, T1))
        start_2fa_login(browser, "support")
        statuses = [post_code(browser, bad).status_code for _ in range(4)]
        fifth = browser.client.post("/login/2fa", data={"code": bad, "csrf_token": browser.session_csrf_token()})
        assert statuses == [400] * 4
        assert fifth.status_code == 429 and TOO_MANY in fifth.text
        assert PENDING not in session_of(browser)
        # the pending login is gone: the code page sends back to the password step
        resp = browser.get("/login/2fa")
        assert resp.status_code == 302 and "/login/" in resp.headers["Location"]
        # and a new password step does not reopen the code step before the window ends
        start_2fa_login(browser, "support")
        again = browser.client.post("/login/2fa", data={"code": code_at(secret, T1),
                                                         "csrf_token": browser.session_csrf_token()})
        assert again.status_code == 429 and PENDING not in session_of(browser)
    assert "_user_id" not in session_of(browser)
    later = T1 + dt.timedelta(minutes=16)
    with clock.frozen_at(later):
        start_2fa_login(browser, "support")
        assert post_code(browser, code_at(secret, later)).status_code == 302
    assert session_of(browser)["_user_id"] == str(staff["support"].id)


def test_pending_login_expires_after_ten_minutes(db, staff, browser):
    secret = enable_totp(db, staff["support"])
    with clock.frozen_at(T1):
        start_2fa_login(browser, "support")
        token = browser.session_csrf_token()
    late = T1 + dt.timedelta(minutes=10, seconds=1)
    with clock.frozen_at(late):
        resp = browser.client.post("/login/2fa", data={"code": code_at(secret, late), "csrf_token": token})
        assert resp.status_code == 302 and "/login/" in resp.headers["Location"]
        assert "Your sign-in has expired" in browser.get(resp.headers["Location"]).text
    assert "_user_id" not in session_of(browser) and PENDING not in session_of(browser)


def test_forged_pending_state_is_not_a_login(db, staff, browser):
    """A pending login that was never started (or names another user) does not reach the code step."""
    secret = enable_totp(db, staff["admin"])
    with browser.client.session_transaction() as sess:
        sess[PENDING] = {"uid": staff["admin"].id, "started": "not a time", "next": "/", "attempts": 0}
    with clock.frozen_at(T1):
        resp = browser.client.post("/login/2fa", data={"code": code_at(secret, T1),
                                                       "csrf_token": browser.session_csrf_token()})
    assert resp.status_code == 302 and "_user_id" not in session_of(browser)


def test_email_code_login_and_send_another_code(db, new_client, browser):
    _client, owner = client_owner(new_client)
    add_email(db, owner)  # confirmed e-mail method (the default)
    security = db.get(UserSecurity, owner.id)
    security.two_factor_enabled = True
    db.commit()

    def mails():
        return db.scalar(select(func.count()).select_from(EmailOutbox).where(EmailOutbox.kind == "security_code"))

    before = mails()
    with clock.frozen_at(T1):
        start_2fa_login(browser, owner.username)
        assert mails() == before + 1
        first = mailed_code(db, owner.email)
        page = browser.get("/login/2fa")
        assert "e-mail" in page.text and "Send another code" in page.text
        # asking again at once is refused (one mail a minute)
        resp = browser.post("/login/2fa/resend")
        assert resp.status_code == 302 and mails() == before + 1
        assert "wait" in browser.get("/login/2fa").text
    with clock.frozen_at(T1 + dt.timedelta(seconds=61)):
        assert browser.post("/login/2fa/resend").status_code == 302
        assert mails() == before + 2
        second = mailed_code(db, owner.email)
        if second != first:
            assert post_code(browser, first).status_code == 400  # replaced by the new one
        assert post_code(browser, second).status_code == 302
    assert session_of(browser)["_user_id"] == str(owner.id)


def test_resend_needs_a_pending_login_and_an_email_method(db, staff, browser):
    enable_totp(db, staff["support"])
    resp = browser.post("/login/2fa/resend")
    assert resp.status_code == 302 and "/login/" in resp.headers["Location"]
    with clock.frozen_at(T1):
        start_2fa_login(browser, "support")
        assert browser.post("/login/2fa/resend").status_code == 404  # no e-mail method
        assert browser.client.post("/login/2fa/resend").status_code == 400  # no CSRF token
        assert browser.client.get("/login/2fa/resend").status_code == 405


def test_recovery_code_signs_in_once(db, staff, browser):
    admin = staff["admin"]
    secret = pyotp.random_base32()
    db.add(MfaMethod(user_id=admin.id, kind="totp", name="Phone", secret=secret, is_default=True, confirmed_at=T0))
    db.commit()
    with clock.frozen_at(T0):
        codes = mfa.enable(admin.id, code_at(secret, T0))
    with clock.frozen_at(T1):
        start_2fa_login(browser, "admin")
        assert post_code(browser, codes[0].upper()).status_code == 302
        browser.get("/logout/")
        start_2fa_login(browser, "admin")
        assert post_code(browser, codes[0]).status_code == 400  # used up
        assert post_code(browser, codes[1]).status_code == 302


def test_code_step_post_without_csrf_is_refused(db, staff, browser):
    secret = enable_totp(db, staff["support"])
    with clock.frozen_at(T1):
        start_2fa_login(browser, "support")
        resp = browser.client.post("/login/2fa", data={"code": code_at(secret, T1)})
    assert resp.status_code == 400 and "_user_id" not in session_of(browser)
