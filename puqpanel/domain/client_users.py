"""Logins linked to a client: owner flag, the eight client-user permission keys, ownership moves."""
from __future__ import annotations

from typing import Iterable

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..models import CLIENT_PERMISSIONS, Client, ClientUser, User, UserSecurity
from . import DomainError, activity, collect
from .clients import LOGIN_COLUMNS, create_login, find_login, get_client_row, scoped_clients
from .passwords import check_password
from .session import get_session, transaction
from .validation import check_texts, normalize_email

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
# One answer for an unknown email, a staff account and a login of clients outside the caller's scope, so the
# form cannot be used to learn which emails exist or who they belong to.
NOT_LINKABLE = _l("No client login with this email can be linked to this client.")


def check_permissions(keys: Iterable[str]) -> list[str]:
    wanted = {k for k in keys if k}
    unknown = wanted - set(CLIENT_PERMISSIONS)
    if unknown:
        raise DomainError({"permissions": str(_l("Unknown permission."))})
    return [k for k in CLIENT_PERMISSIONS if k in wanted]  # display order, no duplicates


def get_client_user(client: Client, client_user_id: int) -> ClientUser:
    """A link of this client, else NotFound."""
    return get_client_row(ClientUser, client, client_user_id, _l("User link not found."))


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


def _log(client: Client, link: ClientUser, action: str, changes: dict, description: str) -> None:
    activity.record(
        action,
        client_id=client.id,
        object_type="client_user",
        object_id=link.id,
        changes=changes,
        description=description,
    )


def add_link(client: Client, user: User, permissions: list[str], action: str, description: str) -> ClientUser:
    """Link the login to the client (not as owner) with these keys, logged as `action`; in the caller's
    transaction (flushed, not committed). Staff linking and the client's own invitations use it."""
    session = get_session()
    link = ClientUser(client_id=client.id, user_id=user.id, is_owner=False, permissions=permissions)
    session.add(link)
    session.flush()
    _log(client, link, action, {"email": user.email, "permissions": permissions}, description)
    return link


def linkable(user: User) -> bool:
    """A client-area login (never staff) the caller may link: only logins whose every existing link is to a
    client the caller reaches (security.client_scope: everything for access-all staff and for the CLI)."""
    session = get_session()
    if not session.scalar(select(UserSecurity.is_client_login).where(UserSecurity.user_id == user.id)):
        return False
    in_scope = scoped_clients().with_only_columns(Client.id)
    foreign = session.scalar(
        select(ClientUser.id).where(ClientUser.user_id == user.id, ClientUser.client_id.not_in(in_scope)).limit(1)
    )
    return foreign is None


def is_linked(client: Client, user: User) -> bool:
    """Whether the login is linked to the client already."""
    return get_session().scalar(
        select(ClientUser.id).where(ClientUser.client_id == client.id, ClientUser.user_id == user.id)
    ) is not None


def associate_existing(client: Client, email: str, permissions: Iterable[str]) -> ClientUser:
    """Link an existing client-area login (never a staff account) to the client."""
    errors: dict[str, str] = {}
    user = None
    # A lookup, not a new address: match the stored login case-insensitively without re-validating it.
    email = (email or "").strip().lower()
    if not email:
        errors["email"] = str(_l("This field is required."))
    else:
        user = find_login(email)
        if user is None or not linkable(user):
            errors["email"] = str(NOT_LINKABLE)
        elif is_linked(client, user):
            errors["email"] = str(_l("This login is already linked to the client."))
    perms = collect(errors, check_permissions, permissions)
    if errors:
        raise DomainError(errors)
    try:
        with transaction():
            link = add_link(client, user, perms, "client_user.link", f"Login {user.email} linked")
    except IntegrityError:  # linked concurrently
        raise DomainError({"email": str(_l("This login is already linked to the client."))})
    return link


def create_and_associate(
    client: Client, email: str, firstname: str, lastname: str, permissions: Iterable[str], password: str = ""
) -> tuple[ClientUser, str]:
    """Create a new client-area login and link it. Returns the link and the password (shown once)."""
    errors: dict[str, str] = {}
    firstname, lastname = (firstname or "").strip(), (lastname or "").strip()
    email = collect(errors, normalize_email, email) or ""
    check_texts(errors, {"email": email, "firstname": firstname, "lastname": lastname}, ("firstname", "lastname"),
                LOGIN_COLUMNS)
    if email and "email" not in errors:
        existing = find_login(email)
        if existing is not None:
            if linkable(existing):
                errors["email"] = str(_l("A login with this email already exists; link it as an existing login."))
            else:
                errors["email"] = str(NOT_LINKABLE)
    collect(errors, check_password, password)
    perms = collect(errors, check_permissions, permissions)
    if errors:
        raise DomainError(errors)
    try:
        with transaction():
            user, password = create_login(email, firstname, lastname, password)
            link = add_link(client, user, perms, "client_user.create", f"Login {email} created and linked")
    except IntegrityError:  # the same email registered concurrently
        raise DomainError({"email": str(NOT_LINKABLE)})
    except DomainError as exc:
        if "email" in exc.errors:  # create_login's own "already exists" must not tell whose it is
            exc.errors["email"] = str(NOT_LINKABLE)
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
    changes = {"permissions": [before, perms]}
    with transaction():
        link.permissions = perms
        _log(client, link, "client_user.update", changes, f"Permissions of {link.user.email} changed")
    return changes


def transfer_ownership(client: Client, client_user_id: int) -> None:
    """Make this linked login the owner; the previous owner stays linked with every permission."""
    link = get_client_user(client, client_user_id)
    if link.is_owner:
        raise DomainError(str(_l("This login is already the owner.")))
    with transaction() as session:
        owners = session.scalars(
            select(ClientUser).where(ClientUser.client_id == client.id, ClientUser.is_owner.is_(True))
        ).all()
        for old in owners:
            old.is_owner = False
            old.permissions = list(CLIENT_PERMISSIONS)
        session.flush()
        link.is_owner = True
        link.permissions = list(CLIENT_PERMISSIONS)
        old_email = owners[0].user.email if owners else None
        _log(client, link, "client.owner_transfer", {"owner": [old_email, link.user.email]},
             f"Ownership moved to {link.user.email}")


def unlink(client: Client, client_user_id: int) -> None:
    """Remove a non-owner's link (the login itself stays; it may belong to other clients)."""
    link = get_client_user(client, client_user_id)
    if link.is_owner:
        raise DomainError(str(_l("The owner cannot be unlinked; transfer ownership first.")))
    with transaction() as session:
        changes = {"email": link.user.email, "permissions": list(link.permissions or [])}
        _log(client, link, "client_user.unlink", changes, f"Login {link.user.email} unlinked")
        session.delete(link)
