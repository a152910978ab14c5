"""The time the billing domain reads. Tests and `--at` runs move it; nothing in billing calls utcnow()."""
from __future__ import annotations

import datetime as dt
from contextlib import contextmanager

from ..models.base import utcnow

_frozen: dt.datetime | None = None


def now() -> dt.datetime:
    """Naive UTC now (or the frozen time)."""
    return _frozen if _frozen is not None else utcnow()


def today() -> dt.date:
    return now().date()


@contextmanager
def frozen_at(moment: dt.datetime):
    """Within the block, now() returns `moment` (naive UTC)."""
    global _frozen
    previous, _frozen = _frozen, moment
    try:
        yield moment
    finally:
        _frozen = previous
