"""Bulk test data for the billing engine's large tests, and the outcome a billing cycle should have on it.

Two halves, deliberately independent of each other's implementation and of the engine:

1. **Creating data fast** (`create_catalog`, `insert_clients`, `insert_services`, `build_mix`): set-based
   inserts through SQLAlchemy Core (`insert(Table)` with a list of dicts: one executemany each), explicit ids.
   - Clients get their starting balance through real ledger rows: one `adjustment` row each (balance_before
     0, balance_after = amount) and `Client.balance` set to the same, so `ledger.verify()` holds from the
     start.
   - Services are inserted in the state activation (and earlier billing) leaves behind: active ones with
     `activated_at` and `paid_until` set. **The periods before `paid_until` count as paid by this setup**:
     no ledger rows are written for them (nor for one-time services, which are inserted as already charged:
     active, paid_until NULL). Suspended, pending, terminated and cancelled services are inserted likewise.
   - Ids are explicit. Two sentinel services come first (a staff suspension and a due service priced in
     the other currency: candidates of the unsuspend / charge / suspend jobs forever), so every chunk range
     starts at `first` or `first + 1` whatever ran before; a client's services are consecutive ids that never
     contain an id ≡ first (mod `block`), so no client spans two chunks when the chunk size is `block`.

2. **The expected outcome** (`simulate_cycle`): plain Python over the generated rows — no engine code — from
   DESIGN.md "Core flows" 2 and 3 and the rules the engine documents (billing/engine/charge.py, lifecycle.py):
   - cancel: pending, unpaid, older than the cancellation delay;
   - the charge rule (`Model.charge_round`), per client: each due service's candidates are its periods started
     by `at` (hour-based periods and hourly-billed monthly plans: every one, at most MAX_PERIODS; month-based:
     the next one), its total their sum; services taken by (total, id), each **wholly or not at all**: charged
     iff balance + credit limit cover the running sum of the totals up to and including it (never-auto-suspend
     clients: everything);
   - create in id order when balance + credit limit cover setup + first charge + what the charge rule takes
     from the client's running due services (its first round — with whole services that is what the charge
     job will charge, except the later rounds of a month-based catch-up of several periods, which neither the
     engine's reservation nor this one counts; the mix has no such catch-up);
   - unsuspend non-payment suspensions whose charges at reactivation (every period started by `at` from the
     resume point: paid-until moved on by the suspended time, at most `at`; re-anchored there) fit after that
     same reservation, cheapest first;
   - charge: rounds of the charge rule, repeated while a service charged in the round is still due (month-based
     catch-up); hourly rate monthly ÷ (days × 24) half-up to 4 places;
   - suspend: the due services of non-exempt clients that the charge rule would not charge now (after the charge
     job: exactly those it left);
   - terminate on request once paid-until passed, and non-payment suspensions older than the termination delay.
   It returns every ledger row the cycle must write, the final state of every service, final balances, the
   sets of services cancelled / created / unsuspended / suspended / terminated, and (counterfactual run)
   services suspended only because of a reactivation. `simulate_again` runs it once more on that result.
"""
from __future__ import annotations

import calendar
import datetime as dt
import random
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import func, insert, select, text

D = Decimal
Q4 = Decimal("0.0001")
HOUR = dt.timedelta(hours=1)
MAX_PERIODS = 24 * 31  # periods of one service charged per round at most

MONTHS = {"monthly": 1, "quarterly": 3, "semiannually": 6, "annually": 12, "biennially": 24, "triennially": 36}
HOURS = {"hourly": 1, "daily": 24, "weekly": 168, "biweekly": 336}

SERVICE_KEYS = ("id", "client_id", "product_id", "price_id", "status", "status_reason", "suspension_kind",
                "provision_status", "idle", "created_at", "activated_at", "suspended_at", "terminated_at",
                "cancelled_at", "termination_requested_at", "paid_until", "setup_charged", "billing_anchor_day")


# -- catalog -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PriceInfo:
    key: str
    id: int
    product_id: int
    currency_id: int
    currency: str
    period: str
    setup: Decimal
    base: Decimal
    idle: Decimal
    hourly_billing: bool
    termination_delay_hours: int
    cancellation_delay_hours: int


# product name → (hourly billing, termination delay h, cancellation delay h,
#                 {period: {currency: (setup, base, idle)}})
CATALOG = {
    # 9.2628 / 744 = 0.01245 exactly: March's hourly rate is a half-up tie (0.0125); February: 0.0138.
    "Cloud S": (True, 48, 48, {"monthly": {"EUR": ("1", "9.2628", "1"), "USD": ("1", "10.19", "1.1")},
                                "daily": {"EUR": ("0", "0.31", "0.05"), "USD": ("0", "0.34", "0.06")}}),
    "Cloud M": (True, 48, 48, {"monthly": {"EUR": ("0", "29.99", "3.5"), "USD": ("0", "32.99", "3.85")}}),
    "Cloud L": (True, 72, 48, {"monthly": {"EUR": ("0", "120", "0"), "USD": ("0", "131.5", "0")}}),
    "Backup": (False, 48, 48, {"daily": {"EUR": ("0", "0.35", "0"), "USD": ("0", "0.39", "0")},
                                "weekly": {"EUR": ("0", "2.1", "0"), "USD": ("0", "2.3", "0")}}),
    "Mail": (False, 48, 48, {"weekly": {"EUR": ("0", "1.99", "0.5"), "USD": ("0", "2.19", "0.55")},
                              "biweekly": {"EUR": ("0", "3.5", "0"), "USD": ("0", "3.85", "0")}}),
    "Hosting": (False, 168, 48, {"monthly": {"EUR": ("5", "4.99", "1"), "USD": ("5.5", "5.49", "1.1")},
                                  "quarterly": {"EUR": ("5", "13.5", "0"), "USD": ("5.5", "14.85", "0")}}),
    "Domain": (False, 24, 48, {"annually": {"EUR": ("0", "12", "0"), "USD": ("0", "13.2", "0")}}),
    "Licence": (False, 48, 48, {"one_time": {"EUR": ("0", "49", "0"), "USD": ("0", "53.9", "0")}}),
    "Free tier": (False, 48, 48, {"daily": {"EUR": ("0", "0", "0"), "USD": ("0", "0", "0")},
                                   "monthly": {"EUR": ("0", "0", "0"), "USD": ("0", "0", "0")}}),
}


def create_catalog(session) -> dict[str, PriceInfo]:
    """Currencies EUR (default) and USD, the CATALOG products and prices (ORM: a few dozen rows).
    Keys: "Product/period/CUR"."""
    from puqpanel.models import Currency, Product, ProductPrice

    currencies = {}
    for code, default, rate in (("EUR", True, "1"), ("USD", False, "1.1")):
        currency = session.scalar(select(Currency).where(Currency.code == code))
        if currency is None:
            currency = Currency(code=code, is_default=default, exchange_rate=D(rate))
            session.add(currency)
            session.flush()
        currencies[code] = currency.id
    prices: dict[str, PriceInfo] = {}
    for name, (hourly, term_delay, cancel_delay, periods) in CATALOG.items():
        product = Product(name=name, hourly_billing=hourly, termination_delay_hours=term_delay,
                          cancellation_delay_hours=cancel_delay)
        session.add(product)
        session.flush()
        for period, per_currency in periods.items():
            for code, (setup, base, idle) in per_currency.items():
                price = ProductPrice(product_id=product.id, currency_id=currencies[code], period=period,
                                     setup=D(setup), base=D(base), idle=D(idle))
                session.add(price)
                session.flush()
                key = f"{name}/{period}/{code}"
                prices[key] = PriceInfo(key, price.id, product.id, currencies[code], code, period, D(setup),
                                        D(base), D(idle), hourly, term_delay, cancel_delay)
    session.commit()
    return prices


# -- bulk inserts --------------------------------------------------------------------------------------------

def next_id(session, table: str) -> int:
    return (session.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar() or 0) + 1


def _fix_sequence(session, table: str) -> None:
    """PostgreSQL: move the id sequence past explicitly inserted ids."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                             f"(SELECT coalesce(max(id), 1) FROM {table}))"))


def insert_clients(session, rows: list[dict], moment: dt.datetime) -> None:
    """Clients (dicts with id, currency_id, balance, credit_limit, never_auto_suspend, firstname, lastname),
    each non-zero starting balance as one 'adjustment' ledger row. One Core insert per table; commits."""
    from puqpanel.models import Client, Transaction

    if not rows:
        return
    session.execute(insert(Client.__table__), [
        {"id": r["id"], "firstname": r.get("firstname", "Bulk"), "lastname": r.get("lastname", f"Client {r['id']}"),
         "currency_id": r["currency_id"], "status": "active", "balance": r["balance"],
         "credit_limit": r.get("credit_limit", D(0)), "never_auto_suspend": r.get("never_auto_suspend", False),
         "created_at": moment, "updated_at": moment} for r in rows])
    funded = [r for r in rows if r["balance"] != 0]
    if funded:
        session.execute(insert(Transaction.__table__), [
            {"client_id": r["id"], "type": "adjustment", "gross": r["balance"], "net": r["balance"], "fees": D(0),
             "balance_before": D(0), "balance_after": r["balance"], "currency_id": r["currency_id"],
             "description": "Starting balance (test data)", "gateway": "", "external_id": "",
             "created_at": moment} for r in funded])
    _fix_sequence(session, "puq_client")
    session.commit()


def insert_services(session, rows: list[dict]) -> None:
    """Services (dicts with every key of SERVICE_KEYS) in one Core insert; commits."""
    from puqpanel.models import Service

    if not rows:
        return
    session.execute(insert(Service.__table__), [{key: r[key] for key in SERVICE_KEYS} for r in rows])
    _fix_sequence(session, "puq_service")
    session.commit()


# -- the mix -------------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    at: dt.datetime
    prices: dict[str, PriceInfo]
    prices_by_id: dict[int, PriceInfo]
    clients: list[dict]
    services: list[dict]
    block: int
    first_service_id: int
    categories: dict[int, str] = field(default_factory=dict)  # client id → category


def _minute(moment: dt.datetime) -> dt.datetime:
    return moment.replace(second=0, microsecond=0)


def _service(sid: int, client_id: int, price: PriceInfo, **values) -> dict:
    row = {key: None for key in SERVICE_KEYS}
    row.update(id=sid, client_id=client_id, product_id=price.product_id, price_id=price.id, status="active",
               status_reason="", suspension_kind="", provision_status="completed", idle=False,
               setup_charged=True)
    row.update(values)
    return row


# Periodic prices an active service is given, with weights.
PERIODIC = (("Cloud S/monthly", 12), ("Cloud M/monthly", 14), ("Cloud L/monthly", 6), ("Cloud S/daily", 4),
            ("Backup/daily", 12), ("Backup/weekly", 6), ("Mail/weekly", 6), ("Mail/biweekly", 4),
            ("Hosting/monthly", 16), ("Hosting/quarterly", 4), ("Domain/annually", 8), ("Free tier/daily", 2),
            ("Free tier/monthly", 2))


def _paid_state(rnd: random.Random, price: PriceInfo, at: dt.datetime, due: bool) -> dict:
    """activated_at, paid_until (and sometimes billing_anchor_day) of a periodic service that is due at `at`
    (a few hours / days late) or not (paid ahead)."""
    values: dict = {}
    hourly = price.hourly_billing and price.period == "monthly"
    if price.period in MONTHS and not hourly:
        if due:
            paid_until = _minute(at - dt.timedelta(minutes=rnd.randint(0, 6 * 24 * 60)))
        else:
            paid_until = _minute(at + dt.timedelta(minutes=rnd.randint(1, 20 * 24 * 60)))
        last_day = calendar.monthrange(paid_until.year, paid_until.month)[1]
        anchor = paid_until.day
        if paid_until.day == last_day and rnd.random() < 0.7:
            anchor = rnd.randint(last_day, 31)  # a period ended on the month's last day: anchored later
        years = 1 if price.period != "annually" else rnd.randint(1, 3)
        values["activated_at"] = dt.datetime(paid_until.year - years, 1, anchor, paid_until.hour, paid_until.minute)
        if rnd.random() < 0.1:  # re-anchored by an earlier unsuspension: the anchor wins over activated_at
            values["activated_at"] = values["activated_at"].replace(day=rnd.randint(1, 28))
            values["billing_anchor_day"] = anchor
    else:
        late = 30 * 60 if hourly else (
            3 * 24 * 60 + 600 if price.period == "daily" else HOURS[price.period] * 60 - 1)
        if due:
            paid_until = _minute(at - dt.timedelta(minutes=rnd.randint(0, late)))
        else:
            paid_until = _minute(at + dt.timedelta(minutes=rnd.randint(1, 59 if hourly else late)))
        values["activated_at"] = paid_until - dt.timedelta(days=rnd.randint(2, 400), minutes=rnd.randint(0, 59))
    values["paid_until"] = paid_until
    return values


def build_mix(session, *, n_services: int, at: dt.datetime, block: int, seed: int = 4,
              prices: dict[str, PriceInfo] | None = None, fixpoint: bool = False) -> Dataset:
    """About `n_services` services over ~n_services / 3.3 clients (EUR and USD), inserted in bulk.

    Client categories: rich (everything covered), limited (a few euros, some with a credit limit: part of
    their due services is charged cheapest first, the rest suspended), broke (nothing covered; old
    non-payment suspensions get terminated), exempt (never_auto_suspend, little money: charged anyway).
    Service states: active and due (hourly-billed monthly plans up to 30 hours late, daily up to ~3.4 days,
    weekly, bi-weekly, calendar monthly / quarterly / annually with month-end anchors, idle ones, free
    plans), active and paid ahead, termination requests (due or not), non-payment suspensions (with funds →
    unsuspended; without, old → terminated), staff suspensions, one-time (already charged), terminated and
    cancelled ones, pending ones (old → cancelled, young → created when funded), and a few priced in the
    other currency than their client's (never charged, reported). Plus (not in fixpoint mode) one client
    at the month edge: an hourly-billed plan whose unpaid hours began in the previous, shorter month, with
    funds for one of this month's hours but not for the previous month's.

    `fixpoint`: limited and broke clients get no suspended or pending services and no hourly-billed plans — a
    mix on which a second
    cycle at the same moment has nothing left to do (see `simulate_again`), for tests that run the cycle
    more than once or concurrently and compare with one cycle's outcome."""
    rnd = random.Random(seed)
    prices = prices or create_catalog(session)
    moment = at - dt.timedelta(days=800)
    client_id = next_id(session, "puq_client")
    first = sid = next_id(session, "puq_service")
    clients: list[dict] = []
    services: list[dict] = []
    categories: dict[int, str] = {}
    periodic_keys = [key for key, _ in PERIODIC]
    periodic_weights = [w for _, w in PERIODIC]

    def pick(currency: str) -> PriceInfo:
        while True:
            price = prices[f"{rnd.choices(periodic_keys, periodic_weights)[0]}/{currency}"]
            # fixpoint: no hourly-billed plan for those who can't pay everything — suspended after a February
            # hour it couldn't pay, such a plan would be reactivated by the next cycle at March's lower rate
            if not (fixpoint and category in ("limited", "broke") and price.hourly_billing
                    and price.period == "monthly"):
                return price

    # Two sentinels fix every job's first candidate for good, so that chunk boundaries stay where the
    # placement below expects them, whatever ran before: service `first` (suspended by staff: an unsuspend
    # candidate forever) and `first + 1` (due, priced in the other currency: never charged, a charge and
    # suspend candidate forever). Chunk ranges then start at `first` or `first + 1`; a client whose ids
    # contain no id ≡ first (mod block) is never cut by either.
    for index, (category, currency) in enumerate((("rich", "EUR"), ("rich", "USD"))):
        clients.append({"id": client_id, "currency_id": prices[f"Backup/daily/{currency}"].currency_id,
                        "balance": D("10000"), "credit_limit": D("0"), "never_auto_suspend": False,
                        "lastname": f"sentinel {client_id}"})
        categories[client_id] = category
        if index == 0:
            row = _service(sid, client_id, prices["Hosting/monthly/EUR"], status="suspended",
                           suspension_kind="staff", provision_status="suspended", status_reason="Abuse report",
                           suspended_at=at - dt.timedelta(days=3), activated_at=at - dt.timedelta(days=40),
                           paid_until=at - dt.timedelta(days=4))
        else:
            row = _service(sid, client_id, prices["Hosting/monthly/EUR"], activated_at=at - dt.timedelta(days=40),
                           paid_until=at - dt.timedelta(days=4))
        row["created_at"] = at - dt.timedelta(days=41)
        services.append(row)
        sid += 1
        client_id += 1

    if not fixpoint:
        # An hourly-billed plan whose unpaid hours began in the previous month: 0.17 covers none of February's
        # hours (120 / 672 = 0.1786) but one of March's (120 / 744 = 0.1613).
        month_start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        clients.append({"id": client_id, "currency_id": prices["Cloud L/monthly/EUR"].currency_id,
                        "balance": D("0.17"), "credit_limit": D("0"), "never_auto_suspend": False,
                        "lastname": f"month edge {client_id}"})
        categories[client_id] = "limited"
        services.append(_service(sid, client_id, prices["Cloud L/monthly/EUR"], created_at=at - dt.timedelta(days=60),
                                 activated_at=at - dt.timedelta(days=59), paid_until=month_start - HOUR))
        sid += 1
        client_id += 1

    while len(services) < n_services:
        category = rnd.choices(("rich", "limited", "broke", "exempt"), (80, 9, 6, 5))[0]
        currency = "USD" if rnd.random() < 0.2 else "EUR"
        other = "EUR" if currency == "USD" else "USD"
        count = min(rnd.choices((1, 2, 3, 4, 5, 6, 7), (14, 20, 20, 18, 14, 8, 6))[0], n_services - len(services))
        boundary = first + -(-(sid - first) // block) * block  # the next id ≡ first (mod block), ≥ sid
        if boundary < sid + count:
            sid = boundary + 1  # skip it: the client starts after the boundary
        balance, credit = D("10000"), D("0")
        if category == "limited":
            balance = D(rnd.randint(50, 2500)) / 100
            if rnd.random() < 0.3:
                credit = D(rnd.choice((5, 10, 20)))
        elif category == "broke":
            balance = D("0") if rnd.random() < 0.6 else D("-2.5")
            credit = D("0") if balance == 0 else D("5")
        elif category == "exempt":
            balance = D(rnd.randint(0, 300)) / 100
        clients.append({"id": client_id, "currency_id": prices[f"Backup/daily/{currency}"].currency_id,
                        "balance": balance, "credit_limit": credit, "never_auto_suspend": category == "exempt",
                        "lastname": f"{category} {client_id}"})
        categories[client_id] = category
        pending_used = False
        for index in range(count):
            roll = rnd.random()
            if fixpoint and category in ("limited", "broke") and 0.76 <= roll < 0.935:
                roll = 0.0  # no suspended / pending services for clients that can't pay everything
            if roll < 0.62:  # active, due
                price = pick(currency)
                row = _service(sid, client_id, price, **_paid_state(rnd, price, at, True))
                row["idle"] = rnd.random() < 0.06
            elif roll < 0.72:  # active, paid ahead
                price = pick(currency)
                row = _service(sid, client_id, price, **_paid_state(rnd, price, at, False))
            elif roll < 0.76:  # termination requested (due or not)
                price = pick(currency)
                row = _service(sid, client_id, price, **_paid_state(rnd, price, at, rnd.random() < 0.6))
                row["termination_requested_at"] = at - dt.timedelta(hours=rnd.randint(1, 300))
                if rnd.random() < 0.2:
                    row.update(status="suspended", suspension_kind="non_payment", provision_status="suspended",
                               suspended_at=at - dt.timedelta(hours=rnd.randint(1, 20)))
            elif roll < 0.84:  # suspended for non-payment: recently or long ago
                price = pick(currency)
                row = _service(sid, client_id, price, **_paid_state(rnd, price, at, True))
                hours = rnd.choice((2, 10, 30, 100, 200, 400))
                row.update(status="suspended", suspension_kind="non_payment", provision_status="suspended",
                           status_reason="Insufficient funds for the next charge",
                           suspended_at=at - dt.timedelta(hours=hours))
                row["paid_until"] = min(row["paid_until"], row["suspended_at"])
            elif roll < 0.86:  # suspended by staff: the engine leaves it alone
                price = pick(currency)
                row = _service(sid, client_id, price, **_paid_state(rnd, price, at, True))
                row.update(status="suspended", suspension_kind="staff", provision_status="suspended",
                           status_reason="Abuse report", suspended_at=at - dt.timedelta(hours=500))
            elif roll < 0.89:  # one-time, already charged
                price = prices[f"Licence/one_time/{currency}"]
                row = _service(sid, client_id, price, activated_at=at - dt.timedelta(days=rnd.randint(1, 300)))
                if rnd.random() < 0.15:
                    row["termination_requested_at"] = at - dt.timedelta(hours=3)
            elif roll < 0.91:  # terminated / cancelled long ago
                price = pick(currency)
                if rnd.random() < 0.5:
                    row = _service(sid, client_id, price, status="terminated", provision_status="terminated",
                                   activated_at=at - dt.timedelta(days=90), terminated_at=at - dt.timedelta(days=9),
                                   paid_until=at - dt.timedelta(days=10))
                else:
                    row = _service(sid, client_id, price, status="cancelled", provision_status="cancelled",
                                   setup_charged=False, cancelled_at=at - dt.timedelta(days=20))
            elif roll < 0.935 and not pending_used:  # pending: old (→ cancelled) or young (→ created if funded)
                pending_used = True
                price = prices[rnd.choice(("Hosting/monthly", "Cloud S/monthly", "Backup/daily",
                                           "Licence/one_time")) + f"/{currency}"]
                age = rnd.choice((2, 30, 100, 500))
                row = _service(sid, client_id, price, status="pending", provision_status="pending",
                               setup_charged=False)
                row["created_at"] = at - dt.timedelta(hours=age)
            elif roll < 0.95 and category == "rich":  # priced in the other currency: not charged, reported
                price = pick(other)
                row = _service(sid, client_id, price, **_paid_state(rnd, price, at, True))
            else:  # active, due (more of them)
                price = pick(currency)
                row = _service(sid, client_id, price, **_paid_state(rnd, price, at, True))
            if row["created_at"] is None:
                row["created_at"] = (row["activated_at"] or at - dt.timedelta(days=30)) - dt.timedelta(hours=1)
            services.append(row)
            sid += 1
        client_id += 1
    insert_clients(session, clients, moment)
    insert_services(session, services)
    return Dataset(at=at, prices=prices, prices_by_id={p.id: p for p in prices.values()}, clients=clients,
                   services=services, block=block, first_service_id=first, categories=categories)


# -- the expected outcome ------------------------------------------------------------------------------------

def add_months(moment: dt.datetime, months: int, day: int) -> dt.datetime:
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    return moment.replace(year=year, month=month, day=min(day, calendar.monthrange(year, month)[1]))


@dataclass
class Expected:
    rows: dict[tuple[int, dt.datetime | None], tuple[int, dt.datetime | None, Decimal]]  # (service, start) →
    # (client, stop, amount) of every charge row the cycle writes (setup fees: start None)
    services: dict[int, dict]  # final state per service id
    balances: dict[int, Decimal]
    cancelled: set[int]
    created: set[int]
    insufficient: set[int]
    unsuspended: set[int]
    suspended: set[int]
    terminated: set[int]
    skipped_currency: int
    charge_job_amounts: dict[str, Decimal]  # what the charge job (not activation) charged, per currency
    charge_job_periods: int  # periods the charge job moved paid_until over (zero amounts included)
    straddling: list[str]  # clients partially covered in a job whose services span two of its chunks
    # services suspended only because the cycle reactivated or created another service of their client
    # (the same cycle without those reactivations / creations would not suspend them) — what the unsuspend
    # and create jobs' reservation is there to prevent
    flips: list[str] = field(default_factory=list)


class Model:
    """The billing cycle at `at` over plain dicts (copies of the inserted rows)."""

    def __init__(self, data: Dataset, chunk_size: int, frozen: frozenset[int] = frozenset()):
        self.frozen = frozen  # clients whose services the create and unsuspend jobs leave alone
        self.at = data.at
        self.chunk_size = chunk_size
        self.price = data.prices_by_id
        self.clients = {c["id"]: dict(c) for c in data.clients}
        self.services = {s["id"]: dict(s) for s in data.services}
        self.funds = {c["id"]: c["balance"] for c in data.clients}  # balance
        self.currency_code = {p.currency_id: p.currency for p in data.prices.values()}
        self.of_client: dict[int, list[dict]] = {}
        for s in self.services.values():
            self.of_client.setdefault(s["client_id"], []).append(s)

    # rules ------------------------------------------------------------------------------------------------
    def hourly(self, s) -> bool:
        p = self.price[s["price_id"]]
        return p.hourly_billing and p.period == "monthly"

    def amount(self, s, start: dt.datetime) -> Decimal:
        p = self.price[s["price_id"]]
        base = p.idle if s["idle"] else p.base
        if self.hourly(s):
            days = calendar.monthrange(start.year, start.month)[1]
            return (base / (days * 24)).quantize(Q4, rounding=ROUND_HALF_UP)
        return base.quantize(Q4)

    def stop(self, s, start: dt.datetime) -> dt.datetime | None:
        p = self.price[s["price_id"]]
        if p.period == "one_time":
            return None
        if self.hourly(s):
            return start + HOUR
        if p.period in MONTHS:
            anchor = s["billing_anchor_day"] or (s["activated_at"].day if s["activated_at"] else start.day)
            return add_months(start, MONTHS[p.period], anchor)
        return start + dt.timedelta(hours=HOURS[p.period])

    def started_periods(self, s, start: dt.datetime | None = None) -> list[tuple[dt.datetime, dt.datetime]]:
        """(start, stop) of the periods from paid_until (or `start`) on that have started by `at`
        (month-based: only the next one — a catch-up of several calendar periods takes a round each)."""
        start = start or s["paid_until"]
        if self.price[s["price_id"]].period in MONTHS and not self.hourly(s):
            return [(start, self.stop(s, start))]
        periods = []
        while start <= self.at and len(periods) < MAX_PERIODS:
            periods.append((start, self.stop(s, start)))
            start = periods[-1][1]
        return periods

    def charge_round(self, client_id: int, sids: list[int]) -> tuple[list[tuple], bool]:
        """One round of the charge rule for a client's due services `sids`. Each service's candidates are
        its periods started by `at` (month-based: the next one); its total is their sum. Services are taken
        by (total, id); a service is charged wholly — all its candidates — iff the client is never-auto-
        suspend or balance + credit limit (as the round starts) cover the running sum of the totals of all
        services up to and including it, otherwise not at all. Returns the chosen services as (total,
        service id, [(seq, amount, start, stop), …]) in that order, and whether every service was chosen."""
        services = []
        for sid in sids:
            s = self.services[sid]
            periods = [(seq, self.amount(s, start), start, stop)
                       for seq, (start, stop) in enumerate(self.started_periods(s))]
            services.append((sum((row[1] for row in periods), D(0)), sid, periods))
        services.sort(key=lambda item: (item[0], item[1]))
        exempt, funds = self.clients[client_id]["never_auto_suspend"], self.available(client_id)
        cum, chosen = D(0), []
        for total, sid, periods in services:
            cum += total
            if exempt or funds >= cum:
                chosen.append((total, sid, periods))
        return chosen, len(chosen) == len(services)

    def reserved(self, client_id: int) -> Decimal:
        """What the create and unsuspend jobs set aside: what the charge rule takes from the client's running
        due services now — the charge job's first round (never-auto-suspend clients: nothing)."""
        if self.clients[client_id]["never_auto_suspend"]:
            return D(0)
        running = [s["id"] for s in self.of_client[client_id] if self.due(s) and self.same_currency(s)]
        return sum((total for total, _sid, _periods in self.charge_round(client_id, running)[0]), D(0))

    def available(self, client_id: int) -> Decimal:
        return self.funds[client_id] + self.clients[client_id]["credit_limit"]

    def same_currency(self, s) -> bool:
        return self.price[s["price_id"]].currency_id == self.clients[s["client_id"]]["currency_id"]

    def due(self, s) -> bool:
        return (s["status"] == "active" and s["termination_requested_at"] is None and s["paid_until"] is not None
                and s["paid_until"] <= self.at and self.price[s["price_id"]].period != "one_time")

    def _chunk_check(self, job: str, candidates: list[int], contested: set[int]) -> None:
        if not candidates:
            return
        low = min(candidates)
        blocks: dict[int, set[int]] = {}
        for sid in candidates:
            blocks.setdefault(self.services[sid]["client_id"], set()).add((sid - low) // self.chunk_size)
        for client_id in sorted(contested):
            if len(blocks.get(client_id, ())) > 1:
                self.out.straddling.append(f"{job}: client {client_id} in chunks {sorted(blocks[client_id])}")

    @staticmethod
    def _by_client(items):
        grouped: dict[int, list] = {}
        for item in items:
            grouped.setdefault(item[0], []).append(item[1:])
        return grouped

    # the cycle --------------------------------------------------------------------------------------------
    def run(self) -> Expected:
        at = self.at
        self.out = out = Expected({}, {}, {}, set(), set(), set(), set(), set(), set(), 0, {}, 0, [])
        S = self.services

        # cancel: pending, never provisioned, setup not charged, older than the cancellation delay
        for s in S.values():
            p = self.price[s["price_id"]]
            if (s["status"] == "pending" and s["provision_status"] == "pending" and not s["setup_charged"]
                    and s["created_at"] + dt.timedelta(hours=p.cancellation_delay_hours) <= at):
                s.update(status="cancelled", provision_status="cancelled")
                out.cancelled.add(s["id"])

        # create: in id order; balance + credit limit cover setup + first charge + what the charge job will
        # charge the client's running services (never-auto-suspend clients: nothing set aside)
        for sid in sorted(S):
            s = S[sid]
            if s["status"] != "pending" or s["provision_status"] != "pending" or s["client_id"] in self.frozen:
                continue
            p = self.price[s["price_id"]]
            setup = D(0) if s["setup_charged"] else p.setup.quantize(Q4)
            first = self.amount(s, at)
            if not self.same_currency(s) or \
                    self.available(s["client_id"]) < setup + first + self.reserved(s["client_id"]):
                out.insufficient.add(sid)
                continue
            s.update(status="active", provision_status="completed", activated_at=at, setup_charged=True)
            if setup:
                self._charge(s, None, None, setup)
            stop = self.stop(s, at)
            if first:
                self._charge(s, at, stop, first)
            if stop is not None:
                s["paid_until"] = stop
            out.created.add(sid)

        # unsuspend: non-payment suspensions without a termination request whose charges at reactivation
        # the funds cover after what the charge job will charge the client's running services; the
        # suspended ones cheapest first; never-auto-suspend clients: all. The suspended time is not billed,
        # the unpaid running time before the suspension is: billing resumes at paid_until + (at -
        # suspended_at), at most `at` (a paid-until still ahead stays), month periods re-anchored there; the
        # charges at reactivation are every period started by `at` from there (month-based: the next one).
        candidates = [sid for sid, s in S.items() if s["status"] == "suspended"]
        items = []
        resume_at = {}
        for sid in candidates:
            s = S[sid]
            if (s["suspension_kind"] == "non_payment" and s["termination_requested_at"] is None
                    and self.same_currency(s) and s["client_id"] not in self.frozen):
                paid = s["paid_until"]
                resume = paid
                if paid is not None and paid < at:
                    resume = min(at, paid + (at - (s["suspended_at"] or paid)))
                resume_at[sid] = resume
                if self.price[s["price_id"]].period == "one_time":
                    amount = D(0)
                elif resume > at:
                    amount = self.amount(s, resume)
                else:
                    amount = sum((self.amount(s, start) for start, _stop in self.started_periods(s, resume)), D(0))
                items.append((s["client_id"], amount, sid))
        contested = set()
        for client_id, group in self._by_client(items).items():
            exempt = self.clients[client_id]["never_auto_suspend"]
            cum, chosen = self.reserved(client_id), []
            for amount, sid in sorted(group):
                cum += amount
                if exempt or self.available(client_id) >= cum:
                    chosen.append(sid)
            if 0 < len(chosen) < len(group):
                contested.add(client_id)
            for sid in chosen:
                s = S[sid]
                s.update(status="active", provision_status="completed", suspension_kind="")
                if resume_at[sid] != s["paid_until"]:
                    s.update(paid_until=resume_at[sid], billing_anchor_day=resume_at[sid].day)
                out.unsuspended.add(sid)
        self._chunk_check("unsuspend", candidates, contested)

        # charge: rounds of the charge rule (charge_round) over all the client's due services, repeated while
        # a service charged in the round is still due (a month-based catch-up: one period per round)
        candidates = [sid for sid, s in S.items() if s["status"] == "active" and s["paid_until"] is not None
                      and s["paid_until"] <= at]
        due = [sid for sid in candidates if self.due(S[sid])]
        out.skipped_currency = sum(1 for sid in due if not self.same_currency(S[sid]))
        per_client = self._by_client([(S[sid]["client_id"], sid) for sid in due if self.same_currency(S[sid])])
        contested = set()
        for client_id, sids in per_client.items():
            open_ = [sid for (sid,) in sids]
            while True:
                chosen, complete = self.charge_round(client_id, open_)
                if not complete:
                    contested.add(client_id)
                moved: dict[int, dt.datetime] = {}
                for _total, sid, periods in chosen:
                    for _seq, amount, start, stop in periods:
                        if amount:
                            self._charge(S[sid], start, stop, amount)
                            code = self.currency_code[self.clients[client_id]["currency_id"]]
                            out.charge_job_amounts[code] = out.charge_job_amounts.get(code, D(0)) + amount
                        out.charge_job_periods += 1
                        moved[sid] = max(stop, moved.get(sid, stop))
                for sid, stop in moved.items():
                    S[sid]["paid_until"] = stop
                open_ = [sid for sid in open_ if S[sid]["paid_until"] <= at]
                if not any(stop <= at for stop in moved.values()):
                    break
        self._chunk_check("charge", candidates, contested)

        # suspend: the due services of non-exempt clients that the charge rule would not charge now
        per_client = self._by_client([(S[sid]["client_id"], sid) for sid in sorted(S)
                                      if self.due(S[sid]) and self.same_currency(S[sid])])
        for client_id, sids in per_client.items():
            if self.clients[client_id]["never_auto_suspend"]:
                continue
            open_ = [sid for (sid,) in sids]
            charged = {sid for _total, sid, _periods in self.charge_round(client_id, open_)[0]}
            for sid in open_:
                if sid not in charged:
                    S[sid].update(status="suspended", provision_status="suspended", suspension_kind="non_payment",
                                  suspended_at=at)
                    out.suspended.add(sid)

        # terminate: requested and the paid period over; non-payment suspension older than the delay
        for sid, s in S.items():
            if s["status"] not in ("active", "suspended"):
                continue
            requested = s["termination_requested_at"]
            if requested is not None:
                if requested <= at and (s["paid_until"] is None or s["paid_until"] <= at):
                    s.update(status="terminated", provision_status="terminated", suspension_kind="")
                    out.terminated.add(sid)
            elif (s["status"] == "suspended" and s["suspension_kind"] == "non_payment" and s["suspended_at"]
                  + dt.timedelta(hours=self.price[s["price_id"]].termination_delay_hours) <= at):
                s.update(status="terminated", provision_status="terminated", suspension_kind="")
                out.terminated.add(sid)

        out.services = S
        out.balances = dict(self.funds)
        return out

    def _charge(self, s, start, stop, amount: Decimal) -> None:
        key = (s["id"], start)
        assert key not in self.out.rows, f"model charged {key} twice"
        self.out.rows[key] = (s["client_id"], stop, amount)
        self.funds[s["client_id"]] -= amount


def simulate_cycle(data: Dataset, chunk_size: int) -> Expected:
    expected = Model(data, chunk_size).run()
    # Counterfactual: the same cycle without the reactivations / creations of the clients that had both.
    services = {s["id"]: s for s in data.services}
    revived = {services[sid]["client_id"] for sid in expected.unsuspended | expected.created}
    both = frozenset(services[sid]["client_id"] for sid in expected.suspended) & revived
    if both:
        without = Model(data, chunk_size, frozen=both).run()
        for sid in sorted(expected.suspended - without.suspended):
            client_id = services[sid]["client_id"]
            revived_ids = sorted(x for x in expected.unsuspended | expected.created
                                 if services[x]["client_id"] == client_id)
            expected.flips.append(f"service {sid} (client {client_id}) suspended because of {revived_ids}")
    return expected


def simulate_again(data: Dataset, expected: Expected, chunk_size: int) -> Expected:
    """The same cycle once more, on the state `expected` left behind."""
    clients = [dict(c, balance=expected.balances[c["id"]]) for c in data.clients]
    services = [dict(expected.services[s["id"]]) for s in data.services]
    again = Dataset(data.at, data.prices, data.prices_by_id, clients, services, data.block, data.first_service_id,
                    data.categories)
    return Model(again, chunk_size).run()


# -- reading the engine's result -----------------------------------------------------------------------------

def charge_rows(session) -> dict[tuple[int, dt.datetime | None], tuple[int, dt.datetime | None, Decimal]]:
    """Every charge row in the ledger, keyed like Expected.rows (a duplicate key fails loudly)."""
    from puqpanel.models import Transaction

    rows: dict = {}
    for service_id, start, client_id, stop, net in session.execute(
            select(Transaction.service_id, Transaction.period_start, Transaction.client_id, Transaction.period_stop,
                   Transaction.net).where(Transaction.type == "charge")):
        assert (service_id, start) not in rows or start is None, f"two charges of {(service_id, start)}"
        rows[(service_id, start)] = (client_id, stop, -net)
    return rows


def charge_row_count(session) -> int:
    from puqpanel.models import Transaction

    return session.scalar(select(func.count()).select_from(Transaction).where(Transaction.type == "charge"))


def _diff(actual: dict, expected: dict, limit: int = 8) -> str:
    keys = sorted(set(actual) | set(expected), key=repr)
    lines = [f"{k}: engine {actual.get(k)!r} expected {expected.get(k)!r}" for k in keys
             if actual.get(k) != expected.get(k)]
    return f"{len(lines)} differ:\n" + "\n".join(lines[:limit])


SERVICE_FIELDS = ("status", "provision_status", "paid_until", "suspension_kind", "billing_anchor_day")


def assert_outcome(session, data: Dataset, expected: Expected) -> None:
    """The database holds exactly the expected result: no duplicate charge of any (service, period start),
    the ledger's charge rows (count, totals per currency and per client, then row by row), every balance,
    every service's final state, and a ledger that verifies."""
    from puqpanel.billing.ledger import verify
    from puqpanel.models import Client, Service, Transaction

    session.rollback()
    duplicates = session.execute(
        select(Transaction.service_id, Transaction.period_start, func.count())
        .where(Transaction.type == "charge", Transaction.period_start.is_not(None))
        .group_by(Transaction.service_id, Transaction.period_start).having(func.count() > 1).limit(5)).all()
    assert duplicates == [], f"charged twice: {duplicates}"
    actual = charge_rows(session)
    assert charge_row_count(session) == len(expected.rows), _diff(actual, expected.rows)
    adjustments = sum(1 for c in data.clients if c["balance"] != 0)
    assert session.scalar(select(func.count()).select_from(Transaction)) == adjustments + len(expected.rows)
    codes = {p.currency_id: p.currency for p in data.prices.values()}
    currency_of = {c["id"]: codes[c["currency_id"]] for c in data.clients}

    def totals(rows):
        per_currency: dict[str, Decimal] = {}
        per_client: dict[int, Decimal] = {}
        for client_id, _stop, amount in rows.values():
            per_currency[currency_of[client_id]] = per_currency.get(currency_of[client_id], D(0)) + amount
            per_client[client_id] = per_client.get(client_id, D(0)) + amount
        return per_currency, per_client

    (actual_currency, actual_client), (expected_currency, expected_client) = totals(actual), totals(expected.rows)
    assert actual_currency == expected_currency
    assert actual_client == expected_client, _diff(actual_client, expected_client)
    assert actual == expected.rows, _diff(actual, expected.rows)
    balances = dict(session.execute(select(Client.id, Client.balance)).all())
    assert balances == expected.balances, _diff(balances, expected.balances)
    actual_services = {row[0]: tuple(row[1:]) for row in session.execute(
        select(Service.id, *(getattr(Service, f) for f in SERVICE_FIELDS)))}
    expected_services = {sid: tuple(s[f] for f in SERVICE_FIELDS) for sid, s in expected.services.items()}
    assert actual_services == expected_services, _diff(actual_services, expected_services)
    assert verify() == []
