"""Records of the billing engine's work: runs of scheduled jobs, their chunks, and the e-mail outbox."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from flask_appbuilder import Model
from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import utcnow

RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")
RUN_TRIGGERS = ("beat", "cli", "staff", "cycle")
CHUNK_STATUSES = ("pending", "done", "failed")
OUTBOX_STATUSES = ("queued", "sent", "failed")


class AutomationRun(Model):
    """One run of one job (or of the whole billing cycle, job "cycle", whose job runs point at it).

    `at` is the billing moment the run works for (the clock it reads); `slot` is set for scheduled runs
    so that a second scheduler enqueuing the same slot is refused by the unique key."""

    __tablename__ = "puq_automation_run"
    __table_args__ = (Index("ix_puq_automation_run_job_started", "job", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(40), nullable=False)
    trigger: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(20), default="running", nullable=False)
    at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False)
    slot: Mapped[Optional[str]] = mapped_column(String(80), nullable=True, unique=True)
    cycle_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("puq_automation_run.id", ondelete="CASCADE"), nullable=True, index=True
    )
    author_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"), nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # {"charged": 12, "amount": "34.5600", ...} summed over the chunks
    counts: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)
    error_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # The first errors, as text lines ("chunk 3 (ids 1001–2000): …").
    errors: Mapped[str] = mapped_column(Text, default="", nullable=False)

    @property
    def duration(self) -> Optional[dt.timedelta]:
        return self.finished_at - self.started_at if self.finished_at else None


class AutomationChunk(Model):
    """A service-id range of a chunked run. Marking it done happens in the transaction that did its work,
    so a chunk redelivered after a crash either finds it done or redoes it from scratch."""

    __tablename__ = "puq_automation_chunk"

    run_id: Mapped[int] = mapped_column(ForeignKey("puq_automation_run.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    lo: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hi: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(20), default="pending", nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    counts: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)
    error: Mapped[str] = mapped_column(Text, default="", nullable=False)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)


class EmailOutbox(Model):
    """A message waiting to be sent (or sent). Jobs write rows in the transaction of what they describe;
    the send task delivers them over SMTP. `dedup_key` makes "send this reminder once" a unique key."""

    __tablename__ = "puq_email_outbox"
    __table_args__ = (Index("ix_puq_email_outbox_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    client_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True, index=True)
    invoice_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("puq_invoice.id", ondelete="SET NULL"), nullable=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(50), nullable=False)
    dedup_key: Mapped[Optional[str]] = mapped_column(String(120), nullable=True, unique=True)
    to_address: Mapped[str] = mapped_column(String(320), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(20), default="queued", nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    last_error: Mapped[str] = mapped_column(Text, default="", nullable=False)
    sent_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
