"""Account pages of every login: My Account, Change Password, Verification Center, 2FA on/off with recovery
codes, staff 2FA reset; impersonation refusals; CSRF and methods of every state change."""
from __future__ import annotations

import datetime as dt
import re

import pyotp
import pytest
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from conftest import PASSWORD, make_user
from puqpanel.domain import mfa
from puqpanel.models import (ActivityLog, AuthThrottle, EmailOutbox, LoginSession, MfaMethod, MfaRecoveryCode,
                             User, UserSecurity)

NEW_PASSWORD = "Other-pass2"


def secret_from(html: str) -> str:
    match = re.search(r'id="totp-secret"[^>]*>([A-Z2-7]+)<', html)
    assert match, "no TOTP secret on the page"
    return match.group(1)


def mailed_code(db) -> str:
    db.expire_all()
    mail = db.scalars(select(EmailOutbox).order_by(EmailOutbox.id.desc())).first()
    assert mail.kind == "security_code"
    return re.search(r"\b([0-9]{6})\b", mail.body).group(1)


def login_user(db, username: str) -> User:
    db.expire_all()
    return db.scalars(select(User).where(User.username == username)).one()


@pytest.fixture()
def owner(new_client, make_browser):
    client = new_client(password=PASSWORD)
    email = client.users[0].user.email
    return make_browser(email), email, client


def enrol_totp(browser, name: str = "Phone") -> str:
    """Start an authenticator, read its secret from the page, confirm with the current code; the secret."""
    resp = browser.post_form("/account/security/totp", {"name": name}, form_url="/account/security")
    assert resp.status_code == 302
    page = browser.get("/account/security")
    assert page.status_code == 200 and "<svg" in page.text
    secret = secret_from(page.text)
    resp = browser.post_form(_confirm_url(page.text), {"code": pyotp.TOTP(secret).now()},
                             form_url="/account/security")
    assert resp.status_code == 302, resp.text[:2000]
    return secret


def _confirm_url(html: str) -> str:
    match = re.search(r'action="(/account/security/methods/[0-9]+/confirm)"', html)
    assert match
    return match.group(1)


def next_code(secret: str) -> str:
    """A code of the next step (the window accepts it) so a step just used for confirming is not replayed."""
    return pyotp.TOTP(secret).at(int(dt.datetime.now(dt.timezone.utc).timestamp()) + 30)


# -- My Account --------------------------------------------------------------------------------------------------

def test_my_account_saves_name_phone_language(db, owner):
    browser, email, client = owner
    page = browser.get("/account/")
    assert page.status_code == 200 and email in page.text
    assert 'placeholder="+49 30 123456"' in page.text and "&#34;" not in page.text
    resp = browser.post_form("/account/save", form_url="/account/", data={"first_name": "Berta", "last_name": "Meier", "email": email,
                                               "phone": "+49 30 1234567", "language": "de"})
    assert resp.status_code == 302
    user = login_user(db, email)
    security = db.get(UserSecurity, user.id)
    assert (user.first_name, user.last_name, security.phone, security.language) == (
        "Berta", "Meier", "+49301234567", "de")
    with browser.client.session_transaction() as sess:
        assert sess["locale"] == "de"
    entry = db.scalars(select(ActivityLog).where(ActivityLog.action == "user.account")).one()
    assert entry.client_id == client.id and entry.actor_id == user.id and "phone" in entry.changes


def test_my_account_refuses_bad_input_and_writes_nothing(db, owner):
    browser, email, _client = owner
    resp = browser.post_form("/account/save", form_url="/account/", data={"first_name": "", "last_name": "x" * 65, "email": "not-an-email",
                                               "phone": "12", "language": "xx"})
    assert resp.status_code == 400
    assert "puq-field-error" in resp.text
    user = login_user(db, email)
    assert user.first_name == "Anna" and user.email == email
    assert db.scalar(select(func.count()).select_from(ActivityLog).where(ActivityLog.action == "user.account")) == 0


def test_email_change_needs_current_password_and_keeps_username(db, owner):
    browser, email, _client = owner
    form = {"first_name": "Anna", "last_name": "X", "email": "New.Owner@Example.com", "phone": "", "language": ""}
    resp = browser.post_form("/account/save", form_url="/account/", data={**form, "current_password": "wrong"})
    assert resp.status_code == 400 and "current password is not correct" in resp.text
    assert login_user(db, email).email == email
    resp = browser.post_form("/account/save", form_url="/account/", data={**form, "current_password": PASSWORD})
    assert resp.status_code == 302
    db.expire_all()
    user = db.scalars(select(User).where(User.email == "new.owner@example.com")).one()
    assert user.username == "new.owner@example.com"  # a client login signs in with its e-mail


def test_email_change_refuses_a_taken_address(db, owner):
    browser, email, _client = owner
    make_user("taken", "Support", email="Taken@Example.com")
    resp = browser.post_form("/account/save", form_url="/account/", data={"first_name": "Anna", "last_name": "X", "email": "taken@example.COM",
                                               "current_password": PASSWORD})
    assert resp.status_code == 400 and "Another login uses this e-mail address" in resp.text
    assert login_user(db, email).email == email


def test_staff_email_change_keeps_username(db, staff, make_browser):
    browser = make_browser("support")
    resp = browser.post_form("/account/save", form_url="/account/", data={"first_name": "S", "last_name": "T", "email": "sup@example.com",
                                               "current_password": PASSWORD})
    assert resp.status_code == 302
    user = login_user(db, "support")
    assert user.email == "sup@example.com" and user.username == "support"


# -- Change Password ---------------------------------------------------------------------------------------------

def test_change_password(db, owner):
    browser, email, _client = owner
    resp = browser.post_form("/account/password/save", {"current_password": "wrong", "password": NEW_PASSWORD,
                                                        "password_repeat": NEW_PASSWORD},
                             form_url="/account/password")
    assert resp.status_code == 400 and "current password is not correct" in resp.text
    user = login_user(db, email)
    assert check_password_hash(user.password, PASSWORD)
    assert db.get(AuthThrottle, f"code:{user.id}").failures == 1
    resp = browser.post_form("/account/password/save", {"current_password": PASSWORD, "password": NEW_PASSWORD,
                                                        "password_repeat": NEW_PASSWORD},
                             form_url="/account/password")
    assert resp.status_code == 302
    user = login_user(db, email)
    assert check_password_hash(user.password, NEW_PASSWORD)
    assert db.scalar(select(func.count()).select_from(ActivityLog)
                     .where(ActivityLog.action == "user.password_change")) == 1
    # other sessions ended, this browser keeps working
    live = db.scalars(select(LoginSession).where(LoginSession.user_id == user.id,
                                                 LoginSession.ended_at.is_(None))).all()
    assert len(live) == 1
    assert browser.get("/account/password").status_code == 200


@pytest.mark.parametrize("password, repeat, message", [
    ("a1!", "a1!", "At least 6 characters"),
    ("abcdefgh!", "abcdefgh!", "At least one digit"),
    ("abcdefg1", "abcdefg1", "special character"),
    ("Password1!", "Password1!", "too common"),
    ("Good-pass9", "Good-pass8", "do not match"),
])
def test_change_password_policy_messages(db, owner, password, repeat, message):
    browser, email, _client = owner
    resp = browser.post_form("/account/password/save", {"current_password": PASSWORD, "password": password,
                                                        "password_repeat": repeat},
                             form_url="/account/password")
    assert resp.status_code == 400 and message in resp.text
    assert check_password_hash(login_user(db, email).password, PASSWORD)


def test_wrong_current_password_is_throttled(db, owner):
    browser, email, _client = owner
    data = {"current_password": "wrong", "password": NEW_PASSWORD, "password_repeat": NEW_PASSWORD}
    statuses = [browser.post_form("/account/password/save", data, form_url="/account/password").status_code
                for _ in range(6)]
    assert statuses == [400] * 5 + [429]
    # locked: even the right password is refused without being checked
    resp = browser.post_form("/account/password/save", {**data, "current_password": PASSWORD},
                             form_url="/account/password")
    assert resp.status_code == 429
    assert check_password_hash(login_user(db, email).password, PASSWORD)


# -- Verification Center and 2FA ---------------------------------------------------------------------------------

def test_totp_enrolment_on_the_page_and_2fa_with_recovery_codes(db, owner):
    browser, email, client = owner
    secret = enrol_totp(browser)
    user = login_user(db, email)
    methods = mfa.login_methods(user.id)
    assert [(m.kind, m.name, m.is_default) for m in methods] == [("totp", "Phone", True)]
    page = browser.get("/account/security")
    assert 'id="totp-secret"' not in page.text and "Phone" in page.text
    # enable: a wrong code is refused, a current one turns it on and shows ten codes once
    resp = browser.post_form("/account/security/2fa/enable", {"code": "12345x"}, form_url="/account/security/2fa")
    assert resp.status_code == 400 and not mfa.is_enabled(user.id)
    resp = browser.post_form("/account/security/2fa/enable", {"code": next_code(secret)},
                             form_url="/account/security/2fa")
    assert resp.status_code == 200
    codes = re.findall(r'class="puq-recovery-code">([a-z]{5}-[0-9]{5})<', resp.text)
    assert len(codes) == 10 and mfa.is_enabled(user.id)
    again = browser.get("/account/security/2fa")
    assert not any(code in again.text for code in codes) and "puq-recovery-code" not in again.text
    stored = db.scalars(select(MfaRecoveryCode.code_hash).where(MfaRecoveryCode.user_id == user.id)).all()
    assert len(stored) == 10 and not any(c.replace("-", "") in h or c in h for c in codes for h in stored)
    assert db.scalar(select(func.count()).select_from(ActivityLog).where(
        ActivityLog.action == "user.2fa_enable", ActivityLog.client_id == client.id)) == 1
    # the last method cannot be removed while 2FA is on
    method_id = methods[0].id
    resp = browser.post_form(f"/account/security/methods/{method_id}/remove", {"code": codes[0]},
                             form_url="/account/security")
    assert resp.status_code == 400 and db.get(MfaMethod, method_id) is not None
    # regenerate with a recovery code: new codes shown once, old ones dead
    resp = browser.post_form("/account/security/2fa/recovery-codes", {"code": codes[1]},
                             form_url="/account/security/2fa")
    assert resp.status_code == 200
    new_codes = re.findall(r'class="puq-recovery-code">([a-z]{5}-[0-9]{5})<', resp.text)
    assert len(new_codes) == 10 and set(new_codes).isdisjoint(codes)
    # disable with a recovery code; the same code cannot be used twice
    resp = browser.post_form("/account/security/2fa/disable", {"code": new_codes[0]},
                             form_url="/account/security/2fa")
    assert resp.status_code == 302 and not mfa.is_enabled(user.id)
    assert db.scalar(select(func.count()).select_from(ActivityLog)
                     .where(ActivityLog.action == "user.2fa_disable")) == 1


def test_totp_confirm_refuses_replayed_and_wrong_codes(db, owner):
    browser, email, _client = owner
    browser.post_form("/account/security/totp", {"name": "Phone"}, form_url="/account/security")
    page = browser.get("/account/security")
    secret = secret_from(page.text)
    resp = browser.post_form(_confirm_url(page.text), {"code": "000000" if pyotp.TOTP(secret).now() != "000000"
                                                       else "111111"}, form_url="/account/security")
    assert resp.status_code == 400 and "The code is not valid" in resp.text
    assert mfa.login_methods(login_user(db, email).id) == []
    code = pyotp.TOTP(secret).now()
    assert browser.post_form(_confirm_url(page.text), {"code": code}, form_url="/account/security").status_code == 302
    user = login_user(db, email)
    # the confirming code cannot then turn 2FA on (replay)
    resp = browser.post_form("/account/security/2fa/enable", {"code": code}, form_url="/account/security/2fa")
    assert resp.status_code == 400 and not mfa.is_enabled(user.id)


def test_device_name_required(db, owner):
    browser, _email, _client = owner
    resp = browser.post_form("/account/security/totp", {"name": "  "}, form_url="/account/security")
    assert resp.status_code == 400 and "Name the device" in resp.text
    assert db.scalar(select(func.count()).select_from(MfaMethod)) == 0


def test_email_method_and_removal_needs_another_methods_code(db, owner):
    browser, email, _client = owner
    secret = enrol_totp(browser)
    resp = browser.post_form("/account/security/email", {}, form_url="/account/security")
    assert resp.status_code == 302
    page = browser.get("/account/security")
    code = mailed_code(db)
    resp = browser.post_form(_confirm_url(page.text), {"code": code}, form_url="/account/security")
    assert resp.status_code == 302
    user = login_user(db, email)
    methods = {m.kind: m for m in mfa.login_methods(user.id)}
    assert set(methods) == {"totp", "email"} and methods["email"].name == email
    # remove the authenticator with its own code: refused; with an e-mailed code: done
    totp_id, email_id = methods["totp"].id, methods["email"].id
    resp = browser.post_form(f"/account/security/methods/{totp_id}/remove", {"code": next_code(secret)},
                             form_url="/account/security")
    assert resp.status_code == 400 and db.get(MfaMethod, totp_id) is not None
    assert browser.post_form(f"/account/security/methods/{email_id}/send-code", {},
                             form_url="/account/security").status_code == 302
    resp = browser.post_form(f"/account/security/methods/{totp_id}/remove", {"code": mailed_code(db)},
                             form_url="/account/security")
    assert resp.status_code == 302
    db.expire_all()
    assert db.get(MfaMethod, totp_id) is None
    assert db.scalar(select(func.count()).select_from(ActivityLog)
                     .where(ActivityLog.action == "user.2fa_method_remove")) == 1


def test_another_logins_method_is_404(db, owner, new_client, make_browser):
    browser, _email, _client = owner
    other_client = new_client(password=PASSWORD)
    other = make_browser(other_client.users[0].user.email)
    enrol_totp(other)
    other_method = db.scalars(select(MfaMethod)).one()
    for action in ("default", "remove", "confirm", "send-code"):
        resp = browser.post_form(f"/account/security/methods/{other_method.id}/{action}", {"code": "123456"},
                                 form_url="/account/security")
        assert resp.status_code == 404, action
    db.expire_all()
    assert db.get(MfaMethod, other_method.id) is not None
    # ids beyond the database's integers are not found either (they were a 500)
    for action in ("default", "remove", "confirm", "send-code"):
        resp = browser.post_form(f"/account/security/methods/99999999999999999999/{action}", {"code": "123456"},
                                 form_url="/account/security")
        assert resp.status_code == 404, action


def test_wrong_codes_are_throttled(db, owner):
    browser, email, _client = owner
    secret = enrol_totp(browser)
    statuses = [browser.post_form("/account/security/2fa/enable", {"code": "abcde-00000"},
                                  form_url="/account/security/2fa").status_code for _ in range(6)]
    assert statuses == [400] * 5 + [429]
    resp = browser.post_form("/account/security/2fa/enable", {"code": next_code(secret)},
                             form_url="/account/security/2fa")
    assert resp.status_code == 429 and not mfa.is_enabled(login_user(db, email).id)


def test_staff_login_has_the_same_pages(db, staff, make_browser):
    browser = make_browser("manager1")
    for url in ("/account/", "/account/password", "/account/security", "/account/security/2fa"):
        assert browser.get(url).status_code == 200, url
    secret = enrol_totp(browser)
    resp = browser.post_form("/account/security/2fa/enable", {"code": next_code(secret)},
                             form_url="/account/security/2fa")
    assert resp.status_code == 200 and mfa.is_enabled(staff["manager1"].id)


def test_account_pages_need_login(db, browser):
    for url in ("/account/", "/account/password", "/account/security", "/account/security/2fa", "/account/users-2fa"):
        resp = browser.get(url)
        assert resp.status_code in (302, 401, 403) and "/login" in resp.headers.get("Location", "/login"), url


# -- staff 2FA reset ---------------------------------------------------------------------------------------------

def test_staff_reset_2fa(db, owner, staff, make_browser):
    browser, email, client = owner
    secret = enrol_totp(browser)
    browser.post_form("/account/security/2fa/enable", {"code": next_code(secret)}, form_url="/account/security/2fa")
    user = login_user(db, email)
    assert mfa.is_enabled(user.id)
    # only with UserSecurity.can_reset_2fa (Admin)
    support = make_browser("support")
    assert support.get("/account/users-2fa").status_code in (302, 403)
    assert support.post(f"/account/users-2fa/{user.id}/reset", {"reason": "x"}).status_code in (302, 403)
    assert browser.get("/account/users-2fa").status_code in (302, 403)
    assert mfa.is_enabled(user.id)
    admin = make_browser("admin")
    listing = admin.get("/account/users-2fa?q=" + email[:6])
    assert listing.status_code == 200 and email in listing.text
    assert email not in admin.get("/account/users-2fa?q=nobody-like-this").text
    assert admin.get("/account/users-2fa?q=%27%20OR%201%3D1--&page=abc").status_code == 200
    resp = admin.post_form(f"/account/users-2fa/{user.id}/reset", {"reason": "lost phone"},
                           form_url="/account/users-2fa")
    assert resp.status_code == 302
    assert not mfa.is_enabled(user.id) and mfa.login_methods(user.id) == []
    entry = db.scalars(select(ActivityLog).where(ActivityLog.action == "user.2fa_reset")).one()
    assert (entry.client_id, entry.actor_id, entry.object_id, entry.description) == (
        client.id, staff["admin"].id, user.id, "lost phone")
    assert email not in admin.get("/account/users-2fa").text
    assert admin.post("/account/users-2fa/999999/reset", {}).status_code == 404


# -- impersonation, CSRF, methods --------------------------------------------------------------------------------

POSTS = [
    "/account/save", "/account/password/save", "/account/security/email", "/account/security/totp",
    "/account/security/methods/{m}/confirm", "/account/security/methods/{m}/default",
    "/account/security/methods/{m}/send-code", "/account/security/methods/{m}/remove",
    "/account/security/2fa/enable", "/account/security/2fa/disable", "/account/security/2fa/recovery-codes",
]


def _a_method(db, user_id: int) -> int:
    method = MfaMethod(user_id=user_id, kind="totp", name="Phone", secret=pyotp.random_base32(),
                       confirmed_at=dt.datetime(2030, 1, 1), is_default=True)
    db.add(method)
    db.commit()
    return method.id


def impersonate(db, browser, staff_id: int) -> None:
    """Turn the browser's session into one impersonated by `staff_id`, as a started impersonation has it:
    the flask session key and (where server-side sessions are kept) the live LoginSession row naming it."""
    with browser.client.session_transaction() as sess:
        sess["puq_impersonator_id"] = staff_id
        sid = sess.get("puq_sid")
    if sid:
        db.get(LoginSession, sid).impersonator_id = staff_id
        db.commit()


def test_every_post_is_refused_while_impersonating(db, owner, staff):
    browser, email, _client = owner
    user = login_user(db, email)
    method_id = _a_method(db, user.id)
    impersonate(db, browser, staff["support"].id)
    page = browser.get("/account/")
    assert page.status_code == 200 and "puq-impersonation-notice" in page.text
    assert "puq-impersonation-notice" in browser.get("/account/security").text
    data = {"first_name": "Evil", "last_name": "X", "email": "evil@example.com", "current_password": PASSWORD,
            "password": NEW_PASSWORD, "password_repeat": NEW_PASSWORD, "name": "Evil", "code": "123456"}
    for url in POSTS:
        resp = browser.post(url.format(m=method_id), data)
        assert resp.status_code == 403, url
    user = login_user(db, email)
    assert user.first_name == "Anna" and user.email == email and check_password_hash(user.password, PASSWORD)
    assert [m.id for m in mfa.all_methods(user.id)] == [method_id]
    assert db.scalar(select(func.count()).select_from(EmailOutbox)) == 0


def test_an_impersonator_never_sees_a_pending_authenticator_key(db, owner, staff):
    """The key of an authenticator the client started adding (and may confirm later) is the client's secret:
    a staff user signed in as the client must not read it off the Verification Center."""
    browser, email, _client = owner
    browser.post_form("/account/security/totp", {"name": "Phone"}, form_url="/account/security")
    secret = mfa.pending_totp(login_user(db, email).id).secret
    assert secret in browser.get("/account/security").text
    impersonate(db, browser, staff["support"].id)
    page = browser.get("/account/security")
    assert page.status_code == 200
    assert secret not in page.text and 'id="totp-secret"' not in page.text and "otpauth" not in page.text


def test_csrf_and_get_on_every_state_change(db, owner, staff, make_browser):
    browser, email, _client = owner
    method_id = _a_method(db, login_user(db, email).id)
    for url in POSTS:
        url = url.format(m=method_id)
        assert browser.client.post(url, data={"code": "123456", "name": "x"}).status_code == 400, url
        assert browser.get(url).status_code == 405, url
    admin = make_browser("admin")
    user_id = login_user(db, email).id
    assert admin.client.post(f"/account/users-2fa/{user_id}/reset", data={}).status_code == 400
    assert admin.get(f"/account/users-2fa/{user_id}/reset").status_code == 405
    assert [m.id for m in mfa.all_methods(user_id)] == [method_id]
    # the public forms too
    public = make_browser()
    assert public.client.post("/account/forgot", data={"email": email}).status_code == 400
    assert db.scalar(select(func.count()).select_from(EmailOutbox)) == 0


def test_language_applied_at_login(db, owner, make_browser):
    browser, email, _client = owner
    browser.post_form("/account/save", form_url="/account/", data={"first_name": "Anna", "last_name": "X", "email": email, "language": "fr"})
    fresh = make_browser(email)
    with fresh.client.session_transaction() as sess:
        assert sess.get("locale") == "fr"


def test_menu_leads_every_login_to_my_account(db, owner, staff, make_browser):
    browser, _email, _client = owner
    # /account/forgot has the navigation bar but not the account tabs
    for who in (browser, make_browser("support"), make_browser("manager1")):
        page = who.get("/account/forgot")
        assert page.status_code == 200 and 'href="/account/"' in page.text
        assert "/account/users-2fa" not in page.text  # the staff reset menu entry is the Admin's
    assert "/account/users-2fa" in make_browser("admin").get("/account/forgot").text
    assert 'href="/account/"' not in make_browser().get("/account/forgot").text


def test_my_account_lists_own_recent_sign_ins_not_impersonated_ones(app, db, staff, new_client, make_browser):
    from puqpanel.models import LoginSession

    client = new_client()
    owner = make_browser("owner1@example.com")
    admin = make_browser("admin")
    admin.post(f"/impersonate/{client.id}/owner", {"reason": "check"})
    page = owner.get("/account/").text
    assert "Recent sign-ins" in page and "This session" in page
    rows = db.query(LoginSession).filter_by(user_id=client.owner.id).all()
    assert len(rows) == 2 and sum(1 for r in rows if r.impersonator_id) == 1
    assert page.count("puq-sign-ins") == 1 and page.count("<tr>") - page.count("<thead><tr>") >= 1
    listed = page.split("puq-sign-ins", 1)[1].split("</table>", 1)[0]
    assert listed.count("127.0.0.1") == 1  # the owner's own session only, not the impersonated one
