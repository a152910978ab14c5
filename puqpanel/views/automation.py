"""Staff Automation status (menu Billing → Automation): the billing engine's jobs with their last run, next
scheduled run and recent failures; the run history; a run's details with its chunks; "Run now".

Reads only run records (billing.engine.runs writes them). The page's queries are a fixed number whatever the
number of jobs or runs: the last run of every job comes from one statement of per-job "latest id" subqueries
(each an index lookup on (job, started_at)), failures of the last 24 hours from one grouped count.

Next runs are computed from the Celery beat schedule (entries running `puqpanel.engine.scheduled` with the
job as argument). Without a broker (PUQPANEL_BROKER_URL empty) tasks run eagerly and no beat runs, so there
is no next run: the page says so.
"""
from __future__ import annotations

import copy
import datetime as dt
import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace
from typing import Any

from flask import abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import format_number, format_timedelta
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup
from sqlalchemy import func, or_, select

from ..billing import clock
from ..billing.engine import runs as engine
from ..domain.directory import parse_page
from ..domain.session import get_session
from ..domain.validation import MAX_ID
from ..models import RUN_STATUSES, AutomationChunk, AutomationRun, Currency
from ..security import AUTOMATION, AUTOMATION_PERMS, current_user_id, has_perm
from .formatting import money

log = logging.getLogger(__name__)

TEMPLATES = "puqpanel/automation"
PAGE_SIZE = 50  # runs per page
CHUNK_PAGE_SIZE = 100  # chunks per page of a run's detail
FAILURE_WINDOW = dt.timedelta(hours=24)
DUE_GRACE = dt.timedelta(minutes=1)  # a scheduled run this late is "due now", later it was missed
SCHEDULED_TASK = "puqpanel.engine.scheduled"
FAILED = ("failed", "interrupted")

RUN_STATUS_LABELS = {
    "running": _l("Running"),
    "succeeded": _l("Succeeded"),
    "failed": _l("Failed"),
    "interrupted": _l("Interrupted"),
}
RUN_STATUS_CLASSES = {
    "running": "label-info",
    "succeeded": "label-success",
    "failed": "label-danger",
    "interrupted": "label-warning",
}
CHUNK_STATUS_LABELS = {"pending": _l("Pending"), "done": _l("Done"), "failed": _l("Failed")}
CHUNK_STATUS_CLASSES = {"pending": "label-default", "done": "label-success", "failed": "label-danger"}
TRIGGER_LABELS = {
    "beat": _l("Schedule"),
    "cli": _l("Command line"),
    "staff": _l("Staff"),
    "cycle": _l("Billing cycle"),
}
# What the jobs count (billing.engine.counts); an unknown key is shown as it is named.
COUNT_LABELS = {
    # charge
    "periods": _l("Periods charged"),
    "charges": _l("Charges"),
    "client_entries": _l("Clients charged"),
    "skipped_currency": _l("Skipped (other currency)"),
    # lifecycle
    "cancelled": _l("Cancelled"),
    "to_create": _l("To create"),
    "created": _l("Created"),
    "insufficient_funds": _l("Insufficient funds"),
    "marked_insufficient": _l("Marked insufficient funds"),
    "provisioning_errors": _l("Provisioning errors"),
    "unsuspended": _l("Unsuspended"),
    "suspended": _l("Suspended"),
    "terminated_on_request": _l("Terminated on request"),
    "terminated_overdue": _l("Terminated (overdue)"),
    # convert prices, revalidate VAT ids
    "products": _l("Products"),
    "prices_updated": _l("Prices updated"),
    "products_skipped": _l("Products skipped"),
    "clients": _l("Clients"),
    "valid": _l("Valid"),
    "invalid": _l("Invalid"),
    "unavailable": _l("Unavailable"),
    "skipped": _l("Skipped"),
    "revoked": _l("Reverse charge revoked"),
    # reminders, e-mail
    "before": _l("Before due"),
    "due": _l("On due date"),
    "after": _l("Overdue"),
    "no_recipient": _l("No recipient"),
    "sent": _l("Sent"),
    "retry": _l("To retry"),
    "failed": _l("Failed"),
}


def job_names() -> list[str]:
    """Every job that can be run: the billing cycle, then the engine's jobs (the cycle's first)."""
    return ["cycle", *engine.JOBS]


def job_description(name: str) -> str:
    if name == "cycle":
        labels = ", ".join(engine.job_label(job) for job in engine.CYCLE)
        return _("Runs these jobs in order: %(jobs)s.", jobs=labels)
    return str(engine.JOBS[name].description) if name in engine.JOBS else ""


# --- formatting ---------------------------------------------------------------------------------------------


def duration_text(delta: dt.timedelta | None) -> str:
    if delta is None:
        return "—"
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return _("%(s)d s", s=seconds)
    if seconds < 3600:
        return _("%(m)d min %(s)d s", m=seconds // 60, s=seconds % 60)
    return _("%(h)d h %(m)d min", h=seconds // 3600, m=seconds % 3600 // 60)


def moment_text(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "—"


class CountFormatter:
    """A run's counts as (label, text) pairs; amounts ({code: "12.3400"}) in the currency's money format."""

    def __init__(self, currencies: dict[str, Any]):
        self.currencies = currencies

    def _money(self, code: str, amount: Any) -> Markup | str:
        try:
            value = Decimal(str(amount))
        except (InvalidOperation, ValueError):
            return f"{amount} {code}"
        currency = self.currencies.get(code) or SimpleNamespace(code=code, minor_units=2, prefix="", suffix="")
        # Rounded to the currency's minor units; the exact sum (4 places, hourly charges) on hover.
        return Markup('<span class="puq-amount" title="{} {}">{}</span>').format(value, code, money(value, currency))

    def items(self, counts: Any) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = []
        if not isinstance(counts, dict):
            return items
        for key, value in counts.items():
            if key == "amounts" and isinstance(value, dict):
                for code, amount in sorted(value.items()):
                    items.append((_("Amount"), self._money(str(code), amount)))
            elif isinstance(value, bool) or not isinstance(value, int):
                continue
            else:
                label = COUNT_LABELS.get(key) or str(key).replace("_", " ").capitalize()
                items.append((str(label), format_number(value)))
        return items

    def per_job(self, run: AutomationRun, compact: bool = False) -> list[tuple[str, list]]:
        """(job label, items) per job of a cycle run (its counts are {job: counts}; `compact`: only the jobs
        that counted something); one entry otherwise."""
        counts = run.counts if isinstance(run.counts, dict) else {}
        if run.job != "cycle":
            return [("", self.items(counts))]
        per_job = [(engine.job_label(job), self.items(counts.get(job))) for job in engine.CYCLE if job in counts]
        return [(job, items) for job, items in per_job if items or not compact]


def _currencies() -> dict[str, Currency]:
    return {c.code: c for c in get_session().scalars(select(Currency))}


# --- the schedule -------------------------------------------------------------------------------------------


@dataclass
class NextRun:
    at: dt.datetime | None = None  # the next time beat starts the job
    missed: dt.datetime | None = None  # a scheduled time that passed without a run since
    due_now: bool = False
    with_cycle: bool = False  # the job runs as part of the billing cycle
    scheduled: bool = True


def beat_schedules() -> dict[str, list]:
    """Celery schedules (celery.schedules objects) of each job in the beat schedule."""
    from celery.schedules import maybe_schedule

    celery_app = current_app.extensions.get("celery")
    entries = (celery_app.conf.beat_schedule if celery_app is not None else None) or {}
    result: dict[str, list] = {}
    for entry in entries.values():
        if not isinstance(entry, dict) or entry.get("task") != SCHEDULED_TASK:
            continue
        args = entry.get("args") or ()
        job = args[0] if args else (entry.get("kwargs") or {}).get("job")
        if not isinstance(job, str) or entry.get("schedule") is None:
            continue
        try:
            result.setdefault(job, []).append(maybe_schedule(copy.copy(entry["schedule"]), app=celery_app))
        except Exception:  # noqa: BLE001  (an entry this page cannot read: not shown, never a 500)
            log.warning("beat schedule entry for %s not understood", job, exc_info=True)
    return result


def _next_time(schedule, last_run_at: dt.datetime, now: dt.datetime) -> dt.datetime:
    """When `schedule` fires next after `last_run_at`, seen at `now` (naive UTC in and out)."""
    schedule = copy.copy(schedule)
    aware_now = now.replace(tzinfo=dt.timezone.utc)
    schedule.nowfun = lambda: aware_now
    remaining = schedule.remaining_estimate(last_run_at.replace(tzinfo=dt.timezone.utc))
    return now + remaining


def next_run(schedules: list, last_run_at: dt.datetime | None, now: dt.datetime) -> NextRun:
    """The job's next scheduled run: the earliest of its schedules after its last run (or after now, if it
    never ran). A time more than DUE_GRACE in the past was missed (beat or the workers were not running);
    then the next time after now is given as well."""
    if not schedules:
        return NextRun(scheduled=False)
    result = NextRun()
    try:
        due = min(_next_time(s, last_run_at or now, now) for s in schedules)
        if due >= now:
            result.at = due
        elif due >= now - DUE_GRACE:
            result.at, result.due_now = due, True
        else:
            result.missed = due
            result.at = min(_next_time(s, now, now) for s in schedules)
    except Exception:  # noqa: BLE001  (a schedule type without an estimate)
        log.warning("next run not computable", exc_info=True)
        return NextRun(scheduled=False)
    return result


def broker_configured() -> bool:
    return bool(current_app.config.get("PUQPANEL_BROKER_URL"))


# --- the jobs table -----------------------------------------------------------------------------------------


@dataclass
class JobRow:
    name: str
    label: str
    description: str
    in_cycle: bool
    last: AutomationRun | None = None
    last_author: str | None = None
    next: NextRun | None = None  # None: no broker, nothing is scheduled
    failures: int = 0  # failed or interrupted runs in the last FAILURE_WINDOW
    last_failure: AutomationRun | None = None
    stale: bool = False  # "running" for longer than the stale limit: lost, marked interrupted at the next start


def _user_model():
    return current_app.appbuilder.sm.user_model


def job_rows(now: dt.datetime) -> list[JobRow]:
    session = get_session()
    names = job_names()
    user = _user_model()
    # Failures of the last 24 h per job: a count and the newest one's id (one grouped statement).
    failures = {
        job: (count, last_id)
        for job, count, last_id in session.execute(
            select(AutomationRun.job, func.count(), func.max(AutomationRun.id))
            .where(AutomationRun.job.in_(names), AutomationRun.status.in_(FAILED),
                   AutomationRun.started_at >= now - FAILURE_WINDOW)
            .group_by(AutomationRun.job))
    }
    # The newest run of every job (an index lookup each) and those failures, in one statement.
    latest = [
        select(AutomationRun.id).where(AutomationRun.job == name)
        .order_by(AutomationRun.started_at.desc(), AutomationRun.id.desc()).limit(1).scalar_subquery()
        for name in names
    ]
    failure_ids = [last_id for _count, last_id in failures.values()]
    runs: dict[int, tuple[AutomationRun, str | None]] = {
        run.id: (run, username)
        for run, username in session.execute(
            select(AutomationRun, user.username).outerjoin(user, user.id == AutomationRun.author_id)
            .where(or_(AutomationRun.id.in_(latest), AutomationRun.id.in_(failure_ids or [-1]))))
    }
    newest: dict[str, tuple[AutomationRun, str | None]] = {}
    for run, username in runs.values():
        held = newest.get(run.job)
        if held is None or (run.started_at, run.id) > (held[0].started_at, held[0].id):
            newest[run.job] = (run, username)

    stale_minutes = int(current_app.config.get("PUQPANEL_RUN_STALE_MINUTES", engine.STALE_MINUTES))
    schedules = beat_schedules() if broker_configured() else None
    rows = []
    for name in names:
        last, author = newest.get(name, (None, None))
        count, failure_id = failures.get(name, (0, None))
        row = JobRow(name=name, label=engine.job_label(name), description=job_description(name),
                     in_cycle=name in engine.CYCLE, last=last, last_author=author, failures=count,
                     last_failure=runs[failure_id][0] if failure_id in runs else None)
        row.stale = bool(last and last.status == "running"
                         and last.started_at < now - dt.timedelta(minutes=stale_minutes))
        rows.append(row)
    if schedules is not None:
        by_name = {row.name: row for row in rows}
        for row in rows:
            if row.in_cycle and row.name not in schedules:
                continue
            row.next = next_run(schedules.get(row.name, []), row.last.started_at if row.last else None, now)
        cycle = by_name["cycle"].next
        for row in rows:
            if row.in_cycle and row.next is None:
                row.next = NextRun(at=cycle.at, missed=cycle.missed, due_now=cycle.due_now, with_cycle=True,
                                   scheduled=cycle.scheduled)
    return rows


# --- run history --------------------------------------------------------------------------------------------


def _choice(value: Any, allowed) -> str:
    """A query argument if it is one of the allowed values, else "" (ignored)."""
    return value if isinstance(value, str) and value in allowed else ""


@dataclass
class RunPage:
    rows: list
    page: int
    has_next: bool
    job: str
    status: str


def run_page(args) -> RunPage:
    """Runs newest first, PAGE_SIZE a page, filtered by job and status (bad values are ignored). No total
    count (the history grows by thousands of runs a day): a page knows whether an older one exists."""
    job = _choice(args.get("job"), job_names())
    status = _choice(args.get("status"), RUN_STATUSES)
    page = parse_page(args.get("page"))
    user = _user_model()
    query = select(AutomationRun, user.username).outerjoin(user, user.id == AutomationRun.author_id)
    if job:
        query = query.where(AutomationRun.job == job)
    if status:
        query = query.where(AutomationRun.status == status)
    # Newest = highest id (runs get their id when they start): the primary key serves the unfiltered order.
    rows = get_session().execute(
        query.order_by(AutomationRun.id.desc()).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)).all()
    return RunPage(rows=rows[:PAGE_SIZE], page=page, has_next=len(rows) > PAGE_SIZE, job=job, status=status)


# --- the view -----------------------------------------------------------------------------------------------


def _run_or_404(run_id: int) -> AutomationRun:
    if run_id > MAX_ID:
        abort(404)
    run = get_session().get(AutomationRun, run_id)
    if run is None:
        abort(404)
    return run


def _template_context(currencies: dict[str, Currency] | None = None) -> dict:
    formatter = CountFormatter(currencies if currencies is not None else _currencies())
    return dict(
        status_labels=RUN_STATUS_LABELS, status_classes=RUN_STATUS_CLASSES, trigger_labels=TRIGGER_LABELS,
        chunk_status_labels=CHUNK_STATUS_LABELS, chunk_status_classes=CHUNK_STATUS_CLASSES,
        job_label=engine.job_label, counts=formatter, duration=duration_text, moment=moment_text,
        can_run=has_perm("can_run", AUTOMATION),
    )


class AutomationView(BaseView):
    route_base = "/automation"
    default_view = "status"
    class_permission_name = AUTOMATION
    base_permissions = list(AUTOMATION_PERMS)
    method_permission_name = {"status": "show", "run": "show", "run_now": "run"}

    @expose("/")
    @has_access
    def status(self):
        now = clock.now().replace(microsecond=0)
        history = run_page(request.args)

        def page_url(page: int) -> str:
            wanted = {"job": history.job, "status": history.status, "page": page if page > 1 else None}
            return url_for("AutomationView.status", **{k: v for k, v in wanted.items() if v}) + "#puq-runs"

        return self.render_template(
            f"{TEMPLATES}/status.html", title=_("Automation"), jobs=job_rows(now), now=now, history=history,
            page_url=page_url, broker=broker_configured(), job_names=job_names(), run_statuses=RUN_STATUSES,
            failure_hours=int(FAILURE_WINDOW.total_seconds() // 3600),
            relative=lambda moment: format_timedelta(moment - now, add_direction=True, threshold=1.0),
            **_template_context(),
        )

    @expose("/run/<int:run_id>")
    @has_access
    def run(self, run_id: int):
        run = _run_or_404(run_id)
        session = get_session()
        user = _user_model()
        author = session.scalar(select(user.username).where(user.id == run.author_id)) if run.author_id else None
        cycle = session.get(AutomationRun, run.cycle_id) if run.cycle_id else None
        job_runs = list(session.scalars(select(AutomationRun).where(AutomationRun.cycle_id == run.id)
                                        .order_by(AutomationRun.id))) if run.job == "cycle" else []
        page = parse_page(request.args.get("page"))
        chunks = list(session.scalars(
            select(AutomationChunk).where(AutomationChunk.run_id == run.id).order_by(AutomationChunk.seq)
            .offset((page - 1) * CHUNK_PAGE_SIZE).limit(CHUNK_PAGE_SIZE)))
        pages = max(1, -(-(run.chunks_total or 0) // CHUNK_PAGE_SIZE))
        job = engine.JOBS.get(run.job)
        return self.render_template(
            f"{TEMPLATES}/run.html", title=_("Run #%(id)d", id=run.id), run=run, author=author, cycle=cycle,
            job_runs=job_runs, chunks=chunks, page=page, pages=pages, chunked=bool(job and job.chunked),
            errors=[line for line in (run.errors or "").splitlines() if line.strip()],
            description=job_description(run.job),
            page_url=lambda p: url_for("AutomationView.run", run_id=run.id, **({"page": p} if p > 1 else {}))
            + "#puq-chunks",
            **_template_context(),
        )

    @expose("/run-now/<job>", methods=["POST"])
    @has_access
    def run_now(self, job: str):
        """Start a job (or the billing cycle) now, as the signed-in staff user. With a broker it is enqueued
        for the workers; without one (eager mode) it runs inside this request."""
        if job not in job_names():
            abort(404)
        label = engine.job_label(job)
        back = redirect(url_for("AutomationView.status"))
        session = get_session()
        now = clock.now()
        stale_minutes = int(current_app.config.get("PUQPANEL_RUN_STALE_MINUTES", engine.STALE_MINUTES))
        running = session.scalar(
            select(AutomationRun.id).where(
                AutomationRun.job == job, AutomationRun.status == "running",
                AutomationRun.started_at >= now - dt.timedelta(minutes=stale_minutes))
            .order_by(AutomationRun.id.desc()).limit(1))
        if running:
            flash(_("%(job)s is already running (run #%(id)d); wait for it to finish.", job=label, id=running),
                  "warning")
            return back
        from ..tasks.engine import start

        eager = bool(current_app.extensions["celery"].conf.task_always_eager)
        try:
            result = start.delay(job, None, "staff", current_user_id())
            first = result.get() if eager else None
        except Exception as exc:  # noqa: BLE001  (broker unreachable, or the eager run raised)
            session.rollback()
            log.exception("run now of %s failed", job)
            flash(_("%(job)s could not be run: %(error)s", job=label, error=f"{type(exc).__name__}: {exc}"[:300]),
                  "danger")
            return back
        if not eager:
            flash(_("%(job)s was queued; a worker starts it shortly and it appears below.", job=label), "info")
            return back
        if first is None:
            flash(_("%(job)s was not started.", job=label), "warning")
            return back
        session.expire_all()
        first_run = session.get(AutomationRun, first)
        top = session.get(AutomationRun, first_run.cycle_id) if first_run.cycle_id else first_run
        text = _("%(job)s ran (run #%(id)d): %(status)s.", job=label, id=top.id,
                 status=RUN_STATUS_LABELS.get(top.status, top.status))
        flash(text, "success" if top.status == "succeeded" else "warning" if top.status == "running" else "danger")
        return redirect(url_for("AutomationView.run", run_id=top.id))


def register(appbuilder) -> None:
    appbuilder.add_view(AutomationView, "Automation Status", label=_l("Automation"), icon="fa-cogs",
                        category="Billing", category_label=_l("Billing"))
