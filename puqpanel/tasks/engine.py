"""Celery tasks of the billing engine (billing.engine.runs does the work).

- `puqpanel.engine.scheduled(job)`: what beat sends; the run gets the slot "job:YYYY-MM-DDTHH:MM", so a
  second beat firing the same minute is refused by the slot's unique key.
- `puqpanel.engine.start(job, at, trigger, author_id)`: a run started by staff or `puqpanel billing run`.
- `puqpanel.engine.chunk(run_id, seq)`: one chunk; acknowledged only after it finished (acks_late) and
  given back to the broker when its worker dies (reject_on_worker_lost), so another worker redoes it —
  harmless, chunks are idempotent.
"""
from __future__ import annotations

import datetime as dt

from celery import shared_task


@shared_task(name="puqpanel.engine.scheduled")
def scheduled(job: str) -> int | None:
    from ..billing import clock
    from ..billing.engine.runs import dispatch, start_run

    slot = f"{job}:{clock.now():%Y-%m-%dT%H:%M}"
    first = start_run(job, None, "beat", slot=slot)
    dispatch(first)
    return first


@shared_task(name="puqpanel.engine.start")
def start(job: str, at: str | None = None, trigger: str = "staff", author_id: int | None = None) -> int | None:
    from ..billing.engine.runs import dispatch, start_run

    moment = dt.datetime.fromisoformat(at) if at else None
    first = start_run(job, moment, trigger, author_id=author_id)
    dispatch(first)
    return first


@shared_task(name="puqpanel.engine.chunk", acks_late=True, reject_on_worker_lost=True)
def run_chunk(run_id: int, seq: int) -> None:
    from ..billing.engine.runs import dispatch, execute_chunk

    dispatch(execute_chunk(run_id, seq))
