"""Engine job "reminders": payment reminders for unpaid proformas and invoices, queued in the e-mail outbox.

Three reminders per document, each at most once (the outbox's unique dedup_key "reminder:{kind}:{id}"):

- "before": from PUQPANEL_REMINDER_DAYS_BEFORE (3) days before the due date until the day before it
  (a run missed on the first day sends it on a later one, as long as the document is not yet due);
- "due": on the due date;
- "after": from PUQPANEL_REMINDER_DAYS_AFTER (3, at least 1) days after the due date on, while unpaid.

A "due" reminder is not sent late: a document past its due date gets the "after" one. "Today" is the date
of the run's billing moment (`at`, UTC).

Documents are read in batches of BATCH ids (keyset on the id) that need a reminder of their current kind
and have none queued yet; the outbox rows are inserted with ON CONFLICT DO NOTHING, so a second run, or
two runs at once (the second waits on the first's uncommitted keys, then skips them), queues nothing
twice. Only the rows actually inserted get their activity entry ("invoice.reminder") and are counted.
The job adds to the run's transaction and does not commit (the run framework does).

Recipient: the e-mail of the client's owner login, else the billing address's contact e-mail; a client
with neither is counted as "no_recipient" (and looked at again by the next run). The message is written in
the client's language (a language the app doesn't offer: the default one).
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from flask import current_app
from flask_appbuilder.security.sqla.models import User
from flask_babel import force_locale, format_date, gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import String, and_, cast, exists, literal, or_, select

from ...domain import activity
from ...models import Client, ClientAddress, ClientUser, Currency, EmailOutbox, Invoice
from ...views.formatting import money
from .. import mail
from ..pdf import TITLES
from ..settings import setting
from .counts import Counts

KINDS = ("before", "due", "after")
BATCH = 500
DOCUMENT_TYPES = ("proforma", "invoice")
SUBJECTS = {
    "before": _l("Payment reminder: %(document)s %(number)s is due on %(date)s"),
    "due": _l("Payment due today: %(document)s %(number)s"),
    "after": _l("Overdue: %(document)s %(number)s was due on %(date)s"),
}
INTROS = {
    "before": _l("%(document)s %(number)s for %(amount)s is due on %(date)s."),
    "due": _l("%(document)s %(number)s for %(amount)s is due today, %(date)s."),
    "after": _l("%(document)s %(number)s for %(amount)s was due on %(date)s and has not been paid yet."),
}


def dedup_key(kind: str, invoice_id: int) -> str:
    return f"reminder:{kind}:{invoice_id}"


def outbox_kind(kind: str) -> str:
    return f"invoice_reminder_{kind}"


def days_setting(name: str, minimum: int) -> int:
    return max(minimum, int(setting(name)))


def kind_on(due_date: dt.date, today: dt.date, before: int, after: int) -> str | None:
    """Which reminder a document due on `due_date` gets on `today` (None: none)."""
    if today < due_date <= today + dt.timedelta(days=before):
        return "before"
    if due_date == today:
        return "due"
    if due_date <= today - dt.timedelta(days=after):
        return "after"
    return None


def _not_queued(kind: str):
    key = literal(f"reminder:{kind}:") + cast(Invoice.id, String)
    return ~exists().where(EmailOutbox.dedup_key == key)


def _batch(session, after_id: int, today: dt.date, before: int, after: int) -> list[Any]:
    """The next documents (by id) whose reminder of today's kind is not queued yet."""
    wanted = [
        and_(Invoice.due_date > today, Invoice.due_date <= today + dt.timedelta(days=before), _not_queued("before")),
        and_(Invoice.due_date == today, _not_queued("due")),
        and_(Invoice.due_date <= today - dt.timedelta(days=after), _not_queued("after")),
    ]
    return list(session.execute(
        select(Invoice.id, Invoice.client_id, Invoice.type, Invoice.number, Invoice.total, Invoice.amount_paid,
               Invoice.due_date, Invoice.currency_id, Invoice.company_snapshot)
        .where(Invoice.status == "unpaid", Invoice.type.in_(DOCUMENT_TYPES), Invoice.due_date.is_not(None),
               Invoice.id > after_id, or_(*wanted))
        .order_by(Invoice.id).limit(BATCH)
    ).all())


def _recipients(session, client_ids: list[int]) -> dict[int, str]:
    """client id → owner login's e-mail, else the billing address's contact e-mail."""
    found: dict[int, str] = {}
    for client_id, email in session.execute(
            select(ClientAddress.client_id, ClientAddress.contact_email)
            .where(ClientAddress.client_id.in_(client_ids), ClientAddress.type == "billing",
                   ClientAddress.contact_email != "")
            .order_by(ClientAddress.id.desc())):
        found[client_id] = email.strip()
    for client_id, email in session.execute(
            select(ClientUser.client_id, User.email).join(User, User.id == ClientUser.user_id)
            .where(ClientUser.client_id.in_(client_ids), ClientUser.is_owner.is_(True))
            .order_by(ClientUser.id.desc())):
        if email and email.strip():
            found[client_id] = email.strip()
    return {client_id: email for client_id, email in found.items() if email}


def _language(language: str | None) -> str:
    offered = current_app.config.get("LANGUAGES") or {}
    default = current_app.config.get("BABEL_DEFAULT_LOCALE", "en")
    return language if language and (not offered or language in offered) else default


def compose(kind: str, document, client, currency, public_url: str, bank_transfer: bool) -> tuple[str, str]:
    """(subject, body) of a reminder, in the active locale."""
    title = str(TITLES.get(document.type, document.type))
    number = document.number or f"#{document.id}"
    total = money(document.total, currency)
    outstanding = max(Decimal(document.total) - Decimal(document.amount_paid), Decimal(0))
    due = format_date(document.due_date, "long")
    subject = str(SUBJECTS[kind]) % {"document": title, "number": number,
                                     "date": format_date(document.due_date, "medium")}
    company = document.company_snapshot or {}
    name = f"{client.firstname} {client.lastname}".strip() or client.company_name
    lines = [
        gettext("Hello %(name)s,", name=name),
        "",
        str(INTROS[kind]) % {"document": title, "number": number, "amount": total, "date": due},
        "",
        f"{title}: {number}",
        f"{gettext('Total')}: {total}",
    ]
    if outstanding != Decimal(document.total):
        lines.append(f"{gettext('Outstanding')}: {money(outstanding, currency)}")
    lines += [f"{gettext('Due date')}: {due}", "", gettext("How to pay:"),
              gettext("Pay online in the panel: %(url)s", url=public_url)]
    bank_details = (company.get("bank_details") or "").strip()
    if bank_transfer and bank_details:
        lines += ["", f"{gettext('Bank transfer')}:",
                  f"{gettext('Beneficiary')}: {company.get('legal_name') or ''}",
                  f"{gettext('Bank details')}:", *(f"  {line}" for line in bank_details.splitlines()),
                  f"{gettext('Reference')}: {number}",
                  f"{gettext('Amount')}: {money(outstanding, currency)}"]
    lines += ["", gettext("If you have paid already, please disregard this message."), ""]
    if company.get("legal_name"):
        lines.append(company["legal_name"])
    return subject, "\n".join(lines) + "\n"


def queue_reminders(session, run_id: int | None, at: dt.datetime) -> Counts:
    """Engine job "reminders" (see the module doc). Counts: before, due, after, no_recipient."""
    today = at.date()
    before = days_setting("PUQPANEL_REMINDER_DAYS_BEFORE", 0)
    after = days_setting("PUQPANEL_REMINDER_DAYS_AFTER", 1)
    public_url = str(setting("PUQPANEL_PUBLIC_URL") or "").rstrip("/") + "/"
    bank_transfer = "bank_transfer" in setting("PUQPANEL_GATEWAYS")
    currencies = {c.id: c for c in session.scalars(select(Currency))}
    counts = Counts()
    after_id = 0
    while True:
        documents = _batch(session, after_id, today, before, after)
        if not documents:
            break
        after_id = documents[-1].id
        client_ids = sorted({d.client_id for d in documents})
        clients = {c.id: c for c in session.execute(
            select(Client.id, Client.firstname, Client.lastname, Client.company_name, Client.language)
            .where(Client.id.in_(client_ids))).all()}
        recipients = _recipients(session, client_ids)
        rows = []
        for document in documents:
            kind = kind_on(document.due_date, today, before, after)
            to = recipients.get(document.client_id)
            if kind is None:
                continue
            if not to:
                counts.add("no_recipient", 1)
                continue
            client = clients[document.client_id]
            with force_locale(_language(client.language)):
                subject, body = compose(kind, document, client, currencies.get(document.currency_id), public_url,
                                        bank_transfer)
            try:
                rows.append(mail.outbox_row(to, subject, body, kind=outbox_kind(kind), client_id=document.client_id,
                                            invoice_id=document.id, dedup_key=dedup_key(kind, document.id), now=at))
            except ValueError:  # an address that is not one (e.g. a list typed into the contact e-mail)
                counts.add("no_recipient", 1)
        by_key = {row["dedup_key"]: row for row in rows}
        entries = []
        for inserted in mail.queue_rows(session, rows):
            row = by_key[inserted.dedup_key]
            kind = inserted.dedup_key.split(":")[1]
            counts.add(kind, 1)
            changes = {"kind": kind, "to": row["to_address"]}
            if run_id is not None:
                changes["run"] = run_id
            entry = activity.record("invoice.reminder", client_id=row["client_id"], object_type="invoice",
                                    object_id=row["invoice_id"], changes=changes)
            entry.created_at = at
            entries.append(entry)
        session.flush()
        for entry in entries:  # written; keep the session small over many batches
            session.expunge(entry)
    return counts
