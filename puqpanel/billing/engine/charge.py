"""The charge job: every active service whose paid-until has passed and that has no termination request is
charged its next period in advance, set-based, one service-id range (chunk) per transaction.

Per chunk:
1. the clients the chunk decides — those whose lowest-id due service lies in its range (owned_clients), so
   each client is decided in one transaction with all its due services, wherever their ids lie — are locked
   (ORDER BY id FOR UPDATE on PostgreSQL, so two workers meeting on one client wait for each other instead
   of deadlocking; SQLite serialises writers);
2. a *round* charges, for every due service the funds cover, the periods that start at its paid-until —
   the one period, or (when some service of the chunk has more than one started) every period started by
   the run's moment, up to MAX_ROUNDS: ledger rows by INSERT … SELECT … ON CONFLICT DO NOTHING (the unique
   key (service, period start) makes a second charge of a period impossible), paid-until moved to the last
   period's end, balances moved by the sum of what was inserted — on PostgreSQL one statement of
   data-modifying CTEs;
3. a run after a 5-hour outage so charges the 5 missed hours of an hourly-billed plan and the current one
   in one round, **each period its own ledger row** (one row per (service, period start), so the unique
   key keeps guarding every hour); rounds repeat only while a charged service is still due (more than
   MAX_ROUNDS periods behind);
4. one activity entry per client charged in a round ("automation.charge": periods, amount, run) — written by
   the same statement (more rounds, and entries, only for a service more than MAX_ROUNDS periods behind).

Funds: per client (with all its due services, step 1), due services are taken cheapest first (by what all
their started periods cost), each wholly or not at all, while balance + credit limit covers the running
total; the rest stay due and the suspend job, which applies the same rule, suspends them — so a service is
either charged or suspended, never left running unpaid. Clients with the never-auto-suspend flag are charged whatever their balance (their
debt grows instead).

Amounts and period ends are computed in SQL exactly as `charging.charge_amount` / `charge_bounds` do
(hourly rate = monthly ÷ (days in that month × 24), 4 places half-up; calendar months on the anchor day).
Services priced in another currency than their client's are not charged and are reported.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import text

from ...models import PERIODS
from ..catalog import period_label
from .counts import Counts
from .sql import MONTH_PERIODS, Dialect, hours_case, months_case, typed_text

# A chunk stops after this many rounds (periods per service); what is still due is charged next run.
MAX_ROUNDS = 24 * 31

def due(a: str = "s") -> str:
    """An active service (alias `a`) without a termination request whose paid-until has passed."""
    return f"{a}.status = 'active' AND {a}.termination_requested_at IS NULL AND {a}.paid_until <= :at"


DUE = f"s.id BETWEEN :lo AND :hi AND {due()}"


def owned_clients(condition) -> str:
    """SQL selecting the clients a chunk decides: those whose LOWEST-id service matching `condition` (a
    function alias → SQL) lies in the chunk's range [:lo, :hi]. Their matching services outside the range
    are decided with them, so the funds rule (per client, cheapest first) sees all of a client's services
    in one transaction, however far apart their ids are; every client is decided by exactly one chunk."""
    return (f"SELECT DISTINCT s.client_id FROM puq_service s WHERE s.id BETWEEN :lo AND :hi AND {condition('s')} "
            f"AND NOT EXISTS (SELECT 1 FROM puq_service o WHERE o.client_id = s.client_id AND o.id < :lo "
            f"AND {condition('o')})")


def chunk_join(d: Dialect) -> str:
    """JOIN restricting `s` to the clients lock_clients locked for this chunk."""
    if d.name == "postgresql":
        return "JOIN unnest(CAST(:ids AS integer[])) AS own(client_id) ON own.client_id = s.client_id"
    return "JOIN temp.puq_chunk_clients own ON own.client_id = s.client_id"


def chunk_where(d: Dialect, a: str = "s") -> str:
    """WHERE condition: `a`'s client is one this chunk locked."""
    if d.name == "postgresql":
        return f"{a}.client_id = ANY(CAST(:ids AS integer[]))"
    return f"{a}.client_id IN (SELECT client_id FROM temp.puq_chunk_clients)"


def chunk_clients_select(d: Dialect) -> str:
    """SELECT of the client ids this chunk locked."""
    if d.name == "postgresql":
        return "SELECT unnest(CAST(:ids AS integer[]))"
    return "SELECT client_id FROM temp.puq_chunk_clients"



def _description(d: Dialect) -> str:
    """"Product (label) — Monthly[, billed hourly]" as charging.describe builds it (labels bound)."""
    labels = " ".join(f"WHEN '{p}' THEN :label_{p}" for p in PERIODS)
    return (
        "substr(pr.name || CASE WHEN s.client_label <> '' THEN ' (' || s.client_label || ')' "
        "WHEN s.admin_label <> '' THEN ' (' || s.admin_label || ')' ELSE '' END || ' — ' || "
        f"CASE WHEN {d.hourly_billed()} THEN :label_hourly_billed ELSE CASE p.period {labels} END END, 1, 255)"
    )


def label_params() -> dict[str, str]:
    from flask_babel import lazy_gettext as _l

    params = {f"label_{p}": period_label(p) for p in PERIODS}
    params["label_hourly_billed"] = str(_l("%(period)s, billed hourly", period=period_label("monthly")))
    return params


def _chosen(d: Dialect, expand: bool = False) -> str:
    """The periods to charge in this round, with `cum` (the client's running total in charging order, for
    the balance chain). Candidates: for every due service of the range its next period, or with `expand`
    every period started by :at (at most MAX_ROUNDS; more rounds only beyond that).

    Funds decide per service, all or nothing: a client's services are taken by what they cost in this round
    (their `service_total`), cheapest first, while balance + credit limit covers the running sum
    (`service_cum`); a service that doesn't fit is not charged at all — the suspend job, which applies the
    same rule, suspends exactly those. Never-auto-suspend clients are charged everything.

    The first round of a chunk expands only when some service has more than one period started (an outage,
    a long --at jump): the usual case stays a plain statement without a set-returning join."""
    month_based = f"(p.period IN ({', '.join(repr(p) for p in MONTH_PERIODS)}) AND NOT {d.hourly_billed()})"
    step = f"(CASE WHEN {d.hourly_billed()} THEN 1 ELSE {hours_case('p.period')} END)"
    months = months_case("p.period")
    joins = """
                    FROM puq_service s
                    JOIN puq_product_price p ON p.id = s.price_id
                    JOIN puq_product pr ON pr.id = p.product_id
                    JOIN puq_client c ON c.id = s.client_id {clients}"""
    where = f"WHERE {due()} AND p.period <> 'one_time' AND p.currency_id = c.currency_id"
    if expand:
        # Three layers keep every expression shallow (SQLite's parser has a small stack): the service and
        # period number k, then the period's bounds, then its amount (the hourly rate of its own month).
        count = (f"(CASE WHEN {month_based} THEN {d.months_to_at('s.paid_until')} / {months} + 1 "
                 f"ELSE {d.periods_started('s.paid_until', step)} END)")
        periods = f"""
            SELECT b.service_id, b.client_id, b.seq, b.period_start, b.period_stop,
                   CASE WHEN b.hourly = 1 THEN {d.hourly_amount('b.base', 'b.period_start')} ELSE b.base END AS amount,
                   b.description, b.currency_id, b.balance, b.credit_limit, b.exempt
            FROM (
                SELECT a.*,
                       CASE WHEN a.seq = 0 THEN a.paid_until
                            WHEN a.month_based = 1 THEN {d.add_months_on_day('a.paid_until', 'a.seq * a.months', 'a.anchor')}
                            ELSE {d.add_hours('a.paid_until', 'a.seq * a.step')} END AS period_start,
                       CASE WHEN a.month_based = 1
                            THEN {d.add_months_on_day('a.paid_until', '(a.seq + 1) * a.months', 'a.anchor')}
                            ELSE {d.add_hours('a.paid_until', '(a.seq + 1) * a.step')} END AS period_stop
                FROM (
                    SELECT s.id AS service_id, s.client_id AS client_id, k.n AS seq, s.paid_until AS paid_until,
                           {d.anchor_day('s.paid_until')} AS anchor, {months} AS months, {step} AS step,
                           CASE WHEN {month_based} THEN 1 ELSE 0 END AS month_based,
                           CASE WHEN {d.hourly_billed()} THEN 1 ELSE 0 END AS hourly,
                           {d.base_amount()} AS base, {_description(d)} AS description,
                           c.currency_id AS currency_id, c.balance AS balance, c.credit_limit AS credit_limit,
                           c.never_auto_suspend AS exempt
                    {joins}
                    {d.numbers(f"LEAST_({count}, {MAX_ROUNDS})")}
                    {where}
                ) a
            ) b
            WHERE b.period_start <= :at"""
        total = "SUM(due.amount) OVER (PARTITION BY due.service_id)"
    else:
        periods = f"""
                    SELECT s.id AS service_id, s.client_id AS client_id, 0 AS seq, s.paid_until AS period_start,
                           {d.charge_stop('s.paid_until')} AS period_stop, {d.charge_amount('s.paid_until')} AS amount,
                           {_description(d)} AS description, c.currency_id AS currency_id,
                           c.balance AS balance, c.credit_limit AS credit_limit, c.never_auto_suspend AS exempt
                    {joins}
                    {where}"""
        total = "due.amount"
    order = "ORDER BY t.service_total, t.service_id, t.seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    return f"""
        SELECT r.* FROM (
            SELECT t.*,
                   SUM(CASE WHEN t.seq = 0 THEN t.service_total ELSE 0 END) OVER (
                       PARTITION BY t.client_id {order}) AS service_cum,
                   SUM(t.amount) OVER (PARTITION BY t.client_id {order}) AS cum
            FROM (
                SELECT due.*, {total} AS service_total
                FROM ({periods}) due
            ) t
        ) r
        WHERE r.exempt OR r.balance + r.credit_limit >= r.service_cum
    """


_INSERT_COLUMNS = ("client_id, type, gross, net, fees, balance_before, balance_after, currency_id, description, "
                   "service_id, period_start, period_stop, gateway, external_id, created_at")
_INSERT_VALUES = ("client_id, 'charge', -amount, -amount, 0, balance - cum + amount, balance - cum, currency_id, "
                  "description, service_id, period_start, period_stop, '', '', :at")


class ChargeConflict(RuntimeError):
    """A period of a due service was already in the ledger: the data disagree, nothing was charged."""


def lock_clients(session, d: Dialect, clients_sql: str, params: dict) -> list[int]:
    """Lock the clients selected by `clients_sql` (usually owned_clients(...)) in id order and remember
    them for chunk_join / chunk_where (params["ids"] on PostgreSQL, a temp table on SQLite); their ids."""
    if d.name == "postgresql":
        ids = list(session.execute(typed_text(
            f"SELECT c.id FROM puq_client c WHERE c.id IN ({clients_sql}) ORDER BY c.id FOR UPDATE OF c"),
            params).scalars())
    else:  # a write takes SQLite's database lock first: writers are serialised, reads are then current
        session.execute(typed_text(f"UPDATE puq_client SET id = id WHERE id IN ({clients_sql})"), params)
        session.execute(text("CREATE TEMP TABLE IF NOT EXISTS puq_chunk_clients (client_id INTEGER PRIMARY KEY)"))
        session.execute(text("DELETE FROM temp.puq_chunk_clients"))
        session.execute(typed_text(f"INSERT INTO temp.puq_chunk_clients {clients_sql}"), params)
        ids = list(session.execute(text("SELECT client_id FROM temp.puq_chunk_clients ORDER BY client_id")).scalars())
    params["ids"] = ids
    return ids


def round_sql_postgres(d: Dialect, expand: bool = False) -> str:
    """One round on PostgreSQL: a single statement of data-modifying CTEs."""
    chosen = _chosen(d, expand).format(clients=chunk_join(d))
    return f"""
        WITH chosen AS ({chosen}),
        ins AS (
            INSERT INTO puq_transaction ({_INSERT_COLUMNS})
            SELECT {_INSERT_VALUES} FROM chosen WHERE amount > 0 ORDER BY client_id, cum, service_id
            ON CONFLICT DO NOTHING
            RETURNING client_id, currency_id, net
        ),
        moved AS (
            UPDATE puq_service s SET paid_until = m.stop
            FROM (SELECT service_id, max(period_stop) AS stop FROM chosen GROUP BY service_id) m
            WHERE s.id = m.service_id RETURNING m.stop AS period_stop
        ),
        per_client AS (SELECT client_id, count(*) AS periods, sum(net) AS total FROM ins GROUP BY client_id),
        bal AS (
            UPDATE puq_client c SET balance = c.balance + t.total FROM per_client t
            WHERE c.id = t.client_id RETURNING c.id
        ),
        logged AS ({_log_insert(d, "per_client")} RETURNING 1)
        SELECT 'moved', CAST(NULL AS integer), (SELECT count(*) FROM moved), (SELECT count(*) FROM moved WHERE period_stop <= :at)
        UNION ALL SELECT 'expected', NULL, (SELECT count(*) FROM chosen WHERE amount > 0), (SELECT count(*) FROM chosen)
        UNION ALL SELECT 'bal', NULL, (SELECT count(*) FROM bal), (SELECT count(*) FROM logged)
        UNION ALL SELECT 'ins', currency_id, count(*), sum(net) FROM ins GROUP BY currency_id
    """


def _round_postgres(session, d: Dialect, params: dict, expand: bool) -> tuple[int, int, int, dict, int]:
    sql = round_sql_postgres(d, expand)
    still_due = expected = inserted = logged = periods = 0
    amounts: dict[int, Decimal] = {}
    for kind, currency_id, count, value in session.execute(typed_text(sql), params):
        if kind == "moved":  # (services moved on, of which still due)
            still_due = value
        elif kind == "expected":
            expected, periods = count, value
        elif kind == "bal":
            logged = value
        elif kind == "ins":
            inserted += count
            amounts[currency_id] = -Decimal(value)
    if inserted != expected:
        raise ChargeConflict(f"{expected - inserted} period(s) were already charged")
    return periods, inserted, still_due, amounts, logged


def _log_insert(d: Dialect, source: str) -> str:
    """INSERT of one "automation.charge" activity entry per row of `source` (client_id, periods, total)."""
    changes = d.json_object("'periods'", "periods", "'amount'", d.money_text("total"), "'run'",
                            "CAST(:run_id AS integer)")
    return f"""
        INSERT INTO puq_activity_log (created_at, actor_id, impersonator_id, client_id, action, object_type,
                                      object_id, changes, description, ip)
        SELECT :at, NULL, NULL, client_id, 'automation.charge', 'automation_run', CAST(:run_id AS integer),
               {changes}, :log_text, ''
        FROM {source}
    """


_STAGE = """
    CREATE TEMP TABLE IF NOT EXISTS puq_charge_stage (
        service_id INTEGER, client_id INTEGER, seq INTEGER, period_start TEXT, period_stop TEXT,
        amount INTEGER, description TEXT, currency_id INTEGER, balance INTEGER, credit_limit INTEGER,
        exempt INTEGER, service_total INTEGER, service_cum INTEGER, cum INTEGER)
"""


def _round_sqlite(session, d: Dialect, params: dict, expand: bool) -> tuple[int, int, int, dict, int]:
    session.execute(text(_STAGE))
    session.execute(text("DELETE FROM temp.puq_charge_stage"))
    session.execute(typed_text(f"INSERT INTO temp.puq_charge_stage {_chosen(d, expand).format(clients=chunk_join(d))}"), params)
    inserted = session.execute(typed_text(
        f"INSERT INTO puq_transaction ({_INSERT_COLUMNS}) SELECT {_INSERT_VALUES} FROM temp.puq_charge_stage "
        "WHERE amount > 0 ORDER BY client_id, cum, service_id ON CONFLICT DO NOTHING"), params).rowcount
    expected, periods = session.execute(typed_text(
        "SELECT coalesce(sum(amount > 0), 0), count(*) FROM temp.puq_charge_stage"), params).one()
    still_due = session.execute(typed_text(
        "SELECT count(*) FROM (SELECT max(period_stop) AS stop FROM temp.puq_charge_stage GROUP BY service_id) "
        "WHERE stop <= :at"), params).scalar()
    if inserted != expected:
        raise ChargeConflict(f"{expected - inserted} period(s) were already charged")
    session.execute(text(
        "UPDATE puq_service SET paid_until = (SELECT max(st.period_stop) FROM temp.puq_charge_stage st "
        "WHERE st.service_id = puq_service.id) WHERE id IN (SELECT service_id FROM temp.puq_charge_stage)"))
    session.execute(text(
        "UPDATE puq_client SET balance = balance - (SELECT sum(st.amount) FROM temp.puq_charge_stage st "
        "WHERE st.client_id = puq_client.id) WHERE id IN (SELECT client_id FROM temp.puq_charge_stage)"))
    logged = session.execute(typed_text(_log_insert(d, (
        "(SELECT client_id, count(*) AS periods, -sum(amount) AS total FROM temp.puq_charge_stage "
        "WHERE amount > 0 GROUP BY client_id)"))), params).rowcount
    amounts: dict[int, Decimal] = {}
    for currency_id, total in session.execute(text(
            "SELECT currency_id, sum(amount) FROM temp.puq_charge_stage WHERE amount > 0 GROUP BY currency_id")):
        amounts[currency_id] = Decimal(int(total)) / 10000
    return periods, inserted, still_due, amounts, logged


def _count_foreign_currency(session, params: dict) -> int:
    return session.execute(typed_text(f"""
        SELECT count(*) FROM puq_service s JOIN puq_product_price p ON p.id = s.price_id
        JOIN puq_client c ON c.id = s.client_id
        WHERE {DUE} AND p.period <> 'one_time' AND p.currency_id <> c.currency_id"""), params).scalar()


def charge_chunk(session, d: Dialect, run_id: int | None, lo: int, hi: int, at: dt.datetime) -> Counts:
    """Charge the due services of the clients this chunk decides (owned_clients: lowest-id due service in
    [lo, hi]), in the caller's transaction (it commits)."""
    from flask_babel import lazy_gettext as _l

    params = {"lo": lo, "hi": hi, "at": at, "run_id": run_id, **label_params(),
              "log_text": str(_l("Billing run: services charged in advance"))}
    counts = Counts()
    if not lock_clients(session, d, owned_clients(due), params):
        return counts
    round_ = _round_postgres if d.name == "postgresql" else _round_sqlite
    # More than one period started for some service (an outage, a long --at jump): expand from the first
    # round, so the usual case stays one plain round and a catch-up one expanded round (one activity
    # entry per client either way; more rounds only for a service more than MAX_ROUNDS periods behind).
    params["hour_before"] = at - dt.timedelta(hours=1)
    expand = session.execute(typed_text(
        f"SELECT EXISTS (SELECT 1 FROM puq_service s WHERE {due()} AND {chunk_where(d)} "
        "AND s.paid_until <= :hour_before)"), params).scalar()
    for number in range(MAX_ROUNDS):
        periods, inserted, still_due, amounts, logged = round_(session, d, params, bool(expand or number))
        counts.add("periods", periods)
        counts.add("charges", inserted)
        counts.add("client_entries", logged)
        for currency_id, amount in amounts.items():
            counts.add_amount(currency_id, amount)
        if not still_due:
            break
    counts.add("skipped_currency", _count_foreign_currency(session, params))
    return counts
