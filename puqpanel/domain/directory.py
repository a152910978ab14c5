"""The staff client directory: filtered, scoped, sorted, paginated client rows with their aggregates.

One SELECT builds a page (clients + owner email, billing city/country, currency, group, balance (kept by the
ledger), active services, outstanding = Σ (total - amount paid) of unpaid documents, last login of the linked
users as correlated scalar subqueries / outer joins), one SELECT counts, one SELECT loads the tags of the
page's ids. The HTML list, the CSV export and the API share it.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterator, Mapping

from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, false, func, or_, select, type_coerce
from sqlalchemy.orm import aliased

from ..models import (
    CLIENT_STATUSES,
    Client,
    ClientAddress,
    ClientGroup,
    ClientUser,
    Currency,
    Invoice,
    Money,
    Service,
    Tag,
    User,
    UserSecurity,
    client_tag,
)
from ..security import client_scope, current_user_id
from . import DomainError
from .session import get_session
from .validation import parse_date_arg, parse_id

SCOPES = ("all", "own", "managed")
# Every request argument the directory reads; links rebuilt from a request carry these and nothing else.
ARG_KEYS = (
    "q", "status", "group_id", "tag_id", "manager_id", "scope", "blocked", "country", "currency_id",
    "created_from", "created_to", "sort", "dir", "page", "page_size",
)
SORT_DIRECTIONS = ("asc", "desc")
DEFAULT_SORT = ("created", "desc")

# Sub-selects, correlated to the outer puq_client row.
_owner_email = (
    select(User.email)
    .join(ClientUser, ClientUser.user_id == User.id)
    .where(ClientUser.client_id == Client.id, ClientUser.is_owner.is_(True))
    .order_by(ClientUser.id)
    .limit(1)
    .correlate(Client)
    .scalar_subquery()
)
_billing_address_id = (
    select(func.min(ClientAddress.id))
    .where(ClientAddress.client_id == Client.id, ClientAddress.type == "billing")
    .correlate(Client)
    .scalar_subquery()
)
# The Services column: how many of the client's services are active (suspended / pending ones not counted).
_services_active = (
    select(func.count(Service.id))
    .where(Service.client_id == Client.id, Service.status == "active")
    .correlate(Client)
    .scalar_subquery()
)
# Still due on the client's unpaid documents (total - amount paid of partly paid proformas), in the client's
# currency (documents issued before a currency change are shown on the record's Summary tab).
_outstanding = type_coerce(
    select(func.coalesce(func.sum(Invoice.total - Invoice.amount_paid), 0))
    .where(Invoice.client_id == Client.id, Invoice.status == "unpaid", Invoice.currency_id == Client.currency_id)
    .correlate(Client)
    .scalar_subquery(),
    Money(),
)
_last_login = (
    select(func.max(User.last_login))
    .join(ClientUser, ClientUser.user_id == User.id)
    .where(ClientUser.client_id == Client.id)
    .correlate(Client)
    .scalar_subquery()
)
_Billing = aliased(ClientAddress, name="billing")
_Manager = aliased(User, name="manager")

# Whitelisted sort keys → SQL expressions.
SORTS: dict[str, Any] = {
    "id": Client.id,
    "owner": _owner_email,
    "client": func.lower(Client.lastname + " " + Client.firstname),
    "company": func.lower(Client.company_name),
    "status": Client.status,
    "located": _Billing.country + " " + func.lower(_Billing.city),
    "created": Client.created_at,
    "balance": Client.balance,
    "group": func.lower(ClientGroup.name),
    "services": _services_active,
    "outstanding": _outstanding,
    "last_login": _last_login,
}


@dataclass
class DirectoryFilters:
    q: str = ""
    status: str = ""
    group_id: int | None = None
    tag_id: int | None = None
    manager_id: int | None = None
    scope: str = "all"  # all | own (manager = me) | managed (manager = manager_id, or any manager)
    blocked: bool | None = None
    country: str = ""
    currency_id: int | None = None
    created_from: dt.date | None = None
    created_to: dt.date | None = None


@dataclass(frozen=True)
class RowCurrency:
    """What views.formatting.money needs of a currency."""

    code: str
    prefix: str
    suffix: str
    minor_units: int


@dataclass
class DirectoryRow:
    id: int
    firstname: str
    lastname: str
    company_name: str
    phone: str
    status: str
    blocked: bool
    created_at: dt.datetime
    balance: Decimal
    currency_code: str
    currency_prefix: str
    currency_suffix: str
    currency_minor_units: int
    group_name: str | None
    group_color: str | None
    manager_name: str | None
    owner_email: str | None
    city: str | None
    country: str | None
    services: int
    outstanding: Decimal
    last_login: dt.datetime | None
    tags: list[tuple[str, str]] = field(default_factory=list)  # (name, colour)

    @property
    def name(self) -> str:
        return f"{self.firstname} {self.lastname}".strip()

    @property
    def currency(self) -> RowCurrency:
        return RowCurrency(self.currency_code, self.currency_prefix or "", self.currency_suffix or "",
                           self.currency_minor_units)


@dataclass
class DirectoryPage:
    rows: list[DirectoryRow]
    total: int
    page: int
    page_size: int
    sort: str
    direction: str

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


# --- parsing request arguments (shared by the HTML view, the CSV export and the API) ---------------------

def _id(value: Any, name: str) -> int | None:
    """A row id (1 .. 2**31-1, so PostgreSQL never sees a bigger integer) or None when blank."""
    text = str(value or "").strip()
    if not re.fullmatch(r"[0-9]{1,10}", text or "0"):  # ASCII digits only ("²".isdigit() is true)
        raise ValueError(text)
    try:
        return parse_id(text, name)
    except DomainError:
        raise ValueError(text) from None


def parse_filters(args: Mapping[str, Any]) -> tuple[DirectoryFilters, dict[str, str]]:
    """Filters from request arguments. Bad values are dropped and reported in the errors dict."""
    filters = DirectoryFilters()
    errors: dict[str, str] = {}
    filters.q = str(args.get("q") or "").strip()[:200]
    status = str(args.get("status") or "").strip()
    if status in CLIENT_STATUSES:
        filters.status = status
    elif status:
        errors["status"] = str(_l("Unknown status."))
    for name in ("group_id", "tag_id", "manager_id", "currency_id"):
        try:
            setattr(filters, name, _id(args.get(name), name))
        except ValueError:
            errors[name] = str(_l("Not a valid choice."))
    scope = str(args.get("scope") or "all").strip()
    if scope in SCOPES:
        filters.scope = scope
    else:
        errors["scope"] = str(_l("Not a valid choice."))
    blocked = str(args.get("blocked") or "").strip().lower()
    if blocked in ("yes", "1", "true", "y"):
        filters.blocked = True
    elif blocked in ("no", "0", "false", "n"):
        filters.blocked = False
    elif blocked:
        errors["blocked"] = str(_l("Not a valid choice."))
    country = str(args.get("country") or "").strip().upper()
    if re.fullmatch(r"[A-Z]{2}", country):
        filters.country = country
    elif country:
        errors["country"] = str(_l("Choose a valid country."))
    for name in ("created_from", "created_to"):
        try:
            setattr(filters, name, parse_date_arg(args.get(name)))
        except ValueError:
            errors[name] = str(_l("Enter a date like 2025-01-31."))
    return filters, errors


def parse_sort(value: Any, direction: Any) -> tuple[str, str]:
    sort = str(value or "").strip()
    if sort not in SORTS:
        return DEFAULT_SORT
    direction = str(direction or "").strip().lower()
    return sort, direction if direction in SORT_DIRECTIONS else "asc"


def parse_page(value: Any) -> int:
    try:
        return max(1, min(int(str(value or "1").strip()), 10**6))
    except ValueError:
        return 1


def parse_page_size(value: Any, allowed: tuple[int, ...] | list[int], default: int) -> int:
    try:
        size = int(str(value or "").strip())
    except ValueError:
        return default
    return size if size in allowed else default


# --- the query ----------------------------------------------------------------------------------------------

def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _phone_digits(q: str) -> str | None:
    """The digits of a search that looks like a phone number ("+49 30 123-45", "030 12345"), else None."""
    digits = re.sub(r"[\s()./\-+]", "", q)
    return digits if digits.isdigit() and len(digits) >= 3 else None


def _search_condition(q: str):
    """Every word of q must match one of: first/last name, company, a linked user's email, phone.

    A digits-only search (spaces and phone punctuation allowed) also matches the E.164 phone as a whole,
    with or without a national leading zero.
    """
    conditions = []
    for term in q.split():
        pattern = _like(term)
        email_match = (
            select(ClientUser.id)
            .join(User, User.id == ClientUser.user_id)
            .where(ClientUser.client_id == Client.id, User.email.ilike(pattern, escape="\\"))
            .correlate(Client)
            .exists()
        )
        conditions.append(or_(
            Client.firstname.ilike(pattern, escape="\\"),
            Client.lastname.ilike(pattern, escape="\\"),
            Client.company_name.ilike(pattern, escape="\\"),
            Client.phone.ilike(pattern, escape="\\"),
            email_match,
        ))
    if not conditions:
        return None
    words = and_(*conditions)
    digits = _phone_digits(q)
    if digits is None:
        return words
    phone = [Client.phone.like(f"%{digits}%")]
    national = digits.lstrip("0")
    if national != digits and len(national) >= 3:
        phone.append(Client.phone.like(f"%{national}%"))
    return or_(words, *phone)


def filter_conditions(filters: DirectoryFilters) -> list:
    """WHERE conditions for the filters, always including the caller's row scope."""
    conds = [client_scope()]
    search = _search_condition(filters.q) if filters.q else None
    if search is not None:
        conds.append(search)
    if filters.status:
        conds.append(Client.status == filters.status)
    if filters.group_id:
        conds.append(Client.group_id == filters.group_id)
    if filters.tag_id:
        conds.append(
            select(client_tag.c.client_id)
            .where(client_tag.c.client_id == Client.id, client_tag.c.tag_id == filters.tag_id)
            .correlate(Client)
            .exists()
        )
    if filters.scope == "own":
        me = current_user_id()
        conds.append(Client.manager_id == me if me is not None else false())
    elif filters.scope == "managed":
        conds.append(Client.manager_id == filters.manager_id if filters.manager_id else Client.manager_id.is_not(None))
    elif filters.manager_id:
        conds.append(Client.manager_id == filters.manager_id)
    if filters.blocked is not None:
        conds.append(Client.blocked.is_(filters.blocked))
    if filters.country:
        conds.append(
            select(ClientAddress.id)
            .where(
                ClientAddress.client_id == Client.id,
                ClientAddress.type == "billing",
                ClientAddress.country == filters.country,
            )
            .correlate(Client)
            .exists()
        )
    if filters.currency_id:
        conds.append(Client.currency_id == filters.currency_id)
    if filters.created_from:
        conds.append(Client.created_at >= dt.datetime.combine(filters.created_from, dt.time.min))
    if filters.created_to and filters.created_to < dt.date.max:  # the last day of 9999 bounds nothing
        conds.append(Client.created_at < dt.datetime.combine(filters.created_to + dt.timedelta(days=1), dt.time.min))
    return conds


def rows_statement(filters: DirectoryFilters, sort: str = DEFAULT_SORT[0], direction: str = DEFAULT_SORT[1]):
    """SELECT of every directory column for the filtered, scoped clients, sorted (no LIMIT)."""
    sort, direction = parse_sort(sort, direction)
    order = SORTS[sort]
    order = order.desc() if direction == "desc" else order.asc()
    tiebreak = Client.id.desc() if direction == "desc" else Client.id.asc()
    manager_name = _Manager.first_name + " " + _Manager.last_name
    return (
        select(
            Client.id,
            Client.firstname,
            Client.lastname,
            Client.company_name,
            Client.phone,
            Client.status,
            Client.blocked,
            Client.created_at,
            Client.balance,
            Currency.code.label("currency_code"),
            Currency.prefix.label("currency_prefix"),
            Currency.suffix.label("currency_suffix"),
            Currency.minor_units.label("currency_minor_units"),
            ClientGroup.name.label("group_name"),
            ClientGroup.color.label("group_color"),
            manager_name.label("manager_name"),
            _owner_email.label("owner_email"),
            _Billing.city.label("city"),
            _Billing.country.label("country"),
            _services_active.label("services"),
            _outstanding.label("outstanding"),
            _last_login.label("last_login"),
        )
        .join(Currency, Currency.id == Client.currency_id)
        .outerjoin(ClientGroup, ClientGroup.id == Client.group_id)
        .outerjoin(_Manager, _Manager.id == Client.manager_id)
        .outerjoin(_Billing, _Billing.id == _billing_address_id)
        .where(*filter_conditions(filters))
        .order_by(order, tiebreak)
    )


def count_statement(filters: DirectoryFilters):
    return select(func.count(Client.id)).where(*filter_conditions(filters))


def _tags_for(ids: list[int]) -> dict[int, list[tuple[str, str]]]:
    tags: dict[int, list[tuple[str, str]]] = {}
    if not ids:
        return tags
    stmt = (
        select(client_tag.c.client_id, Tag.name, Tag.color)
        .join(Tag, Tag.id == client_tag.c.tag_id)
        .where(client_tag.c.client_id.in_(ids))
        .order_by(Tag.name)
    )
    for client_id, name, color in get_session().execute(stmt):
        tags.setdefault(client_id, []).append((name, color))
    return tags


def _to_rows(result_rows) -> list[DirectoryRow]:
    rows = [DirectoryRow(**dict(r._mapping), tags=[]) for r in result_rows]
    tags = _tags_for([r.id for r in rows])
    for row in rows:
        row.tags = tags.get(row.id, [])
        row.services = int(row.services or 0)
        row.outstanding = row.outstanding if row.outstanding is not None else Decimal("0")
    return rows


def search_clients(
    filters: DirectoryFilters,
    sort: str = DEFAULT_SORT[0],
    direction: str = DEFAULT_SORT[1],
    page: int = 1,
    page_size: int = 25,
) -> DirectoryPage:
    """One page of the directory: 3 statements whatever the page size (count, rows, tags)."""
    session = get_session()
    sort, direction = parse_sort(sort, direction)
    page_size = max(1, int(page_size))
    total = session.scalar(count_statement(filters)) or 0
    last_page = max(1, -(-total // page_size))
    page = min(max(1, int(page)), last_page)
    result = []
    if total:
        stmt = rows_statement(filters, sort, direction).limit(page_size).offset((page - 1) * page_size)
        result = _to_rows(session.execute(stmt).all())
    return DirectoryPage(rows=result, total=total, page=page, page_size=page_size, sort=sort, direction=direction)


def iter_clients(
    filters: DirectoryFilters, sort: str = DEFAULT_SORT[0], direction: str = DEFAULT_SORT[1], chunk: int = 500
) -> Iterator[DirectoryRow]:
    """Every filtered, scoped row (all pages), fetched in chunks of two statements each.

    The statement (and so the caller's row scope) is built now; rows are read as the iterator is consumed.
    """
    stmt = rows_statement(filters, sort, direction)

    def rows() -> Iterator[DirectoryRow]:
        session = get_session()
        offset = 0
        while True:
            batch = session.execute(stmt.limit(chunk).offset(offset)).all()
            yield from _to_rows(batch)
            if len(batch) < chunk:
                return
            offset += chunk

    return rows()


# --- choices for the filter panel and the client form ------------------------------------------------------

def staff_users() -> list[tuple[int, str]]:
    """Active staff users (no client-area login): (id, "First Last (username)")."""
    stmt = (
        select(User.id, User.first_name, User.last_name, User.username)
        .outerjoin(UserSecurity, UserSecurity.user_id == User.id)
        .where(User.active.is_(True), or_(UserSecurity.is_client_login.is_(None), UserSecurity.is_client_login.is_(False)))
        .order_by(User.first_name, User.last_name, User.id)
    )
    return [(uid, f"{first} {last} ({username})".strip()) for uid, first, last, username in get_session().execute(stmt)]


def groups() -> list[tuple[int, str, str]]:
    return [tuple(r) for r in get_session().execute(select(ClientGroup.id, ClientGroup.name, ClientGroup.color).order_by(ClientGroup.name))]


def tags() -> list[tuple[int, str, str]]:
    return [tuple(r) for r in get_session().execute(select(Tag.id, Tag.name, Tag.color).order_by(Tag.name))]


def currencies() -> list[tuple[int, str, bool]]:
    stmt = select(Currency.id, Currency.code, Currency.is_default).order_by(Currency.is_default.desc(), Currency.code)
    return [tuple(r) for r in get_session().execute(stmt)]
