"""The ledger: the only way a balance changes.

`post` writes one immutable row and moves the client's balance in the caller's transaction; the caller must
hold the client's row lock (`lock_client`) from before it read anything it decides on until it commits.
Lock order everywhere: invoice → client → document counter.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..domain import NotFound, activity
from ..domain.session import get_session
from ..models import Client, Transaction
from . import clock
from .money import ZERO, ledger


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
