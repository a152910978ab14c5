"""Append-only staff notes on a client (no edit, no delete)."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from ..models import Client, ClientNote
from ..security import current_user_id
from . import DomainError, activity
from .session import get_session, transaction

MAX_NOTE = 10_000


def add_note(client: Client, body: str, sticky: bool = False) -> ClientNote:
    body = (body or "").strip()
    if not body:
        raise DomainError({"body": str(_l("This field is required."))})
    if len(body) > MAX_NOTE:
        raise DomainError({"body": str(_l("At most %(n)s characters.", n=MAX_NOTE))})
    with transaction() as session:
        note = ClientNote(client_id=client.id, author_id=current_user_id(), body=body, sticky=bool(sticky))
        session.add(note)
        session.flush()
        activity.record(
            "note.create",
            client_id=client.id,
            object_type="note",
            object_id=note.id,
            changes={"body": body[:200], "sticky": bool(sticky)},
            description="Note added",
        )
    return note


def list_notes(client: Client, sticky_only: bool = False) -> list[ClientNote]:
    """Newest first, authors loaded in the same query."""
    query = (
        select(ClientNote)
        .options(joinedload(ClientNote.author))
        .where(ClientNote.client_id == client.id)
        .order_by(ClientNote.created_at.desc(), ClientNote.id.desc())
    )
    if sticky_only:
        query = query.where(ClientNote.sticky.is_(True))
    return list(get_session().scalars(query))
