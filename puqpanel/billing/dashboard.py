"""The client-area dashboard's numbers (DESIGN.md "Core flows" 4): service counters, the recurring cost
breakdown and the recommended add-funds amount. Domain only: every function reads a client's services with a
fixed number of SQL aggregates, whatever the number of services.

Rules shared by the money figures:
- only services whose price is in the client's (current) currency count — a service left in another currency
  after the client's currency changed is not added to amounts of a different currency;
- an idle service (Service.idle) costs its price's idle amount instead of the base amount, as the charge job
  bills it.
"""
from __future__ import annotations

import datetime as dt
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction

from sqlalchemy import and_, case, func, or_, select

from ..domain.session import get_session
from ..models import PERIOD_HOURS, Client, ProductPrice, Service, Transaction
from ..models.base import Money
from . import clock, money
from .invoicing import add_funds_limits

DUE_WINDOW = dt.timedelta(days=30)
# Multiples of the hourly cost in the breakdown (hours per day, week, 30-day month, 365-day year).
BREAKDOWN_HOURS = {"hourly": 1, "daily": 24, "weekly": 168, "monthly": 720, "yearly": 8760}
_RUNNING = ("active", "suspended")


def _sum(expression):
    return func.sum(expression, type_=Money)


def _amount():
    """One period's amount of a service: the idle amount when the service is idle, else the base."""
    return case((Service.idle.is_(True), ProductPrice.idle), else_=ProductPrice.base)


def _priced_in_client_currency(client_id: int):
    """Services of the client joined to their price, restricted to prices in the client's currency."""
    return (
        select()
        .select_from(Service)
        .join(ProductPrice, ProductPrice.id == Service.price_id)
        .join(Client, Client.id == Service.client_id)
        .where(Service.client_id == client_id, ProductPrice.currency_id == Client.currency_id)
    )


def service_counters(client_id: int) -> dict[str, int]:
    """{"total", "active", "suspended", "termination_requested"} for the client, in one query.
    total = active + suspended + pending; termination_requested = active or suspended services with a
    termination request (Service.termination_requested_at set). Counts all services whatever their price's
    currency. Terminated and cancelled services are not counted anywhere."""
    running = Service.status.in_(_RUNNING)

    def count(condition):
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    row = get_session().execute(
        select(
            count(Service.status.in_((*_RUNNING, "pending"))),
            count(Service.status == "active"),
            count(Service.status == "suspended"),
            count(and_(running, Service.termination_requested_at.is_not(None))),
        ).where(Service.client_id == client_id)
    ).one()
    return {"total": int(row[0]), "active": int(row[1]), "suspended": int(row[2]),
            "termination_requested": int(row[3])}


def _half_up(value: Fraction) -> Decimal:
    """An exact rational rounded to the ledger's 4 places, half-up (away from zero), without an intermediate
    rounding."""
    scaled = abs(value) * 10_000
    units, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest >= scaled.denominator:
        units += 1
    return money.ledger(Decimal(-units if value < 0 else units).scaleb(-4))


def recurring_cost(client_id: int) -> dict[str, Decimal]:
    """{"hourly", "daily", "weekly", "monthly", "yearly"}: what the client's running services cost, in the
    client's currency, 4 places.

    hourly = Σ amount ÷ PERIOD_HOURS[period] over active and suspended services WITHOUT a termination request,
    one-time prices excluded; amount = the price's base, or its idle amount for an idle service; only prices
    in the client's currency. daily = hourly × 24, weekly × 168, monthly × 720, yearly × 8760 (so "monthly" is
    30 days, not a calendar month, and a monthly price of 10 shows as 10.0000 per month).

    Rounding: the per-period sums come from SQL (one grouped query by period), the hourly sum is kept exact as a
    rational number (no rounding of 10 ÷ 720), every figure is derived from that unrounded hourly sum and only
    the results are rounded to 4 places half-up — so monthly of a 10/month price is 10.0000, not 0.0139 × 720.
    """
    rows = get_session().execute(
        _priced_in_client_currency(client_id)
        .add_columns(ProductPrice.period, _sum(_amount()))
        .where(Service.status.in_(_RUNNING), Service.termination_requested_at.is_(None),
               ProductPrice.period != "one_time")
        .group_by(ProductPrice.period)
    ).all()
    hourly = Fraction(0)
    for period, total in rows:
        hours = PERIOD_HOURS.get(period)
        if hours and total:
            hourly += Fraction(total) / hours
    return {name: _half_up(hourly * hours) for name, hours in BREAKDOWN_HOURS.items()}


def recommended_add_funds(client_id: int, now: dt.datetime | None = None) -> Decimal:
    """What the client should add to cover the services due within 30 days (DESIGN.md "Core flows" 4), in the
    client's currency, 2 places rounded UP to the cent (ROUND_CEILING), so paying it never leaves a fraction
    of a cent missing. `now` defaults to billing.clock.now().

    Σ of one period's amount (base, or idle for an idle service) of:
    - pending services, always, plus their price's setup while the setup is not charged yet
      (Service.setup_charged false) — one-time prices included;
    - active and suspended services due by now + 30 days (paid_until unset or <= now + 30 days), without a
      termination request (those end when their paid period ends and are not charged again), one-time prices
      excluded (a one-time price is charged once, at activation).
    A monthly price of a product with hourly billing counts one month's price (its base), like any monthly
    price. Only prices in the client's currency count. One query (a single SUM)."""
    horizon = (now if now is not None else clock.now()) + DUE_WINDOW
    pending = Service.status == "pending"
    due_running = and_(
        Service.status.in_(_RUNNING),
        Service.termination_requested_at.is_(None),
        ProductPrice.period != "one_time",
        or_(Service.paid_until.is_(None), Service.paid_until <= horizon),
    )
    unpaid_setup = case((and_(pending, Service.setup_charged.is_(False)), ProductPrice.setup), else_=money.ZERO)
    periods, setups = get_session().execute(
        _priced_in_client_currency(client_id)
        .add_columns(_sum(_amount()), _sum(unpaid_setup))
        .where(or_(pending, due_running))
    ).one()
    total = (periods or money.ZERO) + (setups or money.ZERO)
    return Decimal(total).quantize(money.INVOICE_PLACES, rounding=ROUND_CEILING)


def add_funds_needed(client: Client, now: dt.datetime | None = None) -> Decimal:
    """recommended_add_funds + any negative balance (as a positive amount), rounded up to the cent, before the
    add-funds limits: 0.00 when nothing is due and the balance is not negative."""
    wanted = recommended_add_funds(client.id, now)
    if client.balance < 0:
        wanted += -client.balance
    return wanted.quantize(money.INVOICE_PLACES, rounding=ROUND_CEILING)


def add_funds_suggestion(client: Client, now: dt.datetime | None = None) -> Decimal:
    """The amount the Add Funds page proposes: recommended_add_funds + any negative balance (as a positive
    amount), clamped into the client's add-funds limits (billing.invoicing.add_funds_limits: min … max, where
    max already accounts for the maximum balance). When nothing is due the suggestion is the minimum. When no
    top-up is possible (max < min: the balance is at its maximum) the suggestion is 0.00."""
    wanted = add_funds_needed(client, now)
    limits = add_funds_limits(client)
    if limits.max < limits.min:
        return Decimal("0.00")
    return min(max(wanted, limits.min), limits.max)


def balance_history(client_id: int, days: int = 30, now: dt.datetime | None = None) -> list[tuple[dt.date, Decimal]]:
    """The client's balance at the end of each of the last `days` days (UTC dates), oldest first, today last
    (today's value: the balance as of `now`, default billing.clock.now()), from the ledger
    (Transaction.balance_after): a day without a transaction keeps the previous day's balance; the first day
    starts from the last ledger row before the window (0 without one).

    Two queries whatever the number of days and rows: the last row before the window, and the last row of each
    day in the window (MAX(id) per day — ids grow with time, rows being appended under the client's lock)."""
    days = max(1, int(days))
    now = now if now is not None else clock.now()
    today = now.date()
    first = today - dt.timedelta(days=days - 1)
    start = dt.datetime.combine(first, dt.time.min)
    session = get_session()
    opening = session.scalar(
        select(Transaction.balance_after)
        .where(Transaction.client_id == client_id, Transaction.created_at < start)
        .order_by(Transaction.id.desc())
        .limit(1)
    )
    in_window = and_(Transaction.client_id == client_id, Transaction.created_at >= start,
                     Transaction.created_at <= now)
    last_of_day = (
        select(func.max(Transaction.id).label("id"))
        .where(in_window)
        .group_by(func.date(Transaction.created_at))
        .subquery()
    )
    closing = {
        created.date(): after
        for created, after in session.execute(
            select(Transaction.created_at, Transaction.balance_after)
            .join(last_of_day, last_of_day.c.id == Transaction.id)
        )
    }
    balance = money.ledger(opening if opening is not None else money.ZERO)
    history: list[tuple[dt.date, Decimal]] = []
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        if day in closing:
            balance = money.ledger(closing[day])
        history.append((day, balance))
    return history
