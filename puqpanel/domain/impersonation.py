"""Staff "Login as Client" (impersonation), DESIGN.md flow 5.

A staff user with Impersonation.can_impersonate signs in as one of the logins linked to a client in its
scope. The browser session is rotated into the client login (a LoginSession row naming the staff user as
impersonator); the flask session carries the staff user id (IMPERSONATOR_KEY), the start time and the client
to return to. Start, stop and expiry are written to the client's activity log with both identities; money
actions of the impersonated session record the impersonator (activity.current_actor, ledger.post). The
client login's own statistics (last login, login count, own session history) are left untouched.

Only client logins can be the target: UserSecurity.is_client_login, active, and holding no role but Client.
"""
from __future__ import annotations

import datetime as dt

from flask import current_app, has_request_context, session as flask_session
from flask_babel import lazy_gettext as _l
from flask_login import login_user, logout_user
from sqlalchemy import select

from ..billing import clock
from ..models import Client, ClientUser, LoginSession, User, UserSecurity
from ..security import CLIENT_ROLE
from . import DomainError, NotFound
from . import activity, login_sessions
from .clients import get_client, get_client_row
from .session import get_session

DEFAULT_MINUTES = 60
REASON_MAX = 255
SESSION_CLIENT = "puq_client_id"  # the client-area's current client (views.client_area.SESSION_CLIENT)


class Refused(DomainError):
    """The target may not be impersonated (HTTP 403)."""


def minutes() -> int:
    return int(current_app.config.get("PUQPANEL_IMPERSONATION_MINUTES") or DEFAULT_MINUTES)


def impersonator_id() -> int | None:
    """The staff user id while the request's session is an impersonation, else None."""
    if not has_request_context():
        return None
    return flask_session.get(login_sessions.IMPERSONATOR_KEY)


def target(client_id: int, link_id: int | None = None) -> tuple[Client, User]:
    """The client (staff scope, NotFound outside it) and the login of its link `link_id` (its owner when
    None); NotFound for a link of another client, Refused for a login that can't be impersonated."""
    client = get_client(client_id)
    if link_id is None:
        link = get_session().scalar(select(ClientUser).where(ClientUser.client_id == client.id,
                                                             ClientUser.is_owner.is_(True)))
        if link is None:
            raise NotFound(str(_l("This client has no owner login.")))
    else:
        link = get_client_row(ClientUser, client, link_id, _l("User not found."))
    user = get_session().get(User, link.user_id)
    check_target(user)
    return client, user


def check_target(user: User | None) -> None:
    """Refused unless `user` is an active client login without any staff role."""
    if user is None:
        raise NotFound(str(_l("User not found.")))
    if not user.active:
        raise Refused(str(_l("This login is inactive and can't be signed in as.")))
    is_client_login = get_session().scalar(
        select(UserSecurity.is_client_login).where(UserSecurity.user_id == user.id))
    roles = {role.name for role in user.roles}
    if not is_client_login or roles - {CLIENT_ROLE}:
        raise Refused(str(_l("Only client logins can be signed in as; staff accounts can't.")))


def clean_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) > REASON_MAX:
        raise DomainError({"reason": str(_l("At most %(max)d characters.", max=REASON_MAX))})
    return reason


def begin(staff: User, client: Client, user: User, reason: str = "") -> None:
    """Log the start, then rotate the browser session into `user` as impersonated by `staff` (commits).
    The target's login statistics are not updated."""
    reason = clean_reason(reason)
    if staff.id == user.id:
        raise Refused(str(_l("Only client logins can be signed in as; staff accounts can't.")))
    activity.record("impersonation.start", client_id=client.id, object_type="user", object_id=user.id,
                    changes={"staff": staff.email, "target": user.email, "reason": reason})
    get_session().commit()
    now = clock.now()
    login_sessions.rotate(user.id, impersonator_id=staff.id, keep={
        login_sessions.IMPERSONATOR_KEY: staff.id,
        login_sessions.IMPERSONATION_STARTED_KEY: now.isoformat(),
        login_sessions.IMPERSONATION_CLIENT_KEY: client.id,
        SESSION_CLIENT: client.id,
    })
    login_user(user, remember=False)


def expired(row: LoginSession, now: dt.datetime | None = None) -> bool:
    """Whether the impersonated session `row` has run its time (measured from the server-side row)."""
    now = now or clock.now()
    return now - row.created_at >= dt.timedelta(minutes=minutes())


def _log_end(action: str, **extra) -> tuple[User | None, int | None]:
    """Log the end of the request's impersonation (actor the client login, impersonator the staff user, on
    the client it started from) and commit. Returns (staff user or None, client id or None)."""
    session = get_session()
    staff_id = flask_session.get(login_sessions.IMPERSONATOR_KEY)
    client_id = flask_session.get(login_sessions.IMPERSONATION_CLIENT_KEY)
    target_id = str(flask_session.get("_user_id") or "")
    target_user = session.get(User, int(target_id)) if target_id.isdigit() else None
    staff = session.get(User, staff_id) if isinstance(staff_id, int) else None
    if not (isinstance(client_id, int) and session.get(Client, client_id) is not None):
        client_id = None
    activity.record(action, client_id=client_id, object_type="user",
                    object_id=target_user.id if target_user else None,
                    changes={"staff": staff.email if staff else None,
                             "target": target_user.email if target_user else None, **extra})
    session.commit()
    return staff, client_id


def finish(action: str = "impersonation.stop") -> int | None:
    """End the request's impersonation: log `action`, rotate the session back into the staff login (commits).
    Returns the client id to return to; None when the staff login can no longer sign in (the browser is
    then logged out) or the client is gone."""
    extra = {"minutes": minutes()} if action == "impersonation.expire" else {}
    staff, client_id = _log_end(action, **extra)
    if staff is None or not staff.active:
        login_sessions.end_current("impersonation_end")
        logout_user()
        return None
    login_sessions.rotate(staff.id)
    login_user(staff, remember=False)
    return client_id


def end_by_logout() -> None:
    """Logging out while impersonating: the impersonation's end is logged (the caller ends the session)."""
    _log_end("impersonation.stop", logout=True)
