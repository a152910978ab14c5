"""Charging rules: what a service costs for which period, and posting that charge to the ledger.

Prepaid from the balance, in advance:
- month-based periods (monthly … triennially, PERIOD_MONTHS) run calendar months; a period that starts on
  a day the next month lacks ends on that month's last day, and the following period returns to the
  anchor day (activation day): Jan 31 → Feb 28 → Mar 31 (with the anchor) — never drifting to the 28th;
- hourly, daily, weekly, bi-weekly run their fixed number of hours;
- one-time is charged once: period (start, None), and never again for that service;
- a monthly price of a product with hourly billing is charged per started hour in advance: each charge
  covers one hour at hourly_rate(monthly, start) = monthly ÷ (days in start's month × 24), 4 places half-up;
- the idle amount replaces base while `service.idle`; the setup amount is charged once (charge_setup).

Idempotency: one charge row per (service, period start) — the partial unique index on the ledger makes a
duplicate impossible, and `charge_period` checks first under the client's row lock, so a re-run or a second
worker charges nothing twice and gets None back. The setup fee is a charge row with period_start = NULL
(so it is outside that unique index; NULLs never collide) and period_stop = NULL; `service.setup_charged`,
read and set under the client lock, makes it once-only.

A zero amount posts no ledger row (free plans would otherwise fill the ledger with 0.00 rows); the period
still counts as paid (paid_until advances).

No request objects here: the Celery billing engine reuses these functions unchanged.
"""
from __future__ import annotations

import calendar
import datetime as dt
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..domain import DomainError
from ..domain.session import get_session
from ..models import PERIOD_HOURS, PERIOD_MONTHS, Client, Service, Transaction
from . import ledger as ledger_domain
from .catalog import period_label
from .money import ZERO, ledger

HOUR = dt.timedelta(hours=1)


def add_months(moment: dt.datetime, months: int, day: int | None = None) -> dt.datetime:
    """`moment` moved by whole calendar months, on `day` (default: moment's day) clamped to the target
    month's last day; the time of day is kept."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return moment.replace(year=year, month=month, day=min(day or moment.day, last))


def period_bounds(
    period: str, start: dt.datetime, anchor: dt.datetime | None = None, anchor_day: int | None = None
) -> tuple[dt.datetime, dt.datetime | None]:
    """(start, stop) of the billing period beginning at `start`. Month-based periods end on the anchor's
    day of the month (default: start's day), clamped to the month's end; hour-based ones after their hours;
    one_time → (start, None). ValueError for an unknown period."""
    if period == "one_time":
        return start, None
    if period in PERIOD_MONTHS:
        return start, add_months(start, PERIOD_MONTHS[period], day=anchor_day or (anchor or start).day)
    hours = PERIOD_HOURS.get(period)
    if not hours:
        raise ValueError(f"unknown billing period {period!r}")
    return start, start + dt.timedelta(hours=hours)


def days_in_month(moment: dt.datetime | dt.date) -> int:
    return calendar.monthrange(moment.year, moment.month)[1]


def hourly_rate(monthly_amount: Decimal, moment: dt.datetime | dt.date) -> Decimal:
    """Hourly price of a monthly amount in the month of `moment`: monthly ÷ (days × 24), 4 places half-up."""
    return ledger(Decimal(monthly_amount) / Decimal(days_in_month(moment) * 24))


def _price(service: Service):
    price = service.price
    if price is None or service.product is None:
        raise DomainError(str(_l("The service has no product price.")))
    return price


def is_hourly_billed(service: Service) -> bool:
    """A monthly price of a product with hourly billing: charged per started hour."""
    price = _price(service)
    return bool(service.product.hourly_billing) and price.period == "monthly"


def charge_bounds(service: Service, start: dt.datetime) -> tuple[dt.datetime, dt.datetime | None]:
    """(start, stop) of the charge that begins at `start`: one hour for hourly-billed monthly plans,
    otherwise the price's whole period (anchored on the activation day)."""
    if is_hourly_billed(service):
        return start, start + HOUR
    return period_bounds(_price(service).period, start, anchor_day=billing_anchor_day(service))


def billing_anchor_day(service: Service) -> int | None:
    """The day of the month that month-based periods end on: the day billing resumed after a suspension,
    else the activation day (None: the period's own start day)."""
    if service.billing_anchor_day:
        return service.billing_anchor_day
    return service.activated_at.day if service.activated_at is not None else None


def charge_amount(service: Service, start: dt.datetime) -> Decimal:
    """What the charge beginning at `start` costs (setup excluded): idle or base amount, per hour for
    hourly-billed monthly plans. 4 places."""
    price = _price(service)
    amount = price.idle if service.idle else price.base
    if is_hourly_billed(service):
        return hourly_rate(amount, start)
    return ledger(amount)


def setup_amount(service: Service) -> Decimal:
    """The setup fee still to charge (0 once charged)."""
    if service.setup_charged:
        return ZERO
    return ledger(_price(service).setup)


def first_charges(service: Service, start: dt.datetime) -> Decimal:
    """Setup (if not charged yet) + the first charge from `start`: what activation needs covered."""
    return setup_amount(service) + charge_amount(service, start)


def covered(client: Client, amount: Decimal) -> bool:
    """balance + credit limit ≥ amount (the rule for activating and for keeping a service running)."""
    return client.balance + (client.credit_limit or ZERO) >= amount


def describe(service: Service, what: str) -> str:
    """Ledger description "Product (label) — what"."""
    name = service.product.name if service.product is not None else str(_l("Service #%(id)d", id=service.id))
    label = service.client_label or service.admin_label
    if label:
        name = f"{name} ({label})"
    return f"{name} — {what}"


def _period_text(service: Service) -> str:
    period = period_label(_price(service).period)
    if is_hourly_billed(service):
        return str(_l("%(period)s, billed hourly", period=period))
    return period


# Services that can be charged (activation sets "active" before its first charge).
CHARGEABLE = ("active", "suspended")


def _check_chargeable(client_locked: Client, service: Service) -> None:
    """The service belongs to the locked client, is active or suspended, and is priced in the client's
    currency (the ledger is kept in the client's currency; a client whose currency changed after ordering
    must not be charged another currency's amount)."""
    if service.client_id != client_locked.id:
        raise ValueError("service does not belong to the locked client")
    if service.status not in CHARGEABLE:
        raise DomainError(str(_l("Only an active or suspended service is charged.")))
    price = _price(service)
    if price.currency_id != client_locked.currency_id:
        raise DomainError(str(_l("The service's price is in another currency than the client's.")))


def already_charged(service: Service, start: dt.datetime) -> bool:
    """A charge row for this service and period start exists (one-time: any period charge exists)."""
    query = select(Transaction.id).where(Transaction.type == "charge", Transaction.service_id == service.id)
    if _price(service).period == "one_time":
        query = query.where(Transaction.period_start.is_not(None))
    else:
        query = query.where(Transaction.period_start == start)
    return get_session().scalar(query.limit(1)) is not None


def charge_period(client_locked: Client, service: Service, start: dt.datetime) -> Transaction | None:
    """Charge the period of `service` beginning at `start` from the balance and move service.paid_until to
    its end (one-time: paid_until stays None). `client_locked` must come from ledger.lock_client (held until
    the caller commits). Returns the ledger row, or None when that period was already charged (nothing
    changes) or costs nothing (paid_until still advances). The caller decides whether funds suffice."""
    _check_chargeable(client_locked, service)
    if already_charged(service, start):
        return None
    start, stop = charge_bounds(service, start)
    amount = charge_amount(service, start)
    row = None
    if amount:
        row = ledger_domain.post(
            client_locked,
            "charge",
            -amount,
            description=describe(service, _period_text(service)),
            service_id=service.id,
            period_start=start,
            period_stop=stop,
        )
    if stop is not None and (service.paid_until is None or stop > service.paid_until):
        service.paid_until = stop
    return row


def charge_setup(client_locked: Client, service: Service) -> Transaction | None:
    """Charge the setup fee once (service.setup_charged guards it under the client lock). The row has
    period_start = period_stop = NULL. Returns the row, or None when already charged or the fee is 0."""
    _check_chargeable(client_locked, service)
    if service.setup_charged:
        return None
    amount = setup_amount(service)
    service.setup_charged = True
    if not amount:
        return None
    return ledger_domain.post(
        client_locked,
        "charge",
        -amount,
        description=describe(service, str(_l("Setup fee"))),
        service_id=service.id,
    )
