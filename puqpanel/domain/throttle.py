"""Counting failed attempts (passwords, 2FA codes, reset requests) per key, in the database, so every web
worker sees the same counts.

A key ("login:<name>", "code:<user id>", "reset:<email>", "ip:<address>") collects failures within a window
(PUQPANEL_THROTTLE_WINDOW_MINUTES, default 15). When a key reaches its limit it is locked for the rest of the
window: `is_locked` answers True and callers refuse without checking the credential (HTTP 429). The counts
are kept whether or not the user exists, so a locked unknown name looks exactly like a locked real one.
"""
from __future__ import annotations

import datetime as dt

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ..billing import clock
from ..models import AuthThrottle
from .session import get_session

DEFAULT_WINDOW_MINUTES = 15
# Failures allowed per kind of key before it is locked (the next attempt is refused).
DEFAULT_LIMITS = {"login": 5, "code": 5, "reset": 5, "ip": 50}


def _window() -> dt.timedelta:
    return dt.timedelta(minutes=int(current_app.config.get("PUQPANEL_THROTTLE_WINDOW_MINUTES")
                                    or DEFAULT_WINDOW_MINUTES))


def limit_for(key: str) -> int:
    kind = key.split(":", 1)[0]
    limits = {**DEFAULT_LIMITS, **(current_app.config.get("PUQPANEL_THROTTLE_LIMITS") or {})}
    return int(limits[kind])


def login_key(username: str) -> str:
    return "login:" + (username or "").strip().lower()[:180]


def is_locked(key: str, now: dt.datetime | None = None) -> bool:
    now = now or clock.now()
    locked_until = get_session().scalar(select(AuthThrottle.locked_until).where(AuthThrottle.key == key))
    return locked_until is not None and locked_until > now


def record_failure(key: str, now: dt.datetime | None = None) -> bool:
    """Count one failure for `key` and commit it (the caller's transaction is committed with it). Returns
    True when the key is now locked. A window that has passed starts again at 1."""
    now = now or clock.now()
    session = get_session()
    window = _window()
    limit = limit_for(key)
    for _attempt in range(2):  # a concurrent first failure may insert the row first
        row = session.scalar(select(AuthThrottle).where(AuthThrottle.key == key).with_for_update())
        if row is None:
            try:
                session.add(AuthThrottle(key=key, failures=1, window_started_at=now,
                                         locked_until=now + window if limit <= 1 else None))
                session.commit()
                return limit <= 1
            except IntegrityError:
                session.rollback()
                continue
        if row.window_started_at + window <= now:
            row.failures, row.window_started_at, row.locked_until = 1, now, None
        else:
            row.failures += 1
        if row.failures >= limit:
            row.locked_until = row.window_started_at + window
        locked = row.locked_until is not None and row.locked_until > now
        session.commit()
        return locked
    return True


def clear(key: str) -> None:
    """Forget a key's failures (after a success); commits."""
    session = get_session()
    session.execute(update(AuthThrottle).where(AuthThrottle.key == key)
                    .values(failures=0, locked_until=None))
    session.commit()
