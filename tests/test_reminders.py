"""Overdue reminders (engine job "reminders"): which unpaid proformas / invoices get which reminder on which
day, exactly once, to whom, in which language — and that the message reaches a real SMTP server."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import delete, func, select, update

from conftest import IS_POSTGRES
from puqpanel.billing import clock, invoicing, ledger, payments
from puqpanel.billing.engine import reminders
from puqpanel.billing.engine.runs import run_inline
from puqpanel.extensions import db as fsa
from puqpanel.models import ActivityLog, AutomationRun, ClientAddress, ClientUser, EmailOutbox, Invoice

from test_invoicing import home  # noqa: F401
from test_mail import run_threads, smtp_server, text_of  # noqa: F401

D = Decimal
ISSUED = dt.datetime(2026, 3, 10, 12, 0)  # proformas issued now are due 2026-03-17 (7 days)
DUE = dt.date(2026, 3, 17)


def morning(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(8, 0))


def proforma(client, net="100.00", at=ISSUED) -> Invoice:
    with clock.frozen_at(at):
        return invoicing.create_add_funds_proforma(client, net)


def remind(db, day: dt.date) -> dict:
    """Run the job for `day` as the engine would (its transaction committed afterwards)."""
    at = morning(day)
    with clock.frozen_at(at):
        counts = reminders.queue_reminders(db, None, at)
    db.commit()
    return counts.as_json()


def outbox(db) -> list[EmailOutbox]:
    db.expire_all()
    return list(db.scalars(select(EmailOutbox).order_by(EmailOutbox.id)))


def queued_kinds(db) -> list[tuple[int, str]]:
    return [(row.invoice_id, row.kind) for row in outbox(db)]


@pytest.fixture()
def client(db, new_client, home):  # noqa: F811
    return new_client(company_name="Schmidt Cloud GmbH", email="anna@schmidt.example")


def test_each_reminder_on_its_day_and_only_once(db, client):
    document = proforma(client)
    assert document.due_date == DUE and document.status == "unpaid"
    expected = {
        dt.date(2026, 3, 10): {}, dt.date(2026, 3, 13): {},      # not yet: "before" starts 3 days ahead
        dt.date(2026, 3, 14): {"before": 1},                      # due in 3 days
        dt.date(2026, 3, 15): {}, dt.date(2026, 3, 16): {},
        dt.date(2026, 3, 17): {"due": 1},                         # the due date
        dt.date(2026, 3, 18): {}, dt.date(2026, 3, 19): {},      # "after" waits 3 days
        dt.date(2026, 3, 20): {"after": 1},
        dt.date(2026, 3, 21): {}, dt.date(2026, 4, 30): {},      # and is sent once
    }
    for day, counts in expected.items():
        assert remind(db, day) == counts, day
    rows = outbox(db)
    assert [(r.kind, r.dedup_key, r.to_address, r.client_id, r.invoice_id, r.status) for r in rows] == [
        (f"invoice_reminder_{kind}", f"reminder:{kind}:{document.id}", "anna@schmidt.example", client.id,
         document.id, "queued") for kind in ("before", "due", "after")]
    assert [r.created_at for r in rows] == [morning(dt.date(2026, 3, d)) for d in (14, 17, 20)]
    log = db.scalars(select(ActivityLog).where(ActivityLog.action == "invoice.reminder").order_by(ActivityLog.id)).all()
    assert [(e.client_id, e.object_type, e.object_id, e.changes) for e in log] == [
        (client.id, "invoice", document.id, {"kind": kind, "to": "anna@schmidt.example"})
        for kind in ("before", "due", "after")]
    assert ledger.verify() == []


def test_a_missed_day_still_gets_the_before_and_after_reminders(db, client):
    document = proforma(client)
    assert remind(db, dt.date(2026, 3, 16)) == {"before": 1}  # the job did not run on the 14th and 15th
    assert remind(db, dt.date(2026, 3, 25)) == {"after": 1}   # nor on the 17th … 24th: no late "due"
    assert queued_kinds(db) == [(document.id, "invoice_reminder_before"), (document.id, "invoice_reminder_after")]


def test_settings_move_the_days(db, app, client):
    app.config["PUQPANEL_REMINDER_DAYS_BEFORE"], app.config["PUQPANEL_REMINDER_DAYS_AFTER"] = 5, 10
    try:
        proforma(client)
        assert remind(db, dt.date(2026, 3, 11)) == {}
        assert remind(db, dt.date(2026, 3, 12)) == {"before": 1}
        assert remind(db, dt.date(2026, 3, 26)) == {}
        assert remind(db, dt.date(2026, 3, 27)) == {"after": 1}
    finally:
        app.config.pop("PUQPANEL_REMINDER_DAYS_BEFORE")
        app.config.pop("PUQPANEL_REMINDER_DAYS_AFTER")


def test_paid_cancelled_and_draft_documents_get_none(db, client):
    unpaid = proforma(client, "10")
    paid = proforma(client, "20")
    cancelled = proforma(client, "30")
    with clock.frozen_at(ISSUED):
        result = payments.record_payment(paid, gateway="test", external_id="PAY-1", amount=paid.total)
        invoicing.cancel(cancelled)
        draft = invoicing.new_invoice(client, [dict(description="Work", quantity="1", unit_price="50")],
                                      due_date="2026-03-17")
    assert result.invoice.type == "invoice" and result.invoice.status == "paid"
    db.expire_all()
    assert {d.id: d.status for d in db.scalars(select(Invoice))} == {
        unpaid.id: "unpaid", paid.id: "invoiced", cancelled.id: "canceled", draft.id: "draft",
        result.invoice.id: "paid"}
    for day in (dt.date(2026, 3, 14), DUE, dt.date(2026, 3, 20)):
        remind(db, day)
    assert {invoice_id for invoice_id, _kind in queued_kinds(db)} == {unpaid.id}
    # Paid after the "before" reminder: nothing more.
    other = proforma(client, "40")
    assert remind(db, dt.date(2026, 3, 14)) == {"before": 1}
    with clock.frozen_at(morning(dt.date(2026, 3, 15))):
        payments.record_payment(db.get(Invoice, other.id), gateway="test", external_id="PAY-2", amount=other.total)
    assert remind(db, DUE) == {} and remind(db, dt.date(2026, 3, 20)) == {}
    assert ledger.verify() == []


def test_unpaid_invoice_documents_are_reminded_too(db, client):
    """Documents of type "invoice" left unpaid (e.g. imported) get reminders like proformas."""
    document = proforma(client)
    db.execute(update(Invoice).where(Invoice.id == document.id).values(type="invoice", number="INV-2026-00042"))
    db.commit()
    assert remind(db, DUE) == {"due": 1}
    (row,) = outbox(db)
    assert "INV-2026-00042" in row.subject and row.subject.startswith("Payment due today: Invoice ")


def test_a_second_run_queues_nothing(db, client, new_client):
    documents = [proforma(client, str(10 + i)) for i in range(3)]
    documents.append(proforma(new_client(), "99"))
    assert remind(db, DUE) == {"due": 4}
    assert remind(db, DUE) == {}
    assert db.scalar(select(func.count()).select_from(EmailOutbox)) == 4
    assert db.scalar(select(func.count()).where(ActivityLog.action == "invoice.reminder")) == 4


def test_batches_cover_every_document(db, client, monkeypatch):
    documents = [proforma(client, str(10 + i)) for i in range(7)]
    monkeypatch.setattr(reminders, "BATCH", 2)
    assert remind(db, DUE) == {"due": 7}
    assert sorted(invoice_id for invoice_id, _kind in queued_kinds(db)) == sorted(d.id for d in documents)


def test_recipient_falls_back_to_the_billing_contact_then_none(db, client):
    document = proforma(client)
    db.execute(delete(ClientUser).where(ClientUser.client_id == client.id))
    db.execute(update(ClientAddress).where(ClientAddress.client_id == client.id, ClientAddress.type == "billing")
               .values(contact_email="accounts@schmidt.example"))
    db.commit()
    assert remind(db, dt.date(2026, 3, 14)) == {"before": 1}
    assert [r.to_address for r in outbox(db)] == ["accounts@schmidt.example"]
    db.execute(update(ClientAddress).where(ClientAddress.client_id == client.id).values(contact_email=""))
    db.commit()
    assert remind(db, DUE) == {"no_recipient": 1}
    assert remind(db, DUE) == {"no_recipient": 1}  # looked at again (a recipient may be added meanwhile)
    assert [r.kind for r in outbox(db)] == ["invoice_reminder_before"]
    assert db.scalar(select(func.count()).where(ActivityLog.action == "invoice.reminder",
                                                ActivityLog.object_id == document.id)) == 1


def test_english_reminder_names_number_amount_due_date_and_how_to_pay(db, client):
    document = proforma(client)
    remind(db, dt.date(2026, 3, 14))
    (row,) = outbox(db)
    assert row.subject == f"Payment reminder: Proforma {document.number} is due on Mar 17, 2026"
    assert row.body.startswith("Hello Anna Schmidt1,\n")
    assert f"Proforma {document.number} for €123.00 is due on March 17, 2026." in row.body
    assert "Total: €123.00\n" in row.body and "Due date: March 17, 2026\n" in row.body
    assert "http://localhost:8080/" in row.body
    assert "IBAN PL61 1090 1014 0000 0712 1981 2874" in row.body and f"Reference: {document.number}" in row.body
    assert "Outstanding" not in row.body
    assert row.body.rstrip().endswith("PUQ Cloud Sp. z o.o.")


def test_german_client_reminder_arrives_over_smtp_through_the_engine(db, app, new_client, home,  # noqa: F811
                                                                     smtp_server):
    smtp_server.configure(PUQPANEL_PUBLIC_URL="https://panel.puq.example")
    german = new_client(language="de", firstname="Jürgen", lastname="Müller", email="juergen@mueller.example")
    english = new_client(email="emma@example.com", firstname="Emma", lastname="Jones")
    de_doc, en_doc = proforma(german), proforma(english, "50")
    at = morning(dt.date(2026, 3, 20))

    run = db.get(AutomationRun, run_inline("reminders", at))
    assert (run.job, run.status, run.counts, run.error_count) == ("reminders", "succeeded", {"after": 2}, 0)
    sent = db.get(AutomationRun, run_inline("send_email", at))
    assert (sent.job, sent.status, sent.counts) == ("send_email", "succeeded", {"sent": 2})

    messages = {tuple(to): message for _from, to, message in smtp_server.messages}
    assert set(messages) == {("juergen@mueller.example",), ("emma@example.com",)}
    de = messages[("juergen@mueller.example",)]
    assert de["To"] == "juergen@mueller.example" and de["From"] == "PUQ Billing <billing@puq.example>"
    assert de_doc.number in de["Subject"] and "Proforma-Rechnung" in de["Subject"] and "17.03.2026" in de["Subject"]
    body = text_of(de)
    assert body.startswith("Hello Jürgen Müller,") or body.startswith("Hallo Jürgen Müller,")
    assert f"Proforma-Rechnung: {de_doc.number}\n" in body
    assert "Gesamt: 123,00\xa0€\n" in body and "Fälligkeitsdatum: 17. März 2026\n" in body
    assert "Banküberweisung:" in body and f"Verwendungszweck: {de_doc.number}" in body
    assert "https://panel.puq.example/" in body
    en = messages[("emma@example.com",)]
    assert en["Subject"] == f"Overdue: Proforma {en_doc.number} was due on Mar 17, 2026"
    assert "Total: €61.50\n" in text_of(en)

    db.expire_all()
    assert {(r.status, r.sent_at) for r in outbox(db)} == {("sent", at)}
    # The next day's runs: nothing new, nothing sent twice.
    next_day = at + dt.timedelta(days=1)
    assert db.get(AutomationRun, run_inline("reminders", next_day)).counts == {}
    assert db.get(AutomationRun, run_inline("send_email", next_day)).counts == {}
    assert len(smtp_server.messages) == 2
    assert ledger.verify() == []


def test_partly_paid_document_names_what_is_outstanding(db, client):
    document = proforma(client)
    db.execute(update(Invoice).where(Invoice.id == document.id).values(amount_paid=D("23.00")))
    db.commit()
    remind(db, DUE)
    (row,) = outbox(db)
    assert "Total: €123.00\n" in row.body and "Outstanding: €100.00\n" in row.body
    assert "Amount: €100.00\n" in row.body


@pytest.mark.skipif(not IS_POSTGRES, reason="concurrent runs need PostgreSQL (set PUQPANEL_TEST_DATABASE_URL); "
                                             "SQLite serialises writers")
def test_two_concurrent_runs_queue_each_reminder_once(app, db, new_client, home):  # noqa: F811
    clients = [new_client() for _ in range(4)]
    ids = [proforma(clients[i % 4], str(10 + i)).id for i in range(60)]
    at = morning(DUE)

    def run(_i):
        with clock.frozen_at(at):
            counts = reminders.queue_reminders(fsa.session, None, at).as_json()
        fsa.session.commit()
        return counts

    results = run_threads(app, 3, run)
    assert [exc for _r, exc in results] == [None, None, None]
    assert sum(result.get("due", 0) for result, _exc in results) == 60
    db.expire_all()
    assert sorted(invoice_id for invoice_id, _kind in queued_kinds(db)) == sorted(ids)
    assert db.scalar(select(func.count()).where(ActivityLog.action == "invoice.reminder")) == 60
    assert db.scalar(select(func.count()).select_from(ActivityLog).where(
        ActivityLog.action == "invoice.reminder").group_by(ActivityLog.object_id).having(func.count() > 1)) is None
