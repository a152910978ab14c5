"""The e-mail outbox and its SMTP sender, against a real SMTP server (aiosmtpd on 127.0.0.1).

The `smtp_server` fixture (also used by test_reminders.py) starts a server on a free port and points the
app's SMTP settings at it; what arrived is read back from it. "SMTP down" is a closed local port."""
from __future__ import annotations

import datetime as dt
import email
import socket
import threading
from email.policy import default as default_policy
from email.utils import parsedate_to_datetime

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import func, select

from conftest import IS_POSTGRES, run_threads
from puqpanel.billing import clock, mail
from puqpanel.billing.engine.runs import run_inline
from puqpanel.extensions import db as fsa
from puqpanel.models import AutomationRun, EmailOutbox

T0 = dt.datetime(2026, 3, 10, 12, 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Collector:
    """aiosmtpd handler: keeps every accepted message; refuses recipients in `refuse` with a 550."""

    def __init__(self):
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []
        self.refuse: set[str] = set()
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self, app, **kwargs):
        self.app = app
        self.handler = Collector()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)
        self.saved: dict = {}

    def configure(self, **settings):
        for key, value in settings.items():
            self.saved.setdefault(key, self.app.config.get(key, _MISSING))
            self.app.config[key] = value

    def restore(self):
        for key, value in self.saved.items():
            if value is _MISSING:
                self.app.config.pop(key, None)
            else:
                self.app.config[key] = value

    @property
    def messages(self):
        return self.handler.messages


_MISSING = object()


@pytest.fixture()
def smtp_server(app):
    """A running SMTP server; the app sends to it (settings restored afterwards)."""
    server = SmtpServer(app)
    server.controller.start()
    server.configure(PUQPANEL_SMTP_HOST="127.0.0.1", PUQPANEL_SMTP_PORT=server.port,
                     PUQPANEL_MAIL_FROM="PUQ Billing <billing@puq.example>", PUQPANEL_SMTP_TIMEOUT=10)
    try:
        yield server
    finally:
        server.controller.stop()
        server.restore()


@pytest.fixture()
def smtp_down(app):
    """The app's SMTP settings point at a closed local port."""
    server = SmtpServer.__new__(SmtpServer)
    server.app, server.saved = app, {}
    server.configure(PUQPANEL_SMTP_HOST="127.0.0.1", PUQPANEL_SMTP_PORT=free_port(), PUQPANEL_SMTP_TIMEOUT=5)
    try:
        yield server
    finally:
        server.restore()


def text_of(message) -> str:
    """The decoded text body (line ends as written: SMTP carries CRLF)."""
    return message.get_content().replace("\r\n", "\n")


def queue(n: int = 1, **kw) -> list[int]:
    ids = []
    with clock.frozen_at(T0):
        for i in range(n):
            ids.append(mail.queue_email(kw.get("to", f"user{i}@example.com"), kw.get("subject", f"Message {i}"),
                                        kw.get("body", f"Body of message {i}.\n"), kind="test",
                                        dedup_key=kw.get("dedup_key")))
    fsa.session.commit()
    return ids


def rows(db) -> list[EmailOutbox]:
    db.expire_all()
    return list(db.scalars(select(EmailOutbox).order_by(EmailOutbox.id)))


# -- queueing ------------------------------------------------------------------------------------------------

def test_queue_email_adds_a_row_and_dedup_key_queues_once(db):
    first = queue(1, to="anna@example.com", subject="Hello\nthere", dedup_key="welcome:1")
    again = queue(1, to="anna@example.com", subject="Hello again", dedup_key="welcome:1")
    assert first[0] is not None and again == [None]
    (row,) = rows(db)
    assert (row.to_address, row.subject, row.kind, row.status, row.attempts) == (
        "anna@example.com", "Hello there", "test", "queued", 0)
    assert row.created_at == T0 and row.next_attempt_at == T0 and row.sent_at is None
    # No dedup key: every call queues.
    queue(2, to="bob@example.com")
    assert len(rows(db)) == 3


@pytest.mark.parametrize("to", ["", "   ", "no-at-sign", "a@example.com, b@example.com", "a@example.com\r\nBcc: x@y"])
def test_queue_email_refuses_what_is_not_one_address(db, to):
    with pytest.raises(ValueError):
        mail.queue_email(to, "Subject", "Body", kind="test")
    fsa.session.rollback()
    assert rows(db) == []


# -- sending -------------------------------------------------------------------------------------------------

def test_send_outbox_delivers_with_proper_headers(db, smtp_server):
    queue(1, to="anna@example.com", subject="Zahlungserinnerung: Rechnung PF-1 fällig",
          body="Guten Tag,\nbitte zahlen Sie 123,00 €.\n")
    counts = mail.send_outbox(db, None, T0 + dt.timedelta(minutes=1))
    assert counts.as_json() == {"sent": 1}
    ((mail_from, rcpt_tos, message),) = smtp_server.messages
    assert mail_from == "billing@puq.example" and rcpt_tos == ["anna@example.com"]
    assert message["From"] == "PUQ Billing <billing@puq.example>"
    assert message["To"] == "anna@example.com"
    assert message["Subject"] == "Zahlungserinnerung: Rechnung PF-1 fällig"
    assert parsedate_to_datetime(message["Date"]) == (T0 + dt.timedelta(minutes=1)).replace(tzinfo=dt.timezone.utc)
    (row,) = rows(db)
    assert message["Message-ID"] == f"<puqpanel.outbox.{row.id}.20260310120000@puq.example>"
    assert text_of(message) == "Guten Tag,\nbitte zahlen Sie 123,00 €.\n"
    assert (row.status, row.attempts, row.sent_at, row.last_error) == ("sent", 1, T0 + dt.timedelta(minutes=1), "")
    # Nothing is sent twice.
    assert mail.send_outbox(db, None, T0 + dt.timedelta(minutes=2)).as_json() == {}
    assert len(smtp_server.messages) == 1


def test_rows_not_yet_due_wait(db, smtp_server):
    queue(1)
    assert mail.send_outbox(db, None, T0 - dt.timedelta(seconds=1)).as_json() == {}
    assert smtp_server.messages == [] and rows(db)[0].status == "queued"
    assert mail.send_outbox(db, None, T0).as_json() == {"sent": 1}


def test_many_messages_go_out_in_batches(db, app, smtp_server):
    smtp_server.configure(PUQPANEL_MAIL_BATCH_SIZE=3)
    queue(10)
    assert mail.send_outbox(db, None, T0).as_json() == {"sent": 10}
    assert sorted(m["Subject"] for _f, _t, m in smtp_server.messages) == sorted(f"Message {i}" for i in range(10))
    assert {row.status for row in rows(db)} == {"sent"}


def test_smtp_down_retries_with_backoff_then_fails(db, smtp_down):
    queue(2)
    moment, waits = T0, []
    for attempt in range(1, 9):
        counts = mail.send_outbox(db, None, moment)
        outbox = rows(db)
        assert [r.attempts for r in outbox] == [attempt, attempt]
        assert all("Connection refused" in r.last_error or "ConnectionRefused" in r.last_error for r in outbox), \
            outbox[0].last_error
        if attempt < 8:
            assert counts.as_json() == {"retry": 2}
            assert {r.status for r in outbox} == {"queued"}
            waits.append(outbox[0].next_attempt_at - moment)
            # A minute before the next attempt is due, nothing is tried.
            assert mail.send_outbox(db, None, outbox[0].next_attempt_at - dt.timedelta(minutes=1)).as_json() == {}
            assert rows(db)[0].attempts == attempt
            moment = outbox[0].next_attempt_at
        else:
            assert counts.as_json() == {"failed": 2}
            assert {r.status for r in outbox} == {"failed"}
    assert waits == [dt.timedelta(minutes=5 * 2 ** i) for i in range(7)]  # 5, 10, 20 … 320 minutes
    # Given up: a later run tries nothing.
    assert mail.send_outbox(db, None, moment + dt.timedelta(days=30)).as_json() == {}


def test_a_message_delayed_by_an_outage_goes_out_when_the_server_is_back(db, smtp_down, app):
    queue(1, subject="Delayed")
    assert mail.send_outbox(db, None, T0).as_json() == {"retry": 1}
    server = SmtpServer(app)
    server.controller.start()
    try:
        server.configure(PUQPANEL_SMTP_PORT=server.port)
        later = T0 + dt.timedelta(minutes=5)
        assert mail.send_outbox(db, None, later - dt.timedelta(seconds=1)).as_json() == {}
        assert mail.send_outbox(db, None, later).as_json() == {"sent": 1}
        assert [m["Subject"] for _f, _t, m in server.messages] == ["Delayed"]
        (row,) = rows(db)
        assert (row.status, row.attempts, row.sent_at) == ("sent", 2, later)
    finally:
        server.controller.stop()
        server.restore()


def test_a_refused_recipient_fails_at_once_and_the_others_are_sent(db, smtp_server):
    smtp_server.handler.refuse.add("gone@example.com")
    queue(1, to="a@example.com", subject="A")
    queue(1, to="gone@example.com", subject="Gone")
    queue(1, to="b@example.com", subject="B")
    assert mail.send_outbox(db, None, T0).as_json() == {"failed": 1, "sent": 2}
    assert sorted(m["Subject"] for _f, _t, m in smtp_server.messages) == ["A", "B"]
    statuses = {r.to_address: (r.status, r.attempts) for r in rows(db)}
    assert statuses == {"a@example.com": ("sent", 1), "gone@example.com": ("failed", 1),
                        "b@example.com": ("sent", 1)}
    assert "550" in next(r.last_error for r in rows(db) if r.status == "failed")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_login_when_configured(db, app):
    def authenticator(server, session, envelope, mechanism, auth_data):
        valid = (auth_data.login, auth_data.password) == (b"mailer", b"s3cret")
        return AuthResult(success=valid, handled=False)  # not handled: the server answers 535 itself

    server = SmtpServer(app, authenticator=authenticator, auth_required=True, auth_require_tls=False)
    server.controller.start()
    try:
        server.configure(PUQPANEL_SMTP_HOST="127.0.0.1", PUQPANEL_SMTP_PORT=server.port,
                         PUQPANEL_SMTP_USER="mailer", PUQPANEL_SMTP_PASSWORD="wrong")
        queue(1, subject="Authenticated")
        assert mail.send_outbox(db, None, T0).as_json() == {"retry": 1}
        assert "535" in rows(db)[0].last_error and server.messages == []
        server.configure(PUQPANEL_SMTP_PASSWORD="s3cret")
        assert mail.send_outbox(db, None, T0 + dt.timedelta(minutes=5)).as_json() == {"sent": 1}
        assert [m["Subject"] for _f, _t, m in server.messages] == ["Authenticated"]
    finally:
        server.controller.stop()
        server.restore()


def test_send_email_job_through_the_engine(db, smtp_server):
    queue(3)
    at = T0 + dt.timedelta(minutes=1)
    run_id = run_inline("send_email", at)
    run = db.get(AutomationRun, run_id)
    assert (run.job, run.status, run.counts, run.error_count) == ("send_email", "succeeded", {"sent": 3}, 0)
    assert len(smtp_server.messages) == 3
    again = db.get(AutomationRun, run_inline("send_email", at + dt.timedelta(minutes=1)))
    assert again.status == "succeeded" and again.counts == {}
    assert len(smtp_server.messages) == 3


# -- two senders at once (PostgreSQL) -------------------------------------------------------------------------

@pytest.mark.skipif(not IS_POSTGRES, reason="concurrent senders need PostgreSQL row locks (SKIP LOCKED); "
                                             "set PUQPANEL_TEST_DATABASE_URL — SQLite senders run one at a time")
def test_two_concurrent_senders_send_each_message_once(app, db, smtp_server):
    smtp_server.configure(PUQPANEL_MAIL_BATCH_SIZE=5)
    ids = queue(120)
    at = T0 + dt.timedelta(minutes=1)

    def send(_i):
        return mail.send_outbox(fsa.session, None, at).as_json()

    results = run_threads(app, 2, send)
    assert [exc for _r, exc in results] == [None, None]
    sent = [result.get("sent", 0) for result, _exc in results]
    assert sum(sent) == 120 and all(n > 0 for n in sent), sent
    message_ids = [m["Message-ID"] for _f, _t, m in smtp_server.messages]
    assert len(message_ids) == 120 and len(set(message_ids)) == 120
    assert sorted(m["Subject"] for _f, _t, m in smtp_server.messages) == sorted(f"Message {i}" for i in range(120))
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(EmailOutbox).where(
        EmailOutbox.status == "sent", EmailOutbox.attempts == 1, EmailOutbox.id.in_(ids))) == 120
