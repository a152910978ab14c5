"""Which client a client-area login is acting for, and what its link lets it do.

A login may be linked to several clients (ClientUser rows); the client area works on one of them at a time,
the "current client", chosen by the user (kept in the session by the views) and re-checked against the links
on every request. Every client-area query is then limited to that client's rows: another client's id is
simply not found.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..models import CLIENT_PERMISSIONS, Client, ClientUser
from . import DomainError, NotFound
from .session import get_session


@dataclass(frozen=True)
class ClientLink:
    """The current user's link to one client."""

    link: ClientUser
    client: Client

    @property
    def is_owner(self) -> bool:
        return self.link.is_owner

    def can(self, key: str) -> bool:
        """Whether the link holds the permission key (CLIENT_PERMISSIONS); the owner holds every key."""
        if key not in CLIENT_PERMISSIONS:
            raise ValueError(f"unknown client permission {key!r}")
        return self.link.has_permission(key)


class PermissionDenied(DomainError):
    """The link exists but lacks the permission the action needs (403, not 404)."""


def links_of(user_id: int) -> list[ClientLink]:
    """Every client the login is linked to, owned ones first, then by client id (one query)."""
    rows = get_session().execute(
        select(ClientUser, Client)
        .join(Client, Client.id == ClientUser.client_id)
        .where(ClientUser.user_id == user_id)
        .order_by(ClientUser.is_owner.desc(), Client.id)
    ).all()
    return [ClientLink(link, client) for link, client in rows]


def current_link(user_id: int, wanted_client_id: int | None = None) -> ClientLink:
    """The link to `wanted_client_id` if the login has one, else its first link; NotFound when the login is
    linked to no client at all. An id the login is not linked to falls back to the first link, so a stale or
    forged session value never reaches another client."""
    links = links_of(user_id)
    if not links:
        raise NotFound(str(_l("This login is not linked to any client.")))
    for link in links:
        if link.client.id == wanted_client_id:
            return link
    return links[0]


def switch_to(user_id: int, client_id: int) -> ClientLink:
    """The link to exactly this client, else NotFound (used when the user picks a client)."""
    for link in links_of(user_id):
        if link.client.id == client_id:
            return link
    raise NotFound(str(_l("Client not found.")))


def require(link: ClientLink, key: str) -> None:
    """PermissionDenied unless the link holds `key`."""
    if not link.can(key):
        raise PermissionDenied(str(_l("You do not have permission to do this for this client.")))
