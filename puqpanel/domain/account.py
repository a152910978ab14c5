"""A login's own account (clients and staff): My Account (name, e-mail, phone, language), Change Password,
and the password reset by e-mailed link.

Wrong current passwords count in the throttle under "code:<user id>" (the key kind of 2FA codes: a locked
key refuses both). Reset requests count under "reset:<email>" and "ip:<address>" whether or not the address
belongs to a login, so the answer never tells.

Reset links: itsdangerous URLSafeTimedSerializer (SECRET_KEY, salt "puqpanel-password-reset") over the
login id and a fingerprint of its current password hash, valid 60 minutes. Setting a password changes the
hash, so a link works once (and every older link of the login stops working too).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

from flask import current_app
from flask_babel import gettext as _, lazy_gettext as _l
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash

from ..billing import clock
from ..models import User, UserSecurity
from . import DomainError, activity, collect, mfa, throttle
from .passwords import check_new_password, hash_password
from .session import get_session
from .validation import check_texts, normalize_email, normalize_phone

RESET_SALT = "puqpanel-password-reset"
RESET_MAX_AGE = 3600  # seconds
_NAME_COLUMNS = {"first_name": User.first_name, "last_name": User.last_name}


class Throttled(DomainError):
    """Too many failed attempts: refused without checking (HTTP 429)."""


def _throttled() -> Throttled:
    return Throttled(str(_l("Too many attempts. Please wait a few minutes and try again.")))


def code_key(user_id: int) -> str:
    return f"code:{user_id}"


def _refuse_if_locked(user_id: int) -> None:
    if throttle.is_locked(code_key(user_id)):
        raise _throttled()


def languages() -> list[tuple[str, str]]:
    return [(code, meta.get("name", code)) for code, meta in (current_app.config.get("LANGUAGES") or {}).items()]


def is_client_login(user_id: int) -> bool:
    return bool(get_session().scalar(select(UserSecurity.is_client_login).where(UserSecurity.user_id == user_id)))


def account_form(user: User) -> dict[str, str]:
    security = get_session().get(UserSecurity, user.id)
    return {
        "first_name": user.first_name or "", "last_name": user.last_name or "", "email": user.email or "",
        "phone": security.phone if security else "", "language": security.language if security else "",
    }


def check_current_password(user: User, password: str, field: str = "current_password") -> None:
    """The login's current password, else DomainError (and one failure counted); Throttled while locked."""
    key = code_key(user.id)
    _refuse_if_locked(user.id)
    if not password or not user.password or not check_password_hash(user.password, str(password)):
        throttle.record_failure(key)  # commits
        raise DomainError({field: str(_l("The current password is not correct."))})


def _email_taken(email: str, user_id: int) -> bool:
    return get_session().scalar(
        select(User.id).where(User.id != user_id,
                              or_(func.lower(User.email) == email, func.lower(User.username) == email)).limit(1)
    ) is not None


def update_account(user: User, data: Mapping[str, Any]) -> dict[str, list]:
    """Save My Account: first/last name, e-mail (needs `current_password` when it changes; unique among
    logins; a client login's username follows it), phone (E.164), language ("" = default). Validates all
    fields first (DomainError with every field error, nothing written). Logged ("user.account"); commits.
    Returns the changes {field: [before, after]}."""
    session = get_session()
    errors: dict[str, str] = {}
    values = {name: " ".join(str(data.get(name) or "").split()) for name in ("first_name", "last_name")}
    check_texts(errors, values, ("first_name", "last_name"), _NAME_COLUMNS)
    email = collect(errors, normalize_email, data.get("email"))
    phone = collect(errors, normalize_phone, data.get("phone"), None)
    language = str(data.get("language") or "").strip()
    if language and language not in dict(languages()):
        errors["language"] = str(_l("Choose a language from the list."))
    email_changed = email is not None and email != (user.email or "").lower()
    if email_changed and _email_taken(email, user.id):
        errors["email"] = str(_l("Another login uses this e-mail address."))
    if email_changed and not errors:
        _refuse_if_locked(user.id)
        collect(errors, check_current_password, user, data.get("current_password"))
    if errors:
        raise DomainError(errors)
    security = session.get(UserSecurity, user.id)
    before = {**account_form(user)}
    if security is None:
        security = UserSecurity(user_id=user.id)
        session.add(security)
    user.first_name, user.last_name = values["first_name"], values["last_name"]
    security.phone, security.language = phone or "", language
    if email_changed:
        user.email = email
        if security.is_client_login:
            user.username = email  # a client logs in with its e-mail address
    after = {"first_name": user.first_name, "last_name": user.last_name, "email": user.email,
             "phone": security.phone, "language": security.language}
    changes = activity.diff(before, after)
    if changes:
        mfa.log_for_login(user.id, "user.account", changes=changes, description=", ".join(sorted(changes)))
    try:
        session.commit()
    except IntegrityError:  # the address was taken concurrently
        session.rollback()
        raise DomainError({"email": str(_l("Another login uses this e-mail address."))})
    return changes


def _set_password(user: User, password: str) -> None:
    user.password = hash_password(password)


def _check_new(user: User, password: str, repeat: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    try:
        check_new_password(password, username=user.username or "", email=user.email or "")
    except DomainError as exc:
        errors["password"] = exc.errors["password"]
    if password != repeat:
        errors["password_repeat"] = str(_l("The passwords do not match."))
    return errors


def change_password(user: User, current: str, password: str, repeat: str) -> None:
    """Change Password: the current password (wrong → counted in "code:<id>"; Throttled while locked),
    the new one twice, the policy. Every other session of the login is ended; the caller's session gets a
    new live row. Logged ("user.password_change"); commits."""
    password, repeat = str(password or ""), str(repeat or "")
    errors: dict[str, str] = {}
    _refuse_if_locked(user.id)
    collect(errors, check_current_password, user, current)
    errors.update({k: v for k, v in _check_new(user, password, repeat).items() if k not in errors})
    if not errors and password == str(current or ""):
        errors["password"] = str(_l("Choose a password different from the current one."))
    if errors:
        raise DomainError(errors)
    _set_password(user, password)
    mfa.log_for_login(user.id, "user.password_change")
    get_session().commit()
    throttle.clear(code_key(user.id))
    _end_sessions(user.id, "password_change", keep_current=True)


def _end_sessions(user_id: int, reason: str, keep_current: bool = False) -> None:
    """End the login's server-side sessions (domain.login_sessions); the current browser gets a new live
    session when `keep_current`."""
    from . import login_sessions

    login_sessions.end_all(user_id, reason)
    if keep_current:
        login_sessions.start(user_id)


def with_code(user_id: int, fn, *args, **kwargs):
    """Run a 2FA change that checks a code (mfa.enable, disable, remove_method, confirm_method, …) under the
    code throttle: Throttled while "code:<id>" is locked; a refused code counts one failure; success clears
    the count."""
    _refuse_if_locked(user_id)
    try:
        result = fn(*args, **kwargs)
    except DomainError as exc:
        if "code" in exc.errors:
            throttle.record_failure(code_key(user_id))
        raise
    throttle.clear(code_key(user_id))
    return result


# -- reset by e-mailed link ------------------------------------------------------------------------------------

class _ClockSigner(TimestampSigner):
    """Timestamps from billing.clock, so the link's age follows the clock tests move."""

    def get_timestamp(self) -> int:
        return mfa.unix_time(clock.now())


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt=RESET_SALT, signer=_ClockSigner)


def _fingerprint(user: User) -> str:
    return hashlib.sha256(("puqpanel-reset:" + (user.password or "")).encode()).hexdigest()[:16]


def reset_token(user: User) -> str:
    return _serializer().dumps({"uid": user.id, "fp": _fingerprint(user)})


def user_for_token(token: str) -> User:
    """The login a reset link is for; DomainError when it is expired, tampered with, used (the password
    changed since) or the login is gone or inactive."""
    invalid = DomainError(str(_l("This password reset link is invalid or has expired. Ask for a new one.")))
    try:
        data = _serializer().loads(str(token or ""), max_age=RESET_MAX_AGE)
    except SignatureExpired:
        raise invalid
    except BadSignature:
        raise invalid
    if not isinstance(data, dict) or not isinstance(data.get("uid"), int):
        raise invalid
    user = get_session().get(User, data["uid"])
    if user is None or not user.active or data.get("fp") != _fingerprint(user):
        raise invalid
    return user


@dataclass
class ResetRequest:
    throttled: bool
    queued: bool  # for tests and logs only; never shown


def request_reset(email: str, ip: str, link_for) -> ResetRequest:
    """A "forgot password" request. The same outcome is shown whatever the address: a mail with a reset
    link (`link_for(token)` → absolute URL) is queued only for an active login with this e-mail address.
    Every request counts under "reset:<email>" and "ip:<ip>"; while either is locked nothing is done
    (throttled). Commits.

    Known and unknown addresses cost the same number of commits: the mail is queued first and committed
    with the throttle counts (a separate commit for it alone made a known address measurably slower)."""
    address = " ".join(str(email or "").split()).lower()[:320]
    keys = ["reset:" + address[:180], "ip:" + (ip or "-")[:45]]
    if any(throttle.is_locked(key) for key in keys):
        return ResetRequest(throttled=True, queued=False)
    user = None
    if address and "@" in address:
        user = get_session().scalars(
            select(User).where(or_(func.lower(User.email) == address, func.lower(User.username) == address))
            .order_by(User.id)).first()
    queued = user is not None and user.active and bool(user.email) and _queue_reset_mail(user, link_for)
    for key in keys:
        throttle.record_failure(key)  # commits (the queued mail with it)
    return ResetRequest(throttled=False, queued=queued)


def _queue_reset_mail(user: User, link_for) -> bool:
    """Queue the reset mail in the current transaction (not committed); False when the outbox refuses the
    address."""
    from ..billing.mail import queue_email

    link = link_for(reset_token(user))
    app_name = current_app.config.get("APP_NAME", "puqpanel")
    minutes = RESET_MAX_AGE // 60
    subject = _("Reset your %(app)s password", app=app_name)
    body = _("Someone asked to reset the password of your %(app)s login %(login)s.\n\n"
             "Open this link within %(minutes)d minutes to choose a new password:\n%(link)s\n\n"
             "The link works once. If you did not ask for it, ignore this message: your password stays as it is.",
             app=app_name, login=user.username, minutes=minutes, link=link)
    try:
        queue_email(user.email, subject, body, kind="password_reset")
    except ValueError:  # an address the outbox refuses
        get_session().rollback()
        return False
    return True


def reset_password(token: str, password: str, repeat: str) -> User:
    """Set a new password through a reset link: policy, every session of the login ended, login
    throttle cleared. Logged ("user.password_reset"); commits. DomainError for a bad link or password."""
    user = user_for_token(token)
    password, repeat = str(password or ""), str(repeat or "")
    errors = _check_new(user, password, repeat)
    if errors:
        raise DomainError(errors)
    _set_password(user, password)
    mfa.log_for_login(user.id, "user.password_reset", actor_id=user.id)
    get_session().commit()
    throttle.clear(throttle.login_key(user.username))
    _end_sessions(user.id, "password_reset")
    return user
