"""billing.payments: partial payments with an exact net split, proforma → paid invoice, duplicates, fees,
refunds and credit notes — exact Decimal values, the ledger verified after each story."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select

from puqpanel.billing import invoicing, ledger, numbering, payments
from puqpanel.domain import DomainError
from puqpanel.models import ActivityLog, Client, Currency, Invoice, Payment, Transaction

from test_invoicing import NOW, add_funds, billing_client, count, frozen, home, items, seed_balance  # noqa: F401

D = Decimal


def pay(document, amount, external_id, gateway="bank_transfer", fee="0", paid_at=None):
    return payments.record_payment(document, gateway=gateway, external_id=external_id, amount=amount, fee=fee,
                                   paid_at=paid_at)


def ledger_rows(db, client, type=None):
    db.expire_all()
    query = select(Transaction).where(Transaction.client_id == client.id).order_by(Transaction.id)
    if type:
        query = query.where(Transaction.type == type)
    return list(db.scalars(query).unique())


def balance(db, client) -> Decimal:
    db.expire_all()
    return db.get(Client, client.id).balance


def paid_invoice(db, client, net="100.00", external_id="TX-FULL"):
    proforma = add_funds(client, net)
    result = pay(proforma, proforma.total, external_id)
    assert result.created and result.invoice.type == "invoice"
    return result.invoice


# -- payments ----------------------------------------------------------------------------------------------
def test_three_partial_payments_split_the_net_exactly(db, billing_client):
    proforma = add_funds(billing_client, "100")
    assert proforma.total == D("123.00")
    first = pay(proforma, "41.00", "TX-1")
    second = pay(proforma, "41", "TX-2", paid_at=dt.datetime(2026, 3, 9, 8, 0))
    db.expire_all()
    assert db.get(Invoice, proforma.id).status == "unpaid"
    assert db.get(Invoice, proforma.id).outstanding == D("41.0000")
    assert first.invoice.id == second.invoice.id == proforma.id and first.created and second.created
    third = pay(proforma, "41.00", "TX-3")
    nets = [r.net for r in ledger_rows(db, billing_client, "payment")]
    assert nets == [D("33.3333"), D("33.3334"), D("33.3333")]  # cumulative: 33.3333, 66.6667, 100
    assert sum(nets) == D("100.0000")
    assert [r.gross for r in ledger_rows(db, billing_client, "payment")] == [D("41.0000")] * 3
    assert balance(db, billing_client) == D("100.0000")
    assert ledger.verify() == []

    invoice = db.get(Invoice, third.invoice.id)
    proforma = db.get(Invoice, proforma.id)
    assert (proforma.status, proforma.paid_date, proforma.amount_paid) == ("invoiced", dt.date(2026, 3, 10),
                                                                           D("123.0000"))
    assert (invoice.type, invoice.status, invoice.kind) == ("invoice", "paid", "add_funds")
    assert invoice.number == "INV-2026-00001" and invoice.proforma_id == proforma.id
    assert (invoice.issue_date, invoice.paid_date) == (dt.date(2026, 3, 10), dt.date(2026, 3, 10))
    assert invoice.subtotal == D("100.00") and invoice.tax_lines == proforma.tax_lines and invoice.total == D("123.00")
    assert invoice.amount_paid == D("123.00") and invoice.outstanding == D("0")
    assert [(i.description, i.amount) for i in invoice.items] == [("Add funds", D("100.00"))]
    assert invoice.client_snapshot == proforma.client_snapshot
    assert invoice.company_snapshot == proforma.company_snapshot
    moved = list(db.scalars(select(Payment).order_by(Payment.id)))
    assert [(p.invoice_id, p.proforma_id) for p in moved] == [(invoice.id, proforma.id)] * 3
    assert [p.net for p in moved] == nets and [p.external_id for p in moved] == ["TX-1", "TX-2", "TX-3"]
    assert moved[1].paid_at == dt.datetime(2026, 3, 9, 8, 0)
    assert [r.transaction_id for r in moved] == [r.id for r in ledger_rows(db, billing_client, "payment")]
    actions = [a.action for a in db.scalars(select(ActivityLog).where(ActivityLog.action.like("invoice.%"))
                                            .order_by(ActivityLog.id))]
    assert actions == ["invoice.create", "invoice.payment", "invoice.payment", "invoice.payment", "invoice.paid"]
    detail = invoicing.invoice_detail(billing_client, invoice.id)
    assert detail.proforma.id == proforma.id and len(detail.payments) == 3 and len(detail.ledger_rows) == 3
    back = invoicing.invoice_detail(billing_client, proforma.id)
    assert back.invoice_of_proforma.id == invoice.id and len(back.payments) == 3


def test_single_payment_of_an_uneven_total(db, billing_client):
    proforma = add_funds(billing_client, "10.50")  # VAT 2.42 → total 12.92
    pay(proforma, "5.00", "A")  # 5 × 10.50 / 12.92 = 4.06346… → 4.0635
    pay(proforma, "7.92", "B")
    assert [r.net for r in ledger_rows(db, billing_client, "payment")] == [D("4.0635"), D("6.4365")]
    assert balance(db, billing_client) == D("10.5000")


def test_fee_is_recorded_and_does_not_change_the_net(db, billing_client):
    proforma = add_funds(billing_client, "100")
    result = pay(proforma, "123.00", "TX-FEE", fee="2.6100")
    row = ledger_rows(db, billing_client, "payment")[0]
    assert (row.gross, row.net, row.fees) == (D("123.0000"), D("100.0000"), D("2.6100"))
    assert (row.gateway, row.external_id, row.invoice_id) == ("bank_transfer", "TX-FEE", proforma.id)
    payment = db.get(Payment, result.payment.id)
    assert (payment.amount, payment.fee, payment.net) == (D("123.0000"), D("2.6100"), D("100.0000"))


def test_the_same_gateway_transaction_twice_changes_nothing(db, billing_client):
    proforma = add_funds(billing_client, "100")
    first = pay(proforma, "50.00", "TX-DUP")
    again = pay(proforma, "50.00", "TX-DUP")
    assert not again.created and again.payment.id == first.payment.id and again.invoice.id == proforma.id
    other = add_funds(billing_client, "10")
    before = (count(db, Payment), count(db, Transaction), count(db, ActivityLog), balance(db, billing_client),
              db.get(Invoice, proforma.id).amount_paid)
    elsewhere = pay(other, "1.00", "TX-DUP")  # the same gateway transaction on another document
    assert not elsewhere.created and elsewhere.payment.invoice_id == proforma.id
    assert (count(db, Payment), count(db, Transaction), count(db, ActivityLog), balance(db, billing_client),
            db.get(Invoice, proforma.id).amount_paid) == before
    # another gateway may use the same id
    assert pay(other, "1.00", "TX-DUP", gateway="test").created


def test_duplicate_of_a_payment_that_completed_the_proforma(db, billing_client):
    proforma = add_funds(billing_client, "100")
    done = pay(proforma, "123", "TX-ALL")
    again = pay(proforma, "123", "TX-ALL")
    assert not again.created and again.invoice.id == done.invoice.id and again.invoice.type == "invoice"
    assert count(db, Invoice, Invoice.type == "invoice") == 1 and balance(db, billing_client) == D("100.0000")


@pytest.mark.parametrize(
    "amount, fee, external_id, gateway, keys",
    [
        ("0", "0", "X", "bank_transfer", {"amount"}),
        ("-1", "0", "X", "bank_transfer", {"amount"}),
        ("1.001", "0", "X", "bank_transfer", {"amount"}),
        ("abc", "0", "X", "bank_transfer", {"amount"}),
        ("123.01", "0", "X", "bank_transfer", {"amount"}),  # more than outstanding
        ("10", "-1", "X", "bank_transfer", {"fee"}),
        ("10", "10.01", "X", "bank_transfer", {"fee"}),  # fee above the amount
        ("10", "0", "", "bank_transfer", {"external_id"}),
        ("10", "0", "x" * 101, "bank_transfer", {"external_id"}),
        ("10", "0", "tab\there", "bank_transfer", {"external_id"}),
        ("10", "0", "X", "", {"gateway"}),
        ("", "", "", "", {"gateway", "external_id"}),  # the reference first, then the amounts
    ],
)
def test_bad_payments_are_refused_and_write_nothing(db, billing_client, amount, fee, external_id, gateway, keys):
    proforma = add_funds(billing_client, "100")
    before = (count(db, Payment), count(db, Transaction), count(db, ActivityLog))
    with pytest.raises(DomainError) as exc:
        pay(proforma, amount, external_id, gateway=gateway, fee=fee)
    assert set(exc.value.errors) == keys
    assert (count(db, Payment), count(db, Transaction), count(db, ActivityLog)) == before


def test_future_payment_date_is_refused(db, billing_client):
    proforma = add_funds(billing_client, "100")
    with pytest.raises(DomainError) as exc:
        pay(proforma, "10", "X", paid_at=NOW + dt.timedelta(days=1))
    assert set(exc.value.errors) == {"paid_at"}


def test_only_unpaid_proformas_take_payments(db, billing_client):
    draft = invoicing.new_invoice(billing_client, items(("A", "1", "10")))
    canceled = add_funds(billing_client, "10")
    invoicing.cancel(canceled)
    paid = add_funds(billing_client, "10")
    invoice = pay(paid, "12.30", "P-1").invoice
    before = (count(db, Payment), count(db, Transaction))
    for document, message in ((draft, "unpaid proforma"), (canceled, "unpaid proforma"), (paid, "already paid"),
                              (invoice, "unpaid proforma")):
        with pytest.raises(DomainError) as exc:
            pay(document, "1", f"X-{document.id}")
        assert message in str(exc.value)
    assert (count(db, Payment), count(db, Transaction)) == before


def test_partly_paid_proforma_cannot_be_canceled(db, billing_client):
    proforma = add_funds(billing_client, "100")
    pay(proforma, "10", "P-1")
    with pytest.raises(DomainError):
        invoicing.cancel(proforma)
    assert db.get(Invoice, proforma.id).status == "unpaid"


def test_payment_refused_when_the_client_currency_changed(db, billing_client):
    proforma = add_funds(billing_client, "100")
    usd = Currency(code="USD", prefix="$", exchange_rate=D("1.1"))
    db.add(usd)
    db.flush()
    db.get(Client, billing_client.id).currency_id = usd.id
    db.commit()
    with pytest.raises(DomainError) as exc:
        pay(proforma, "123", "P-1")
    assert "currency" in str(exc.value)
    assert count(db, Payment) == 0 and balance(db, billing_client) == D("0")


def test_items_invoice_is_bought_from_its_payment(db, billing_client):
    draft = invoicing.new_invoice(billing_client, items(("Server setup", "2", "49.995")))  # 99.99
    proforma = invoicing.publish(draft)
    assert proforma.total == D("122.99")  # 99.99 + 23.00 (22.9977)
    result = pay(proforma, "122.99", "BUY-1")
    rows = ledger_rows(db, billing_client)
    assert [(r.type, r.net, r.invoice_id) for r in rows] == [
        ("payment", D("99.9900"), proforma.id),
        ("charge", D("-99.9900"), result.invoice.id),
    ]
    assert rows[1].description == f"Invoice {result.invoice.number}"
    assert balance(db, billing_client) == D("0.0000")
    assert db.get(Invoice, result.invoice.id).kind == "items"
    assert ledger.verify() == []


def test_paid_invoice_restates_the_proforma_even_after_the_client_changed(db, billing_client):
    proforma = add_funds(billing_client, "100")
    db.get(Client, billing_client.id).company_name = "Renamed AG"
    db.commit()
    invoice = pay(proforma, "123", "P-1").invoice
    assert invoice.client_snapshot["legal_name"] == "Schmidt Cloud GmbH"


def test_numbering_of_proformas_invoices_and_credit_notes_is_separate(db, billing_client):
    first = paid_invoice(db, billing_client, "100", "A")
    second = paid_invoice(db, billing_client, "50", "B")
    note1 = payments.refund(first, "10", "goodwill")
    note2 = payments.refund(second, "50", "cancelled order")
    assert (first.number, second.number) == ("INV-2026-00001", "INV-2026-00002")
    assert (note1.number, note2.number) == ("CN-2026-00001", "CN-2026-00002")
    assert sorted(db.scalars(select(Invoice.number).where(Invoice.type == "proforma"))) == [
        "PF-2026-00001", "PF-2026-00002"]
    report = {s.doc_type: s for s in numbering.series_report()}
    assert {k: (s.last_number, s.issued, s.gaps) for k, s in report.items()} == {
        "proforma": (2, 2, []), "invoice": (2, 2, []), "credit_note": (2, 2, [])}


# -- refunds -----------------------------------------------------------------------------------------------
def test_full_refund_issues_a_credit_note_and_a_negative_refund_row(db, billing_client):
    invoice = paid_invoice(db, billing_client)
    note = payments.refund(invoice, "100.00", "Customer left")
    db.expire_all()
    note, invoice = db.get(Invoice, note.id), db.get(Invoice, invoice.id)
    assert (note.type, note.status, note.kind, note.number) == ("credit_note", "refunded", "add_funds", "CN-2026-00001")
    assert note.refunds_invoice_id == invoice.id and invoice.status == "refunded"
    assert note.subtotal == D("100.00") and note.tax_lines == [("VAT", D("23"), D("23.00"))] and note.total == D("123.00")
    assert (note.issue_date, note.paid_date) == (dt.date(2026, 3, 10), dt.date(2026, 3, 10))
    assert [(i.description, i.amount) for i in note.items] == [
        (f"Refund of invoice {invoice.number}: Customer left", D("100.00"))]
    assert note.client_snapshot == invoice.client_snapshot and note.notes == "Customer left"
    refund_row = ledger_rows(db, billing_client, "refund")[0]
    assert (refund_row.net, refund_row.gross, refund_row.invoice_id) == (D("-100.0000"), D("-123.0000"), note.id)
    assert balance(db, billing_client) == D("0.0000")
    assert invoicing.refundable_amount(invoice) == D("0")
    with pytest.raises(DomainError):
        payments.refund(invoice, "0.01", "again")
    detail = invoicing.invoice_detail(billing_client, invoice.id)
    assert [cn.id for cn in detail.credit_notes] == [note.id]
    assert {r.type for r in detail.ledger_rows} == {"payment", "refund"}
    assert invoicing.invoice_detail(billing_client, note.id).refunded_invoice.id == invoice.id
    assert count(db, ActivityLog, ActivityLog.action == "invoice.refund") == 1
    assert ledger.verify() == []


def test_partial_refunds_scale_taxes_and_the_last_one_takes_the_rest(db, billing_client):
    invoice = paid_invoice(db, billing_client)
    notes = [payments.refund(invoice, amount, "partial") for amount in ("33.33", "33.33")]
    assert [n.tax1_amount for n in notes] == [D("7.67"), D("7.66")]  # cumulative: 7.6659 → 7.67, 15.3318 → 15.33
    assert db.get(Invoice, invoice.id).status == "paid"
    assert invoicing.refundable_amount(db.get(Invoice, invoice.id)) == D("33.34")
    with pytest.raises(DomainError) as exc:
        payments.refund(invoice, "33.35", "too much")
    assert set(exc.value.errors) == {"amount"} and "33.34" in exc.value.errors["amount"]
    last = payments.refund(invoice, "33.34", "rest")
    assert last.tax1_amount == D("7.67") and last.total == D("41.01")
    all_notes = notes + [last]
    assert sum(n.subtotal for n in all_notes) == D("100.00") and sum(n.tax1_amount for n in all_notes) == D("23.00")
    assert sum(n.total for n in all_notes) == D("123.00")
    assert db.get(Invoice, invoice.id).status == "refunded"
    assert [r.net for r in ledger_rows(db, billing_client, "refund")] == [D("-33.3300"), D("-33.3300"),
                                                                          D("-33.3400")]
    assert balance(db, billing_client) == D("0.0000") and ledger.verify() == []


def test_small_partial_refunds_never_leave_a_negative_tax_line(db, billing_client):
    """Each refund's tax was rounded on its own: four refunds of 0.03 took 0.01 VAT each (exact 0.0069), and
    the last credit note of the invoice got VAT -0.01 and a total of 0.00 for a refund of 0.01."""
    invoice = paid_invoice(db, billing_client, net="10.00")  # VAT 23 %: 2.30
    notes = [payments.refund(invoice, amount, "partial") for amount in ("0.03", "0.03", "0.03", "0.03", "9.87", "0.01")]
    assert [n.tax1_amount for n in notes] == [D("0.01"), D("0.00"), D("0.01"), D("0.01"), D("2.27"), D("0.00")]
    assert all(n.tax1_amount >= 0 and n.total >= n.subtotal for n in notes)
    assert sum(n.tax1_amount for n in notes) == D("2.30") and sum(n.total for n in notes) == D("12.30")
    assert ledger.verify() == []


def test_many_partial_payments_keep_each_net_at_its_share(db, billing_client):
    """Payment nets are rounded cumulatively: 30 payments of 0.01 on a 123.00 proforma (net 100) book
    round(k × 0.01 × 100 / 123) after the k-th — rounding each on its own booked 0.0081 thirty times (0.243
    instead of 0.2439) and left the drift to the last payment."""
    proforma = add_funds(billing_client, "100")
    for k in range(1, 31):
        pay(proforma, "0.01", f"TX-{k}")
        assert sum(r.net for r in ledger_rows(db, billing_client, "payment")) == (
            D(k) * D("0.01") * 100 / 123).quantize(D("0.0001"))
    last = pay(proforma, "122.70", "TX-LAST")
    assert last.invoice.type == "invoice"
    nets = [r.net for r in ledger_rows(db, billing_client, "payment")]
    assert sum(nets) == D("100.0000") and nets[-1] == D("99.7561")  # 122.70 × 100 / 123 = 99.75609…
    assert ledger.verify() == []


def test_refund_may_take_the_balance_below_zero(db, billing_client):
    invoice = paid_invoice(db, billing_client)
    seed_balance(billing_client, "-80")  # the client spent most of the funds
    payments.refund(invoice, "100", "chargeback")
    assert balance(db, billing_client) == D("-80.0000")
    assert ledger.verify() == []


def test_refund_of_an_items_invoice_reverses_the_charge(db, billing_client):
    proforma = invoicing.publish(invoicing.new_invoice(billing_client, items(("Migration", "1", "200"))))
    invoice = pay(proforma, proforma.total, "BUY").invoice
    note = payments.refund(invoice, "50", "partly undone")
    rows = ledger_rows(db, billing_client)
    assert [(r.type, r.net) for r in rows] == [("payment", D("200.0000")), ("charge", D("-200.0000")),
                                             ("charge", D("50.0000")), ("refund", D("-50.0000"))]
    assert rows[2].invoice_id == rows[3].invoice_id == note.id
    assert balance(db, billing_client) == D("0.0000") and ledger.verify() == []


@pytest.mark.parametrize("amount, reason, keys", [
    ("0", "r", {"amount"}), ("-5", "r", {"amount"}), ("1.001", "r", {"amount"}), ("100.01", "r", {"amount"}),
    ("10", "", {"reason"}), ("10", "x" * 201, {"reason"}), ("", "", {"amount", "reason"}),
])
def test_bad_refunds_write_nothing(db, billing_client, amount, reason, keys):
    invoice = paid_invoice(db, billing_client)
    before = (count(db, Invoice), count(db, Transaction), balance(db, billing_client))
    with pytest.raises(DomainError) as exc:
        payments.refund(invoice, amount, reason)
    assert set(exc.value.errors) == keys
    assert (count(db, Invoice), count(db, Transaction), balance(db, billing_client)) == before
    assert all(s.gaps == [] for s in numbering.series_report())


def test_only_paid_invoices_are_refunded(db, billing_client):
    proforma = add_funds(billing_client, "100")
    invoice = pay(proforma, "123", "P").invoice
    note = payments.refund(invoice, "10", "r")
    for document in (proforma, note, invoicing.new_invoice(billing_client, items(("A", "1", "1")))):
        with pytest.raises(DomainError) as exc:
            payments.refund(document, "1", "r")
        assert "paid invoice" in str(exc.value)
    assert count(db, Invoice, Invoice.type == "credit_note") == 1
