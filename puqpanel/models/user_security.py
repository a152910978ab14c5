"""Per-login security kept beside FAB's ab_user: 2FA methods and recovery codes, one-time e-mail codes,
login sessions (rotation, impersonation, login history) and the throttle counters of login and code entry."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from flask_appbuilder import Model
from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import utcnow

MFA_KINDS = ("email", "totp")
# What an e-mailed code is for: a login step, confirming a new e-mail method, or a change to the methods.
EMAIL_CODE_PURPOSES = ("login", "verify", "manage")


class UserSecurity(Model):
    __tablename__ = "puq_user_security"

    user_id: Mapped[int] = mapped_column(ForeignKey("ab_user.id", ondelete="CASCADE"), primary_key=True)
    two_factor_enabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # Staff users can never be impersonated; client users can. Set when the login is created.
    is_client_login: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # My Account fields FAB's ab_user lacks: phone (E.164) and the interface language ("" = default).
    phone: Mapped[str] = mapped_column(String(50), default="", server_default="", nullable=False)
    language: Mapped[str] = mapped_column(String(10), default="", server_default="", nullable=False)


class MfaMethod(Model):
    """A verification method of a login: its e-mail address or a named authenticator app (TOTP)."""

    __tablename__ = "puq_mfa_method"
    __table_args__ = (Index("ix_puq_mfa_method_user", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)  # MFA_KINDS
    name: Mapped[str] = mapped_column(String(100), default="", nullable=False)  # device name / e-mail
    secret: Mapped[str] = mapped_column(String(64), default="", nullable=False)  # TOTP base32 secret
    is_default: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # A method counts only once confirmed with a code it produced (TOTP) or that was sent to it (e-mail).
    confirmed_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    # The last TOTP time step accepted: a code of that step or an earlier one is refused (replay).
    last_used_step: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class MfaRecoveryCode(Model):
    """One of the ten one-time recovery codes of a login with 2FA on; only its hash is kept."""

    __tablename__ = "puq_mfa_recovery_code"
    __table_args__ = (Index("ix_puq_mfa_recovery_user", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False)
    code_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    used_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class MfaEmailCode(Model):
    """A 6-digit code e-mailed to a login (hash only), valid 10 minutes and once."""

    __tablename__ = "puq_mfa_email_code"
    __table_args__ = (Index("ix_puq_mfa_email_code_user", "user_id", "purpose"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False)
    method_id: Mapped[Optional[int]] = mapped_column(ForeignKey("puq_mfa_method.id", ondelete="CASCADE"),
                                                     nullable=True)
    purpose: Mapped[str] = mapped_column(String(20), nullable=False)  # EMAIL_CODE_PURPOSES
    code_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False)
    used_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class LoginSession(Model):
    """A signed-in browser session. The cookie carries the id; a rotated or ended session's id is refused,
    so an old copy of the cookie stops working. Impersonated sessions name the staff user, and the client's
    own login history lists only sessions without one."""

    __tablename__ = "puq_login_session"
    __table_args__ = (Index("ix_puq_login_session_user", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False)
    impersonator_id: Mapped[Optional[int]] = mapped_column(ForeignKey("ab_user.id", ondelete="CASCADE"),
                                                           nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    ended_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    end_reason: Mapped[str] = mapped_column(String(30), default="", nullable=False)
    ip: Mapped[str] = mapped_column(String(45), default="", nullable=False)
    user_agent: Mapped[str] = mapped_column(String(255), default="", nullable=False)


class AuthThrottle(Model):
    """Failed attempts per key ("login:<name>", "code:<user id>", "reset:<email>", "ip:<address>") in the
    current window; past the limit the key is locked until `locked_until`."""

    __tablename__ = "puq_auth_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    window_started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    locked_until: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
