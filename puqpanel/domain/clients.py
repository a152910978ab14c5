"""Creating clients, editing their profile, and reaching them within the caller's scope."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from ..models.base import MONEY_MAX
from ..models import (
    CLIENT_PERMISSIONS,
    CLIENT_STATUSES,
    Client,
    ClientAddress,
    ClientGroup,
    ClientUser,
    Currency,
    Tag,
    User,
    UserSecurity,
)
from ..security import CLIENT_ROLE, client_scope, current_user_id, has_perm
from . import DomainError, NotFound, activity, collect
from .passwords import check_password, generate_password, hash_password
from .session import get_session, transaction
from .validation import (
    check_country,
    check_lengths,
    check_region,
    normalize_email,
    normalize_phone,
    normalize_tax_id,
    parse_id,
    required_errors,
)

# Fields the activity log records for a client (staff-only national_id included: the log is staff-only).
PROFILE_FIELDS = (
    "firstname", "lastname", "company_name", "tax_id", "national_id", "phone", "language", "currency_id",
    "status", "blocked", "blocked_reason", "never_auto_suspend", "tax_exempt", "credit_limit", "admin_notes",
    "group_id", "manager_id", "parent_id", "is_reseller", "latitude", "longitude",
)
ADDRESS_FIELDS = (
    "type", "name", "contact_name", "contact_phone", "contact_email", "address1", "address2", "city",
    "postcode", "country", "region",
)


def scoped_clients():
    """SELECT of the clients the current user may reach (see security.client_scope)."""
    return select(Client).where(client_scope())


def get_client(client_id: int) -> Client:
    """The client if it exists and is within the caller's scope, else NotFound (same answer for both)."""
    client = get_session().scalar(scoped_clients().where(Client.id == client_id))
    if client is None:
        raise NotFound(str(_l("Client not found.")))
    return client


def get_client_row(model, client: Client, row_id: int, not_found) -> Any:
    """The `model` row with this id that belongs to `client` (looked up together with the client id, so a
    reachable client never opens another client's rows), else NotFound(not_found)."""
    row = get_session().scalar(select(model).where(model.id == row_id, model.client_id == client.id))
    if row is None:
        raise NotFound(str(not_found))
    return row


@dataclass
class NewClient:
    email: str
    firstname: str
    lastname: str
    address1: str
    city: str
    country: str
    password: str = ""  # blank: generated and returned once
    company_name: str = ""
    tax_id: str = ""
    phone: str = ""
    language: str = "en"
    currency_id: int | None = None  # None: the default currency
    status: str = "new"
    group_id: int | None = None
    manager_id: int | None = None
    address2: str = ""
    postcode: str = ""
    region: str = ""
    tag_ids: list[int] = field(default_factory=list)
    password_hash: str = ""  # bulk loaders only: an already hashed password for the owner login


# A client-area login's own fields and the columns of FAB's user table that bound them (the email is
# also the username).
LOGIN_COLUMNS = {"email": User.username, "firstname": User.first_name, "lastname": User.last_name}
# Free-text fields of the create form and the columns that bound their length (the names are copied onto
# the owner login, whose columns are the shorter ones).
_CLIENT_COLUMNS = {
    **LOGIN_COLUMNS,
    "company_name": Client.company_name,
    "address1": ClientAddress.address1,
    "address2": ClientAddress.address2,
    "city": ClientAddress.city,
    "postcode": ClientAddress.postcode,
}


def check_language(code: str) -> str:
    code = (code or "en").strip()
    if code not in current_app.config.get("LANGUAGES", {"en": {}}):
        raise DomainError({"language": str(_l("Choose one of the offered languages."))})
    return code


def check_status(status: str) -> str:
    if status not in CLIENT_STATUSES:
        raise DomainError({"status": str(_l("Unknown status."))})
    return status


def resolve_currency(currency_id: int | None) -> Currency:
    session = get_session()
    currency_id = parse_id(currency_id, "currency_id")
    if currency_id:
        currency = session.get(Currency, currency_id)
    else:
        currency = session.scalar(select(Currency).where(Currency.is_default.is_(True)))
    if currency is None:
        raise DomainError({"currency_id": str(_l("Choose a currency (add one under Settings first)."))})
    return currency


def check_group(group_id: int | None) -> int | None:
    group_id = parse_id(group_id, "group_id")
    if group_id and get_session().get(ClientGroup, group_id) is None:
        raise DomainError({"group_id": str(_l("Unknown client group."))})
    return group_id or None


def check_manager(manager_id: int | None) -> int | None:
    """A manager is an active staff user (not a client login)."""
    manager_id = parse_id(manager_id, "manager_id")
    if not manager_id:
        return None
    user = get_session().get(User, manager_id)
    is_client_login = get_session().scalar(
        select(UserSecurity.is_client_login).where(UserSecurity.user_id == manager_id)
    )
    if user is None or not user.active or is_client_login:
        raise DomainError({"manager_id": str(_l("Choose an active staff user."))})
    return manager_id


def check_tags(tag_ids) -> list[Tag]:
    """The Tag rows for the given ids; every id must exist."""
    ids = {parse_id(t, "tag_ids") for t in tag_ids or []} - {None}
    tags = list(get_session().scalars(select(Tag).where(Tag.id.in_(ids)).order_by(Tag.name))) if ids else []
    if len(tags) != len(ids):
        raise DomainError({"tag_ids": str(_l("Unknown tag."))})
    return tags


def check_tax_id_unique(tax_id: str | None, client_id: int | None = None) -> None:
    if not tax_id:
        return
    query = select(Client.id).where(Client.tax_id == tax_id)
    if client_id:
        query = query.where(Client.id != client_id)
    if get_session().scalar(query) is not None:
        raise DomainError({"tax_id": str(_l("Another client already has this tax id."))})


def find_login(email: str) -> User | None:
    """The FAB user whose email or username is `email`, case-insensitively (the oldest if several)."""
    email = email.lower()
    return get_session().scalars(
        select(User).where(or_(func.lower(User.email) == email, func.lower(User.username) == email)).order_by(User.id)
    ).first()


def create_login(
    email: str, firstname: str, lastname: str, password: str = "", password_hash: str = ""
) -> tuple[User, str]:
    """A client-area login (FAB user with the Client role). Returns the user and its password.

    The email is the username. `password_hash` (bulk loaders such as the demo) skips hashing; the returned
    password is then "".
    """
    session = get_session()
    sm = current_app.appbuilder.sm
    errors = check_lengths({"email": email, "firstname": firstname, "lastname": lastname}, LOGIN_COLUMNS)
    if errors:
        raise DomainError(errors)
    if find_login(email) is not None:
        raise DomainError({"email": str(_l("A user with this email already exists."))})
    if not password_hash:
        password = password or generate_password()
        password_hash = hash_password(password)
    else:
        password = ""
    user = User(
        first_name=firstname,
        last_name=lastname,
        username=email,
        email=email,
        active=True,
        password=password_hash,
        roles=[sm.find_role(CLIENT_ROLE)],
    )
    session.add(user)
    session.flush()
    session.add(UserSecurity(user_id=user.id, is_client_login=True))
    return user, password


def create_client(data: NewClient) -> tuple[Client, str]:
    """Client + owner login + billing address, in one transaction. Returns (client, the owner's password).

    Validates everything first and raises DomainError with every field error; nothing is written then.
    """
    errors: dict[str, str] = {}
    acting_user = current_user_id()
    if acting_user is not None and not has_perm("can_access_all"):
        # Staff limited to the clients they manage become the manager of what they create.
        data.manager_id = acting_user
    errors.update(required_errors(vars(data), ("email", "firstname", "lastname", "address1", "city", "country")))
    email = collect(errors, normalize_email, data.email) if data.email else None
    country = collect(errors, check_country, data.country) if data.country else None
    region = collect(errors, check_region, country, data.region) if country else ""
    phone = collect(errors, normalize_phone, data.phone, country)
    tax_id = collect(errors, normalize_tax_id, data.tax_id, country or "") if data.tax_id else None
    if tax_id:
        collect(errors, check_tax_id_unique, tax_id)
    language = collect(errors, check_language, data.language)
    status = collect(errors, check_status, data.status)
    currency = collect(errors, resolve_currency, data.currency_id)
    group_id = collect(errors, check_group, data.group_id)
    manager_id = collect(errors, check_manager, data.manager_id)
    collect(errors, check_password, data.password)
    tags = collect(errors, check_tags, data.tag_ids)
    errors.update(check_lengths(vars(data), _CLIENT_COLUMNS))
    if errors:
        raise DomainError(errors)

    try:
        with transaction() as session:
            user, password = create_login(
                email, data.firstname.strip(), data.lastname.strip(), data.password, data.password_hash
            )
            client = Client(
                firstname=data.firstname.strip(),
                lastname=data.lastname.strip(),
                company_name=(data.company_name or "").strip(),
                tax_id=tax_id,
                phone=phone or "",
                language=language,
                currency=currency,
                status=status,
                group_id=group_id,
                manager_id=manager_id,
            )
            client.tags = tags
            session.add(client)
            client.addresses.append(
                ClientAddress(
                    type="billing",
                    name="Billing",
                    contact_name=client.name,
                    contact_email=email,
                    contact_phone=phone or "",
                    address1=data.address1.strip(),
                    address2=(data.address2 or "").strip(),
                    city=data.city.strip(),
                    postcode=(data.postcode or "").strip(),
                    country=country,
                    region=region or "",
                )
            )
            client.users.append(ClientUser(user=user, is_owner=True, permissions=list(CLIENT_PERMISSIONS)))
            session.flush()
            activity.record(
                "client.create",
                client_id=client.id,
                object_type="client",
                object_id=client.id,
                changes=activity.snapshot(client, PROFILE_FIELDS),
                description=f"Client created with owner {email}",
            )
    except IntegrityError:  # a concurrent create took the same email or tax id between check and insert
        raise DomainError({"": str(_l("Another client or user was just saved with the same email or tax id."))})
    if tax_id:
        from ..billing.vies import schedule_check

        schedule_check(client.id)  # VIES check of an EU VAT id (after the commit)
    return client, password


def parse_money(value: Any, field_name: str) -> Decimal:
    try:
        amount = Decimal(str(value).strip() or "0")
    except InvalidOperation:
        raise DomainError({field_name: str(_l("Enter an amount like 100.00."))})
    if not amount.is_finite() or abs(amount) > MONEY_MAX:
        raise DomainError({field_name: str(_l("Enter an amount like 100.00."))})
    return amount
