"""The e-mail outbox: messages are queued as EmailOutbox rows in the transaction of what they describe
(`queue_email`, `queue_rows`) and delivered over SMTP by the engine job "send_email" (`send_outbox`).

Delivery is **at-least-once**. A batch of due rows is claimed with SELECT … FOR UPDATE SKIP LOCKED (a
second sender, on another worker, skips the locked rows and takes the next ones); each message is marked
"sent" in that transaction right after the SMTP server accepted it, and the batch commits. Two senders
never send one message twice; only a crash (or a lost database connection) between the server's "250 OK"
and the batch's commit sends the messages accepted in that batch again on the next run. The other choice,
marking a row sent before handing it to the server (at-most-once), would silently lose a reminder on every
such crash; a rare duplicate is the lesser harm, and every message carries a Message-ID derived from its
outbox row, the same on a re-send, so mail clients can recognise the duplicate. PUQPANEL_MAIL_BATCH_SIZE
(default 50) bounds how many messages one crash can repeat.

Failures: the server unreachable (connection refused, timeout, TLS/login failure, disconnect) counts one
attempt for every row of the claimed batch and ends the run (the rest waits for the next run); a temporary
refusal of one message (4xx) counts one attempt for it. A failed attempt waits PUQPANEL_MAIL_RETRY_MINUTES
× 2^(attempts - 1) (5, 10, 20 … minutes, at most a day); after PUQPANEL_MAIL_MAX_ATTEMPTS the row becomes
"failed". A permanent refusal (5xx for the recipient or the content) or a message that cannot be built (a
malformed address) fails the row at once. On SQLite there is no row locking: run one sender at a time.
"""
from __future__ import annotations

import datetime as dt
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..domain.session import get_session
from ..models import EmailOutbox
from . import clock
from .engine.counts import Counts
from .settings import setting

log = logging.getLogger(__name__)

MAX_BACKOFF = dt.timedelta(days=1)
ERROR_LENGTH = 2000
SUBJECT_LENGTH = 255


# -- queueing ------------------------------------------------------------------------------------------------

def _clean_address(to: str) -> str:
    address = (to or "").strip()
    if not address or "@" not in address or any(c in address for c in "\r\n,;") or len(address) > 320:
        raise ValueError(f"not a single e-mail address: {to!r}")
    return address


def _clean_subject(subject: str) -> str:
    return " ".join(str(subject).split())[:SUBJECT_LENGTH]


def outbox_row(to: str, subject: str, body: str, *, kind: str, client_id: int | None = None,
               invoice_id: int | None = None, dedup_key: str | None = None,
               now: dt.datetime | None = None) -> dict[str, Any]:
    """The column values of a queued message (for `queue_rows`). ValueError for a malformed address."""
    now = now or clock.now()
    return {
        "created_at": now, "client_id": client_id, "invoice_id": invoice_id, "kind": kind[:50],
        "dedup_key": dedup_key, "to_address": _clean_address(to), "subject": _clean_subject(subject),
        "body": str(body), "status": "queued", "attempts": 0, "next_attempt_at": now, "last_error": "",
    }


def queue_rows(session, rows: list[dict[str, Any]]) -> list[Any]:
    """Insert outbox rows (built by `outbox_row`) into the current transaction, skipping those whose
    dedup_key exists already (INSERT … ON CONFLICT DO NOTHING: a concurrent transaction inserting the same
    key makes this one wait for its outcome, so the key is queued exactly once). Returns (id, dedup_key,
    invoice_id) of the rows inserted."""
    if not rows:
        return []
    table = EmailOutbox.__table__
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (dialect.insert(table).on_conflict_do_nothing(index_elements=["dedup_key"])
                 .returning(table.c.id, table.c.dedup_key, table.c.invoice_id))
    return list(session.execute(statement, rows).all())


def queue_email(to: str, subject: str, body: str, *, kind: str, client_id: int | None = None,
                invoice_id: int | None = None, dedup_key: str | None = None) -> int | None:
    """Queue one message in the current transaction (the caller commits it with what it describes).
    Returns the outbox id, or None when a message with this dedup_key was queued before."""
    row = outbox_row(to, subject, body, kind=kind, client_id=client_id, invoice_id=invoice_id,
                     dedup_key=dedup_key)
    inserted = queue_rows(get_session(), [row])
    return inserted[0].id if inserted else None


# -- sending -------------------------------------------------------------------------------------------------

def _flag(name: str) -> bool:
    value = setting(name)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _sender() -> tuple[str, str]:
    """(From header, envelope sender address)."""
    header = str(setting("PUQPANEL_MAIL_FROM")).strip() or "billing@localhost"
    return header, parseaddr(header)[1] or header


def build_message(row, now: dt.datetime) -> EmailMessage:
    """The message of an outbox row. Its Message-ID is derived from the row, so a re-send (see the module
    doc) carries the same one."""
    from_header, from_address = _sender()
    domain = from_address.rpartition("@")[2] or "localhost"
    message = EmailMessage()
    message["From"] = from_header
    message["To"] = row.to_address
    message["Subject"] = row.subject
    message["Date"] = format_datetime(now.replace(tzinfo=dt.timezone.utc))
    message["Message-ID"] = f"<puqpanel.outbox.{row.id}.{row.created_at:%Y%m%d%H%M%S}@{domain}>"
    message.set_content(row.body)
    return message


def connect() -> smtplib.SMTP:
    """An SMTP connection as configured (implicit TLS, STARTTLS, login); raises OSError/SMTPException."""
    host = str(setting("PUQPANEL_SMTP_HOST"))
    port = int(setting("PUQPANEL_SMTP_PORT"))
    timeout = float(setting("PUQPANEL_SMTP_TIMEOUT"))
    if _flag("PUQPANEL_SMTP_SSL"):
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    try:
        if _flag("PUQPANEL_SMTP_STARTTLS") and not _flag("PUQPANEL_SMTP_SSL"):
            smtp.starttls(context=ssl.create_default_context())
        user = str(setting("PUQPANEL_SMTP_USER") or "")
        if user:
            smtp.login(user, str(setting("PUQPANEL_SMTP_PASSWORD") or ""))
    except BaseException:
        _close(smtp)
        raise
    return smtp


def _close(smtp: smtplib.SMTP | None) -> None:
    if smtp is None:
        return
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


class _Unreachable(Exception):
    """The SMTP server cannot be used now (nothing more is tried in this run)."""


class _Permanent(Exception):
    """This message will never be accepted."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{address}: {code} {_text(reply)}" for address, (code, reply) in exc.recipients.items())
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return f"{type(exc).__name__}: {exc}".strip()


def _text(reply) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _deliver(smtp: smtplib.SMTP, row, now: dt.datetime) -> None:
    """Hand one message to the server. Raises _Permanent, _Unreachable, or an SMTPException (a temporary
    refusal of this message)."""
    try:
        message = build_message(row, now)
    except (ValueError, TypeError, IndexError) as exc:  # a header the e-mail package refuses
        raise _Permanent(f"{type(exc).__name__}: {exc}") from exc
    _from_header, envelope_from = _sender()
    try:
        smtp.send_message(message, from_addr=envelope_from, to_addrs=[row.to_address])
    except smtplib.SMTPRecipientsRefused as exc:
        if all(code >= 500 for code, _reply in exc.recipients.values()):
            raise _Permanent(_describe(exc)) from exc
        raise
    except smtplib.SMTPDataError as exc:
        if exc.smtp_code >= 500:
            raise _Permanent(_describe(exc)) from exc
        raise
    except smtplib.SMTPNotSupportedError as exc:  # e.g. a non-ASCII address and no SMTPUTF8
        raise _Permanent(_describe(exc)) from exc
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPHeloError) as exc:
        raise _Unreachable(_describe(exc)) from exc
    except smtplib.SMTPException:  # SMTPSenderRefused and other replies: this message, for now
        raise
    except OSError as exc:  # the connection broke (reset, timeout)
        raise _Unreachable(_describe(exc)) from exc
    except UnicodeError as exc:  # a non-ASCII address the server cannot take
        raise _Permanent(f"{type(exc).__name__}: {exc}") from exc


def _mark_sent(session, row_id: int, now: dt.datetime) -> None:
    session.execute(update(EmailOutbox).where(EmailOutbox.id == row_id)
                    .values(status="sent", sent_at=now, attempts=EmailOutbox.attempts + 1, last_error="")
                    .execution_options(synchronize_session=False))


def _mark_failed_attempt(session, row, now: dt.datetime, error: str, *, permanent: bool = False) -> str:
    """Count a failed attempt; "failed" (given up) or "retry" (next attempt scheduled)."""
    attempts = row.attempts + 1
    max_attempts = max(1, int(setting("PUQPANEL_MAIL_MAX_ATTEMPTS")))
    outcome = "failed" if permanent or attempts >= max_attempts else "retry"
    wait = dt.timedelta(minutes=float(setting("PUQPANEL_MAIL_RETRY_MINUTES"))) * (2 ** min(row.attempts, 20))
    values: dict[str, Any] = {"attempts": attempts, "last_error": error[:ERROR_LENGTH]}
    if outcome == "failed":
        values["status"] = "failed"
    else:
        values["next_attempt_at"] = now + min(wait, MAX_BACKOFF)
    session.execute(update(EmailOutbox).where(EmailOutbox.id == row.id).values(**values)
                    .execution_options(synchronize_session=False))
    return outcome


def _claim(session, now: dt.datetime, after_id: int, size: int) -> list[Any]:
    """The next due rows, locked for this transaction; rows another sender holds are skipped."""
    return list(session.execute(
        select(EmailOutbox.id, EmailOutbox.to_address, EmailOutbox.subject, EmailOutbox.body,
               EmailOutbox.attempts, EmailOutbox.created_at)
        .where(EmailOutbox.status == "queued", EmailOutbox.next_attempt_at <= now, EmailOutbox.id > after_id)
        .order_by(EmailOutbox.id).limit(size)
        .with_for_update(skip_locked=True)
    ).all())


class _Outcome:
    __slots__ = ("smtp", "unreachable", "result")

    def __init__(self, smtp, unreachable: str = "", result: str = ""):
        self.smtp, self.unreachable, self.result = smtp, unreachable, result


def _attempt(session, smtp: smtplib.SMTP | None, row, now: dt.datetime) -> _Outcome:
    """Try one row (connecting first if needed) and record the outcome, except when the server is
    unreachable (result "", `unreachable` set: the caller counts the attempt for the rest of the batch)."""
    if smtp is None:
        try:
            smtp = connect()
        except (OSError, smtplib.SMTPException) as exc:  # refused, timeout, TLS, login
            return _Outcome(None, _unreachable(exc))
    try:
        _deliver(smtp, row, now)
    except _Permanent as exc:
        log.warning("outbox %s: refused for good: %s", row.id, exc)
        result = _mark_failed_attempt(session, row, now, str(exc), permanent=True)
    except _Unreachable as exc:
        smtp.close()
        return _Outcome(None, _unreachable(exc))
    except smtplib.SMTPException as exc:
        log.info("outbox %s: refused for now: %s", row.id, _describe(exc))
        result = _mark_failed_attempt(session, row, now, _describe(exc))
    else:
        _mark_sent(session, row.id, now)
        return _Outcome(smtp, result="sent")
    if getattr(smtp, "sock", None) is None:  # the server closed the connection (421): reconnect next time
        smtp = None
    return _Outcome(smtp, result=result)


def _unreachable(exc: BaseException) -> str:
    error = str(exc) if isinstance(exc, _Unreachable) else _describe(exc)
    log.warning("SMTP server %s:%s unusable: %s", setting("PUQPANEL_SMTP_HOST"), setting("PUQPANEL_SMTP_PORT"),
                error)
    return error


def send_outbox(session, run_id: int | None, at: dt.datetime | None = None) -> Counts:
    """Engine job "send_email": deliver the queued rows due at `at` (default: the clock), one committed
    batch at a time. Counts: sent, retry (a later attempt is scheduled), failed (given up)."""
    now = (at or clock.now()).replace(microsecond=0)
    size = max(1, int(setting("PUQPANEL_MAIL_BATCH_SIZE")))
    counts = Counts()
    smtp: smtplib.SMTP | None = None
    after_id = 0
    try:
        while True:
            rows = _claim(session, now, after_id, size)
            if not rows:
                break
            after_id = rows[-1].id
            unreachable = ""
            for row in rows:
                if not unreachable:
                    outcome = _attempt(session, smtp, row, now)
                    smtp, unreachable = outcome.smtp, outcome.unreachable
                    if outcome.result:
                        counts.add(outcome.result, 1)
                        continue
                counts.add(_mark_failed_attempt(session, row, now, unreachable), 1)
            session.commit()
            if unreachable:
                break
    finally:
        _close(smtp)
    return counts

