"""Server-side login sessions (domain.login_sessions + the before_request guard): a copied cookie of a
rotated or ended session stops working; forged or missing session ids log the request out; end_all."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from conftest import PASSWORD
from puqpanel.billing import clock
from puqpanel.domain import login_sessions
from puqpanel.domain.clients import find_login
from puqpanel.models import LoginSession
from test_login import live_sessions, session_of, submit_login
from test_login_2fa import T1, code_at, enable_totp, post_code, start_2fa_login


def cookie(browser) -> str:
    return browser.client.get_cookie("session").value


def replay(browser, value: str) -> None:
    browser.client.set_cookie("session", value)


def signed_in(browser) -> bool:
    """Whether the browser reaches a staff page (anonymous is sent to the login page)."""
    return browser.get("/clients/").status_code == 200


def test_cookie_copied_before_logout_stops_working(db, staff, browser):
    browser.login("support")
    assert signed_in(browser)
    old = cookie(browser)
    browser.get("/logout/")
    assert not signed_in(browser)
    replay(browser, old)
    assert not signed_in(browser)
    assert "_user_id" not in session_of(browser)  # the guard emptied the replayed cookie


def test_cookie_of_the_previous_login_stops_working_after_the_next_login(db, staff, browser):
    browser.login("support")
    first = cookie(browser)
    first_sid = session_of(browser)["puq_sid"]
    browser.get("/logout/")
    browser.login("billing")
    assert session_of(browser)["puq_sid"] != first_sid
    assert signed_in(browser)
    replay(browser, first)
    assert not signed_in(browser)


def test_login_rotates_away_a_session_id_already_in_the_cookie(db, staff, browser):
    """Session fixation: an id planted in the cookie before the login is ended, the login gets a new one."""
    planted = login_sessions.start(staff["billing"].id)
    with browser.client.session_transaction() as sess:
        sess["puq_sid"] = planted.id
    browser.login("support")
    state = session_of(browser)
    assert state["puq_sid"] != planted.id
    db.expire_all()
    assert db.get(LoginSession, planted.id).end_reason == "rotated"


def test_two_factor_completion_rotates_the_session(db, staff, browser):
    secret = enable_totp(db, staff["support"])
    with clock.frozen_at(T1):
        start_2fa_login(browser, "support")
        pending_cookie = cookie(browser)
        assert post_code(browser, code_at(secret, T1)).status_code == 302
        assert signed_in(browser)
        signed_in_cookie = cookie(browser)
        # the cookie of the pending step is not a login
        replay(browser, pending_cookie)
        assert not signed_in(browser)
        replay(browser, signed_in_cookie)
        assert signed_in(browser)
        browser.get("/logout/")
        replay(browser, signed_in_cookie)
        assert not signed_in(browser)


def test_forged_or_missing_session_id_logs_the_request_out(db, staff, make_browser):
    support, billing = make_browser("support"), make_browser("billing")
    billing_sid = session_of(billing)["puq_sid"]
    # another login's live id
    with support.client.session_transaction() as sess:
        sess["puq_sid"] = billing_sid
    assert not signed_in(support)
    # no id at all (a cookie from before server-side sessions)
    support.login("support")
    with support.client.session_transaction() as sess:
        del sess["puq_sid"]
    assert not signed_in(support)
    # an id that never existed
    support.login("support")
    with support.client.session_transaction() as sess:
        sess["puq_sid"] = "x" * 43
    assert not signed_in(support)
    # the other browser's session was not touched
    assert signed_in(billing)
    db.expire_all()
    assert db.get(LoginSession, billing_sid).ended_at is None


def test_end_all_signs_every_browser_of_the_login_out(db, staff, make_browser):
    first, second, other = make_browser("support"), make_browser("support"), make_browser("billing")
    assert signed_in(first) and signed_in(second)
    assert login_sessions.end_all(staff["support"].id, "password_change") == 2
    assert not signed_in(first) and not signed_in(second)
    assert signed_in(other)
    reasons = set(db.scalars(select(LoginSession.end_reason).where(LoginSession.user_id == staff["support"].id)))
    assert reasons == {"password_change"}


def test_history_lists_own_sessions_newest_first(db, staff, new_client, browser):
    client = new_client(password=PASSWORD)
    owner = find_login(client.users[0].user.email)
    with clock.frozen_at(dt.datetime(2030, 1, 1, 8)):
        own_old = login_sessions.start(owner.id)
    with clock.frozen_at(dt.datetime(2030, 1, 2, 8)):
        login_sessions.start(owner.id, impersonator_id=staff["support"].id)  # not the client's own
        own_new = login_sessions.start(owner.id)
    assert [row.id for row in login_sessions.history(owner.id)] == [own_new.id, own_old.id]
    assert submit_login(browser, owner.username).status_code == 302
    assert len(live_sessions(db, owner.id)) == 4


def test_sessions_are_not_needed_on_public_pages(db, browser):
    with browser.client.session_transaction() as sess:
        sess["puq_impersonator_id"] = 1  # leftovers without a login are dropped
    assert browser.get("/login/").status_code == 200
    assert "puq_impersonator_id" not in session_of(browser)
