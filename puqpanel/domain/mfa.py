"""Two-factor authentication of a login (clients and staff): verification methods, e-mailed codes, TOTP,
recovery codes, and turning 2FA on and off.

Methods (MfaMethod): "email" (a 6-digit code mailed to the address the method was confirmed with, valid 10
minutes, once) and "totp" (an authenticator app; pyotp, 30-second steps, the previous/next step accepted).
A method counts once confirmed with a code it produced or received. One confirmed method is the default.

Codes are never stored: e-mail codes and recovery codes are kept as HMAC-SHA256 with the app's SECRET_KEY
(bound to the login and the kind of code), so a database copy alone does not reveal them (a new SECRET_KEY
invalidates the outstanding codes: the recovery codes must then be regenerated). Every acceptance of a code
is one conditional UPDATE (… WHERE used_at IS NULL, … WHERE last_used_step < :step), so two requests
presenting the same code at the same moment cannot both pass, and a TOTP code of a step at or before the
last accepted one is refused (replay).

Throttling of wrong codes is the caller's (domain/throttle.py, key "code:<user id>"): the login step and
the account pages count their own failures.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import pyotp
from flask import current_app
from flask_babel import gettext as _, lazy_gettext as _l
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm.attributes import set_committed_value

from ..billing import clock
from ..models import ClientUser, MfaEmailCode, MfaMethod, MfaRecoveryCode, User, UserSecurity
from . import DomainError, NotFound
from . import activity
from .session import get_session

CODE_TTL = dt.timedelta(minutes=10)
CODE_DIGITS = 6
TOTP_INTERVAL = 30
TOTP_VALID_WINDOW = 1  # steps accepted before and after the current one
RECOVERY_CODE_COUNT = 10
# Recovery codes look like "abcde-12345": letters without i/l/o, then digits.
_RECOVERY_LETTERS = "abcdefghjkmnpqrstuvwxyz"
_RECOVERY_RE = re.compile(r"[a-z]{5}[0-9]{5}")
_SEPARATORS = re.compile(r"[\s\-]+")
METHOD_NAME_MAX = MfaMethod.__table__.c.name.type.length  # a device name or an e-mail address: 100
DEVICE_NAME_MAX = METHOD_NAME_MAX


# -- state -----------------------------------------------------------------------------------------------------

def _security(user_id: int, create: bool = False, lock: bool = False) -> UserSecurity | None:
    """The login's UserSecurity row (staff logins may have none until they change a setting); `lock`:
    concurrent 2FA changes of one login run one after the other, each reading what the previous one
    committed — PostgreSQL: SELECT … FOR UPDATE; SQLite (no row locks): a no-op UPDATE first takes the
    database's write lock (as billing.ledger.lock_client)."""
    session = get_session()
    if lock and session.get_bind().dialect.name != "postgresql":
        session.execute(update(UserSecurity).where(UserSecurity.user_id == user_id)
                        .values(user_id=UserSecurity.user_id).execution_options(synchronize_session=False))
    row = session.get(UserSecurity, user_id, with_for_update=lock or None, populate_existing=lock)
    if row is None and create:
        row = UserSecurity(user_id=user_id)
        session.add(row)
        session.flush()
    return row


def is_enabled(user_id: int) -> bool:
    """Whether the login must pass a second step after its password."""
    return bool(get_session().scalar(
        select(UserSecurity.two_factor_enabled).where(UserSecurity.user_id == user_id)))


def login_methods(user_id: int) -> list[MfaMethod]:
    """The login's confirmed methods, the default first, then oldest first."""
    return list(get_session().scalars(
        select(MfaMethod)
        .where(MfaMethod.user_id == user_id, MfaMethod.confirmed_at.is_not(None))
        .order_by(MfaMethod.is_default.desc(), MfaMethod.id)))


def all_methods(user_id: int) -> list[MfaMethod]:
    """Confirmed and pending methods (the Verification Center's list)."""
    return list(get_session().scalars(
        select(MfaMethod).where(MfaMethod.user_id == user_id)
        .order_by(MfaMethod.confirmed_at.is_(None), MfaMethod.is_default.desc(), MfaMethod.id)))


def get_method(user_id: int, method_id: int) -> MfaMethod:
    """A method of this login, else NotFound (another login's method looks missing)."""
    method = get_session().scalar(select(MfaMethod).where(MfaMethod.id == method_id, MfaMethod.user_id == user_id))
    if method is None:
        raise NotFound(str(_l("No such verification method.")))
    return method


def recovery_codes_left(user_id: int) -> int:
    return get_session().scalar(
        select(func.count()).select_from(MfaRecoveryCode)
        .where(MfaRecoveryCode.user_id == user_id, MfaRecoveryCode.used_at.is_(None))) or 0


# -- hashing and input -----------------------------------------------------------------------------------------

def _digest(kind: str, user_id: int, code: str) -> str:
    key = str(current_app.secret_key).encode()
    return hmac.new(key, f"puqpanel-mfa:{kind}:{user_id}:{code}".encode(), hashlib.sha256).hexdigest()


def clean_code(code: str) -> str:
    """Input as typed: spaces and dashes dropped, lower case."""
    return _SEPARATORS.sub("", str(code or "")).lower()


def _is_numeric_code(code: str) -> bool:
    return len(code) == CODE_DIGITS and code.isascii() and code.isdigit()


# -- e-mail codes ----------------------------------------------------------------------------------------------

def _email_method_for(user_id: int) -> MfaMethod | None:
    return next((m for m in login_methods(user_id) if m.kind == "email"), None)


def send_email_code(user, purpose: str, method: MfaMethod | None = None) -> None:
    """Mail a new 6-digit code to the login (purpose "login", "verify" or "manage") and commit.

    The code goes to the e-mail method's address (`method`, else the login's first confirmed e-mail
    method); it replaces the login's earlier unused codes of the same purpose, expires after 10 minutes and
    works once. DomainError when there is no e-mail method to send to."""
    if purpose not in ("login", "verify", "manage"):
        raise ValueError(f"unknown code purpose {purpose!r}")
    if method is None:
        method = _email_method_for(user.id)
    if method is None or method.kind != "email" or method.user_id != user.id:
        raise DomainError({"code": str(_l("There is no e-mail method to send a code to."))})
    from ..billing.mail import queue_email

    session = get_session()
    now = clock.now()
    code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
    session.execute(delete(MfaEmailCode).where(MfaEmailCode.user_id == user.id, MfaEmailCode.purpose == purpose,
                                               MfaEmailCode.used_at.is_(None))
                    .execution_options(synchronize_session=False))
    session.add(MfaEmailCode(user_id=user.id, method_id=method.id, purpose=purpose,
                             code_hash=_digest("email:" + purpose, user.id, code), expires_at=now + CODE_TTL,
                             created_at=now))
    app_name = current_app.config.get("APP_NAME", "puqpanel")
    subject = _("Your %(app)s security code: %(code)s", app=app_name, code=code)
    body = _("Your security code is %(code)s.\n\nIt is valid for %(minutes)d minutes and can be used once. "
             "If you did not ask for it, change your password.", code=code,
             minutes=int(CODE_TTL.total_seconds() // 60))
    queue_email(method.name, subject, body, kind="security_code")
    session.commit()


def _use_email_code(user_id: int, code: str, purposes: tuple[str, ...], exclude_method_id: int | None,
                    now: dt.datetime) -> MfaEmailCode | None:
    session = get_session()
    for purpose in purposes:
        digest = _digest("email:" + purpose, user_id, code)
        where = [MfaEmailCode.user_id == user_id, MfaEmailCode.purpose == purpose, MfaEmailCode.code_hash == digest,
                 MfaEmailCode.used_at.is_(None), MfaEmailCode.expires_at > now]
        if exclude_method_id is not None:
            where.append(or_(MfaEmailCode.method_id.is_(None), MfaEmailCode.method_id != exclude_method_id))
        row = session.scalar(select(MfaEmailCode).where(*where))
        if row is None:
            continue
        used = session.execute(update(MfaEmailCode).where(MfaEmailCode.id == row.id, MfaEmailCode.used_at.is_(None))
                               .values(used_at=now).execution_options(synchronize_session=False))
        if used.rowcount == 1:
            return row
    return None


# -- TOTP ------------------------------------------------------------------------------------------------------

def unix_time(now: dt.datetime) -> int:
    """Seconds since the epoch of a naive UTC time (billing.clock), for TOTP steps and signed timestamps."""
    return int(now.replace(tzinfo=dt.timezone.utc).timestamp())


def _totp_step(secret: str, code: str, now: dt.datetime, last_used_step: int | None) -> int | None:
    """The time step (current ± TOTP_VALID_WINDOW) whose code `code` is and that is later than the last
    accepted step, else None."""
    totp = pyotp.TOTP(secret, interval=TOTP_INTERVAL)
    current = unix_time(now) // TOTP_INTERVAL
    for step in range(current - TOTP_VALID_WINDOW, current + TOTP_VALID_WINDOW + 1):
        if last_used_step is not None and step <= last_used_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _use_totp(method: MfaMethod, code: str, now: dt.datetime) -> bool:
    """Accept a TOTP code of this method once: the step is stored by a conditional UPDATE."""
    step = _totp_step(method.secret, code, now, method.last_used_step)
    if step is None:
        return False
    used = get_session().execute(
        update(MfaMethod)
        .where(MfaMethod.id == method.id,
               or_(MfaMethod.last_used_step.is_(None), MfaMethod.last_used_step < step))
        .values(last_used_step=step).execution_options(synchronize_session=False))
    if used.rowcount == 1:
        set_committed_value(method, "last_used_step", step)  # already written; not dirty
        return True
    return False


# -- recovery codes --------------------------------------------------------------------------------------------

def _new_recovery_code() -> str:
    letters = "".join(secrets.choice(_RECOVERY_LETTERS) for _ in range(5))
    digits = "".join(secrets.choice("0123456789") for _ in range(5))
    return f"{letters}-{digits}"


def _replace_recovery_codes(user_id: int) -> list[str]:
    session = get_session()
    session.execute(delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user_id)
                    .execution_options(synchronize_session=False))
    codes = []
    while len(codes) < RECOVERY_CODE_COUNT:
        code = _new_recovery_code()
        if code not in codes:
            codes.append(code)
    now = clock.now()
    session.add_all(MfaRecoveryCode(user_id=user_id, code_hash=_digest("recovery", user_id, clean_code(c)),
                                    created_at=now) for c in codes)
    return codes


def _use_recovery_code(user_id: int, code: str, now: dt.datetime) -> bool:
    if not _RECOVERY_RE.fullmatch(code):
        return False
    used = get_session().execute(
        update(MfaRecoveryCode)
        .where(MfaRecoveryCode.user_id == user_id, MfaRecoveryCode.code_hash == _digest("recovery", user_id, code),
               MfaRecoveryCode.used_at.is_(None))
        .values(used_at=now).execution_options(synchronize_session=False))
    return used.rowcount >= 1


# -- checking a code -------------------------------------------------------------------------------------------

@dataclass
class CodeMatch:
    kind: str  # "totp", "email" or "recovery"
    method_id: int | None = None


def check_code(user_id: int, code: str, *, email_purposes: tuple[str, ...], exclude_method_id: int | None = None,
               recovery: bool = True, now: dt.datetime | None = None) -> CodeMatch | None:
    """Accept (and use up) a code of the login: a TOTP code of a confirmed method other than
    `exclude_method_id`, an e-mailed code of one of `email_purposes` (not sent to the excluded method), or a
    recovery code (when `recovery`). None when nothing matched. Does not commit."""
    now = now or clock.now()
    code = clean_code(code)
    if _is_numeric_code(code):
        for method in login_methods(user_id):
            if method.kind == "totp" and method.id != exclude_method_id and _use_totp(method, code, now):
                return CodeMatch("totp", method.id)
        row = _use_email_code(user_id, code, email_purposes, exclude_method_id, now)
        if row is not None:
            return CodeMatch("email", row.method_id)
        return None
    if recovery and _use_recovery_code(user_id, code, now):
        return CodeMatch("recovery")
    return None


def verify_login_code(user_id: int, code: str) -> bool:
    """The login step: a current TOTP code of any confirmed authenticator (each step once), an unexpired
    unused e-mailed login code, or an unused recovery code. Uses the code up and commits."""
    match = check_code(user_id, code, email_purposes=("login",))
    get_session().commit()
    return match is not None


# -- logging ---------------------------------------------------------------------------------------------------

def log_for_login(user_id: int, action: str, *, description: str = "", changes: dict | None = None,
                  actor_id: int | None = None) -> None:
    """One activity entry per client the login is linked to (one without a client for staff logins), about
    the login (object_type "user"). `actor_id` overrides the request's user (e.g. outside a request)."""
    client_ids = list(get_session().scalars(
        select(ClientUser.client_id).where(ClientUser.user_id == user_id).order_by(ClientUser.client_id)))
    for client_id in client_ids or [None]:
        entry = activity.record(action, client_id=client_id, object_type="user", object_id=user_id,
                                changes=changes, description=description)
        if actor_id is not None:
            entry.actor_id = actor_id


# -- managing methods ------------------------------------------------------------------------------------------

def _drop_pending(user_id: int, kind: str) -> None:
    get_session().execute(delete(MfaMethod).where(MfaMethod.user_id == user_id, MfaMethod.kind == kind,
                                                  MfaMethod.confirmed_at.is_(None))
                          .execution_options(synchronize_session=False))


def start_email_method(user) -> MfaMethod:
    """A pending e-mail method for the login's current address, and a "verify" code sent to it; commits.
    DomainError when that address is a confirmed method already."""
    session = get_session()
    address = (user.email or "").strip().lower()
    if len(address) > METHOD_NAME_MAX:  # never cut: the codes would go to another address
        raise DomainError({"": str(_l("Your e-mail address is too long for e-mailed codes; use an authenticator "
                                      "app."))})
    exists = session.scalar(select(MfaMethod.id).where(
        MfaMethod.user_id == user.id, MfaMethod.kind == "email", func.lower(MfaMethod.name) == address,
        MfaMethod.confirmed_at.is_not(None)))
    if exists:
        raise DomainError({"": str(_l("This e-mail address is a verification method already."))})
    _drop_pending(user.id, "email")
    method = MfaMethod(user_id=user.id, kind="email", name=address, created_at=clock.now())
    session.add(method)
    session.flush()
    send_email_code(user, "verify", method)  # commits
    return method


def start_totp_method(user_id: int, name: str) -> MfaMethod:
    """A pending authenticator with a new secret; it counts once confirmed with a code. Commits."""
    name = " ".join(str(name or "").split())
    if not name:
        raise DomainError({"name": str(_l("Name the device, e.g. \"Phone\"."))})
    if len(name) > DEVICE_NAME_MAX:
        raise DomainError({"name": str(_l("At most %(count)d characters.", count=DEVICE_NAME_MAX))})
    session = get_session()
    _drop_pending(user_id, "totp")
    method = MfaMethod(user_id=user_id, kind="totp", name=name, secret=pyotp.random_base32(), created_at=clock.now())
    session.add(method)
    session.commit()
    return method


def pending_totp(user_id: int) -> MfaMethod | None:
    return get_session().scalar(select(MfaMethod).where(
        MfaMethod.user_id == user_id, MfaMethod.kind == "totp", MfaMethod.confirmed_at.is_(None))
        .order_by(MfaMethod.id.desc()))


def provisioning_uri(method: MfaMethod, account: str) -> str:
    return pyotp.TOTP(method.secret, interval=TOTP_INTERVAL).provisioning_uri(
        name=account, issuer_name=current_app.config.get("APP_NAME", "puqpanel"))


def confirm_method(user_id: int, method_id: int, code: str) -> MfaMethod:
    """Confirm a pending method with a code it produced (TOTP) or received (e-mail "verify" code). The first
    confirmed method becomes the default. Logged; commits. DomainError({"code": …}) for a wrong code."""
    session = get_session()
    method = get_method(user_id, method_id)
    if method.confirmed_at is not None:
        raise DomainError({"": str(_l("This method is confirmed already."))})
    now = clock.now()
    code = clean_code(code)
    ok = False
    if _is_numeric_code(code):
        if method.kind == "totp":
            ok = _use_totp(method, code, now)
        else:
            row = _use_email_code(user_id, code, ("verify",), None, now)
            ok = row is not None and row.method_id == method.id
    if not ok:
        raise DomainError({"code": str(_l("The code is not valid. Enter a current code."))})
    has_default = session.scalar(select(MfaMethod.id).where(
        MfaMethod.user_id == user_id, MfaMethod.is_default.is_(True), MfaMethod.confirmed_at.is_not(None)))
    method.confirmed_at = now
    method.is_default = not has_default
    log_for_login(user_id, "user.2fa_method_add", changes={"kind": method.kind, "name": method.name},
                  description=f"{method.kind}: {method.name}")
    session.commit()
    return method


def set_default(user_id: int, method_id: int) -> MfaMethod:
    """Make a confirmed method the default (the one offered first at login). Commits."""
    session = get_session()
    method = get_method(user_id, method_id)
    if method.confirmed_at is None:
        raise DomainError({"": str(_l("Confirm the method first."))})
    session.execute(update(MfaMethod).where(MfaMethod.user_id == user_id, MfaMethod.id != method.id)
                    .values(is_default=False).execution_options(synchronize_session=False))
    method.is_default = True
    session.commit()
    return method


def _rolls_back(fn):
    """A refused change ends its transaction (and the row lock it took) at once."""
    from functools import wraps

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DomainError:
            get_session().rollback()
            raise

    return wrapper


def _invalid_code() -> DomainError:
    return DomainError({"code": str(_l("The code is not valid. Enter a current code."))})


@_rolls_back
def remove_method(user_id: int, method_id: int, code: str) -> None:
    """Remove a method. A confirmed one needs a code from ANOTHER confirmed method (TOTP, or an e-mailed
    "manage" code sent to another e-mail method) or a recovery code; the last confirmed method cannot go
    while 2FA is on. Under the login's lock (two removals at once cannot both take the last but one).
    Logged; commits. DomainError({"code": …}) for a wrong code (nothing removed)."""
    session = get_session()
    _security(user_id, lock=True)
    method = get_method(user_id, method_id)
    if method.confirmed_at is None:  # an abandoned enrolment
        session.delete(method)
        session.commit()
        return
    others = [m for m in login_methods(user_id) if m.id != method.id]
    if not others and is_enabled(user_id):
        raise DomainError({"": str(_l("This is your only verification method: turn two-factor authentication "
                                      "off first, or add another method."))})
    if others:
        if check_code(user_id, code, email_purposes=("manage",), exclude_method_id=method.id) is None:
            raise _invalid_code()
    elif check_code(user_id, code, email_purposes=("manage",)) is None:
        # the only method of a login without 2FA: its own code (there is no other)
        raise _invalid_code()
    was_default = method.is_default
    log_for_login(user_id, "user.2fa_method_remove", changes={"kind": method.kind, "name": method.name},
                  description=f"{method.kind}: {method.name}")
    session.delete(method)
    session.flush()
    if was_default and others:
        others[0].is_default = True
    session.commit()


# -- 2FA on / off ----------------------------------------------------------------------------------------------

@_rolls_back
def enable(user_id: int, code: str) -> list[str]:
    """Turn 2FA on with a current code of a confirmed method; returns the ten new recovery codes (shown
    once; only their hashes are kept). Logged; commits."""
    session = get_session()
    _security(user_id, create=True, lock=True)
    if not login_methods(user_id):
        raise DomainError({"": str(_l("Add and confirm a verification method first."))})
    if is_enabled(user_id):
        raise DomainError({"": str(_l("Two-factor authentication is on already."))})
    if check_code(user_id, code, email_purposes=("manage",), recovery=False) is None:
        raise _invalid_code()
    security = _security(user_id, create=True)
    security.two_factor_enabled = True
    codes = _replace_recovery_codes(user_id)
    log_for_login(user_id, "user.2fa_enable")
    session.commit()
    return codes


@_rolls_back
def disable(user_id: int, code: str) -> None:
    """Turn 2FA off with a current code or a recovery code; the recovery codes are deleted (the methods
    stay). Logged; commits."""
    session = get_session()
    _security(user_id, lock=True)
    if not is_enabled(user_id):
        raise DomainError({"": str(_l("Two-factor authentication is off already."))})
    if check_code(user_id, code, email_purposes=("manage",)) is None:
        raise _invalid_code()
    _security(user_id, create=True).two_factor_enabled = False
    session.execute(delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user_id)
                    .execution_options(synchronize_session=False))
    log_for_login(user_id, "user.2fa_disable")
    session.commit()


@_rolls_back
def regenerate_recovery_codes(user_id: int, code: str) -> list[str]:
    """Ten new recovery codes (the old ones stop working) with a current code or a recovery code. Logged;
    commits."""
    session = get_session()
    _security(user_id, lock=True)
    if not is_enabled(user_id):
        raise DomainError({"": str(_l("Turn two-factor authentication on first."))})
    if check_code(user_id, code, email_purposes=("manage",)) is None:
        raise _invalid_code()
    codes = _replace_recovery_codes(user_id)
    log_for_login(user_id, "user.2fa_recovery_codes")
    session.commit()
    return codes


def reset(user_id: int, *, by_user_id: int | None, reason: str = "") -> None:
    """Staff reset: every method, recovery code and e-mailed code of the login deleted, 2FA off; logged
    ("user.2fa_reset") for each client the login is linked to (or once without a client). Commits."""
    session = get_session()
    if session.get(User, user_id) is None:
        raise NotFound(str(_l("No such user.")))
    for model in (MfaEmailCode, MfaRecoveryCode, MfaMethod):
        session.execute(delete(model).where(model.user_id == user_id).execution_options(synchronize_session=False))
    security = _security(user_id)
    if security is not None:
        security.two_factor_enabled = False
    reason = " ".join(str(reason or "").split())[:400]
    log_for_login(user_id, "user.2fa_reset", description=reason, actor_id=by_user_id)
    session.commit()
    session.expire_all()


# -- staff list ------------------------------------------------------------------------------------------------

def logins_with_2fa(search: str = "", page: int = 1, page_size: int = 50) -> tuple[list[User], bool]:
    """One page of the logins with 2FA on (staff "Reset 2FA" list), optionally those whose e-mail or
    username contains `search`; ordered by e-mail; plus whether a next page exists (one query)."""
    query = (select(User).join(UserSecurity, UserSecurity.user_id == User.id)
             .where(UserSecurity.two_factor_enabled.is_(True)))
    search = " ".join(str(search or "").split()).lower()[:100]
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(func.lower(User.email).like(pattern, escape="\\"),
                                func.lower(User.username).like(pattern, escape="\\")))
    page_size = max(1, min(int(page_size), 100))
    rows = list(get_session().scalars(query.order_by(func.lower(User.email), User.id)
                                      .limit(page_size + 1).offset((max(page, 1) - 1) * page_size)).unique())
    return rows[:page_size], len(rows) > page_size
