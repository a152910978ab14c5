"""Service lifecycle jobs of the billing cycle, per service-id range (chunk), each chunk one transaction:

- cancel:    pending, never provisioned or charged (provision status "pending", setup not charged), ordered
             longer ago than the product's cancellation delay → cancelled;
- create:    pending services whose setup fee + first charge are covered → provisioned and activated by
             `services.activate` (one service at a time: a provisioning module talks to the outside world),
             otherwise left pending with the reason "Insufficient funds";
- unsuspend: suspended for non-payment, what the charge job will then charge covered again (cheapest first
             per client) → active; the suspended time is not charged: the paid-until moves on by it (to
             :at for a service suspended as soon as it was due) and month-based periods re-anchor there;
  both set aside first what the charge job will charge the client's running services in this cycle
  (`reserved_for_running`), so that a new or reactivated service never gets a running one suspended and a
  second cycle at the same moment changes nothing;
- suspend:   active, due, and not covered once the charge job ran (the charge job's own rule, so what it
             could not pay is exactly what gets suspended), client not exempt → suspended, kind non-payment,
             dated;
- terminate: a termination request whose paid period has ended (one-time services: at once), or a
             non-payment suspension older than the product's termination delay → terminated. Staff
             suspensions are never terminated automatically.

Every service that changes gets a "service.<verb>" activity entry (actor: the system) with the run id.
"""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from sqlalchemy import Integer, insert, select, text

from ...domain import DomainError
from ...models import ActivityLog, Service
from ...models.base import Money
from .. import services as service_domain
from ..ledger import lock_client
from .charge import (MAX_ROUNDS, chunk_clients_select, chunk_join, chunk_where, due, lock_clients,
                     owned_clients)
from .counts import Counts
from .sql import MONTH_PERIODS, Dialect, hours_case, months_case, typed_text


def _update(session, ids: list[int], values_sql: str, params: dict, guard: str) -> list[tuple[int, int]]:
    """UPDATE the services `ids` whose row still satisfies `guard` (a staff action may have moved one since
    it was chosen); (id, client_id) of each row updated."""
    if not ids:
        return []
    sql = typed_text(f"UPDATE puq_service SET {values_sql} WHERE id IN :ids AND {guard} RETURNING id, client_id",
                     expanding=("ids",))
    return [tuple(row) for row in session.execute(sql, dict(params, ids=ids))]


def _log(session, rows: list[tuple[int, int]], verb: str, before: str, after: str, reason: str,
         run_id: int | None, at: dt.datetime) -> None:
    if not rows:
        return
    changes = {"status": [before, after], "reason": reason}
    if run_id is not None:
        changes["run"] = run_id
    session.execute(insert(ActivityLog), [
        {"created_at": at, "actor_id": None, "impersonator_id": None, "client_id": client_id,
         "action": f"service.{verb}", "object_type": "service", "object_id": service_id,
         "changes": json.loads(json.dumps(changes)), "description": reason, "ip": ""}
        for service_id, client_id in rows
    ])


def cancel_chunk(session, d: Dialect, run_id, lo: int, hi: int, at: dt.datetime) -> Counts:
    reason = str(_l("Not paid within the cancellation delay"))
    ids = list(session.execute(typed_text(f"""
        SELECT s.id FROM puq_service s JOIN puq_product pr ON pr.id = s.product_id
        WHERE s.id BETWEEN :lo AND :hi AND s.status = 'pending' AND s.provision_status = 'pending'
          AND NOT s.setup_charged AND {d.add_hours('s.created_at', 'pr.cancellation_delay_hours')} <= :at
        ORDER BY s.id"""), {"lo": lo, "hi": hi, "at": at}).scalars())
    rows = _update(session, ids, "status = 'cancelled', provision_status = 'cancelled', cancelled_at = :at, "
                   "status_reason = :reason", {"at": at, "reason": reason},
                   "status = 'pending' AND provision_status = 'pending' AND NOT setup_charged")
    _log(session, rows, "cancel", "pending", "cancelled", reason, run_id, at)
    return Counts({"cancelled": len(rows)})


def _resume_at(d: Dialect, t: str = "s.") -> str:
    """Where billing resumes after a non-payment suspension: the suspended time [suspended_at, :at) is not
    billed, the time the service ran unpaid before it was suspended is — so the paid-until moves on by the
    suspended time (never beyond :at, e.g. for a service suspended while paid ahead); a paid-until still
    ahead of :at stays. (Moving it to :at would also forgive the unpaid running time — after a late billing
    run, hours the service ran — and a second cycle at the same moment would then reactivate at a cheaper
    rate what the first had just suspended.) `t`: the table prefix ("s." or "" in an UPDATE)."""
    paid, suspended = f"{t}paid_until", f"COALESCE({t}suspended_at, {t}paid_until)"
    if d.name == "postgresql":
        moved = f"LEAST(:at, {paid} + (:at - {suspended}))"
    else:
        seconds = (f"min(CAST(strftime('%s', :at) AS INTEGER), CAST(strftime('%s', {paid}) AS INTEGER)"
                   f" + CAST(strftime('%s', :at) AS INTEGER) - CAST(strftime('%s', {suspended}) AS INTEGER))")
        moved = f"(datetime({seconds}, 'unixepoch') || substr({paid}, 20))"
    return f"(CASE WHEN {paid} < :at THEN {moved} ELSE {paid} END)"


def reserved_for_running(session, d: Dialect, at: dt.datetime, clients_sql: str, params: dict) -> dict[int, Decimal]:
    """Per client (those of `clients_sql`, a subquery of client ids), what the charge job would charge the
    client's running due services at `at` in its first round — their periods started by `at`, cheapest
    first, as far as balance + credit limit cover them (charge._chosen, the charge job's own statement,
    over all service ids). The create and unsuspend jobs set this aside first: a new order or a
    reactivation then doesn't take the money of a running service that would have been charged (it would
    be suspended in the same cycle), and a second cycle at the same moment finds nothing more to do.
    With the charge rule "each service wholly or not at all" this first round is what the charge job
    charges (more rounds only for a service more than MAX_ROUNDS periods behind): the charge job, too,
    decides each client with all its services (charge.owned_clients)."""
    from .charge import _chosen, label_params

    chosen = _chosen(d, expand=True).format(clients=f"AND s.client_id IN ({clients_sql})")
    sql = typed_text(f"SELECT x.client_id AS client_id, sum(x.amount) AS total FROM ({chosen}) x "
                     "WHERE NOT x.exempt GROUP BY x.client_id").columns(client_id=Integer, total=Money)
    values = dict(params, at=at, **label_params())
    return {client_id: total for client_id, total in session.execute(sql, values)}


def unsuspend_chunk(session, d: Dialect, run_id, lo: int, hi: int, at: dt.datetime) -> Counts:
    """Reactivate the non-payment suspensions of the range whose charges at reactivation (every period
    started by :at from the resume point, see _resume_at) the client's funds cover after what the charge
    job, right after, will charge the client's running services (reserved_for_running: reactivating a
    service must not leave a running one unpaid — it would be suspended, and a second cycle would
    reactivate what the first one didn't); the suspended ones cheapest first. Never-auto-suspend clients:
    all of them."""
    def suspended(a: str) -> str:
        return (f"{a}.status = 'suspended' AND {a}.suspension_kind = 'non_payment' "
                f"AND {a}.termination_requested_at IS NULL")

    params = {"lo": lo, "hi": hi, "at": at}
    if not lock_clients(session, d, owned_clients(suspended), params):
        return Counts()
    where = f"{suspended('s')} AND {chunk_where(d)}"
    # what the charge job will charge right after a reactivation: every period started by :at from the
    # resume point (hour- and month-based alike: it charges a service wholly), at least the next one.
    # Month-based periods end on the day the unsuspend re-anchors on (the resume point's day when it moves).
    resume = _resume_at(d)
    month_based = f"(p.period IN ({', '.join(repr(p) for p in MONTH_PERIODS)}) AND NOT {d.hourly_billed()})"
    months = months_case("p.period")
    step = f"(CASE WHEN {d.hourly_billed()} THEN 1 ELSE {hours_case('p.period')} END)"
    anchor = f"(CASE WHEN {resume} <> s.paid_until THEN {d.day_of(resume)} ELSE {d.anchor_day('s.paid_until')} END)"
    count = (f"(CASE WHEN p.period = 'one_time' OR {resume} > :at THEN 1 "
             f"WHEN {month_based} THEN {d.months_to_at(resume)} / {months} + 1 "
             f"ELSE {d.periods_started(resume, step)} END)")
    start = (f"(CASE WHEN k.n = 0 THEN {resume} "
             f"WHEN {month_based} THEN {d.add_months_on_day(resume, f'k.n * {months}', anchor)} "
             f"ELSE {d.add_hours(resume, f'k.n * {step}')} END)")
    amount = f"(CASE WHEN p.period = 'one_time' THEN 0 ELSE {d.charge_amount(start)} END)"
    candidates = session.execute(typed_text(f"""
        SELECT s.id AS service_id, s.client_id AS client_id, sum({amount}) AS amount, min(c.balance) AS balance,
               min(c.credit_limit) AS credit_limit, min(CASE WHEN c.never_auto_suspend THEN 1 ELSE 0 END) AS exempt
        FROM puq_service s JOIN puq_product_price p ON p.id = s.price_id
        JOIN puq_product pr ON pr.id = p.product_id JOIN puq_client c ON c.id = s.client_id
        {d.numbers(f"LEAST_({count}, {MAX_ROUNDS})")}
        WHERE {where} AND p.currency_id = c.currency_id AND (k.n = 0 OR {start} <= :at)
        GROUP BY s.id, s.client_id
        ORDER BY s.client_id, 3, s.id""").columns(service_id=Integer, client_id=Integer, amount=Money,
                                                   balance=Money, credit_limit=Money, exempt=Integer),
        params).all()
    reserved = reserved_for_running(session, d, at, chunk_clients_select(d), params) if candidates else {}
    ids, cum, client = [], Decimal(0), None
    for row in candidates:  # per client, cheapest first (the rows are ordered so)
        if row.client_id != client:
            client, cum = row.client_id, reserved.get(row.client_id, Decimal(0))
        cum += row.amount
        if row.exempt or row.balance + row.credit_limit >= cum:
            ids.append(row.service_id)
    ids.sort()
    resumed = _resume_at(d, "")
    rows = _update(session, ids, (
        "status = 'active', provision_status = 'completed', status_reason = '', suspension_kind = '', "
        f"billing_anchor_day = CASE WHEN {resumed} <> paid_until THEN {d.day_of(resumed)} "
        f"ELSE billing_anchor_day END, paid_until = {resumed}"), params,
        "status = 'suspended' AND suspension_kind = 'non_payment'")
    _log(session, rows, "unsuspend", "suspended", "active", str(_l("Funds cover the next charge again")),
         run_id, at)
    return Counts({"unsuspended": len(rows)})


def suspend_chunk(session, d: Dialect, run_id, lo: int, hi: int, at: dt.datetime) -> Counts:
    """Suspend the due services of the range that the charge job's own rule (charge._chosen: per client,
    cheapest first, each service wholly or not at all) would not charge now — after the charge job ran,
    exactly the ones it could not pay. Never-auto-suspend clients: none."""
    from .charge import _chosen, label_params

    params = {"lo": lo, "hi": hi, "at": at, **label_params()}
    if not lock_clients(session, d, owned_clients(due), params):
        return Counts()
    reason = str(_l("Insufficient funds for the next charge"))
    chosen = _chosen(d, expand=True).format(clients=chunk_join(d))
    ids = list(session.execute(typed_text(f"""
        SELECT s.id FROM puq_service s
        JOIN puq_product_price p ON p.id = s.price_id JOIN puq_client c ON c.id = s.client_id
        WHERE {due()} AND {chunk_where(d)} AND p.period <> 'one_time' AND p.currency_id = c.currency_id AND NOT c.never_auto_suspend
          AND s.id NOT IN (SELECT x.service_id FROM ({chosen}) x)
        ORDER BY s.id"""), params).scalars())
    rows = _update(session, ids, (
        "status = 'suspended', provision_status = 'suspended', suspended_at = :at, status_reason = :reason, "
        "suspension_kind = 'non_payment'"), dict(params, reason=reason), "status = 'active'")
    _log(session, rows, "suspend", "active", "suspended", reason, run_id, at)
    return Counts({"suspended": len(rows)})


def terminate_chunk(session, d: Dialect, run_id, lo: int, hi: int, at: dt.datetime) -> Counts:
    params = {"lo": lo, "hi": hi, "at": at}
    counts = Counts()
    requested = list(session.execute(typed_text("""
        SELECT s.id FROM puq_service s
        WHERE s.id BETWEEN :lo AND :hi AND s.status IN ('active', 'suspended')
          AND s.termination_requested_at IS NOT NULL AND s.termination_requested_at <= :at
          AND (s.paid_until IS NULL OR s.paid_until <= :at) ORDER BY s.id"""), params).scalars())
    overdue = list(session.execute(typed_text(f"""
        SELECT s.id FROM puq_service s JOIN puq_product pr ON pr.id = s.product_id
        WHERE s.id BETWEEN :lo AND :hi AND s.status = 'suspended' AND s.suspension_kind = 'non_payment'
          AND s.termination_requested_at IS NULL
          AND {d.add_hours('s.suspended_at', 'pr.termination_delay_hours')} <= :at ORDER BY s.id"""),
        params).scalars())
    for ids, reason, key in (
        (requested, str(_l("Termination requested; the paid period has ended")), "terminated_on_request"),
        (overdue, str(_l("Suspended for non-payment longer than the termination delay")), "terminated_overdue"),
    ):
        statuses = dict(session.execute(
            select(Service.id, Service.status).where(Service.id.in_(ids))).all()) if ids else {}
        rows = _update(session, ids, (
            "status = 'terminated', provision_status = 'terminated', terminated_at = :at, "
            "status_reason = :reason, suspension_kind = ''"), dict(params, reason=reason),
            "status IN ('active', 'suspended')")
        for status in ("active", "suspended"):
            subset = [row for row in rows if statuses.get(row[0]) == status]
            _log(session, subset, "terminate", status, "terminated", reason, run_id, at)
        counts.add(key, len(rows))
    return counts


def create_chunk(session, d: Dialect, run_id, lo: int, hi: int, at: dt.datetime, dry_run: bool = False) -> Counts:
    """Activate pending services whose first charges are covered (services.activate: provision, charge the
    setup fee and the first period, log). Each service commits on its own; a re-run finds them active.

    Covered means: balance + credit limit ≥ setup + first charge + what the charge job, later in the cycle,
    will charge the client's running services (reserved_for_running: a new order must not take the money a
    running service needs and get it suspended). Not covered: the service stays pending with the reason
    "Insufficient funds"; refused for another reason (e.g. the client's currency changed since the order):
    that reason. A dry run only counts what would be created and what not (no provisioning, no writes)."""
    counts = Counts()
    pending = list(session.scalars(
        select(Service).where(Service.id.between(lo, hi), Service.status == "pending",
                              Service.provision_status == "pending").order_by(Service.id)))
    insufficient = str(_l("Insufficient funds"))
    for service in pending:
        service_id = service.id
        if not dry_run:  # decide under the client's lock (held through services.activate, which commits)
            lock_client(service.client_id)
        funded = _covered_now(session, d, service, at)
        if dry_run:
            counts.add("insufficient_funds" if funded is False else "to_create", 1)
            continue
        reason = key = None
        if funded is False:
            reason, key = insufficient, "insufficient_funds"
        else:
            try:
                service = service_domain.activate(service)
            except DomainError as exc:
                session.rollback()
                service = session.get(Service, service_id)
                if service is None or service.status != "pending":  # moved meanwhile (staff)
                    continue
                if _covered_now(session, d, service, at) is False:
                    reason, key = insufficient, "insufficient_funds"
                else:
                    reason, key = str(exc)[:255], "refused"
        if key is not None:
            changed = session.execute(
                text("UPDATE puq_service SET status_reason = :reason WHERE id = :id AND status = 'pending' "
                     "AND status_reason <> :reason"), {"reason": reason, "id": service_id}).rowcount
            session.commit()
            counts.add(key, 1)
            if key == "insufficient_funds":
                counts.add("marked_insufficient", changed)
        elif service.status == "active":
            counts.add("created", 1)
        else:
            counts.add("provisioning_errors", 1)
    return counts


def _covered_now(session, d: Dialect, service: Service, at: dt.datetime) -> bool | None:
    """Whether the client's balance + credit limit cover the service's setup + first charge from `at` after
    what the charge job will charge the client's running services (reserved_for_running; never-auto-suspend
    clients: those are charged anyway, nothing is set aside). None: can't be computed (no price, another currency than the client's)."""
    from ...models import Client
    from ..charging import first_charges

    client = session.execute(
        select(Client.balance, Client.credit_limit, Client.currency_id, Client.never_auto_suspend)
        .where(Client.id == service.client_id)).one_or_none()
    price = service.price
    if client is None or price is None or service.product is None or price.currency_id != client.currency_id:
        return None
    reserved = Decimal(0)
    if not client.never_auto_suspend:
        reserved = reserved_for_running(session, d, at, "SELECT CAST(:client_id AS INTEGER)",
                                        {"client_id": service.client_id}).get(service.client_id, reserved)
    needed = first_charges(service, at.replace(microsecond=0)) + reserved
    return client.balance + (client.credit_limit or 0) >= needed
