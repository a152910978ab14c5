"""Invoices: add-funds proformas, staff proformas with items, their life cycle, snapshots and lists.

Documents (DESIGN.md "Invoice"): type proforma | invoice | credit_note; status draft → unpaid → invoiced
(a proforma, once fully paid, becomes a paid invoice — see billing.payments), unpaid → canceled, a paid
invoice → refunded (credit notes, billing.payments.refund). A number is taken only when a document reaches
its numbered state (proforma published, invoice created paid, credit note created refunded).

Money: item amount = quantity × unit price rounded to 2 places half-up; subtotal = Σ item amounts; each tax
line = subtotal × rate / 100 rounded to 2 places half-up; total = subtotal + Σ tax lines.

Every public operation is one unit of work (domain.session.transaction) and writes activity rows.
Documents are locked (`lock_invoice`) before any state change: lock order invoice → client → counter.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, Iterable

import pycountry
from flask_babel import format_currency
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, case, func, or_, select, update

from ..domain import DomainError, NotFound, activity
from ..domain.session import get_session, transaction
from ..models import (
    INVOICE_STATUSES,
    INVOICE_TYPES,
    Client,
    HomeCompany,
    Invoice,
    InvoiceItem,
    Payment,
    Transaction,
)
from ..models.base import MONEY_MAX
from . import clock, numbering, tax
from .money import INVOICE_PLACES, LEDGER_PLACES, ZERO, invoice as round_invoice, parse_amount
from .settings import setting

ADD_FUNDS_DESCRIPTION = "Add funds"
MAX_ITEMS = 100
MAX_NOTES = 5000
DESCRIPTION_MAX = 255
PAGE_SIZE_MAX = 100
# Furthest a due date may lie after the issue date.
MAX_DUE_DAYS = 366


def parse_money(raw, field: str, *, places: Decimal = INVOICE_PLACES, allow_zero: bool = False) -> Decimal:
    """money.parse_amount for user input or a Decimal, also refusing exponents too large to round
    ("1e400" makes Decimal.quantize raise InvalidOperation inside parse_amount)."""
    text = format(raw, "f") if isinstance(raw, Decimal) else raw
    try:
        return parse_amount(text, field, places=places, allow_zero=allow_zero)
    except (InvalidOperation, OverflowError):
        raise DomainError({field: str(_l("The amount is too large."))}) from None


# -- snapshots --------------------------------------------------------------------------------------------
def _country_name(code: str) -> str:
    country = pycountry.countries.get(alpha_2=code) if code else None
    return country.name if country else (code or "")


def _region_name(code: str) -> str:
    if not code:
        return ""
    region = pycountry.subdivisions.get(code=code)
    return region.name if region else code


def _address_lines(address1: str, address2: str, postcode: str, city: str, region_name: str,
                   country_name: str) -> list[str]:
    """Printable address lines; empty parts and a line repeating the one before (a region named like its
    city: Berlin, Berlin) are left out."""
    town = " ".join(part for part in (postcode, city) if part)
    lines: list[str] = []
    for line in (address1, address2, town, region_name, country_name):
        line = (line or "").strip()
        if line and (not lines or lines[-1] != line):
            lines.append(line)
    return lines


def snapshot_client(client: Client) -> dict[str, Any]:
    """The client's legal details and billing address as printed on a document issued now (frozen in the
    document: editing the client later does not change it)."""
    address = client.billing_address
    owner = client.owner
    data: dict[str, Any] = {
        "client_id": client.id,
        "legal_name": client.company_name or client.name,
        "company_name": client.company_name or "",
        "firstname": client.firstname,
        "lastname": client.lastname,
        "name": client.name,
        "tax_id": client.tax_id or "",
        "vies_status": client.vies_status,
        "email": owner.email if owner is not None else "",
        "phone": client.phone or "",
        "language": client.language or "",
    }
    if address is not None:
        region_name = _region_name(address.region)
        country_name = _country_name(address.country)
        data.update(
            contact_name=address.contact_name,
            address1=address.address1,
            address2=address.address2,
            city=address.city,
            postcode=address.postcode,
            region=address.region,
            region_name=region_name,
            country=address.country,
            country_name=country_name,
            address_lines=_address_lines(address.address1, address.address2, address.postcode, address.city,
                                         region_name, country_name),
        )
    else:
        data.update(contact_name="", address1="", address2="", city="", postcode="", region="", region_name="",
                    country="", country_name="", address_lines=[])
    return data


def snapshot_company(home_company: HomeCompany) -> dict[str, Any]:
    """The issuing home company's legal details as printed on a document issued now."""
    region_name = _region_name(home_company.region)
    country_name = _country_name(home_company.country)
    return {
        "home_company_id": home_company.id,
        "name": home_company.name,
        "legal_name": home_company.company_name,
        "address1": home_company.address1,
        "address2": home_company.address2,
        "city": home_company.city,
        "postcode": home_company.postcode,
        "region": home_company.region,
        "region_name": region_name,
        "country": home_company.country,
        "country_name": country_name,
        "address_lines": _address_lines(home_company.address1, home_company.address2, home_company.postcode,
                                         home_company.city, region_name, country_name),
        "tax_id": home_company.tax_id,
        "bank_details": home_company.bank_details,
        "email": home_company.email,
        "phone": home_company.phone,
        "website": home_company.website,
        "logo": home_company.logo,
        "pdf_footer": home_company.pdf_footer,
    }


def legal_note(document: Invoice) -> str:
    """The tax note printed on a document (the EU reverse-charge sentence), as it was at issue time."""
    note = (document.client_snapshot or {}).get("tax_note", "")
    if not note and document.reverse_charge:
        note = tax.REVERSE_CHARGE_NOTE
    return note


def _apply_decision(document: Invoice, client: Client, decision: tax.TaxDecision) -> None:
    """Home company, currency, tax lines, total and both snapshots of `document` (items already set)."""
    document.home_company = decision.home_company
    document.home_company_id = decision.home_company.id
    document.currency_id = client.currency_id
    lines = tax.tax_lines(document.subtotal, decision)
    for i in (1, 2, 3):
        name, rate, amount = lines[i - 1] if len(lines) >= i else ("", ZERO, ZERO)
        setattr(document, f"tax{i}_name", name)
        setattr(document, f"tax{i}_rate", rate)
        setattr(document, f"tax{i}_amount", amount)
    document.total = round_invoice(document.subtotal + sum((amount for _n, _r, amount in lines), ZERO))
    document.reverse_charge = decision.reverse_charge
    document.client_snapshot = dict(snapshot_client(client), tax_note=decision.note)
    document.company_snapshot = snapshot_company(decision.home_company)


def format_amount(amount: Decimal, currency) -> str:
    """An amount with its currency for messages (Babel, the request's locale)."""
    try:
        return format_currency(amount, currency.code)
    except Exception:  # noqa: BLE001 - an unusual code still reads fine as "12.00 XYZ"
        return f"{amount} {currency.code}"


# -- add funds --------------------------------------------------------------------------------------------
@dataclass
class AddFundsLimits:
    """Add-funds limits in the client's currency: the smallest and largest single top-up (the largest also
    limited by the room left below the highest allowed balance) and that highest balance."""

    min: Decimal
    max: Decimal
    max_balance: Decimal
    top_up_max: Decimal  # PUQPANEL_ADD_FUNDS_MAX scaled, before the balance room is applied


@dataclass
class AddFundsQuote:
    """What a top-up of `net` costs, in the client's currency: tax lines (name, rate %, amount 2 places),
    total = net + Σ taxes, the balance once paid, and the limits that applied."""

    net: Decimal
    tax_lines: list[tuple[str, Decimal, Decimal]]  # (name, rate %, amount)
    total: Decimal
    balance_after: Decimal
    min: Decimal
    max: Decimal
    reverse_charge: bool
    note: str
    max_balance: Decimal = ZERO
    currency: Any = None
    home_company: Any = None
    decision: Any = None  # the tax.TaxDecision behind the lines (reused when the proforma is created)

    @property
    def taxes(self) -> list[tuple[str, Decimal, Decimal]]:
        return self.tax_lines


def add_funds_limits(client: Client) -> AddFundsLimits:
    """PUQPANEL_ADD_FUNDS_MIN / _MAX / PUQPANEL_MAX_BALANCE (default currency) × the client currency's
    exchange rate; the minimum rounds up and the maxima round down to 2 places, so every bound is an
    amount one can type. max = min(top-up max, max balance − current balance)."""
    rate = client.currency.exchange_rate if client.currency is not None else Decimal(1)
    cents = INVOICE_PLACES
    low = (setting("PUQPANEL_ADD_FUNDS_MIN") * rate).quantize(cents, rounding=ROUND_CEILING)
    top_up_max = (setting("PUQPANEL_ADD_FUNDS_MAX") * rate).quantize(cents, rounding=ROUND_FLOOR)
    max_balance = (setting("PUQPANEL_MAX_BALANCE") * rate).quantize(cents, rounding=ROUND_FLOOR)
    room = (max_balance - client.balance).quantize(cents, rounding=ROUND_FLOOR)
    return AddFundsLimits(min=low, max=min(top_up_max, room), max_balance=max_balance, top_up_max=top_up_max)


def quote_add_funds(client: Client, net) -> AddFundsQuote:
    """What adding `net` (in the client's currency, 2 places) would cost: taxes by the client's tax rule,
    total and the balance after payment. DomainError({"amount": …}) naming the allowed range when `net` is
    outside min … max or would take the balance beyond the maximum."""
    limits = add_funds_limits(client)
    amount = parse_money(net, "amount", places=INVOICE_PLACES)
    currency = client.currency
    if limits.max < limits.min:
        raise DomainError({"amount": str(_l(
            "The balance is at its maximum of %(max)s: no funds can be added now.",
            max=format_amount(limits.max_balance, currency),
        ))})
    if amount < limits.min or amount > limits.top_up_max:
        raise DomainError({"amount": str(_l(
            "Enter an amount between %(min)s and %(max)s.",
            min=format_amount(limits.min, currency), max=format_amount(limits.max, currency),
        ))})
    if amount > limits.max:
        raise DomainError({"amount": str(_l(
            "The balance may not exceed %(max_balance)s: enter an amount between %(min)s and %(max)s.",
            max_balance=format_amount(limits.max_balance, currency),
            min=format_amount(limits.min, currency), max=format_amount(limits.max, currency),
        ))})
    decision = tax.tax_for_client(client)
    lines = tax.tax_lines(amount, decision)
    total = round_invoice(amount + sum((a for _n, _r, a in lines), ZERO))
    return AddFundsQuote(
        net=amount,
        tax_lines=lines,
        total=total,
        balance_after=client.balance + amount,
        min=limits.min,
        max=limits.max,
        reverse_charge=decision.reverse_charge,
        note=decision.note,
        max_balance=limits.max_balance,
        currency=currency,
        home_company=decision.home_company,
        decision=decision,
    )


def _new_document(client: Client, *, type: str, kind: str, status: str) -> Invoice:
    actor_id, _impersonator = activity.current_actor()
    return Invoice(
        client_id=client.id,
        currency_id=client.currency_id,
        type=type,
        kind=kind,
        status=status,
        created_by_id=actor_id,
        created_at=clock.now(),
        subtotal=ZERO,
        total=ZERO,
        amount_paid=ZERO,
    )


def _due_days() -> int:
    return int(setting("PUQPANEL_INVOICE_DUE_DAYS"))


def _document_summary(document: Invoice) -> dict[str, Any]:
    return {
        "type": document.type,
        "kind": document.kind,
        "status": document.status,
        "number": document.number,
        "subtotal": document.subtotal,
        "total": document.total,
        "home_company": document.home_company.name if document.home_company is not None else None,
    }


def create_add_funds_proforma(client: Client, net) -> Invoice:
    """A published (unpaid) add-funds proforma of `net` for `client`: one item "Add funds", taxes by the
    client's tax rule, issued today, due in PUQPANEL_INVOICE_DUE_DAYS, numbered now."""
    with transaction() as session:
        quote = quote_add_funds(client, net)
        decision = quote.decision
        today = clock.today()
        document = _new_document(client, type="proforma", kind="add_funds", status="unpaid")
        document.items = [InvoiceItem(position=0, description=ADD_FUNDS_DESCRIPTION, quantity=Decimal(1),
                                      unit_price=quote.net, amount=quote.net)]
        document.subtotal = quote.net
        _apply_decision(document, client, decision)
        document.issue_date = today
        document.due_date = today + dt.timedelta(days=_due_days())
        numbering.assign_number(document, today)
        session.add(document)
        session.flush()
        activity.record(
            "invoice.create", client_id=client.id, object_type="invoice", object_id=document.id,
            changes=_document_summary(document),
            description=f"Add funds proforma {document.number}: {quote.net} {client.currency.code}",
        )
    return document


# -- staff proformas with items ---------------------------------------------------------------------------
@dataclass
class ParsedItem:
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_items(items: Iterable[dict]) -> list[ParsedItem]:
    """Items from a form or a caller: description (required, ≤ 255), quantity (> 0, 4 places), unit price
    (≥ 0, 4 places). Rows with every field blank are skipped. Errors are keyed items-<row>-<field>."""
    errors: dict[str, str] = {}
    parsed: list[ParsedItem] = []
    rows = list(items or [])
    for row_no, row in enumerate(rows):
        desc_raw, qty_raw, price_raw = row.get("description"), row.get("quantity"), row.get("unit_price")
        if all(_blank(v) for v in (desc_raw, qty_raw, price_raw)):
            continue
        prefix = f"items-{row_no}-"
        description = str(desc_raw or "").strip()
        if not description:
            errors[prefix + "description"] = str(_l("This field is required."))
        elif len(description) > DESCRIPTION_MAX:
            errors[prefix + "description"] = str(_l("At most %(n)s characters.", n=DESCRIPTION_MAX))
        quantity = unit_price = None
        try:
            quantity = parse_money(_text(qty_raw), prefix + "quantity", places=LEDGER_PLACES)
        except DomainError as exc:
            errors.update(exc.errors)
        try:
            unit_price = parse_money(_text(price_raw), prefix + "unit_price", places=LEDGER_PLACES,
                                     allow_zero=True)
        except DomainError as exc:
            errors.update(exc.errors)
        if quantity is not None and unit_price is not None and not errors:
            product = quantity * unit_price
            if product >= MONEY_MAX:  # checked before rounding: quantize would overflow the precision
                errors[prefix + "unit_price"] = str(_l("The amount is too large."))
            else:
                parsed.append(ParsedItem(description, quantity, unit_price, round_invoice(product)))
    if len(parsed) > MAX_ITEMS:
        errors["items"] = str(_l("At most %(n)s items.", n=MAX_ITEMS))
    if not errors and not parsed:
        errors["items"] = str(_l("Add at least one item."))
    if not errors:
        subtotal = sum((item.amount for item in parsed), ZERO)
        if subtotal <= 0:
            errors["items"] = str(_l("The invoice total must be above zero."))
        elif subtotal * 2 >= MONEY_MAX:  # taxes of up to 100 % stay within the column
            errors["items"] = str(_l("The amount is too large."))
    if errors:
        raise DomainError(errors)
    return parsed


def _text(value) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    return "" if value is None else str(value)


def parse_date(value, field: str) -> dt.date | None:
    """A date from a caller (date) or a form (YYYY-MM-DD); None when blank."""
    if value is None or isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    text = str(value).strip()
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise DomainError({field: str(_l("Enter a date as YYYY-MM-DD."))}) from None
    if not 2000 <= day.year <= 9999:
        raise DomainError({field: str(_l("Enter a date as YYYY-MM-DD."))})
    return day


def _check_due_date(due_date: dt.date | None, issue_date: dt.date) -> None:
    if due_date is None:
        return
    if due_date < issue_date:
        raise DomainError({"due_date": str(_l("The due date may not be before the issue date (%(day)s).",
                                              day=issue_date.isoformat()))})
    if due_date > issue_date + dt.timedelta(days=MAX_DUE_DAYS):
        raise DomainError({"due_date": str(_l("The due date may be at most %(n)s days after the issue date.",
                                              n=MAX_DUE_DAYS))})


def _check_notes(notes) -> str:
    notes = str(notes or "").strip()
    if len(notes) > MAX_NOTES:
        raise DomainError({"notes": str(_l("At most %(n)s characters.", n=MAX_NOTES))})
    return notes


def _set_items(document: Invoice, items: list[ParsedItem]) -> None:
    document.items = [
        InvoiceItem(position=i, description=item.description, quantity=item.quantity, unit_price=item.unit_price,
                    amount=item.amount)
        for i, item in enumerate(items)
    ]
    document.subtotal = round_invoice(sum((item.amount for item in items), ZERO))


def _validated_draft_input(items, notes, due_date) -> tuple[list[ParsedItem], str, dt.date | None]:
    errors: dict[str, str] = {}
    parsed = notes_text = due = None
    try:
        parsed = parse_items(items)
    except DomainError as exc:
        errors.update(exc.errors)
    try:
        notes_text = _check_notes(notes)
    except DomainError as exc:
        errors.update(exc.errors)
    try:
        due = parse_date(due_date, "due_date")
        _check_due_date(due, clock.today())
    except DomainError as exc:
        errors.update(exc.errors)
    if errors:
        raise DomainError(errors)
    return parsed, notes_text, due


def new_invoice(client: Client, items: list[dict], notes: str = "", due_date=None) -> Invoice:
    """A draft proforma of kind "items" (a bill for goods or work: paying it buys them, see
    billing.payments). Taxes and home company follow the client's tax rule now and again at publish."""
    parsed, notes_text, due = _validated_draft_input(items, notes, due_date)
    with transaction() as session:
        document = _new_document(client, type="proforma", kind="items", status="draft")
        _set_items(document, parsed)
        document.notes = notes_text
        document.due_date = due
        _apply_decision(document, client, tax.tax_for_client(client))
        session.add(document)
        session.flush()
        activity.record("invoice.create", client_id=client.id, object_type="invoice", object_id=document.id,
                        changes=_document_summary(document), description=f"Draft invoice #{document.id}")
    return document


def lock_invoice(invoice_id: int, client_id: int | None = None) -> Invoice:
    """The document row, freshly read under a write lock held until commit (PostgreSQL FOR NO KEY UPDATE,
    which still lets other transactions insert rows referencing it; SQLite: a no-op UPDATE takes the
    database write lock). Lock order everywhere: invoice → client → document counter."""
    session = get_session()
    conditions = [Invoice.id == invoice_id]
    if client_id is not None:
        conditions.append(Invoice.client_id == client_id)
    if session.get_bind().dialect.name != "postgresql":
        session.execute(update(Invoice).where(*conditions).values(id=Invoice.id))
        query = select(Invoice).where(*conditions)
    else:
        query = select(Invoice).where(*conditions).with_for_update(key_share=True, of=Invoice)
    document = session.scalars(query.execution_options(populate_existing=True)).first()
    if document is None:
        raise NotFound(str(_l("Invoice not found.")))
    return document


def _lock_draft(invoice: Invoice) -> Invoice:
    document = lock_invoice(invoice.id, invoice.client_id)
    if document.status != "draft":
        raise DomainError(str(_l("Only a draft can be changed; this document is %(status)s.",
                                 status=status_label(document.status))))
    return document


def _client_of(document: Invoice) -> Client:
    client = get_session().get(Client, document.client_id)
    if client is None:  # pragma: no cover - the foreign key guarantees it
        raise NotFound(str(_l("Client not found.")))
    return client


def _draft_state(document: Invoice) -> dict[str, Any]:
    return {
        "subtotal": str(round_invoice(document.subtotal)),
        "total": str(round_invoice(document.total)),
        "notes": document.notes,
        "due_date": document.due_date.isoformat() if document.due_date else None,
        "items": len(document.items),
    }


def update_draft(invoice: Invoice, items: list[dict], notes: str = "", due_date=None) -> Invoice:
    """Replace a draft's items, notes and due date (only drafts change)."""
    parsed, notes_text, due = _validated_draft_input(items, notes, due_date)
    with transaction():
        document = _lock_draft(invoice)
        before = _draft_state(document)
        _set_items(document, parsed)
        document.notes = notes_text
        document.due_date = due
        client = _client_of(document)
        _apply_decision(document, client, tax.tax_for_client(client))
        after = _draft_state(document)
        activity.record("invoice.update", client_id=document.client_id, object_type="invoice",
                        object_id=document.id, changes=activity.diff(before, after),
                        description=f"Draft invoice #{document.id} edited")
    return document


def publish(invoice: Invoice) -> Invoice:
    """Draft → unpaid: issued today with the client's tax rule, snapshots and the next proforma number."""
    with transaction():
        document = _lock_draft(invoice)
        client = _client_of(document)
        today = clock.today()
        _check_due_date(document.due_date, today)
        _apply_decision(document, client, tax.tax_for_client(client))
        document.issue_date = today
        if document.due_date is None:
            document.due_date = today + dt.timedelta(days=_due_days())
        if document.total <= 0:
            raise DomainError(str(_l("The invoice total must be above zero.")))
        document.status = "unpaid"
        numbering.assign_number(document, today)
        activity.record("invoice.publish", client_id=document.client_id, object_type="invoice",
                        object_id=document.id,
                        changes={"status": ["draft", "unpaid"], "number": [None, document.number]},
                        description=f"Proforma {document.number} published")
    return document


def cancel(invoice: Invoice) -> Invoice:
    """Unpaid proforma without payments → canceled (it keeps its number: the series stays gapless)."""
    with transaction():
        document = lock_invoice(invoice.id, invoice.client_id)
        if document.type != "proforma" or document.status != "unpaid":
            raise DomainError(str(_l("Only an unpaid proforma can be canceled.")))
        has_payment = get_session().scalar(
            select(Payment.id).where(or_(Payment.invoice_id == document.id, Payment.proforma_id == document.id))
            .limit(1)
        )
        if has_payment is not None or document.amount_paid > 0:
            raise DomainError(str(_l("This proforma has payments and cannot be canceled.")))
        document.status = "canceled"
        document.canceled_at = clock.now()
        activity.record("invoice.cancel", client_id=document.client_id, object_type="invoice",
                        object_id=document.id, changes={"status": ["unpaid", "canceled"]},
                        description=f"Proforma {document.number} canceled")
    return document


def delete_draft(invoice: Invoice) -> None:
    """Delete a draft (it never had a number)."""
    with transaction() as session:
        document = _lock_draft(invoice)
        summary = _document_summary(document)
        client_id, document_id = document.client_id, document.id
        session.delete(document)
        activity.record("invoice.delete", client_id=client_id, object_type="invoice", object_id=document_id,
                        changes=summary, description=f"Draft invoice #{document_id} deleted")


# -- reading ----------------------------------------------------------------------------------------------
STATUS_LABELS = {
    "draft": _l("Draft"),
    "unpaid": _l("Unpaid"),
    "paid": _l("Paid"),
    "invoiced": _l("Invoiced"),
    "refunded": _l("Refunded"),
    "canceled": _l("Canceled"),
}
TYPE_LABELS = {"proforma": _l("Proforma"), "invoice": _l("Invoice"), "credit_note": _l("Credit Note")}


def status_label(status: str) -> str:
    return str(STATUS_LABELS.get(status, status))


def get_invoice(client: Client, invoice_id: int) -> Invoice:
    """The document with this id if it belongs to `client`, else NotFound."""
    document = get_session().scalar(select(Invoice).where(Invoice.id == invoice_id, Invoice.client_id == client.id))
    if document is None:
        raise NotFound(str(_l("Invoice not found.")))
    return document


@dataclass
class InvoicePage:
    rows: list[Invoice]
    page: int
    page_size: int
    has_next: bool
    type: str | None = None
    status: str | None = None


def list_invoices(client: Client, *, type: str | None = None, status: str | None = None, page: int = 1,
                  page_size: int = 25) -> InvoicePage:
    """One page of a client's documents, newest first. One query (currency and home company are joined
    eagerly; one extra row tells whether a next page exists). Unknown type / status filters are ignored."""
    type = type if type in INVOICE_TYPES else None
    status = status if status in INVOICE_STATUSES else None
    page = max(1, min(int(page or 1), 10**6))
    page_size = max(1, min(int(page_size or 25), PAGE_SIZE_MAX))
    query = select(Invoice).where(Invoice.client_id == client.id)
    if type:
        query = query.where(Invoice.type == type)
    if status:
        query = query.where(Invoice.status == status)
    rows = list(
        get_session().scalars(
            query.order_by(Invoice.created_at.desc(), Invoice.id.desc()).limit(page_size + 1)
            .offset((page - 1) * page_size)
        ).unique()
    )
    return InvoicePage(rows[:page_size], page, page_size, len(rows) > page_size, type, status)


@dataclass
class InvoiceDetail:
    """A document with everything its page shows: payments, the related documents (the proforma it came
    from or the invoice it became, its credit notes or the invoice a credit note refunds) and the ledger
    rows of the whole family."""

    invoice: Invoice
    payments: list[Payment] = field(default_factory=list)
    proforma: Invoice | None = None  # for an invoice: the proforma it was paid from
    invoice_of_proforma: Invoice | None = None  # for a proforma: the paid invoice it became
    refunded_invoice: Invoice | None = None  # for a credit note: the invoice it refunds
    credit_notes: list[Invoice] = field(default_factory=list)
    ledger_rows: list[Transaction] = field(default_factory=list)
    refundable: Decimal = ZERO
    note: str = ""


def refundable_amount(document: Invoice) -> Decimal:
    """Net still refundable on a paid invoice: Σ payment nets − Σ its credit notes' subtotals."""
    if document.type != "invoice" or document.status != "paid":
        return ZERO
    session = get_session()
    paid = sum(session.scalars(select(Payment.net).where(Payment.invoice_id == document.id)), ZERO)
    refunded = sum(
        session.scalars(select(Invoice.subtotal).where(Invoice.refunds_invoice_id == document.id,
                                                       Invoice.type == "credit_note")),
        ZERO,
    )
    return max(paid - refunded, ZERO)


def invoice_detail(client: Client, invoice_id: int) -> InvoiceDetail:
    document = get_invoice(client, invoice_id)
    session = get_session()
    detail = InvoiceDetail(invoice=document, note=legal_note(document))
    family = {document.id}
    if document.type == "proforma":
        detail.invoice_of_proforma = session.scalar(
            select(Invoice).where(Invoice.proforma_id == document.id, Invoice.client_id == client.id)
        )
    elif document.type == "invoice" and document.proforma_id:
        detail.proforma = session.get(Invoice, document.proforma_id)
    if document.type == "credit_note" and document.refunds_invoice_id:
        detail.refunded_invoice = session.get(Invoice, document.refunds_invoice_id)
    if document.type == "invoice":
        detail.credit_notes = list(session.scalars(
            select(Invoice).where(Invoice.refunds_invoice_id == document.id, Invoice.client_id == client.id)
            .order_by(Invoice.id)
        ).unique())
    for related in (detail.proforma, detail.invoice_of_proforma, detail.refunded_invoice, *detail.credit_notes):
        if related is not None:
            family.add(related.id)
    detail.payments = list(session.scalars(
        select(Payment).where(or_(Payment.invoice_id == document.id, Payment.proforma_id == document.id))
        .order_by(Payment.id)
    ))
    detail.ledger_rows = list(session.scalars(
        select(Transaction).where(Transaction.client_id == client.id, Transaction.invoice_id.in_(family))
        .order_by(Transaction.id)
    ).unique())
    detail.refundable = refundable_amount(document)
    return detail


# -- the client area's view of its documents --------------------------------------------------------------
# A client never sees drafts (not issued yet). Tabs: unpaid (awaiting payment), paid (paid invoices), refunded
# (credit notes and fully refunded invoices), all (every issued document, canceled and invoiced proformas too).
CLIENT_TABS = ("all", "unpaid", "paid", "refunded")
CLIENT_SORTS = ("date", "number", "total", "due_date")
CLIENT_SORT_DEFAULT = ("date", "desc")
CLIENT_SEARCH_MAX = 60


def _client_tab_condition(tab: str):
    if tab == "unpaid":
        return Invoice.status == "unpaid"
    if tab == "paid":
        return and_(Invoice.type == "invoice", Invoice.status == "paid")
    if tab == "refunded":
        return or_(Invoice.type == "credit_note", Invoice.status == "refunded")
    return None


def _client_visible(client: Client):
    return and_(Invoice.client_id == client.id, Invoice.status != "draft")


@dataclass
class ClientListArgs:
    """The client list's parameters, whitelisted: an unknown tab / sort / direction falls back to the default,
    the search is trimmed text (matched as a literal substring of the number, never as SQL)."""

    tab: str = "all"
    search: str = ""
    sort: str = CLIENT_SORT_DEFAULT[0]
    direction: str = CLIENT_SORT_DEFAULT[1]

    @classmethod
    def parse(cls, tab: Any = None, search: Any = None, sort: Any = None, direction: Any = None) -> "ClientListArgs":
        tab = str(tab or "").strip()
        sort = str(sort or "").strip()
        direction = str(direction or "").strip().lower()
        if sort not in CLIENT_SORTS:
            sort, direction = CLIENT_SORT_DEFAULT
        return cls(
            tab=tab if tab in CLIENT_TABS else "all",
            search=" ".join(str(search or "").split())[:CLIENT_SEARCH_MAX],
            sort=sort,
            direction=direction if direction in ("asc", "desc") else "desc",
        )


@dataclass
class ClientInvoicePage:
    rows: list[Invoice]
    page: int
    page_size: int
    has_next: bool
    args: ClientListArgs
    counts: dict[str, int] = field(default_factory=dict)


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def client_invoice_counts(client: Client) -> dict[str, int]:
    """{tab: number of documents} of the client's issued documents, in one query."""

    def count(condition):
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    row = get_session().execute(
        select(*(count(_client_tab_condition(tab)) for tab in CLIENT_TABS[1:]), func.count(Invoice.id))
        .where(_client_visible(client))
    ).one()
    counts = {tab: int(value) for tab, value in zip(CLIENT_TABS[1:], row[:-1])}
    counts["all"] = int(row[-1])
    return counts


def client_invoices(client: Client, args: ClientListArgs | None = None, *, page: int = 1,
                    page_size: int = 25) -> ClientInvoicePage:
    """One page of the client's issued documents (never drafts) for the client area: the tab's documents
    whose number contains `args.search` (case-insensitive), sorted by date (issue date), number, total or
    due date (documents without a due date last), ties by id. One query for the rows (currency and home
    company joined eagerly; one extra row tells whether a next page exists) and one for the tab counts."""
    args = args or ClientListArgs()
    page = max(1, min(int(page or 1), 10**6))
    page_size = max(1, min(int(page_size or 25), PAGE_SIZE_MAX))
    query = select(Invoice).where(_client_visible(client))
    condition = _client_tab_condition(args.tab)
    if condition is not None:
        query = query.where(condition)
    if args.search:
        query = query.where(Invoice.number.ilike(f"%{_escape_like(args.search)}%", escape="\\"))
    column = {"date": Invoice.issue_date, "number": Invoice.number, "total": Invoice.total,
              "due_date": Invoice.due_date}[args.sort]
    descending = args.direction == "desc"
    order = [column.desc() if descending else column.asc(), Invoice.id.desc() if descending else Invoice.id.asc()]
    if args.sort == "due_date":
        order.insert(0, Invoice.due_date.is_(None))
    rows = list(
        get_session().scalars(query.order_by(*order).limit(page_size + 1).offset((page - 1) * page_size)).unique()
    )
    return ClientInvoicePage(rows[:page_size], page, page_size, len(rows) > page_size, args,
                             client_invoice_counts(client))


def get_client_invoice(client: Client, invoice_id: int) -> Invoice:
    """For the client area: the client's issued document with this id; NotFound for another client's
    document and for a draft (not issued yet)."""
    document = get_invoice(client, invoice_id)
    if document.status == "draft":
        raise NotFound(str(_l("Invoice not found.")))
    return document


def client_invoice_detail(client: Client, invoice_id: int) -> InvoiceDetail:
    """invoice_detail for the client area (NotFound for drafts, as get_client_invoice)."""
    get_client_invoice(client, invoice_id)
    return invoice_detail(client, invoice_id)


def payable(document: Invoice) -> bool:
    """Whether the client can pay the document now: an unpaid proforma with an amount outstanding."""
    return document.type == "proforma" and document.status == "unpaid" and document.outstanding > 0
