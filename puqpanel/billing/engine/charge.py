"""The charge job: every active service whose paid-until has passed and that has no termination request is
charged its next period in advance, set-based, one service-id range (chunk) per transaction.

Per chunk:
1. the clients owning due services of the range are locked (ORDER BY id FOR UPDATE on PostgreSQL, so two
   workers meeting on one client wait for each other instead of deadlocking; SQLite serialises writers);
2. a *round* charges, for every due service, the one period that starts at its paid-until: ledger rows
   by INSERT … SELECT … ON CONFLICT DO NOTHING (the unique key (service, period start) makes a second
   charge of a period impossible), paid-until moved to the period's end, balances moved by the sum of
   what was inserted — on PostgreSQL one statement of data-modifying CTEs;
3. rounds repeat while a charged service is still due: a run after a 5-hour outage charges the 5 missed
   hours of an hourly-billed plan and the current one, **each period its own ledger row** (one row per
   (service, period start), so the unique key keeps guarding every hour);
4. one activity entry per client touched ("automation.charge": periods, amount, run).

Funds: per client, due services are taken cheapest first (then by id) while balance + credit limit covers
the running total; the rest stay due and the suspend job, which applies the same order to what is left,
suspends them — so a service is either charged or suspended, never left running unpaid. Clients with the
never-auto-suspend flag are charged whatever their balance (their debt grows instead).

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
from .sql import Dialect, typed_text

# A chunk stops after this many rounds (periods per service); what is still due is charged next run.
MAX_ROUNDS = 24 * 31

DUE = """
    s.id BETWEEN :lo AND :hi AND s.status = 'active' AND s.termination_requested_at IS NULL
    AND s.paid_until <= :at
"""


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


def _chosen(d: Dialect) -> str:
    """Due services of the range that the client's funds cover (cheapest first), with their charge."""
    amount = d.charge_amount("s.paid_until")
    return f"""
        SELECT r.* FROM (
            SELECT due.*, SUM(due.amount) OVER (
                       PARTITION BY due.client_id ORDER BY due.amount, due.service_id
                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum
            FROM (
                SELECT s.id AS service_id, s.client_id AS client_id, s.paid_until AS period_start,
                       {d.charge_stop("s.paid_until")} AS period_stop, {amount} AS amount,
                       {_description(d)} AS description, c.currency_id AS currency_id,
                       c.balance AS balance, c.credit_limit AS credit_limit, c.never_auto_suspend AS exempt
                FROM puq_service s
                JOIN puq_product_price p ON p.id = s.price_id
                JOIN puq_product pr ON pr.id = p.product_id
                JOIN puq_client c ON c.id = s.client_id
                WHERE {DUE} AND p.period <> 'one_time' AND p.currency_id = c.currency_id {{clients}}
            ) due
        ) r
        WHERE r.exempt OR r.balance + r.credit_limit >= r.cum
    """


_INSERT_COLUMNS = ("client_id, type, gross, net, fees, balance_before, balance_after, currency_id, description, "
                   "service_id, period_start, period_stop, gateway, external_id, created_at")
_INSERT_VALUES = ("client_id, 'charge', -amount, -amount, 0, balance - cum + amount, balance - cum, currency_id, "
                  "description, service_id, period_start, period_stop, '', '', :at")


class ChargeConflict(RuntimeError):
    """A period of a due service was already in the ledger: the data disagree, nothing was charged."""


def lock_clients(session, d: Dialect, where: str, params: dict) -> list[int]:
    """Lock the clients that own services matching `where` (alias s), in id order; their ids."""
    if d.name == "postgresql":
        sql = (f"SELECT c.id FROM puq_client c WHERE c.id IN (SELECT s.client_id FROM puq_service s WHERE {where})"
               " ORDER BY c.id FOR UPDATE OF c")
    else:  # a write takes SQLite's database lock first: writers are serialised, reads are then current
        session.execute(typed_text(f"UPDATE puq_client SET id = id WHERE id IN "
                               f"(SELECT s.client_id FROM puq_service s WHERE {where})"), params)
        sql = f"SELECT DISTINCT s.client_id FROM puq_service s WHERE {where} ORDER BY s.client_id"
    return list(session.execute(typed_text(sql), params).scalars())


def _round_postgres(session, d: Dialect, params: dict) -> tuple[int, int, int, dict]:
    chosen = _chosen(d).format(clients="AND s.client_id = ANY(CAST(:ids AS integer[]))")
    sql = f"""
        WITH chosen AS ({chosen}),
        ins AS (
            INSERT INTO puq_transaction ({_INSERT_COLUMNS})
            SELECT {_INSERT_VALUES} FROM chosen WHERE amount > 0 ORDER BY client_id, cum, service_id
            ON CONFLICT DO NOTHING
            RETURNING client_id, currency_id, net
        ),
        moved AS (
            UPDATE puq_service s SET paid_until = chosen.period_stop FROM chosen
            WHERE s.id = chosen.service_id RETURNING chosen.period_stop
        ),
        bal AS (
            UPDATE puq_client c SET balance = c.balance + t.total
            FROM (SELECT client_id, sum(net) AS total FROM ins GROUP BY client_id) t
            WHERE c.id = t.client_id RETURNING c.id
        )
        SELECT 'moved', CAST(NULL AS integer), (SELECT count(*) FROM moved), (SELECT count(*) FROM moved WHERE period_stop <= :at)
        UNION ALL SELECT 'expected', NULL, (SELECT count(*) FROM chosen WHERE amount > 0), 0
        UNION ALL SELECT 'bal', NULL, (SELECT count(*) FROM bal), 0
        UNION ALL SELECT 'ins', currency_id, count(*), sum(net) FROM ins GROUP BY currency_id
    """
    moved = still_due = expected = inserted = 0
    amounts: dict[int, Decimal] = {}
    for kind, currency_id, count, value in session.execute(typed_text(sql), params):
        if kind == "moved":
            moved, still_due = count, value
        elif kind == "expected":
            expected = count
        elif kind == "ins":
            inserted += count
            amounts[currency_id] = -Decimal(value)
    if inserted != expected:
        raise ChargeConflict(f"{expected - inserted} period(s) were already charged")
    return moved, inserted, still_due, amounts


_STAGE = """
    CREATE TEMP TABLE IF NOT EXISTS puq_charge_stage (
        service_id INTEGER PRIMARY KEY, client_id INTEGER, period_start TEXT, period_stop TEXT,
        amount INTEGER, description TEXT, currency_id INTEGER, balance INTEGER, credit_limit INTEGER,
        exempt INTEGER, cum INTEGER)
"""


def _round_sqlite(session, d: Dialect, params: dict) -> tuple[int, int, int, dict]:
    session.execute(text(_STAGE))
    session.execute(text("DELETE FROM temp.puq_charge_stage"))
    session.execute(typed_text(f"INSERT INTO temp.puq_charge_stage {_chosen(d).format(clients='')}"), params)
    inserted = session.execute(typed_text(
        f"INSERT INTO puq_transaction ({_INSERT_COLUMNS}) SELECT {_INSERT_VALUES} FROM temp.puq_charge_stage "
        "WHERE amount > 0 ORDER BY client_id, cum, service_id ON CONFLICT DO NOTHING"), params).rowcount
    expected, moved, still_due = session.execute(typed_text(
        "SELECT coalesce(sum(amount > 0), 0), count(*), coalesce(sum(period_stop <= :at), 0) "
        "FROM temp.puq_charge_stage"), params).one()
    if inserted != expected:
        raise ChargeConflict(f"{expected - inserted} period(s) were already charged")
    session.execute(text(
        "UPDATE puq_service SET paid_until = (SELECT st.period_stop FROM temp.puq_charge_stage st "
        "WHERE st.service_id = puq_service.id) WHERE id IN (SELECT service_id FROM temp.puq_charge_stage)"))
    session.execute(text(
        "UPDATE puq_client SET balance = balance - (SELECT sum(st.amount) FROM temp.puq_charge_stage st "
        "WHERE st.client_id = puq_client.id) WHERE id IN (SELECT client_id FROM temp.puq_charge_stage)"))
    amounts: dict[int, Decimal] = {}
    for currency_id, total in session.execute(text(
            "SELECT currency_id, sum(amount) FROM temp.puq_charge_stage WHERE amount > 0 GROUP BY currency_id")):
        amounts[currency_id] = Decimal(int(total)) / 10000
    return moved, inserted, still_due, amounts


def _log_clients(session, d: Dialect, params: dict, watermark: int) -> int:
    """One activity entry per client charged in this chunk (from the ledger rows it wrote)."""
    clients = "AND t.client_id = ANY(CAST(:ids AS integer[]))" if d.name == "postgresql" else ""
    changes = d.json_object("'periods'", "count(*)", "'amount'", d.money_text("sum(t.net)"), "'run'", ":run_id")
    sql = f"""
        INSERT INTO puq_activity_log (created_at, actor_id, impersonator_id, client_id, action, object_type,
                                      object_id, changes, description, ip)
        SELECT :at, NULL, NULL, t.client_id, 'automation.charge', 'automation_run', CAST(:run_id AS integer), {changes},
               :log_text, ''
        FROM puq_transaction t
        WHERE t.id > :watermark AND t.type = 'charge' AND t.service_id BETWEEN :lo AND :hi {clients}
        GROUP BY t.client_id
    """
    return session.execute(typed_text(sql), dict(params, watermark=watermark)).rowcount


def _count_foreign_currency(session, params: dict) -> int:
    return session.execute(typed_text(f"""
        SELECT count(*) FROM puq_service s JOIN puq_product_price p ON p.id = s.price_id
        JOIN puq_client c ON c.id = s.client_id
        WHERE {DUE} AND p.period <> 'one_time' AND p.currency_id <> c.currency_id"""), params).scalar()


def charge_chunk(session, d: Dialect, run_id: int | None, lo: int, hi: int, at: dt.datetime) -> Counts:
    """Charge every due service with an id in [lo, hi] (in the caller's transaction; it commits)."""
    from flask_babel import lazy_gettext as _l

    params = {"lo": lo, "hi": hi, "at": at, "run_id": run_id, **label_params(),
              "log_text": str(_l("Billing run: services charged in advance"))}
    counts = Counts()
    ids = lock_clients(session, d, DUE, params)
    if not ids:
        return counts
    params["ids"] = ids
    watermark = session.execute(text("SELECT coalesce(max(id), 0) FROM puq_transaction")).scalar()
    round_ = _round_postgres if d.name == "postgresql" else _round_sqlite
    for _ in range(MAX_ROUNDS):
        moved, inserted, still_due, amounts = round_(session, d, params)
        counts.add("periods", moved)
        counts.add("charges", inserted)
        for currency_id, amount in amounts.items():
            counts.add_amount(currency_id, amount)
        if not still_due:
            break
    counts.add("clients", _log_clients(session, d, params, watermark))
    counts.add("skipped_currency", _count_foreign_currency(session, params))
    return counts
