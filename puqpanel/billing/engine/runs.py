"""Jobs, their runs and chunks: how the billing engine splits work so that any number of workers can take
it, and why running it twice, on two workers at once or again after a crash changes nothing twice.

- A run (AutomationRun) of a chunked job covers the services with ids in [min, max] of its candidates,
  split into ranges of PUQPANEL_BILLING_CHUNK_SIZE ids (AutomationChunk rows, written with the run).
- A chunk is executed by `execute_chunk`: its first statement locks the chunk row; a chunk already done is
  skipped; otherwise the job's work and "chunk done" commit in ONE transaction (the create job commits per
  service instead, each activation being idempotent). What is charged is decided by the data (paid-until,
  the unique key), not by the run record, so a lost chunk is simply redone by the next run.
- The execution that finishes a run's last chunk closes the run (only one can: a guarded UPDATE) and, in
  a cycle, starts the next job, whose chunks are then dispatched — inline, or as Celery tasks.
- The billing cycle ("cycle") runs CYCLE in order: cancel, create, unsuspend, charge, suspend, terminate.
- Scheduled runs carry a `slot` (job + minute) with a unique key: a second beat scheduler firing the same
  slot is refused. A scheduled cycle is skipped while another is running (younger than the stale limit);
  older "running" runs are marked interrupted.
"""
from __future__ import annotations

import datetime as dt
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ...domain.session import get_session
from ...models import ActivityLog, AutomationChunk, AutomationRun, Client, Currency
from .. import clock
from .counts import Counts
from .sql import dialect_for, typed_text

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 5000
STALE_MINUTES = 60
KEEP_DAYS = 30
ERRORS_KEPT = 20


@dataclass(frozen=True)
class Job:
    name: str
    label: Any
    # "module:function". Chunked: f(session, dialect, run_id, lo, hi, at) -> Counts, for the services with
    # ids in [lo, hi] matching `candidates` (SQL on puq_service s). Whole: f(session, run_id, at) -> Counts.
    target: str
    candidates: str = ""
    description: Any = ""

    @property
    def chunked(self) -> bool:
        return bool(self.candidates)

    def function(self) -> Callable:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


_E = "puqpanel.billing.engine"
JOBS: dict[str, Job] = {job.name: job for job in (
    Job("cancel", _l("Cancel unpaid orders"), f"{_E}.lifecycle:cancel_chunk", "s.status = 'pending'",
        _l("Pending services not paid within the product's cancellation delay are cancelled.")),
    Job("create", _l("Create services"), f"{_E}.lifecycle:create_chunk",
        "s.status = 'pending' AND s.provision_status = 'pending'",
        _l("Pending services whose setup fee and first charge are covered are provisioned and activated.")),
    Job("unsuspend", _l("Unsuspend services"), f"{_E}.lifecycle:unsuspend_chunk", "s.status = 'suspended'",
        _l("Services suspended for non-payment are reactivated when funds cover the next charge.")),
    Job("charge", _l("Charge services"), f"{_E}.charge:charge_chunk",
        "s.status = 'active' AND s.paid_until <= :at",
        _l("Active services whose paid period has ended are charged the next period in advance.")),
    Job("suspend", _l("Suspend services"), f"{_E}.lifecycle:suspend_chunk",
        "s.status = 'active' AND s.paid_until <= :at",
        _l("Active services whose next charge is not covered are suspended for non-payment.")),
    Job("terminate", _l("Terminate services"), f"{_E}.lifecycle:terminate_chunk",
        "(s.status = 'suspended' AND s.suspension_kind = 'non_payment') OR (s.status IN ('active', 'suspended') "
        "AND s.termination_requested_at IS NOT NULL)",
        _l("Services with a termination request at the end of their paid period, and services suspended "
           "for non-payment longer than the termination delay, are terminated.")),
    Job("convert_prices", _l("Convert prices"), f"{_E}.maintenance:convert_prices",
        description=_l("Prices of products set to convert are recomputed from the default currency.")),
    Job("revalidate_vat", _l("Revalidate VAT ids"), f"{_E}.maintenance:revalidate_vat",
        description=_l("EU VAT ids are checked with VIES again; an invalid answer revokes the reverse charge.")),
    Job("reminders", _l("Overdue reminders"), f"{_E}.reminders:queue_reminders",
        description=_l("Reminders for unpaid proformas and invoices (before, on and after the due date) are "
                       "queued in the e-mail outbox.")),
    Job("send_email", _l("Send e-mail"), "puqpanel.billing.mail:send_outbox",
        description=_l("Queued e-mails are sent over SMTP.")),
)}
CYCLE = ("cancel", "create", "unsuspend", "charge", "suspend", "terminate")
CYCLE_LABEL = _l("Billing cycle")


def job_label(name: str) -> str:
    return str(CYCLE_LABEL) if name == "cycle" else str(JOBS[name].label) if name in JOBS else name


def chunk_size() -> int:
    return max(1, int(current_app.config.get("PUQPANEL_BILLING_CHUNK_SIZE", DEFAULT_CHUNK_SIZE)))


def _now() -> dt.datetime:
    return clock.now().replace(microsecond=0)


def id_ranges(session, job: Job, at: dt.datetime, size: int | None = None) -> list[tuple[int, int]]:
    """[lo, hi] ranges of `size` ids covering the job's candidate services (none: [])."""
    size = size or chunk_size()
    sql = typed_text(f"SELECT min(s.id), max(s.id) FROM puq_service s WHERE {job.candidates}")
    low, high = session.execute(sql, {"at": at}).one()
    if low is None:
        return []
    return [(lo, min(lo + size - 1, high)) for lo in range(low, high + 1, size)]


# -- starting ------------------------------------------------------------------------------------------------

def mark_stale(session, now: dt.datetime) -> int:
    """Runs still "running" after the stale limit (a worker died, a chunk was lost) → interrupted."""
    minutes = int(current_app.config.get("PUQPANEL_RUN_STALE_MINUTES", STALE_MINUTES))
    return session.execute(
        update(AutomationRun)
        .where(AutomationRun.status == "running", AutomationRun.started_at < now - dt.timedelta(minutes=minutes))
        .values(status="interrupted", finished_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount


def prune(session, now: dt.datetime) -> int:
    """Forget finished runs older than PUQPANEL_RUN_KEEP_DAYS (30); their chunks and a cycle's job runs go
    with them. (The ledger and the activity log keep what the runs did.)"""
    days = int(current_app.config.get("PUQPANEL_RUN_KEEP_DAYS", KEEP_DAYS))
    old = select(AutomationRun.id).where(AutomationRun.cycle_id.is_(None), AutomationRun.status != "running",
                                         AutomationRun.started_at < now - dt.timedelta(days=days))
    return session.execute(delete(AutomationRun).where(
        (AutomationRun.id.in_(old)) | (AutomationRun.cycle_id.in_(old))).execution_options(
        synchronize_session=False)).rowcount


def start_run(job_name: str, at: dt.datetime | None = None, trigger: str = "cli", *, cycle_id: int | None = None,
              slot: str | None = None, author_id: int | None = None) -> int | None:
    """Create the run (and its chunks) and commit. For "cycle", the cycle's run is created and the id of
    its first job's run is returned (that is what gets dispatched). None: the slot was taken or (scheduled
    cycle) another cycle is still running."""
    session = get_session()
    now = _now()
    at = (at or now).replace(microsecond=0)
    mark_stale(session, now)
    if job_name == "cycle" and trigger == "beat":
        prune(session, now)
        running = session.scalar(select(func.count()).select_from(AutomationRun).where(
            AutomationRun.job == "cycle", AutomationRun.status == "running"))
        if running:
            session.commit()
            log.info("billing cycle still running; scheduled slot %s skipped", slot)
            return None
    if job_name != "cycle" and job_name not in JOBS:
        raise ValueError(f"unknown job {job_name!r}")
    run = AutomationRun(job=job_name, trigger=trigger, status="running", at=at, slot=slot, cycle_id=cycle_id,
                        author_id=author_id, started_at=now, counts={}, errors="")
    session.add(run)
    try:
        session.flush()
    except IntegrityError:  # the slot exists: another scheduler enqueued it
        session.rollback()
        log.info("run slot %s already taken", slot)
        return None
    if job_name == "cycle":
        run.chunks_total = len(CYCLE)
        session.commit()
        return start_run(CYCLE[0], at, "cycle", cycle_id=run.id, author_id=author_id)
    job = JOBS[job_name]
    ranges = id_ranges(session, job, at) if job.chunked else [(0, 0)]
    run.chunks_total = len(ranges)
    if ranges:
        session.execute(insert(AutomationChunk), [
            {"run_id": run.id, "seq": seq, "lo": lo, "hi": hi, "status": "pending", "attempts": 0, "counts": {},
             "error": ""} for seq, (lo, hi) in enumerate(ranges)])
    session.commit()
    return run.id


# -- executing -----------------------------------------------------------------------------------------------

def _currency_codes(session) -> dict[int, str]:
    return dict(session.execute(select(Currency.id, Currency.code)).all())


def execute_chunk(run_id: int, seq: int) -> int | None:
    """Do one chunk (idempotent). Returns the id of a run to dispatch next (the cycle's next job), if this
    execution finished the run."""
    session = get_session()
    session.rollback()
    locked = session.execute(
        update(AutomationChunk).where(AutomationChunk.run_id == run_id, AutomationChunk.seq == seq)
        .values(attempts=AutomationChunk.attempts + 1).execution_options(synchronize_session=False)).rowcount
    if not locked:
        session.rollback()
        return None
    run = session.get(AutomationRun, run_id)
    chunk = session.execute(select(AutomationChunk.status, AutomationChunk.lo, AutomationChunk.hi).where(
        AutomationChunk.run_id == run_id, AutomationChunk.seq == seq)).one()
    if chunk.status == "done" or run.status != "running":
        # Done already. If the worker that did the run's last chunk died after committing it but before
        # closing the run, this redelivery closes it (and starts the cycle's next job); finish_run's guarded
        # UPDATE lets only one execution close a run.
        complete = chunk.status == "done" and run.status == "running" and run.chunks_done >= run.chunks_total
        session.commit()
        if complete:
            return finish_run(run_id)
        return _next_in_cycle(run) if run.status != "running" else None
    job, at = JOBS[run.job], run.at
    try:
        with clock.frozen_at(at):
            function = job.function()
            if job.chunked:
                counts = function(session, dialect_for(session), run_id, chunk.lo, chunk.hi, at)
            else:
                counts = function(session, run_id, at)
        finished = _mark_chunk(session, run_id, seq, "done", counts.as_json(_currency_codes(session)), "")
        session.commit()
    except Exception as exc:  # the chunk's work is rolled back; the failure is recorded on the run
        session.rollback()
        log.exception("%s run %s chunk %s failed", run.job, run_id, seq)
        first_line = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        error = f"{type(exc).__name__}: {first_line}"[:2000]
        finished = _mark_chunk(session, run_id, seq, "failed", {}, error)
        session.commit()
    return finish_run(run_id) if finished else None


def _next_in_cycle(run: AutomationRun) -> int | None:
    """For a redelivered chunk of a closed run of a cycle: the cycle's next job run if it is still running
    (its worker may have died after starting it, before dispatching its chunks — dispatching them again is
    harmless, done chunks are skipped)."""
    if run.cycle_id is None or run.job not in CYCLE or CYCLE.index(run.job) + 1 >= len(CYCLE):
        return None
    following = CYCLE[CYCLE.index(run.job) + 1]
    return get_session().scalar(select(AutomationRun.id).where(
        AutomationRun.cycle_id == run.cycle_id, AutomationRun.job == following, AutomationRun.status == "running"))


def _mark_chunk(session, run_id: int, seq: int, status: str, counts: dict, error: str) -> bool:
    """Record the chunk's outcome; count it on the run the first time it ends. True when it was the last."""
    now = _now()
    where = (AutomationChunk.run_id == run_id, AutomationChunk.seq == seq)
    first_end = session.execute(
        update(AutomationChunk).where(*where, AutomationChunk.status == "pending")
        .values(status=status, counts=counts, error=error, finished_at=now)
        .execution_options(synchronize_session=False)).rowcount
    if not first_end:  # a retry of a failed chunk: it was counted when it failed
        session.execute(update(AutomationChunk).where(*where, AutomationChunk.status == "failed")
                        .values(status=status, counts=counts, error=error, finished_at=now)
                        .execution_options(synchronize_session=False))
        return False
    values: dict = {"chunks_done": AutomationRun.chunks_done + 1}
    if status == "failed":
        values["error_count"] = AutomationRun.error_count + 1
    done, total = session.execute(
        update(AutomationRun).where(AutomationRun.id == run_id).values(**values)
        .returning(AutomationRun.chunks_done, AutomationRun.chunks_total)).one()
    return done >= total


def finish_run(run_id: int) -> int | None:
    """Close the run (once): status, summed counts, errors. In a cycle, start the next job (its run id is
    returned for dispatching) or close the cycle."""
    session = get_session()
    run = session.get(AutomationRun, run_id)
    chunks = session.execute(select(AutomationChunk.status, AutomationChunk.counts, AutomationChunk.seq,
                                    AutomationChunk.lo, AutomationChunk.hi, AutomationChunk.error)
                             .where(AutomationChunk.run_id == run_id).order_by(AutomationChunk.seq)).all()
    counts = Counts()
    errors = []
    for chunk in chunks:
        counts.merge(Counts(chunk.counts))
        if chunk.status == "failed":
            where = f" (ids {chunk.lo}–{chunk.hi})" if JOBS[run.job].chunked else ""
            errors.append(f"chunk {chunk.seq}{where}: {chunk.error}")
    if counts["skipped_currency"]:
        errors.append(str(_l("%(count)d due services are priced in another currency than their client's and "
                             "were not charged.", count=counts["skipped_currency"])))
    if counts["products_skipped"]:
        errors.append(str(_l("%(count)d products set to convert prices could not be converted (no default-currency "
                             "price, or an amount too large).", count=counts["products_skipped"])))
    failed = any(chunk.status == "failed" for chunk in chunks)
    closed = session.execute(
        update(AutomationRun).where(AutomationRun.id == run_id, AutomationRun.status == "running")
        .values(status="failed" if failed else "succeeded", finished_at=_now(), counts=counts.as_json(),
                errors="\n".join(errors[:ERRORS_KEPT]))
        .execution_options(synchronize_session=False)).rowcount
    session.commit()
    if not closed or run.cycle_id is None:
        return None
    return _advance_cycle(run.cycle_id, run.job, run.at, run.author_id)


def _advance_cycle(cycle_id: int, finished_job: str, at: dt.datetime, author_id: int | None) -> int | None:
    session = get_session()
    session.execute(update(AutomationRun).where(AutomationRun.id == cycle_id)
                    .values(chunks_done=AutomationRun.chunks_done + 1).execution_options(synchronize_session=False))
    session.commit()
    position = CYCLE.index(finished_job)
    if position + 1 < len(CYCLE):
        return start_run(CYCLE[position + 1], at, "cycle", cycle_id=cycle_id, author_id=author_id)
    jobs = session.execute(select(AutomationRun.job, AutomationRun.status, AutomationRun.counts,
                                  AutomationRun.error_count, AutomationRun.errors)
                           .where(AutomationRun.cycle_id == cycle_id).order_by(AutomationRun.id)).all()
    failed = [job for job in jobs if job.status != "succeeded"]
    session.execute(
        update(AutomationRun).where(AutomationRun.id == cycle_id, AutomationRun.status == "running")
        .values(status="failed" if failed else "succeeded", finished_at=_now(),
                counts={job.job: job.counts for job in jobs},
                error_count=sum(job.error_count for job in jobs),
                errors="\n".join(f"{job.job}: {line}" for job in jobs for line in job.errors.splitlines()
                                 if line)[:20000])
        .execution_options(synchronize_session=False))
    session.commit()
    return None


def chunk_count(run_id: int) -> int:
    return get_session().scalar(select(AutomationRun.chunks_total).where(AutomationRun.id == run_id)) or 0


# -- running -------------------------------------------------------------------------------------------------

def run_inline(job_name: str, at: dt.datetime | None = None, trigger: str = "cli", *, author_id: int | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> int | None:
    """Run a job (or the cycle) to the end in this process. Returns the top run id (the cycle's for
    "cycle"). `progress(job, chunks_done, chunks_total)` is called after every chunk."""
    first = start_run(job_name, at, trigger, author_id=author_id)
    if first is None:
        return None
    top = get_session().get(AutomationRun, first)
    top_id = top.cycle_id or first
    pending = [first]
    while pending:
        run_id = pending.pop()
        run = get_session().get(AutomationRun, run_id)
        total, name = run.chunks_total, run.job
        if progress:
            progress(name, 0, total)
        follow = finish_run(run_id) if total == 0 else None
        for seq in range(total):
            follow = execute_chunk(run_id, seq) or follow
            if progress:
                progress(name, seq + 1, total)
        if follow:
            pending.append(follow)
    return top_id


def dispatch(run_id: int | None) -> None:
    """Enqueue every chunk of the run as a Celery task (eager mode: run them now)."""
    from ...tasks.engine import run_chunk

    while run_id is not None:
        total = chunk_count(run_id)
        if total:
            for seq in range(total):
                run_chunk.delay(run_id, seq)
            return
        run_id = finish_run(run_id)


# -- dry run -------------------------------------------------------------------------------------------------

@dataclass
class PreviewLine:
    client_id: int
    client: str
    currency: str
    charges: int = 0
    amount: Any = 0
    suspended: int = 0
    unsuspended: int = 0
    terminated: int = 0
    cancelled: int = 0


def preview(at: dt.datetime | None = None, progress: Callable[[str, int, int], None] | None = None
            ) -> tuple[list[PreviewLine], dict[str, Counts]]:
    """What the cycle would do at `at`: it runs inside one transaction that is rolled back. Services the
    create job would activate are only counted (provisioning talks to the outside world)."""
    from decimal import Decimal

    session = get_session()
    session.rollback()
    at = (at or _now()).replace(microsecond=0)
    d = dialect_for(session)
    watermark = session.scalar(select(func.coalesce(func.max(ActivityLog.id), 0)))
    per_job: dict[str, Counts] = {}
    try:
        with clock.frozen_at(at):
            for name in CYCLE:
                job = JOBS[name]
                function = job.function()
                ranges = id_ranges(session, job, at)
                counts = Counts()
                for index, (lo, hi) in enumerate(ranges):
                    if name == "create":
                        counts.merge(function(session, d, None, lo, hi, at, dry_run=True))
                    else:
                        counts.merge(function(session, d, None, lo, hi, at))
                    if progress:
                        progress(name, index + 1, len(ranges))
                per_job[name] = counts
            rows = session.execute(
                select(ActivityLog.client_id, ActivityLog.action, ActivityLog.changes, Client, Currency.code)
                .join(Client, Client.id == ActivityLog.client_id).join(Currency, Currency.id == Client.currency_id)
                .where(ActivityLog.id > watermark).order_by(ActivityLog.client_id)).all()
            rows = [(cid, action, changes, client.display_name, code) for cid, action, changes, client, code in rows]
    finally:
        session.rollback()
    lines: dict[int, PreviewLine] = {}
    verbs = {"service.suspend": "suspended", "service.unsuspend": "unsuspended", "service.terminate": "terminated",
             "service.cancel": "cancelled"}
    for client_id, action, changes, name, code in rows:
        line = lines.setdefault(client_id, PreviewLine(client_id, str(name), code, amount=Decimal("0.0000")))
        if action == "automation.charge":
            line.charges += int(changes.get("periods", 0))
            line.amount += -Decimal(str(changes.get("amount", "0")))
        elif action in verbs:
            setattr(line, verbs[action], getattr(line, verbs[action]) + 1)
    return list(lines.values()), per_job
