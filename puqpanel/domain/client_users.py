"""Logins linked to a client: owner flag, the eight client-user permission keys, ownership moves."""
from __future__ import annotations

from typing import Iterable

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..models import CLIENT_PERMISSIONS, Client, ClientUser, User, UserSecurity
from . import DomainError, NotFound, activity
from .clients import create_login
from .session import get_session
from .validation import normalize_email

PERMISSION_LABELS = {
    "modify_profile": _l("Modify Master Account Profile"),
    "manage_users": _l("Manage Users"),
    "manage_services": _l("Manage Services"),
    "manage_domains": _l("Manage Domains"),
    "manage_invoices": _l("Manage Invoices"),
    "support_tickets": _l("Support Tickets"),
    "manage_affiliate": _l("Manage Affiliate"),
    "place_orders": _l("Place Orders / Upgrades / Cancellations"),
}


def check_permissions(keys: Iterable[str]) -> list[str]:
    wanted = {k for k in keys if k}
    unknown = wanted - set(CLIENT_PERMISSIONS)
    if unknown:
        raise DomainError({"permissions": str(_l("Unknown permission."))})
    return [k for k in CLIENT_PERMISSIONS if k in wanted]  # display order, no duplicates


def get_client_user(client: Client, client_user_id: int) -> ClientUser:
    """A link of this client (looked up with the client id), else NotFound."""
    link = get_session().scalar(
        select(ClientUser).where(ClientUser.id == client_user_id, ClientUser.client_id == client.id)
    )
    if link is None:
        raise NotFound(str(_l("User link not found.")))
    return link


def list_client_users(client: Client) -> list[dict]:
    """Rows for the Users tab: the link, its login and the login's 2FA flag, in one query."""
    rows = get_session().execute(
        select(ClientUser, User, UserSecurity.two_factor_enabled)
        .join(User, User.id == ClientUser.user_id)
        .outerjoin(UserSecurity, UserSecurity.user_id == User.id)
        .where(ClientUser.client_id == client.id)
        .order_by(ClientUser.is_owner.desc(), ClientUser.id)
    ).all()
    return [{"link": link, "user": user, "two_factor": bool(tfa)} for link, user, tfa in rows]


def _link(client: Client, user: User, permissions: list[str], action: str, description: str) -> ClientUser:
    session = get_session()
    link = ClientUser(client_id=client.id, user_id=user.id, is_owner=False, permissions=permissions)
    session.add(link)
    session.flush()
    activity.record(
        action,
        client_id=client.id,
        object_type="client_user",
        object_id=link.id,
        changes={"email": user.email, "permissions": permissions},
        description=description,
    )
    return link


def associate_existing(client: Client, email: str, permissions: Iterable[str]) -> ClientUser:
    """Link an existing client-area login (never a staff account) to the client."""
    errors: dict[str, str] = {}
    session = get_session()
    user = None
    # A lookup, not a new address: match the stored login case-insensitively without re-validating it.
    email = (email or "").strip().lower()
    if not email:
        errors["email"] = str(_l("This field is required."))
    else:
        user = session.scalar(select(User).where(func.lower(User.email) == email))
        if user is None:
            errors["email"] = str(_l("No login has this email; create a new login instead."))
        else:
            is_client_login = session.scalar(
                select(UserSecurity.is_client_login).where(UserSecurity.user_id == user.id)
            )
            if not is_client_login:
                errors["email"] = str(_l("This is a staff account; staff accounts cannot be linked to clients."))
            elif session.scalar(
                select(ClientUser.id).where(ClientUser.client_id == client.id, ClientUser.user_id == user.id)
            ):
                errors["email"] = str(_l("This login is already linked to the client."))
    try:
        perms = check_permissions(permissions)
    except DomainError as exc:
        errors.update(exc.errors)
    if errors:
        raise DomainError(errors)
    try:
        link = _link(client, user, perms, "client_user.link", f"Login {user.email} linked")
        session.commit()
    except IntegrityError:  # linked concurrently
        session.rollback()
        raise DomainError({"email": str(_l("This login is already linked to the client."))})
    except Exception:
        session.rollback()
        raise
    return link


def create_and_associate(
    client: Client, email: str, firstname: str, lastname: str, permissions: Iterable[str], password: str = ""
) -> tuple[ClientUser, str]:
    """Create a new client-area login and link it. Returns the link and the password (shown once)."""
    errors: dict[str, str] = {}
    firstname, lastname = (firstname or "").strip(), (lastname or "").strip()
    try:
        email = normalize_email(email)
    except DomainError as exc:
        errors.update(exc.errors)
    for name, value in (("firstname", firstname), ("lastname", lastname)):
        if not value:
            errors[name] = str(_l("This field is required."))
        elif len(value) > 64:
            errors[name] = str(_l("At most %(n)s characters.", n=64))
    if password and len(password) < 6:
        errors["password"] = str(_l("At least 6 characters, or leave it blank to generate one."))
    try:
        perms = check_permissions(permissions)
    except DomainError as exc:
        errors.update(exc.errors)
    if errors:
        raise DomainError(errors)
    session = get_session()
    try:
        user, password = create_login(email, firstname, lastname, password)
        link = _link(client, user, perms, "client_user.create", f"Login {email} created and linked")
        session.commit()
    except IntegrityError:  # the same email registered concurrently
        session.rollback()
        raise DomainError({"email": str(_l("A user with this email already exists."))})
    except Exception:
        session.rollback()
        raise
    return link, password


def set_permissions(client: Client, client_user_id: int, permissions: Iterable[str]) -> dict[str, list]:
    """Change a non-owner's permission keys (the owner always holds all of them)."""
    link = get_client_user(client, client_user_id)
    if link.is_owner:
        raise DomainError({"permissions": str(_l("The owner always has every permission."))})
    perms = check_permissions(permissions)
    before = list(link.permissions or [])
    if before == perms:
        return {}
    session = get_session()
    try:
        link.permissions = perms
        changes = {"permissions": [before, perms]}
        activity.record(
            "client_user.update",
            client_id=client.id,
            object_type="client_user",
            object_id=link.id,
            changes=changes,
            description=f"Permissions of {link.user.email} changed",
        )
        session.commit()
    except Exception:
        session.rollback()
        raise
    return changes


def transfer_ownership(client: Client, client_user_id: int) -> None:
    """Make this linked login the owner; the previous owner stays linked with every permission."""
    link = get_client_user(client, client_user_id)
    if link.is_owner:
        raise DomainError(str(_l("This login is already the owner.")))
    session = get_session()
    owners = session.scalars(
        select(ClientUser).where(ClientUser.client_id == client.id, ClientUser.is_owner.is_(True))
    ).all()
    try:
        for old in owners:
            old.is_owner = False
            old.permissions = list(CLIENT_PERMISSIONS)
        session.flush()
        link.is_owner = True
        link.permissions = list(CLIENT_PERMISSIONS)
        old_email = owners[0].user.email if owners else None
        activity.record(
            "client.owner_transfer",
            client_id=client.id,
            object_type="client_user",
            object_id=link.id,
            changes={"owner": [old_email, link.user.email]},
            description=f"Ownership moved to {link.user.email}",
        )
        session.commit()
    except Exception:
        session.rollback()
        raise


def unlink(client: Client, client_user_id: int) -> None:
    """Remove a non-owner's link (the login itself stays; it may belong to other clients)."""
    link = get_client_user(client, client_user_id)
    if link.is_owner:
        raise DomainError(str(_l("The owner cannot be unlinked; transfer ownership first.")))
    session = get_session()
    try:
        activity.record(
            "client_user.unlink",
            client_id=client.id,
            object_type="client_user",
            object_id=link.id,
            changes={"email": link.user.email, "permissions": list(link.permissions or [])},
            description=f"Login {link.user.email} unlinked",
        )
        session.delete(link)
        session.commit()
    except Exception:
        session.rollback()
        raise
