"""domain/mfa.py: TOTP enrolment and replay protection, e-mailed codes, recovery codes, removing methods,
turning 2FA on and off, staff reset."""
from __future__ import annotations

import datetime as dt
import re

import pyotp
import pytest
from sqlalchemy import func, select

from conftest import make_user, run_threads
from puqpanel.billing import clock
from puqpanel.domain import DomainError, mfa
from puqpanel.domain.clients import find_login
from puqpanel.extensions import db as fsa
from puqpanel.models import ActivityLog, EmailOutbox, MfaEmailCode, MfaMethod, MfaRecoveryCode, UserSecurity

# 15 s into a 30-second step
T0 = dt.datetime(2030, 1, 1, 12, 0, 15)


def epoch(moment: dt.datetime) -> int:
    return int(moment.replace(tzinfo=dt.timezone.utc).timestamp())


def code_at(secret: str, moment: dt.datetime) -> str:
    return pyotp.TOTP(secret).at(epoch(moment))


def last_mail(db, to: str | None = None) -> EmailOutbox:
    query = select(EmailOutbox).order_by(EmailOutbox.id.desc())
    if to:
        query = query.where(EmailOutbox.to_address == to)
    return db.scalars(query).first()


def mailed_code(db, to: str | None = None) -> str:
    mail = last_mail(db, to)
    assert mail.kind == "security_code"
    match = re.search(r"\b([0-9]{6})\b", mail.body)
    assert match, mail.body
    return match.group(1)


def add_totp(user_id: int, at: dt.datetime = T0, name: str = "Phone") -> MfaMethod:
    with clock.frozen_at(at):
        method = mfa.start_totp_method(user_id, name)
        return mfa.confirm_method(user_id, method.id, code_at(method.secret, at))


def add_email(db, user) -> MfaMethod:
    with clock.frozen_at(T0):
        method = mfa.start_email_method(user)
        return mfa.confirm_method(user.id, method.id, mailed_code(db, user.email))


@pytest.fixture()
def owner(db, new_client):
    client = new_client()
    return find_login(client.users[0].user.email)


def test_totp_enrolment_confirms_with_a_current_code_and_becomes_default(db, owner):
    with clock.frozen_at(T0):
        method = mfa.start_totp_method(owner.id, "  My   phone ")
        assert method.confirmed_at is None and len(method.secret) >= 16 and method.name == "My phone"
        assert mfa.login_methods(owner.id) == []
        with pytest.raises(DomainError) as wrong:
            mfa.confirm_method(owner.id, method.id, "000000" if code_at(method.secret, T0) != "000000" else "111111")
        assert "code" in wrong.value.errors
        confirmed = mfa.confirm_method(owner.id, method.id, code_at(method.secret, T0))
    assert confirmed.confirmed_at == T0 and confirmed.is_default
    assert [m.id for m in mfa.login_methods(owner.id)] == [method.id]
    # the confirming code is used up: the login step refuses it
    with clock.frozen_at(T0):
        assert mfa.verify_login_code(owner.id, code_at(method.secret, T0)) is False
    with pytest.raises(DomainError):
        mfa.start_totp_method(owner.id, "   ")


def test_totp_replay_and_window(db, owner):
    method = add_totp(owner.id)
    later = T0 + dt.timedelta(minutes=5)
    with clock.frozen_at(later):
        older = code_at(method.secret, later - dt.timedelta(seconds=60))
        previous = code_at(method.secret, later - dt.timedelta(seconds=30))
        current = code_at(method.secret, later)
        if older not in (previous, current):
            assert mfa.verify_login_code(owner.id, older) is False  # two steps back: outside the window
        assert mfa.verify_login_code(owner.id, previous) is True  # the previous step, once
        assert mfa.verify_login_code(owner.id, previous) is False  # replay
        assert mfa.verify_login_code(owner.id, " " + current[:3] + "-" + current[3:] + " ") is True
        assert mfa.verify_login_code(owner.id, current) is False  # replay of the current step
    db.expire_all()
    assert db.get(MfaMethod, method.id).last_used_step == epoch(later) // 30
    with clock.frozen_at(later + dt.timedelta(seconds=30)):
        # a later step works; a code of an earlier step than the last accepted one never does
        assert mfa.verify_login_code(owner.id, previous) is False
        assert mfa.verify_login_code(owner.id, code_at(method.secret, later + dt.timedelta(seconds=30))) is True


def test_another_logins_totp_code_is_refused(db, owner):
    other = make_user("other", "Support")
    method = add_totp(owner.id)
    with clock.frozen_at(T0 + dt.timedelta(minutes=1)):
        assert mfa.verify_login_code(other.id, code_at(method.secret, T0 + dt.timedelta(minutes=1))) is False


def test_concurrent_use_of_one_totp_code_passes_once(app, db, owner):
    method = add_totp(owner.id)
    at = T0 + dt.timedelta(minutes=2)
    code = code_at(method.secret, at)
    user_id = owner.id
    with clock.frozen_at(at):
        results = run_threads(app, 4, lambda _i: mfa.verify_login_code(user_id, code))
    assert [exc for _r, exc in results] == [None] * 4
    assert sorted(r for r, _e in results) == [False, False, False, True]


def test_email_code_six_digits_ten_minutes_once(db, owner):
    method = add_email(db, owner)
    assert method.kind == "email" and method.name == owner.email and method.is_default
    with clock.frozen_at(T0):
        mfa.send_email_code(owner, "login")
    mail = last_mail(db)
    assert mail.to_address == owner.email and mail.kind == "security_code"
    code = mailed_code(db)
    assert re.fullmatch(r"[0-9]{6}", code)
    row = db.scalars(select(MfaEmailCode).where(MfaEmailCode.purpose == "login")).one()
    assert code not in row.code_hash and row.expires_at == T0 + dt.timedelta(minutes=10)
    with clock.frozen_at(T0 + dt.timedelta(minutes=9, seconds=59)):
        assert mfa.verify_login_code(owner.id, code) is True
        assert mfa.verify_login_code(owner.id, code) is False  # once
    # expiry
    with clock.frozen_at(T0):
        mfa.send_email_code(owner, "login")
    code = mailed_code(db)
    with clock.frozen_at(T0 + dt.timedelta(minutes=10)):
        assert mfa.verify_login_code(owner.id, code) is False
    # a code of another purpose does not log in; a new code replaces the unused one
    with clock.frozen_at(T0):
        mfa.send_email_code(owner, "manage")
        manage_code = mailed_code(db)
        assert mfa.verify_login_code(owner.id, manage_code) is False
        mfa.send_email_code(owner, "login")
        first = mailed_code(db)
        mfa.send_email_code(owner, "login")
        second = mailed_code(db)
        if first != second:
            assert mfa.verify_login_code(owner.id, first) is False
        assert mfa.verify_login_code(owner.id, second) is True


def test_email_code_needs_an_email_method(db, owner):
    with pytest.raises(DomainError):
        mfa.send_email_code(owner, "login")
    assert db.scalar(select(func.count()).select_from(EmailOutbox)) == 0


def test_pending_email_method_confirms_only_with_its_verify_code(db, owner):
    with clock.frozen_at(T0):
        method = mfa.start_email_method(owner)
        code = mailed_code(db, owner.email)
        assert mfa.login_methods(owner.id) == []
        assert mfa.verify_login_code(owner.id, code) is False  # a verify code is no login code
        mfa.confirm_method(owner.id, method.id, code)
        with pytest.raises(DomainError):  # the same address twice
            mfa.start_email_method(owner)


def test_an_address_longer_than_a_method_name_is_refused_not_cut(db, owner):
    """MfaMethod.name holds 100 characters; a longer (valid) address was cut and its codes mailed to the cut
    address."""
    owner.email = "a" * 60 + "@" + "b" * 50 + ".example.com"
    db.commit()
    with pytest.raises(DomainError):
        mfa.start_email_method(owner)
    assert db.scalar(select(func.count()).select_from(MfaMethod)) == 0
    assert db.scalar(select(func.count()).select_from(EmailOutbox)) == 0


def test_enable_creates_ten_hashed_single_use_recovery_codes(db, owner):
    method = add_totp(owner.id)
    with pytest.raises(DomainError):
        mfa.enable(owner.id, "123456")
    assert mfa.is_enabled(owner.id) is False
    at = T0 + dt.timedelta(minutes=1)
    with clock.frozen_at(at):
        codes = mfa.enable(owner.id, code_at(method.secret, at))
    assert mfa.is_enabled(owner.id) is True
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(re.fullmatch(r"[a-z]{5}-[0-9]{5}", c) for c in codes)
    stored = db.scalars(select(MfaRecoveryCode.code_hash).where(MfaRecoveryCode.user_id == owner.id)).all()
    assert len(stored) == 10
    for code in codes:
        assert all(code not in h and code.replace("-", "") not in h for h in stored)
    assert mfa.verify_login_code(owner.id, codes[0].upper().replace("-", " ")) is True
    assert mfa.verify_login_code(owner.id, codes[0]) is False
    assert mfa.verify_login_code(owner.id, codes[1]) is True
    assert mfa.recovery_codes_left(owner.id) == 8
    other = make_user("other", "Support")
    assert mfa.verify_login_code(other.id, codes[2]) is False
    actions = db.scalars(select(ActivityLog.action).where(ActivityLog.object_id == owner.id)).all()
    assert "user.2fa_enable" in actions


def test_regenerate_replaces_recovery_codes_and_disable(db, owner):
    method = add_totp(owner.id)
    at = T0 + dt.timedelta(minutes=1)
    with clock.frozen_at(at):
        old = mfa.enable(owner.id, code_at(method.secret, at))
    at2 = at + dt.timedelta(minutes=1)
    with clock.frozen_at(at2):
        with pytest.raises(DomainError):
            mfa.regenerate_recovery_codes(owner.id, "abcde-12345")
        new = mfa.regenerate_recovery_codes(owner.id, code_at(method.secret, at2))
    assert set(new).isdisjoint(old)
    assert mfa.verify_login_code(owner.id, old[0]) is False
    with pytest.raises(DomainError):
        mfa.disable(owner.id, "000000x")
    mfa.disable(owner.id, new[0])  # a recovery code turns it off
    assert mfa.is_enabled(owner.id) is False
    assert db.scalar(select(func.count()).select_from(MfaRecoveryCode)) == 0
    assert [m.id for m in mfa.login_methods(owner.id)] == [method.id]  # methods stay
    actions = db.scalars(select(ActivityLog.action).where(ActivityLog.object_id == owner.id)).all()
    assert "user.2fa_disable" in actions and "user.2fa_recovery_codes" in actions


def test_enable_needs_a_confirmed_method(db, owner):
    with pytest.raises(DomainError):
        mfa.enable(owner.id, "123456")
    assert mfa.is_enabled(owner.id) is False


def test_removing_a_method_needs_a_code_of_another_method(db, owner):
    phone = add_totp(owner.id, name="Phone")
    tablet = add_totp(owner.id, at=T0 + dt.timedelta(minutes=1), name="Tablet")
    assert [m.name for m in mfa.login_methods(owner.id)] == ["Phone", "Tablet"]  # default first
    at = T0 + dt.timedelta(minutes=5)
    with clock.frozen_at(at):
        with pytest.raises(DomainError) as own:
            mfa.remove_method(owner.id, phone.id, code_at(phone.secret, at))
        assert "code" in own.value.errors
        assert db.get(MfaMethod, phone.id) is not None
        mfa.remove_method(owner.id, phone.id, code_at(tablet.secret, at))
    db.expire_all()
    assert db.get(MfaMethod, phone.id) is None
    assert [m.is_default for m in mfa.login_methods(owner.id)] == [True]  # the default moved
    # the last method cannot go while 2FA is on
    at2 = at + dt.timedelta(minutes=1)
    with clock.frozen_at(at2):
        codes = mfa.enable(owner.id, code_at(tablet.secret, at2))
        with pytest.raises(DomainError):
            mfa.remove_method(owner.id, tablet.id, codes[0])
    assert db.get(MfaMethod, tablet.id) is not None


def test_removing_with_an_email_manage_code_of_another_method(db, owner):
    phone = add_totp(owner.id)
    email = add_email(db, owner)
    with clock.frozen_at(T0):
        mfa.send_email_code(owner, "manage", email)
        code = mailed_code(db)
        with pytest.raises(DomainError):  # the e-mail method's own code cannot remove it
            mfa.remove_method(owner.id, email.id, code)
        mfa.remove_method(owner.id, phone.id, code)
    assert [m.kind for m in mfa.login_methods(owner.id)] == ["email"]


def test_set_default(db, owner):
    phone = add_totp(owner.id, name="Phone")
    tablet = add_totp(owner.id, at=T0 + dt.timedelta(minutes=1), name="Tablet")
    mfa.set_default(owner.id, tablet.id)
    assert [(m.name, m.is_default) for m in mfa.login_methods(owner.id)] == [("Tablet", True), ("Phone", False)]
    other = make_user("other", "Support")
    with pytest.raises(DomainError):
        mfa.set_default(other.id, phone.id)


def test_staff_reset_clears_everything_and_logs_per_client(db, owner, staff, new_client):
    from puqpanel.domain.client_users import associate_existing

    second = new_client()
    associate_existing(second, owner.email, [])
    method = add_totp(owner.id)
    at = T0 + dt.timedelta(minutes=1)
    with clock.frozen_at(at):
        mfa.enable(owner.id, code_at(method.secret, at))
        mfa.send_email_code(owner, "login", add_email(db, owner))
    mfa.reset(owner.id, by_user_id=staff["admin"].id, reason="lost phone")
    assert mfa.is_enabled(owner.id) is False
    for model in (MfaMethod, MfaRecoveryCode, MfaEmailCode):
        assert db.scalar(select(func.count()).select_from(model).where(model.user_id == owner.id)) == 0
    entries = db.scalars(select(ActivityLog).where(ActivityLog.action == "user.2fa_reset")).all()
    linked = sorted(cu.client_id for cu in owner_links(db, owner.id))
    assert len(linked) == 2 and sorted(e.client_id for e in entries) == linked
    assert all(e.actor_id == staff["admin"].id and e.description == "lost phone" and e.object_id == owner.id
               for e in entries)


def test_staff_login_reset_logs_once_without_client(db, staff):
    user = staff["support"]
    add_totp(user.id)
    assert db.get(UserSecurity, user.id) is None  # staff logins get the row on demand
    mfa.reset(user.id, by_user_id=staff["admin"].id)
    entries = db.scalars(select(ActivityLog).where(ActivityLog.action == "user.2fa_reset")).all()
    assert [(e.client_id, e.object_id) for e in entries] == [(None, user.id)]
    assert mfa.login_methods(user.id) == []


def owner_links(db, user_id):
    from puqpanel.models import ClientUser

    return db.scalars(select(ClientUser).where(ClientUser.user_id == user_id)).all()


def test_concurrent_removals_never_leave_2fa_without_a_method(app, db, owner):
    """Two requests each removing a different method with a different recovery code: one after the other,
    so the second finds the first gone and refuses (both used to pass, leaving 2FA on with no method)."""
    phone = add_totp(owner.id, name="Phone")
    tablet = add_totp(owner.id, at=T0 + dt.timedelta(minutes=1), name="Tablet")
    at = T0 + dt.timedelta(minutes=2)
    with clock.frozen_at(at):
        codes = mfa.enable(owner.id, code_at(phone.secret, at))
    user_id, targets = owner.id, (phone.id, tablet.id)
    with clock.frozen_at(at + dt.timedelta(minutes=1)):
        results = run_threads(app, 2, lambda i: mfa.remove_method(user_id, targets[i], codes[i]))
    errors = [exc for _r, exc in results]
    assert sum(exc is None for exc in errors) == 1
    assert [type(exc) for exc in errors if exc is not None] == [DomainError]
    fsa.session.expire_all()
    assert len(mfa.login_methods(owner.id)) == 1 and mfa.is_enabled(owner.id)
