"""Signed-in browser sessions kept server-side (LoginSession rows), so that a session can be ended for good.

Flask's session is a signed cookie: clearing it in the browser does not stop an old copy of the cookie from
working. So every login (and every impersonation) gets a LoginSession row with a random id, and the cookie
carries that id (session["puq_sid"]). On each request (`check_request`, a before_request hook registered by
the plugin) an authenticated cookie must name a live row of that same login and the same impersonator, else
the request is logged out. Rotating (`rotate`) ends the old row and clears the cookie's other keys; logging
out ends the row; `end_all` ends every session of a login (password reset / change).

The JSON API is JWT-based and not affected. The client's own login history is its rows without an
impersonator (`history`).
"""
from __future__ import annotations

import secrets

from flask import has_request_context, request, session as flask_session
from sqlalchemy import or_, select, update

from ..billing import clock
from ..models import LoginSession
from .session import get_session

SESSION_KEY = "puq_sid"
# Impersonation (set by domain.impersonation; read by activity.current_actor and the ledger).
IMPERSONATOR_KEY = "puq_impersonator_id"
IMPERSONATION_STARTED_KEY = "puq_impersonation_started"
IMPERSONATION_CLIENT_KEY = "puq_impersonation_client_id"  # the client record to return to
IMPERSONATION_KEYS = (IMPERSONATOR_KEY, IMPERSONATION_STARTED_KEY, IMPERSONATION_CLIENT_KEY)
# What survives a rotation of the cookie: the interface language only.
KEEP_ON_ROTATE = ("locale",)


def _new_id() -> str:
    return secrets.token_urlsafe(32)  # 32 random bytes, 43 characters


def start(user_id: int, impersonator_id: int | None = None) -> LoginSession:
    """A new live session row for the login (commits) and its id in the cookie."""
    ip = user_agent = ""
    if has_request_context():
        ip = (request.remote_addr or "")[:45]
        user_agent = (request.user_agent.string or "")[:255]
    row = LoginSession(id=_new_id(), user_id=user_id, impersonator_id=impersonator_id, created_at=clock.now(),
                       ip=ip, user_agent=user_agent)
    session = get_session()
    session.add(row)
    session.commit()
    if has_request_context():
        flask_session[SESSION_KEY] = row.id
    return row


def end(sid: str | None, reason: str) -> None:
    """End one session row if it is still live (commits)."""
    if not sid:
        return
    session = get_session()
    session.execute(update(LoginSession).where(LoginSession.id == str(sid)[:64], LoginSession.ended_at.is_(None))
                    .values(ended_at=clock.now(), end_reason=reason[:30])
                    .execution_options(synchronize_session=False))
    session.commit()


def end_current(reason: str) -> None:
    """End the request's session row and empty the cookie (all but the language)."""
    end(flask_session.get(SESSION_KEY), reason)
    clear_cookie()


def end_all(user_id: int, reason: str) -> int:
    """End every live session of the login, its own and the ones it impersonates or is impersonated in
    (after a password reset or change, a 2FA reset); commits. Returns how many were ended."""
    session = get_session()
    result = session.execute(
        update(LoginSession)
        .where(or_(LoginSession.user_id == user_id, LoginSession.impersonator_id == user_id),
               LoginSession.ended_at.is_(None))
        .values(ended_at=clock.now(), end_reason=reason[:30])
        .execution_options(synchronize_session=False))
    session.commit()
    return result.rowcount


def clear_cookie(keep: dict | None = None) -> None:
    """Empty the flask session but its language (and `keep`)."""
    preserved = {k: flask_session[k] for k in KEEP_ON_ROTATE if k in flask_session}
    flask_session.clear()
    flask_session.update(preserved)
    if keep:
        flask_session.update(keep)


def rotate(user_id: int, impersonator_id: int | None = None, keep: dict | None = None) -> LoginSession:
    """End the request's session row ("rotated"), empty the cookie (keeping the language and `keep`) and
    start a new row for `user_id`. The caller then logs the user in (flask_login.login_user)."""
    end(flask_session.get(SESSION_KEY), "rotated")
    clear_cookie(keep)
    return start(user_id, impersonator_id)


def live(sid: str | None) -> LoginSession | None:
    """The live (not ended) row of this id, else None."""
    if not sid or not isinstance(sid, str) or len(sid) > 64:
        return None
    row = get_session().get(LoginSession, sid)
    if row is None or row.ended_at is not None:
        return None
    return row


def matches(row: LoginSession | None, user_id: int, impersonator_id) -> bool:
    """Whether a live row belongs to this login with exactly this impersonator (None for none)."""
    return row is not None and row.user_id == user_id and row.impersonator_id == impersonator_id


def history(user_id: int, limit: int = 20) -> list[LoginSession]:
    """The login's own sessions, newest first (impersonated sessions are not part of it)."""
    return list(get_session().scalars(
        select(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.impersonator_id.is_(None))
        .order_by(LoginSession.created_at.desc(), LoginSession.id)
        .limit(limit)))
