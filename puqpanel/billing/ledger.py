"""The ledger: the only way a balance changes.

`post` writes one immutable row and moves the client's balance in the caller's transaction; the caller must
hold the client's row lock (`lock_client`) from before it read anything it decides on until it commits.
Lock order everywhere: invoice → client → document counter.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, aliased

from ..domain import DomainError, NotFound, activity
from ..domain.session import get_session
from ..domain.validation import parse_date_arg
from ..models import TRANSACTION_TYPES, Client, Invoice, Product, Service, Transaction, User
from ..models.base import MONEY_MAX
from . import clock
from .money import ZERO, ledger, parse_amount


def lock_client(client_id: int, session: Session | None = None) -> Client:
    """The client row, freshly read under a write lock held until commit.

    PostgreSQL: SELECT … FOR UPDATE. SQLite has no row locks: a no-op UPDATE takes the database's write
    lock first (writers are serialised), then the row is read.
    """
    session = session or get_session()
    if session.get_bind().dialect.name != "postgresql":
        session.execute(update(Client).where(Client.id == client_id).values(id=Client.id))
        query = select(Client).where(Client.id == client_id)
    else:
        query = select(Client).where(Client.id == client_id).with_for_update(of=Client)
    client = session.scalars(query.execution_options(populate_existing=True)).first()
    if client is None:
        raise NotFound("client")
    return client


def post(
    client: Client,
    type: str,
    net: Decimal,
    *,
    description: str,
    gross: Decimal | None = None,
    fees: Decimal = ZERO,
    service_id: int | None = None,
    period_start: dt.datetime | None = None,
    period_stop: dt.datetime | None = None,
    gateway: str = "",
    external_id: str = "",
    invoice_id: int | None = None,
    author_id: int | None = None,
    impersonator_id: int | None = None,
    log: bool = True,
) -> Transaction:
    """Append one ledger row and move the balance by `net` (signed). `client` must come from lock_client.

    Author defaults to the request's user (and impersonator); pass them for work done on someone's behalf.
    """
    session = get_session()
    net = ledger(net)
    if author_id is None and impersonator_id is None:
        author_id, impersonator_id = activity.current_actor()
    before = client.balance
    after = ledger(before + net)
    if abs(after) >= MONEY_MAX:  # beyond what the balance column holds
        raise DomainError(str(_l("The resulting balance would be out of range.")))
    row = Transaction(
        client_id=client.id,
        type=type,
        gross=ledger(gross if gross is not None else net),
        net=net,
        fees=ledger(fees),
        balance_before=before,
        balance_after=after,
        currency_id=client.currency_id,
        description=description[:255],
        service_id=service_id,
        period_start=period_start,
        period_stop=period_stop,
        gateway=gateway,
        external_id=external_id,
        invoice_id=invoice_id,
        author_id=author_id,
        impersonator_id=impersonator_id,
        created_at=clock.now(),
    )
    client.balance = after
    session.add(row)
    session.flush()
    if log:
        activity.record(
            f"ledger.{type}",
            client_id=client.id,
            object_type="transaction",
            object_id=row.id,
            changes={"net": str(net), "balance": [str(before), str(after)]},
            description=description,
        )
    return row


@dataclass
class LedgerProblem:
    client_id: int
    problem: str


def verify(session: Session | None = None, limit: int = 1000) -> list[LedgerProblem]:
    """Clients whose balance differs from Σ net of their ledger rows, or whose before/after chain is broken
    (a row's before ≠ the previous row's after, the first row's before ≠ 0, or after - before ≠ net).
    Set-based: two queries whatever the number of clients."""
    session = session or get_session()
    problems: list[LedgerProblem] = []
    sums = (
        select(Transaction.client_id, func.sum(Transaction.net).label("total"))
        .group_by(Transaction.client_id)
        .subquery()
    )
    mismatched = session.execute(
        select(Client.id, Client.balance, func.coalesce(sums.c.total, 0))
        .outerjoin(sums, sums.c.client_id == Client.id)
        .where(Client.balance != func.coalesce(sums.c.total, 0))
        .order_by(Client.id)
        .limit(limit)
    )
    for client_id, balance, total in mismatched:
        problems.append(LedgerProblem(client_id, f"balance {balance} != sum of ledger {total}"))
    previous_after = func.lag(Transaction.balance_after).over(
        partition_by=Transaction.client_id, order_by=Transaction.id
    )
    chain = select(
        Transaction.client_id,
        Transaction.id,
        Transaction.net,
        Transaction.balance_before,
        Transaction.balance_after,
        previous_after.label("previous_after"),
    ).subquery()
    broken = session.execute(
        select(chain.c.client_id, chain.c.id)
        .where(
            ((chain.c.previous_after.is_(None)) & (chain.c.balance_before != 0))
            | (chain.c.previous_after != chain.c.balance_before)
            | (chain.c.balance_after - chain.c.balance_before != chain.c.net)
        )
        .order_by(chain.c.client_id, chain.c.id)
        .limit(limit)
    )
    for client_id, row_id in broken:
        problems.append(LedgerProblem(client_id, f"ledger chain broken at transaction {row_id}"))
    return problems


# -- staff adjustments ------------------------------------------------------------------------------------
DESCRIPTION_MAX = Transaction.__table__.c.description.type.length  # 255
EXTERNAL_ID_MAX = Transaction.__table__.c.external_id.type.length  # 100


def adjust(client: Client | int, amount, description: str, external_id: str = "") -> Transaction:
    """A staff manual credit (+) or debit (-) of a client's balance: one `adjustment` ledger row.

    `amount` is user input: signed, not zero, at most 4 decimal places, below MONEY_MAX. `description` is
    required (≤ 255 characters); `external_id` is an optional reference (≤ 100). Every bad field is reported
    at once as DomainError and nothing is written. Commits (row, balance and activity entry together).
    """
    errors: dict[str, str] = {}
    value = None
    try:
        value = parse_amount(amount, "amount", allow_negative=True)
    except DomainError as exc:
        errors.update(exc.errors)
    description = " ".join(str(description or "").split())
    if not description:
        errors["description"] = str(_l("This field is required."))
    elif len(description) > DESCRIPTION_MAX:
        errors["description"] = str(_l("At most %(n)s characters.", n=DESCRIPTION_MAX))
    external_id = str(external_id or "").strip()
    if len(external_id) > EXTERNAL_ID_MAX:
        errors["external_id"] = str(_l("At most %(n)s characters.", n=EXTERNAL_ID_MAX))
    elif not external_id.isprintable():
        errors["external_id"] = str(_l("Only printable characters."))
    if errors:
        raise DomainError(errors)
    session = get_session()
    client_id = client if isinstance(client, int) else client.id
    try:
        locked = lock_client(client_id, session)
        row = post(locked, "adjustment", value, description=description, gross=value, external_id=external_id)
        session.commit()
    except Exception:
        session.rollback()
        raise
    return row


# -- reading a client's ledger --------------------------------------------------------------------------
SORTS = ("date", "type", "net", "gross", "balance")
SORT_DIRECTIONS = ("asc", "desc")
DEFAULT_SORT = ("date", "desc")
SEARCH_MAX = 100
MAX_PAGE = 10**6
MAX_PAGE_SIZE = 500


@dataclass
class LedgerFilters:
    search: str = ""
    type: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None


def parse_filters(args: Mapping[str, Any]) -> tuple[LedgerFilters, dict[str, str]]:
    """Filters of the Transactions tab from request arguments (q, type, date_from, date_to); bad values are
    dropped and reported in the errors dict."""
    filters = LedgerFilters()
    errors: dict[str, str] = {}
    filters.search = str(args.get("q") or "").strip()[:SEARCH_MAX]
    kind = str(args.get("type") or "").strip()
    if kind in TRANSACTION_TYPES:
        filters.type = kind
    elif kind:
        errors["type"] = str(_l("Not a valid choice."))
    for name in ("date_from", "date_to"):
        try:
            setattr(filters, name, parse_date_arg(args.get(name)))
        except ValueError:
            errors[name] = str(_l("Enter a date like 2025-01-31."))
    return filters, errors


def parse_sort(sort: Any, direction: Any) -> tuple[str, str]:
    sort = str(sort or "").strip()
    if sort not in SORTS:
        return DEFAULT_SORT
    direction = str(direction or "").strip().lower()
    return sort, direction if direction in SORT_DIRECTIONS else "desc"


@dataclass
class LedgerEntry:
    """One ledger row with what its line shows of related rows (read in the same query)."""

    tx: Transaction
    invoice_number: str | None = None
    invoice_type: str | None = None
    invoice_status: str | None = None
    service_label: str | None = None
    author: str | None = None
    impersonator: str | None = None


@dataclass
class LedgerPage:
    entries: list[LedgerEntry]
    page: int
    page_size: int
    has_next: bool
    sort: str
    direction: str
    filters: LedgerFilters = field(default_factory=LedgerFilters)


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def client_transactions(
    client_id: int,
    *,
    search: str = "",
    type: str | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    sort: str = DEFAULT_SORT[0],
    direction: str = DEFAULT_SORT[1],
    page: int = 1,
    page_size: int = 50,
) -> LedgerPage:
    """One page of a client's ledger, newest first by default: ONE statement (the rows with their currency,
    invoice number, service label, author and impersonator joined; page_size + 1 rows fetched to know whether
    another page follows). `search` matches the description, the transaction id or the gateway; the date
    range is inclusive (UTC dates). The caller has checked the client is in scope."""
    sort, direction = parse_sort(sort, direction)
    page = min(max(1, int(page)), MAX_PAGE)
    page_size = min(max(1, int(page_size)), MAX_PAGE_SIZE)
    author = aliased(User, name="author")
    impersonator = aliased(User, name="impersonator")
    service_label = func.coalesce(
        func.nullif(Service.admin_label, ""), func.nullif(Service.client_label, ""), Product.name
    )
    stmt = (
        select(
            Transaction,
            Invoice.number,
            Invoice.type,
            Invoice.status,
            service_label,
            author.username,
            impersonator.username,
        )
        .outerjoin(Invoice, Invoice.id == Transaction.invoice_id)
        .outerjoin(Service, Service.id == Transaction.service_id)
        .outerjoin(Product, Product.id == Service.product_id)
        .outerjoin(author, author.id == Transaction.author_id)
        .outerjoin(impersonator, impersonator.id == Transaction.impersonator_id)
        .where(Transaction.client_id == client_id)
    )
    search = str(search or "").strip()[:SEARCH_MAX]
    if search:
        pattern = _like(search)
        stmt = stmt.where(or_(
            Transaction.description.ilike(pattern, escape="\\"),
            Transaction.external_id.ilike(pattern, escape="\\"),
            Transaction.gateway.ilike(pattern, escape="\\"),
        ))
    if type:
        stmt = stmt.where(Transaction.type == type)
    if date_from:
        stmt = stmt.where(Transaction.created_at >= dt.datetime.combine(date_from, dt.time.min))
    if date_to and date_to < dt.date.max:
        stmt = stmt.where(Transaction.created_at < dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time.min))
    # Ids grow with time (rows are appended under the client's lock), so the id orders by date exactly.
    column = {
        "date": Transaction.id,
        "type": Transaction.type,
        "net": Transaction.net,
        "gross": Transaction.gross,
        "balance": Transaction.balance_after,
    }[sort]
    order = [column.desc() if direction == "desc" else column.asc()]
    if sort != "date":
        order.append(Transaction.id.desc() if direction == "desc" else Transaction.id.asc())
    stmt = stmt.order_by(*order).limit(page_size + 1).offset((page - 1) * page_size)
    rows = get_session().execute(stmt).all()
    entries = [
        LedgerEntry(tx, number, inv_type, inv_status, label, author_name, impersonator_name)
        for tx, number, inv_type, inv_status, label, author_name, impersonator_name in rows[:page_size]
    ]
    return LedgerPage(
        entries=entries,
        page=page,
        page_size=page_size,
        has_next=len(rows) > page_size,
        sort=sort,
        direction=direction,
        filters=LedgerFilters(search, type, date_from, date_to),
    )


def recent_transactions(client_id: int, limit: int = 5) -> list[Transaction]:
    """The client's last `limit` ledger rows, newest first (one statement)."""
    stmt = (
        select(Transaction)
        .where(Transaction.client_id == client_id)
        .order_by(Transaction.id.desc())
        .limit(limit)
    )
    return list(get_session().scalars(stmt))
