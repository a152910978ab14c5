"""A client's addresses: exactly one billing address (made with the client), any number of others."""
from __future__ import annotations

from typing import Any, Mapping

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..models import ADDRESS_TYPES, Client, ClientAddress
from ..billing import vies
from . import DomainError, activity, collect
from .clients import ADDRESS_FIELDS, get_client_row
from .session import get_session, transaction
from .validation import check_country, check_region, check_texts, normalize_email, normalize_phone

# Free-text fields and the columns their length limits come from (the others are normalised codes).
_TEXT_COLUMNS = {
    name: getattr(ClientAddress, name)
    for name in ("name", "contact_name", "contact_email", "address1", "address2", "city", "postcode")
}


def get_address(client: Client, address_id: int) -> ClientAddress:
    """An address of this client, else NotFound."""
    return get_client_row(ClientAddress, client, address_id, _l("Address not found."))


def validate_address(data: Mapping[str, Any], existing: ClientAddress | None) -> dict[str, str]:
    """The address fields (ADDRESS_FIELDS) of `data` checked and normalised for a new address (`existing`
    None) or an edit of `existing` (the billing address keeps its type); DomainError with every field's
    error. Also used by the client's own profile (domain.client_self_service)."""
    errors: dict[str, str] = {}
    values = {name: str(data.get(name) or "").strip() for name in ADDRESS_FIELDS}

    if existing is not None and existing.type == "billing":
        if values["type"] and values["type"] != "billing":
            errors["type"] = str(_l("The billing address cannot change its type."))
        values["type"] = "billing"
    elif values["type"] not in ADDRESS_TYPES:
        errors["type"] = str(_l("Choose an address type."))
    elif values["type"] == "billing":
        errors["type"] = str(_l("A client has exactly one billing address; choose shipping or service."))

    check_texts(errors, values, ("address1", "city", "country"), _TEXT_COLUMNS)
    if values["country"]:
        values["country"] = collect(errors, check_country, values["country"]) or ""
    if values["country"]:
        values["region"] = collect(errors, check_region, values["country"], values["region"]) or ""
    else:
        values["region"] = ""
    values["contact_phone"] = (
        collect(errors, normalize_phone, values["contact_phone"], values["country"] or None, "contact_phone") or ""
    )
    if values["contact_email"]:
        values["contact_email"] = collect(errors, normalize_email, values["contact_email"], "contact_email") or ""
    if errors:
        raise DomainError(errors)
    return values


def _log(client: Client, address: ClientAddress, action: str, changes: dict, done: str) -> None:
    activity.record(
        action,
        client_id=client.id,
        object_type="address",
        object_id=address.id,
        changes=changes,
        description=f"Address {address.name or address.type} {done}",
    )


def create_address(client: Client, data: Mapping[str, Any]) -> ClientAddress:
    """Add a shipping or service address. Raises DomainError (nothing written) on bad input."""
    values = validate_address(data, None)
    with transaction() as session:
        address = ClientAddress(client_id=client.id, **values)
        session.add(address)
        session.flush()
        _log(client, address, "address.create", activity.snapshot(address, ADDRESS_FIELDS), "added")
    return address


def update_address(client: Client, address_id: int, data: Mapping[str, Any]) -> dict[str, list]:
    """Edit an address of this client; the billing address keeps its type. Returns the logged diff."""
    address = get_address(client, address_id)
    values = validate_address(data, address)
    before = activity.snapshot(address, ADDRESS_FIELDS)
    changes = activity.diff(before, {**before, **values})
    country_moved = address.type == "billing" and "country" in changes
    if changes:
        with transaction():
            for name, value in values.items():
                setattr(address, name, value)
            if country_moved:
                vies.identity_changed(client)  # the last VIES answer was about the old member state
            _log(client, address, "address.update", changes, "updated")
    if country_moved and client.tax_id:
        vies.schedule_check(client.id)
    return changes


def delete_address(client: Client, address_id: int) -> None:
    """Delete a shipping / service address. The billing address can never be deleted."""
    address = get_address(client, address_id)
    if address.type == "billing":
        raise DomainError(str(_l("The billing address cannot be deleted.")))
    with transaction() as session:
        _log(client, address, "address.delete", activity.snapshot(address, ADDRESS_FIELDS), "deleted")
        session.delete(address)


def list_addresses(client: Client) -> list[ClientAddress]:
    """Billing first, then the others in creation order."""
    rows = get_session().scalars(
        select(ClientAddress).where(ClientAddress.client_id == client.id).order_by(ClientAddress.id)
    ).all()
    return sorted(rows, key=lambda a: (a.type != "billing", a.id))
