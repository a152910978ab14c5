"""Writing and reading the append-only activity log."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Iterable

from flask import g, has_request_context, request, session as flask_session
from sqlalchemy import select

from ..models import ActivityLog
from .session import get_session


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return value


def snapshot(obj, fields: Iterable[str]) -> dict[str, Any]:
    return {f: _plain(getattr(obj, f)) for f in fields}


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list]:
    """{field: [before, after]} for the fields whose value changed."""
    return {k: [before.get(k), after[k]] for k in after if before.get(k) != after[k]}


def client_ip() -> str:
    if not has_request_context():
        return ""
    return (request.remote_addr or "")[:45]


def current_actor() -> tuple[int | None, int | None]:
    """(user id, impersonating staff user id) of the request; (None, None) for the system (CLI, Celery)."""
    if not has_request_context():
        return None, None
    user = getattr(g, "user", None)
    actor_id = user.id if user is not None and getattr(user, "is_authenticated", False) else None
    return actor_id, flask_session.get("puq_impersonator_id")


def record(
    action: str,
    *,
    client_id: int | None = None,
    object_type: str = "",
    object_id: int | None = None,
    changes: dict | None = None,
    description: str = "",
) -> ActivityLog:
    """Add one log row to the current transaction (the caller commits it with the change it describes)."""
    actor_id, impersonator_id = current_actor()
    entry = ActivityLog(
        actor_id=actor_id,
        impersonator_id=impersonator_id,
        client_id=client_id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        changes=_plain_dict(changes or {}),
        description=description[:500],
        ip=client_ip(),
    )
    get_session().add(entry)
    return entry


def _plain_dict(changes: dict) -> dict:
    return {k: _plain(v) for k, v in changes.items()}


def client_activity(client_id: int, page: int, page_size: int) -> tuple[list[ActivityLog], bool]:
    """One page of a client's log, newest first, and whether an older page exists.

    One query: actor and impersonator are joined eagerly (lazy="joined" on the model) and one extra row
    tells whether a next page exists, so no COUNT is needed. `page` is 1-based and already bounded.
    """
    rows = list(
        get_session().scalars(
            select(ActivityLog)
            .where(ActivityLog.client_id == client_id)
            .order_by(ActivityLog.created_at.desc(), ActivityLog.id.desc())
            .limit(page_size + 1)
            .offset((max(page, 1) - 1) * page_size)
        ).unique()
    )
    return rows[:page_size], len(rows) > page_size
