"""Payments of proformas and refunds of paid invoices — the money side of a document.

Recording a payment (one DB transaction, lock order invoice → client → document counter):
- amount > 0 and ≤ what is outstanding; one gateway transaction id (gateway, external_id) is recorded once:
  recording it again returns created=False and changes nothing (under concurrency the unique key
  uq_payment_gateway_txn refuses the second insert; the caller then gets the first payment back);
- a `payment` ledger row credits the NET part of the money, rounded cumulatively: net = (paid so far incl.
  this payment) × subtotal / total rounded to 4 places − Σ previous nets; the payment that completes the
  document gets subtotal − Σ previous nets, so the nets of a document sum exactly to its subtotal (taxes
  are not the client's money) and no payment absorbs the rounding of the others. gross = amount, fees = fee;
- once nothing is outstanding the proforma becomes a paid invoice (see `_invoice_paid_proforma`).

Decisions (documented here because they are money rules):
- The paid invoice restates the proforma the client accepted and paid: same home company, currency, items,
  tax lines, reverse-charge flag and both snapshots (taken when the proforma was issued). A profile change
  after that affects only documents issued later. Its issue date and number are of the day it is created.
- A proforma of kind "items" (staff New Invoice: goods or work) is bought from the payment: in the same
  transaction a `charge` row of −subtotal follows, so its payment leaves the balance where it was. An
  "add_funds" proforma just credits the balance.
- A payment is refused when the client's currency is no longer the document's currency (the ledger is kept
  in the client's currency; converting a received payment silently would be wrong).
- Paying never checks the add-funds maximum balance again: money that arrived is always booked.
- A refund returns money: its `refund` row (net −amount) may take the balance below zero when the client
  already spent the funds — that is a debt the ledger must show, not something to refuse. Refunding an
  "items" invoice first reverses the charge (+amount) and then books the refund (−amount): the goods are
  returned and the money is sent back, the prepaid balance is unchanged.
- Credit notes carry positive amounts (subtotal = refunded net, taxes scaled proportionally to 2 places,
  cumulatively: tax of all refunds so far rounded − tax of the earlier credit notes, so no line is negative;
  the refund completing the invoice takes the remaining tax so Σ credit notes == invoice); the ledger row is
  the negative side.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..domain import DomainError, activity
from ..domain.session import get_session, transaction
from ..models import Client, Invoice, InvoiceItem, Payment
from . import clock, ledger, numbering
from .invoicing import format_amount, lock_invoice, parse_money, refundable_amount
from .money import INVOICE_PLACES, LEDGER_PLACES, ZERO, invoice as round_invoice, ledger as round_ledger

EXTERNAL_ID_MAX = 100
GATEWAY_MAX = 50
REASON_MAX = 200


@dataclass
class PaymentResult:
    payment: Payment
    created: bool
    invoice: Invoice  # the document the payment now belongs to (the paid invoice once fully paid)


def find_payment(gateway: str, external_id: str) -> Payment | None:
    return get_session().scalar(select(Payment).where(Payment.gateway == gateway, Payment.external_id == external_id))


def _check_reference(gateway: str, external_id: str) -> tuple[str, str]:
    gateway = str(gateway or "").strip()
    external_id = str(external_id or "").strip()
    errors = {}
    if not gateway:
        errors["gateway"] = str(_l("This field is required."))
    elif len(gateway) > GATEWAY_MAX:
        errors["gateway"] = str(_l("At most %(n)s characters.", n=GATEWAY_MAX))
    if not external_id:
        errors["external_id"] = str(_l("This field is required."))
    elif len(external_id) > EXTERNAL_ID_MAX:
        errors["external_id"] = str(_l("At most %(n)s characters.", n=EXTERNAL_ID_MAX))
    elif not external_id.isprintable():
        errors["external_id"] = str(_l("Only printable characters."))
    if errors:
        raise DomainError(errors)
    return gateway, external_id


def _decimal(value, field: str, *, places: Decimal, allow_zero: bool = False) -> Decimal:
    return parse_money(value, field, places=places, allow_zero=allow_zero)


def _existing(gateway: str, external_id: str) -> PaymentResult | None:
    payment = find_payment(gateway, external_id)
    if payment is None:
        return None
    return PaymentResult(payment, False, get_session().get(Invoice, payment.invoice_id))


def record_payment(invoice: Invoice, *, gateway: str, external_id: str, amount, fee=ZERO,
                   paid_at: dt.datetime | None = None) -> PaymentResult:
    """Book money received for a proforma (see the module docstring). Returns the payment, whether it was
    created now, and the document it belongs to."""
    gateway, external_id = _check_reference(gateway, external_id)
    errors: dict[str, str] = {}
    amount_value = fee_value = None
    try:
        amount_value = _decimal(amount, "amount", places=INVOICE_PLACES)
    except DomainError as exc:
        errors.update(exc.errors)
    try:
        fee_value = _decimal(fee if fee not in (None, "") else ZERO, "fee", places=LEDGER_PLACES, allow_zero=True)
    except DomainError as exc:
        errors.update(exc.errors)
    if amount_value is not None and fee_value is not None and fee_value > amount_value:
        errors["fee"] = str(_l("The fee may not exceed the amount."))
    when = paid_at or clock.now()
    if when > clock.now() + dt.timedelta(minutes=5):
        errors["paid_at"] = str(_l("The payment date may not be in the future."))
    if errors:
        raise DomainError(errors)
    try:
        with transaction():
            return _record(invoice.id, gateway, external_id, amount_value, fee_value, when)
    except IntegrityError:
        # A concurrent transaction recorded the same gateway transaction first (unique key): nothing of ours
        # was written (rolled back); answer with the payment that exists.
        existing = _existing(gateway, external_id)
        if existing is None:
            raise
        return existing


def _record(invoice_id: int, gateway: str, external_id: str, amount: Decimal, fee: Decimal,
            when: dt.datetime) -> PaymentResult:
    session = get_session()
    document = lock_invoice(invoice_id)
    existing = _existing(gateway, external_id)
    if existing is not None:
        return existing
    if document.type != "proforma" or document.status != "unpaid":
        if document.status == "invoiced":
            raise DomainError(str(_l("This proforma is already paid.")))
        raise DomainError(str(_l("Only an unpaid proforma can be paid.")))
    outstanding = document.total - document.amount_paid
    if amount > outstanding:
        raise DomainError({"amount": str(_l("At most %(amount)s is outstanding.",
                                            amount=format_amount(outstanding, document.currency)))})
    client = ledger.lock_client(document.client_id)
    if client.currency_id != document.currency_id:
        raise DomainError(str(_l(
            "The client's currency changed since this document was issued; record the payment as an adjustment."
        )))
    previous = list(session.scalars(
        select(Payment).where(Payment.invoice_id == document.id).order_by(Payment.id)
    ))
    completes = amount == outstanding
    earlier_nets = sum((p.net for p in previous), ZERO)
    if completes:
        net = round_ledger(document.subtotal - earlier_nets)
    else:
        # rounded cumulatively (net of everything paid so far − the nets booked): rounding each payment on
        # its own drifted by up to 0.00005 a payment, which the last payment then absorbed
        net = round_ledger((document.amount_paid + amount) * document.subtotal / document.total) - earlier_nets
    description = f"Payment of proforma {document.number} ({gateway} {external_id})"
    row = ledger.post(client, "payment", net, gross=amount, fees=fee, description=description,
                      gateway=gateway, external_id=external_id, invoice_id=document.id)
    payment = Payment(client_id=client.id, invoice_id=document.id, gateway=gateway, external_id=external_id,
                      amount=amount, fee=fee, net=net, paid_at=when, transaction_id=row.id,
                      created_at=clock.now())
    session.add(payment)
    document.amount_paid = round_ledger(document.amount_paid + amount)
    session.flush()  # the unique key refuses a concurrent duplicate here (IntegrityError → caller)
    activity.record(
        "invoice.payment", client_id=client.id, object_type="invoice", object_id=document.id,
        changes={"amount_paid": [str(document.amount_paid - amount), str(document.amount_paid)]},
        description=f"Payment {amount} {client.currency.code} of proforma {document.number} "
                    f"({gateway} {external_id}, fee {fee}, net {net})",
    )
    result_document = document
    if completes:
        result_document = _invoice_paid_proforma(document, client, when)
    return PaymentResult(payment, True, result_document)


def _copy_document(source: Invoice, *, type: str, status: str) -> Invoice:
    actor_id, _impersonator = activity.current_actor()
    copy = Invoice(
        client_id=source.client_id, home_company_id=source.home_company_id, currency_id=source.currency_id,
        type=type, kind=source.kind, status=status, reverse_charge=source.reverse_charge, notes=source.notes,
        client_snapshot=dict(source.client_snapshot or {}), company_snapshot=dict(source.company_snapshot or {}),
        created_by_id=actor_id, created_at=clock.now(),
    )
    copy.home_company = source.home_company
    return copy


def _invoice_paid_proforma(proforma: Invoice, client: Client, when: dt.datetime) -> Invoice:
    """The fully paid proforma becomes a paid invoice with the next invoice number: items, taxes and
    snapshots copied, payments moved to it, the proforma marked invoiced."""
    session = get_session()
    today = clock.today()
    paid = _copy_document(proforma, type="invoice", status="paid")
    paid.subtotal = proforma.subtotal
    for i in (1, 2, 3):
        for part in ("name", "rate", "amount"):
            setattr(paid, f"tax{i}_{part}", getattr(proforma, f"tax{i}_{part}"))
    paid.total = proforma.total
    paid.amount_paid = proforma.amount_paid
    paid.issue_date = today
    paid.due_date = proforma.due_date
    paid.paid_date = when.date()
    paid.proforma_id = proforma.id
    paid.items = [
        InvoiceItem(position=item.position, description=item.description, quantity=item.quantity,
                    unit_price=item.unit_price, amount=item.amount, service_id=item.service_id)
        for item in proforma.items
    ]
    numbering.assign_number(paid, today)
    session.add(paid)
    session.flush()
    for payment in session.scalars(select(Payment).where(Payment.invoice_id == proforma.id)):
        payment.invoice_id = paid.id
        payment.proforma_id = proforma.id
    proforma.status = "invoiced"
    proforma.paid_date = when.date()
    if proforma.kind == "items":
        ledger.post(client, "charge", -proforma.subtotal, description=f"Invoice {paid.number}",
                    invoice_id=paid.id)
    session.flush()
    session.expire(proforma, ["payments"])
    activity.record(
        "invoice.paid", client_id=client.id, object_type="invoice", object_id=paid.id,
        changes={"status": ["unpaid", "invoiced"], "invoice": [None, paid.number]},
        description=f"Proforma {proforma.number} paid: invoice {paid.number}",
    )
    return paid


def refund(invoice: Invoice, amount, reason: str) -> Invoice:
    """Refund `amount` (net, 2 places) of a paid invoice: a credit note (own number, status refunded,
    linked to the invoice) and a negative `refund` ledger row. A full refund marks the invoice refunded."""
    errors: dict[str, str] = {}
    value = None
    try:
        value = _decimal(amount, "amount", places=INVOICE_PLACES)
    except DomainError as exc:
        errors.update(exc.errors)
    reason = str(reason or "").strip()
    if not reason:
        errors["reason"] = str(_l("This field is required."))
    elif len(reason) > REASON_MAX:
        errors["reason"] = str(_l("At most %(n)s characters.", n=REASON_MAX))
    if errors:
        raise DomainError(errors)
    with transaction() as session:
        document = lock_invoice(invoice.id, invoice.client_id)
        if document.type != "invoice" or document.status != "paid":
            raise DomainError(str(_l("Only a paid invoice can be refunded.")))
        refundable = refundable_amount(document)
        if value > refundable:
            raise DomainError({"amount": str(_l("At most %(amount)s can be refunded.",
                                                amount=format_amount(refundable, document.currency)))})
        client = ledger.lock_client(document.client_id)
        if client.currency_id != document.currency_id:
            raise DomainError(str(_l(
                "The client's currency changed since this invoice was issued; refund it as an adjustment."
            )))
        completes = value == refundable
        earlier = list(session.scalars(
            select(Invoice).where(Invoice.refunds_invoice_id == document.id, Invoice.type == "credit_note")
        ).unique())
        today = clock.today()
        note = _copy_document(document, type="credit_note", status="refunded")
        note.subtotal = value
        taxes = ZERO
        refunded_before = sum((cn.subtotal for cn in earlier), ZERO)
        for i in (1, 2, 3):
            note_tax = ZERO
            name = getattr(document, f"tax{i}_name")
            full = getattr(document, f"tax{i}_amount")
            if name:
                taxed_before = sum((getattr(cn, f"tax{i}_amount") for cn in earlier), ZERO)
                if completes:
                    note_tax = full - taxed_before
                else:
                    # rounded cumulatively: rounding each refund's share on its own let small refunds take
                    # more tax than theirs, leaving a negative tax line to the last credit note
                    share = round_invoice(full * (refunded_before + value) / document.subtotal)
                    note_tax = max(share - taxed_before, ZERO)
            setattr(note, f"tax{i}_name", name)
            setattr(note, f"tax{i}_rate", getattr(document, f"tax{i}_rate"))
            setattr(note, f"tax{i}_amount", note_tax)
            taxes += note_tax
        note.total = round_invoice(value + taxes)
        note.amount_paid = note.total
        note.issue_date = today
        note.paid_date = today
        note.refunds_invoice_id = document.id
        note.notes = reason
        note.items = [InvoiceItem(position=0, description=f"Refund of invoice {document.number}: {reason}"[:255],
                                  quantity=Decimal(1), unit_price=value, amount=value)]
        numbering.assign_number(note, today)
        session.add(note)
        session.flush()
        if document.kind == "items":
            ledger.post(client, "charge", value, description=f"Charge reversed: credit note {note.number}",
                        invoice_id=note.id)
        ledger.post(client, "refund", -value, gross=-note.total,
                    description=f"Refund: credit note {note.number} for invoice {document.number}",
                    invoice_id=note.id)
        if completes:
            document.status = "refunded"
        activity.record(
            "invoice.refund", client_id=client.id, object_type="invoice", object_id=document.id,
            changes={"refunded": [str(document.subtotal - refundable), str(document.subtotal - refundable + value)],
                     "status": ["paid", document.status]},
            description=f"Refund {value} {client.currency.code} of invoice {document.number}: credit note "
                        f"{note.number} ({reason})",
        )
    return note

