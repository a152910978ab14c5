"""`puqpanel billing …`: the billing engine from the command line.

    puqpanel billing run [--at 2026-11-23T10:00] [--dry-run] [--inline | --broker]
    puqpanel billing charge|suspend|unsuspend|terminate|cancel|create|convert-prices|revalidate-vat|
                     reminders|send-email [--at …] [--inline | --broker]
    puqpanel billing status

Inline (default without a broker) runs the chunks in this process; --broker enqueues them for the Celery
workers and follows their progress. Both show a progress bar (tqdm) on a terminal.
"""
from __future__ import annotations

import datetime as dt
import time

import click
from flask import current_app
from flask.cli import with_appcontext

from .billing.engine.runs import CYCLE, JOBS, job_label


def _parse_at(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("use an ISO timestamp, e.g. 2026-11-23T10:00 (UTC)", param_hint="--at")
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment


class _Bars:
    """One tqdm bar per job, fed by progress(job, done, total)."""

    def __init__(self):
        from tqdm import tqdm

        self._tqdm, self._bars = tqdm, {}

    def __call__(self, job: str, done: int, total: int) -> None:
        bar = self._bars.get(job)
        if bar is None:
            bar = self._bars[job] = self._tqdm(total=total, desc=f"{job:>14}", unit="chunk",
                                               disable=None)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()


def _summary(run_id: int) -> None:
    from .domain.session import get_session
    from .models import AutomationRun

    session = get_session()
    run = session.get(AutomationRun, run_id)
    session.refresh(run)
    runs = [run]
    if run.job == "cycle":
        runs += list(session.query(AutomationRun).filter(AutomationRun.cycle_id == run.id).order_by(AutomationRun.id))
    for item in runs:
        counts = dict(item.counts or {}) if item.job != "cycle" else {}
        amounts = counts.pop("amounts", {})
        text = ", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing to do"
        if amounts:
            text += "; " + ", ".join(f"{amount} {code}" for code, amount in amounts.items())
        took = f"{item.duration.total_seconds():.1f} s" if item.finished_at else "-"
        click.echo(f"run {item.id} {item.job:<14} {item.status:<11} {took:>8}  {text}")
        for line in (item.errors or "").splitlines()[:5] if item.job != "cycle" else []:
            click.echo(f"    ! {line}", err=True)


def _execute(job: str, at: dt.datetime | None, broker: bool | None) -> None:
    from .billing.engine.runs import run_inline
    from .domain.session import get_session
    from .models import AutomationRun

    use_broker = bool(current_app.config.get("PUQPANEL_BROKER_URL")) if broker is None else broker
    if use_broker and not current_app.config.get("PUQPANEL_BROKER_URL"):
        raise click.UsageError("--broker needs PUQPANEL_BROKER_URL")
    bars = _Bars()
    if not use_broker:
        top = run_inline(job, at, "cli", progress=bars)
    else:
        from .tasks.engine import start

        first = start.delay(job, at.isoformat() if at else None, "cli").get(timeout=600)
        if first is None:
            raise click.ClickException("the run was not started (slot taken or a cycle is running)")
        session = get_session()
        top = session.get(AutomationRun, first).cycle_id or first
        while True:  # follow the workers through the database
            session.rollback()
            runs = session.query(AutomationRun).filter(
                (AutomationRun.id == top) | (AutomationRun.cycle_id == top)).order_by(AutomationRun.id).all()
            for run in runs:
                if run.job != "cycle":
                    bars(run.job, run.chunks_done, run.chunks_total)
            if runs[0].status != "running":
                break
            time.sleep(0.5)
    if top is None:
        raise click.ClickException("the run was not started")
    _summary(top)
    if get_session().get(AutomationRun, top).status != "succeeded":
        raise SystemExit(1)


def _preview(at: dt.datetime | None) -> None:
    from .billing.engine.runs import _currency_codes, preview
    from .domain.session import get_session

    lines, per_job = preview(at, progress=_Bars())
    codes = _currency_codes(get_session())
    click.echo("DRY RUN — nothing was written")
    for name in CYCLE:
        counts = per_job[name].as_json(codes)
        amounts = counts.pop("amounts", {})
        text = ", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing to do"
        if amounts:
            text += "; " + ", ".join(f"{amount} {code}" for code, amount in amounts.items())
        click.echo(f"{name:<10} {text}")
    if lines:
        click.echo(f"{'client':>8}  {'name':<30} {'charges':>7} {'amount':>16} {'susp':>5} {'unsusp':>6} "
                   f"{'term':>5} {'cancel':>6}")
    totals: dict[str, object] = {}
    for line in lines:
        click.echo(f"{line.client_id:>8}  {line.client[:30]:<30} {line.charges:>7} {line.amount:>12} {line.currency:<3} "
                   f"{line.suspended:>5} {line.unsuspended:>6} {line.terminated:>5} {line.cancelled:>6}")
        totals[line.currency] = totals.get(line.currency, 0) + line.amount
    for code, amount in sorted(totals.items()):
        click.echo(f"total charged {amount} {code}")


@click.group("billing")
def billing_group():
    """The billing engine: the cycle, single jobs, their status."""


@billing_group.command("run")
@click.option("--at", "at", help="Billing moment (ISO timestamp, UTC); default now.")
@click.option("--dry-run", is_flag=True, help="Show what would be charged, suspended, terminated; write nothing.")
@click.option("--inline/--broker", "inline", default=None, help="Run here, or through the Celery workers.")
@with_appcontext
def run_command(at, dry_run, inline):
    """Run the billing cycle: cancel, create, unsuspend, charge, suspend, terminate."""
    moment = _parse_at(at)
    if dry_run:
        _preview(moment)
    else:
        _execute("cycle", moment, None if inline is None else not inline)


def _job_command(name: str):
    @click.option("--at", "at", help="Billing moment (ISO timestamp, UTC); default now.")
    @click.option("--inline/--broker", "inline", default=None, help="Run here, or through the Celery workers.")
    @with_appcontext
    def command(at, inline):
        _execute(name, _parse_at(at), None if inline is None else not inline)

    command.__doc__ = f"{job_label(name)}: {JOBS[name].description}"
    return click.command(name.replace("_", "-"))(command)


for _name in JOBS:
    billing_group.add_command(_job_command(_name))


@billing_group.command("status")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@with_appcontext
def status_command(limit):
    """The latest runs."""
    from .domain.session import get_session
    from .models import AutomationRun

    for run in get_session().query(AutomationRun).order_by(AutomationRun.id.desc()).limit(limit):
        took = f"{run.duration.total_seconds():.1f} s" if run.finished_at else "-"
        click.echo(f"{run.id:>6} {run.job:<14} {run.trigger:<6} {run.status:<11} {run.started_at:%Y-%m-%d %H:%M:%S} "
                   f"{took:>8} chunks {run.chunks_done}/{run.chunks_total} errors {run.error_count}")
