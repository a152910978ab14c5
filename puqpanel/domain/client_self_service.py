"""What a client's own users may change about their client from the client area: the company profile and the
logins linked to the client. The staff screens have their own rules (domain/profile.py, domain/client_users.py);
this module applies the client-side limits and calls the same lower-level pieces.

Company profile (needs modify_profile): names, company, tax id (python-stdnum; a changed EU VAT id is checked in
VIES as on the staff screen), phone (E.164), language, the billing address (address 1/2, city, postcode,
country, region) and the client-visible custom fields. Never status, credit limit, currency, group, tags,
manager, notes, national id, flags or parent: those keys are not read at all. The client's first successful
save turns a "new" client "active". One transaction, one "client.update" activity row with the diff.

Users (needs manage_users): invite by email, set permissions, remove. Rules decided here:
- nobody changes or removes their own link from this screen (no privilege games, no locking oneself out);
- the owner's link is never changed nor removed;
- a non-owner may only *grant* keys it holds itself (taking keys away, or removing a link, is allowed);
- an invitation gives the same answer whether the email is unknown (a new login is created and told to set its
  password), a client login (linked and notified) or a staff login (nothing happens), so the form cannot tell
  which emails exist. A login already linked to this client is refused clearly (it is in the list anyway).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..billing import mail, vies
from ..models import (
    CLIENT_PERMISSIONS,
    Client,
    ClientAddress,
    ClientUser,
    CustomField,
    CustomFieldValue,
    User,
    UserSecurity,
)
from . import DomainError, activity, collect
from . import client_users as shared_users
from . import custom_fields as cf
from .addresses import validate_address  # the staff address rules, used as they are
from .client_area import ClientLink, require
from .clients import ADDRESS_FIELDS, LOGIN_COLUMNS, create_login, find_login
from .profile import clean_contact  # phone, tax id, language: the staff profile's rules
from .session import get_session, transaction
from .validation import check_texts, normalize_email

# -- company profile ----------------------------------------------------------------------------------------

# The client's own fields the client may edit, and the billing-address fields.
PROFILE_EDITABLE = ("firstname", "lastname", "company_name", "tax_id", "phone", "language")
ADDRESS_EDITABLE = ("address1", "address2", "city", "postcode", "country", "region")
_TEXT_COLUMNS = {"firstname": Client.firstname, "lastname": Client.lastname, "company_name": Client.company_name}
ADDRESS_PREFIX = "billing_"  # form keys and log keys of the billing-address fields: billing_city, ...
CUSTOM_PREFIX = "custom: "  # log keys of custom fields: "custom: <field name>"


def _text(data: Mapping[str, Any], name: str) -> str:
    return str(data.get(name) or "").strip()


def visible_custom_fields() -> list[CustomField]:
    """The custom fields a client sees and edits (CustomField.client_visible), in display order."""
    return list(get_session().scalars(
        select(CustomField).where(CustomField.client_visible.is_(True)).order_by(CustomField.sort_order, CustomField.id)
    ))


def _custom_before(fields: list[CustomField], rows: dict[int, CustomFieldValue]) -> dict[int, str]:
    """Stored value of each field ("" when none; "0" for an unset yes/no, as the staff screen reads it);
    `rows`: custom_fields.current_values(client)."""
    return {
        f.id: rows[f.id].value if f.id in rows else ("0" if f.field_type == "bool" else "") for f in fields
    }


def profile_form_data(client: Client) -> dict[str, str]:
    """The current values in the shape update_own_profile reads."""
    data = {name: getattr(client, name) or "" for name in PROFILE_EDITABLE}
    billing = client.billing_address
    for name in ADDRESS_EDITABLE:
        data[ADDRESS_PREFIX + name] = getattr(billing, name) if billing is not None else ""
    fields = visible_custom_fields()
    for field_id, value in _custom_before(fields, cf.current_values(client)).items():
        data[f"cf_{field_id}"] = value
    return data


def _locked_billing(client: Client) -> ClientAddress:
    session = get_session()
    # One save of a client at a time, on its current values (the same object, reloaded under the row lock).
    session.scalars(
        select(Client).where(Client.id == client.id).with_for_update(of=Client)
        .execution_options(populate_existing=True)
    ).one()
    billing = session.scalars(
        select(ClientAddress).where(ClientAddress.client_id == client.id, ClientAddress.type == "billing")
        .execution_options(populate_existing=True)
    ).first()
    if billing is None:  # every client is created with one; never expected
        raise DomainError(str(_l("This client has no billing address; please contact support.")))
    return billing


def _snapshot(client: Client, billing: ClientAddress, fields: list[CustomField], custom: dict[int, str]) -> dict:
    snap = activity.snapshot(client, PROFILE_EDITABLE + ("status",))
    snap.update({ADDRESS_PREFIX + name: getattr(billing, name) for name in ADDRESS_EDITABLE})
    snap.update({CUSTOM_PREFIX + f.name: custom[f.id] for f in fields})
    return snap


def _validate_profile(client: Client, billing: ClientAddress, fields: list[CustomField],
                      data: Mapping[str, Any]) -> tuple[dict, dict, dict]:
    """(client values, billing-address values, custom values) or DomainError with every field's error."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {name: _text(data, name) for name in _TEXT_COLUMNS}
    check_texts(errors, values, ("firstname", "lastname"), _TEXT_COLUMNS)

    # The billing address through the staff address rules; only the editable fields come from the form.
    posted = {name: getattr(billing, name) for name in ADDRESS_FIELDS}
    posted.update({name: _text(data, ADDRESS_PREFIX + name) for name in ADDRESS_EDITABLE})
    address: dict[str, Any] = {}
    try:
        address = validate_address(posted, billing)
    except DomainError as exc:
        for name, message in exc.errors.items():  # a stored non-editable field's error goes to the form top
            errors[ADDRESS_PREFIX + name if name in ADDRESS_EDITABLE else ""] = message
    # Phone and tax id are read in the country being saved (the old one while the new one is invalid).
    country = address.get("country") or billing.country

    values.update(clean_contact(errors, data, client.id, country))
    custom = collect(errors, cf.clean_values, fields, data) or {}
    if errors:
        raise DomainError(errors)
    return values, {name: address[name] for name in ADDRESS_EDITABLE}, custom


def update_own_profile(link: ClientLink, data: Mapping[str, Any]) -> dict[str, list]:
    """Validate and save the client-editable profile of the link's client, in one transaction with one
    "client.update" activity row of the diff. Keys of `data` other than the editable ones are ignored.

    The first save of a "new" client makes it "active" (in the same diff). Raises DomainError with every field
    error and writes nothing when anything is invalid. Returns the logged diff ({}: nothing changed)."""
    require(link, "modify_profile")
    client = link.client
    fields = visible_custom_fields()
    try:
        with transaction() as session:
            billing = _locked_billing(client)
            values, address, custom = _validate_profile(client, billing, fields, data)
            rows = cf.current_values(client)
            stored_custom = _custom_before(fields, rows)
            before = _snapshot(client, billing, fields, stored_custom)
            for name, value in values.items():
                setattr(client, name, value)
            for name, value in address.items():
                setattr(billing, name, value)
            if client.status == "new":
                client.status = "active"
            for field in fields:
                if custom[field.id] == stored_custom[field.id]:
                    continue
                if field.id in rows:
                    rows[field.id].value = custom[field.id]
                else:
                    session.add(CustomFieldValue(client_id=client.id, field_id=field.id, value=custom[field.id]))
            changes = activity.diff(before, _snapshot(client, billing, fields, custom))
            identity_moved = "tax_id" in changes or ADDRESS_PREFIX + "country" in changes
            if identity_moved:
                vies.identity_changed(client)  # the last VIES answer was about the old id / member state
            if changes:
                activated = "status" in changes
                activity.record(
                    "client.update",
                    client_id=client.id,
                    object_type="client",
                    object_id=client.id,
                    changes=changes,
                    description="Profile updated by the client" + (" (first save: new → active)" if activated else ""),
                )
    except IntegrityError:  # a concurrent save took the same tax id between the check and the commit
        raise DomainError({"tax_id": str(_l("Another client already has this tax id."))})
    if identity_moved and client.tax_id:
        vies.schedule_check(client.id)
    return changes


# -- users --------------------------------------------------------------------------------------------------

INVITE_ANSWER = _l("If the address can be invited, an invitation has been sent.")
ALREADY_LINKED = _l("This login is already linked to the client.")
OWN_LINK = _l("You cannot change or remove your own access; ask another user who manages users.")
OWNER_LINK = _l("The owner always has every permission and cannot be removed.")
NOT_YOURS = _l("You can only grant permissions you hold yourself.")


def list_users(link: ClientLink) -> list[dict]:
    """The client's links (owner first) with login and 2FA flag (one query), each marked `editable` when
    this user may change it (not the owner's, not its own)."""
    require(link, "manage_users")
    rows = shared_users.list_client_users(link.client)
    for row in rows:
        row["is_self"] = row["link"].id == link.link.id
        row["editable"] = not row["link"].is_owner and not row["is_self"]
    return rows


def grantable(link: ClientLink) -> list[str]:
    """The permission keys this user may grant (the owner: all)."""
    return [key for key in CLIENT_PERMISSIONS if link.can(key)]


def _check_grant(link: ClientLink, wanted: Iterable[str], before: Iterable[str] = ()) -> None:
    added = set(wanted) - set(before)
    if not added <= set(grantable(link)):
        raise DomainError({"permissions": str(NOT_YOURS)})


def _target(link: ClientLink, client_user_id: int) -> ClientUser:
    """A link of this client that this user may change (NotFound for another client's link)."""
    target = shared_users.get_client_user(link.client, client_user_id)
    if target.id == link.link.id:
        raise DomainError({"": str(OWN_LINK)})
    if target.is_owner:
        raise DomainError({"": str(OWNER_LINK)})
    return target


def set_user_permissions(link: ClientLink, client_user_id: int, permissions: Iterable[str]) -> dict[str, list]:
    """Set a non-owner's keys (not the caller's own link); returns the logged diff."""
    require(link, "manage_users")
    target = _target(link, client_user_id)
    keys = shared_users.check_permissions(permissions)
    _check_grant(link, keys, target.permissions or [])
    return shared_users.set_permissions(link.client, target.id, keys)


def remove_user(link: ClientLink, client_user_id: int) -> None:
    """Unlink a non-owner (not the caller itself); the login stays (it may belong to other clients)."""
    require(link, "manage_users")
    target = _target(link, client_user_id)
    shared_users.unlink(link.client, target.id)


def _is_client_login(user: User) -> bool:
    return bool(get_session().scalar(select(UserSecurity.is_client_login).where(UserSecurity.user_id == user.id)))


def _app_name() -> str:
    return str(getattr(current_app.appbuilder, "app_name", "") or "puqpanel")


def _invite_new_body(client: Client, email: str, set_password_url: str) -> tuple[str, str]:
    subject = _("You have been invited to %(client)s", client=client.display_name)
    body = _(
        "Hello,\n\nyou have been given access to the client account %(client)s at %(app)s.\n"
        "Your login is your e-mail address: %(email)s\n\n"
        "Choose your password here (request a password reset for this address):\n%(url)s\n\n"
        "If you did not expect this message, you can ignore it.\n",
        client=client.display_name, app=_app_name(), email=email, url=set_password_url,
    )
    return subject, body


def _invite_existing_body(client: Client, email: str, login_url: str) -> tuple[str, str]:
    subject = _("You now have access to %(client)s", client=client.display_name)
    body = _(
        "Hello,\n\nyour login %(email)s has been given access to the client account %(client)s at %(app)s.\n"
        "Sign in and choose the client in the header to work on it:\n%(url)s\n\n"
        "If you did not expect this message, please tell our support.\n",
        client=client.display_name, app=_app_name(), email=email, url=login_url,
    )
    return subject, body


def invite_user(link: ClientLink, email: str, permissions: Iterable[str], *, set_password_url: str,
                login_url: str, firstname: str = "", lastname: str = "") -> str:
    """Invite a login by email with these permission keys. Returns the one answer shown for every outcome
    (see the module docstring); DomainError for a malformed email / name, an unknown or ungrantable key, or
    a login already linked to this client.

    - no login with the email: a client login is created (random password, never shown), linked, and an
      e-mail tells it to set its password at `set_password_url`;
    - a client login: linked, and an e-mail tells it at `login_url`;
    - a staff login: nothing happens (and nothing says so).
    """
    require(link, "manage_users")
    client = link.client
    errors: dict[str, str] = {}
    address = collect(errors, normalize_email, email) or ""
    names = {"email": address, "firstname": (firstname or "").strip(), "lastname": (lastname or "").strip()}
    check_texts(errors, names, (), LOGIN_COLUMNS)
    keys = collect(errors, shared_users.check_permissions, permissions)
    if keys is not None:
        collect(errors, _check_grant, link, keys)
    if errors:
        raise DomainError(errors)
    user = find_login(address)
    if user is not None and shared_users.is_linked(client, user):
        raise DomainError({"email": str(ALREADY_LINKED)})
    try:
        with transaction():
            if user is None:
                user, _password = create_login(address, names["firstname"], names["lastname"])
                shared_users.add_link(client, user, keys, "client_user.invite", f"Login {address} created and invited")
                subject, body = _invite_new_body(client, address, set_password_url)
                mail.queue_email(address, subject, body, kind="user_invite", client_id=client.id)
            elif _is_client_login(user):
                shared_users.add_link(client, user, keys, "client_user.link", f"Login {user.email} invited and linked")
                subject, body = _invite_existing_body(client, user.email, login_url)
                mail.queue_email(user.email, subject, body, kind="user_invite", client_id=client.id)
            # else: a staff login is never linked to a client, and the answer does not say so.
    except (IntegrityError, DomainError):
        # The same email registered, or the same login linked, concurrently (the unique constraints, or
        # create_login's own check): nothing was written here, and the answer stays the one every case gets.
        pass
    return str(INVITE_ANSWER)
