"""Throttling of the password step (domain.throttle): counting per name and per address, locking at the
limit, the same 429 for existing and unknown names, a locked name refused without checking the password,
clearing on success, windows."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from conftest import PASSWORD
from puqpanel.billing import clock
from puqpanel.domain import throttle
from puqpanel.models import AuthThrottle, LoginSession, User
from test_login import INVALID, TOO_MANY, api_login, submit_login

T0 = dt.datetime(2030, 3, 1, 9, 0, 0)


def outcome(browser, resp) -> tuple[int, bool, bool]:
    """(status, invalid-login message shown, too-many message shown) of a login POST."""
    text = resp.text
    if resp.status_code == 302:
        text = browser.get(resp.headers["Location"]).text
    return resp.status_code, INVALID in text, TOO_MANY in text


def test_domain_counts_locks_and_forgets_per_window(app, db):
    key = throttle.login_key("  Somebody ")
    assert key == "login:somebody"
    with clock.frozen_at(T0):
        assert [throttle.record_failure(key) for _ in range(5)] == [False] * 4 + [True]
        assert throttle.is_locked(key)
        assert not throttle.is_locked("login:other")
    with clock.frozen_at(T0 + dt.timedelta(minutes=14, seconds=59)):
        assert throttle.is_locked(key)
    with clock.frozen_at(T0 + dt.timedelta(minutes=15)):
        assert not throttle.is_locked(key)
        assert throttle.record_failure(key) is False  # a new window starts at 1
    row = db.get(AuthThrottle, key)
    db.refresh(row)
    assert row.failures == 1 and row.window_started_at == T0 + dt.timedelta(minutes=15)
    throttle.clear(key)
    db.refresh(row)
    assert row.failures == 0 and row.locked_until is None


def test_limits_come_from_config(app, db, monkeypatch):
    monkeypatch.setitem(app.config, "PUQPANEL_THROTTLE_LIMITS", {"login": 2})
    monkeypatch.setitem(app.config, "PUQPANEL_THROTTLE_WINDOW_MINUTES", 1)
    with clock.frozen_at(T0):
        assert throttle.record_failure("login:x") is False
        assert throttle.record_failure("login:x") is True
        assert throttle.limit_for("code:7") == 5
    with clock.frozen_at(T0 + dt.timedelta(minutes=1)):
        assert not throttle.is_locked("login:x")


def test_sixth_wrong_password_is_429_the_same_for_known_and_unknown_names(db, staff, make_browser):
    known, unknown = make_browser(), make_browser()
    with clock.frozen_at(T0):
        known_answers = [outcome(known, submit_login(known, "support", "wrong-pass1!")) for _ in range(6)]
        unknown_answers = [outcome(unknown, submit_login(unknown, "nobody-here", "wrong-pass1!")) for _ in range(6)]
    assert known_answers == unknown_answers
    assert known_answers[:5] == [(302, True, False)] * 5
    assert known_answers[5] == (429, False, True)
    # the refusal page does not echo the name either
    with clock.frozen_at(T0):
        page = submit_login(unknown, "nobody-here", "wrong-pass1!")
    assert page.status_code == 429 and "nobody-here" not in page.text


def test_locked_name_is_refused_without_checking_the_password(db, staff, browser):
    with clock.frozen_at(T0):
        for _ in range(5):
            submit_login(browser, "support", "wrong-pass1!")
        db.expire_all()
        fails = db.get(User, staff["support"].id).fail_login_count
        resp = submit_login(browser, "SUPPORT", PASSWORD)  # names are counted case-insensitively
        assert resp.status_code == 429 and TOO_MANY in resp.text
    db.expire_all()
    user = db.get(User, staff["support"].id)
    assert user.fail_login_count == fails and not user.login_count  # the password was not looked at
    assert db.scalar(select(LoginSession)) is None
    assert browser.get("/clients/").status_code == 302
    # other names are not affected; after the window the name works again
    with clock.frozen_at(T0 + dt.timedelta(minutes=1)):
        assert submit_login(browser, "billing").headers["Location"].endswith("/")
    with clock.frozen_at(T0 + dt.timedelta(minutes=16)):
        browser.get("/logout/")
        resp = submit_login(browser, "support")
    assert resp.status_code == 302 and "/login" not in resp.headers["Location"]


def test_success_clears_the_name_counter(db, staff, browser):
    with clock.frozen_at(T0):
        for _ in range(4):
            submit_login(browser, "support", "wrong-pass1!")
        assert db.get(AuthThrottle, "login:support").failures == 4
        assert submit_login(browser, "support").status_code == 302
        db.expire_all()
        assert db.get(AuthThrottle, "login:support").failures == 0
        browser.get("/logout/")
        # four more failures do not lock it: the count started again
        answers = [outcome(browser, submit_login(browser, "support", "wrong-pass1!")) for _ in range(4)]
    assert answers == [(302, True, False)] * 4
    assert not throttle.is_locked("login:support", now=T0)


def test_an_address_with_too_many_failures_is_locked_for_every_name(app, db, staff, browser, monkeypatch):
    monkeypatch.setitem(app.config, "PUQPANEL_THROTTLE_LIMITS", {"ip": 3})
    with clock.frozen_at(T0):
        for name in ("a1", "a2", "a3"):
            assert submit_login(browser, name, "wrong-pass1!").status_code == 302
        resp = submit_login(browser, "support")
    assert resp.status_code == 429 and TOO_MANY in resp.text
    assert db.get(AuthThrottle, "ip:127.0.0.1").failures == 3


def test_api_login_is_throttled_like_the_form_and_the_same_for_unknown_names(app, db, staff):
    client = app.test_client()
    with clock.frozen_at(T0):
        known = [api_login(client, "support", "wrong-pass1!") for _ in range(6)]
        unknown = [api_login(client, "nobody-here", "wrong-pass1!") for _ in range(6)]
        locked_right_password = api_login(client, "support")
    assert [(r.status_code, r.json) for r in known] == [(r.status_code, r.json) for r in unknown]
    assert [r.status_code for r in known] == [401] * 5 + [429]
    assert known[5].json == {"message": TOO_MANY}
    assert locked_right_password.status_code == 429 and "access_token" not in locked_right_password.json
