"""Per-login security settings kept beside FAB's ab_user (2FA arrives with the client-area issue)."""
from __future__ import annotations

from flask_appbuilder import Model
from sqlalchemy import Boolean, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column


class UserSecurity(Model):
    __tablename__ = "puq_user_security"

    user_id: Mapped[int] = mapped_column(ForeignKey("ab_user.id", ondelete="CASCADE"), primary_key=True)
    two_factor_enabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # Staff users can never be impersonated; client users can. Set when the login is created.
    is_client_login: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
