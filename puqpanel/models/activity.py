"""Append-only activity log: who did what to which client, from where, before → after."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from flask_appbuilder import Model
from flask_appbuilder.security.sqla.models import User
from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import utcnow


class ActivityLog(Model):
    __tablename__ = "puq_activity_log"
    __table_args__ = (Index("ix_puq_activity_client_time", "client_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False, index=True)
    actor_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ab_user.id", ondelete="SET NULL"), nullable=True)
    impersonator_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("ab_user.id", ondelete="SET NULL"), nullable=True
    )
    # No FK: the log outlives what it describes.
    client_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(50), nullable=False)  # e.g. client.update, address.create
    object_type: Mapped[str] = mapped_column(String(50), default="", nullable=False)
    object_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    # {"field": [before, after], ...} for updates; {"field": value} snapshot for create/delete.
    changes: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)
    description: Mapped[str] = mapped_column(String(500), default="", nullable=False)
    ip: Mapped[str] = mapped_column(String(45), default="", nullable=False)

    actor: Mapped[Optional[User]] = relationship(foreign_keys=[actor_id], lazy="joined")
    impersonator: Mapped[Optional[User]] = relationship(foreign_keys=[impersonator_id], lazy="joined")
