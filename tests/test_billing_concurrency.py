"""Concurrent issuers and payers on PostgreSQL: row locks (invoice → client → document counter), the unique
gateway transaction key and gapless numbering hold under real threads, each with its own app context,
session and connection. SQLite serialises every writer, so there is nothing to prove there: skipped."""
from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from conftest import IS_POSTGRES, run_threads
from puqpanel.billing import invoicing, ledger, numbering, payments
from puqpanel.domain import DomainError
from puqpanel.extensions import db as fsa
from puqpanel.models import Client, Invoice, Payment, Transaction

from test_invoicing import home  # noqa: F401

pytestmark = pytest.mark.skipif(
    not IS_POSTGRES,
    reason="row-lock concurrency needs PostgreSQL (set PUQPANEL_TEST_DATABASE_URL); SQLite serialises writers",
)

D = Decimal


def plain(result: payments.PaymentResult) -> SimpleNamespace:
    """What a thread hands back: plain values (its session closes with it)."""
    return SimpleNamespace(created=result.created, payment_id=result.payment.id, invoice_type=result.invoice.type)


def load_client(client_id: int) -> Client:
    return fsa.session.get(Client, client_id)


def check_books(db, client_id):
    db.expire_all()
    assert ledger.verify() == []
    for series in numbering.series_report():
        assert series.gaps == [], series
        assert series.issued == series.last_number, series
    dupes = db.execute(
        select(Invoice.home_company_id, Invoice.type, Invoice.number, func.count())
        .where(Invoice.number.is_not(None))
        .group_by(Invoice.home_company_id, Invoice.type, Invoice.number)
        .having(func.count() > 1)
    ).all()
    assert dupes == []
    client = db.get(Client, client_id)
    total = db.scalar(select(func.coalesce(func.sum(Transaction.net), 0)).where(Transaction.client_id == client_id))
    assert client.balance == total
    return client


@pytest.fixture()
def client_id(db, new_client, home):  # noqa: F811
    return new_client(company_name="Busy GmbH").id


def test_fifty_concurrent_top_ups_are_each_counted_once(app, db, client_id):
    def top_up(i):
        client = load_client(client_id)
        proforma = invoicing.create_add_funds_proforma(client, D(10 + i))
        return plain(payments.record_payment(proforma, gateway="test", external_id=f"TOPUP-{i}",
                                             amount=proforma.total))

    results = run_threads(app, 50, top_up)
    errors = [exc for _result, exc in results if exc is not None]
    assert errors == []
    assert all(result.created and result.invoice_type == "invoice" for result, _exc in results)
    client = check_books(db, client_id)
    expected = sum(D(10 + i) for i in range(50))  # 1725
    assert client.balance == expected
    assert db.scalar(select(func.count()).select_from(Payment)) == 50
    assert db.scalar(select(func.count()).where(Transaction.type == "payment")) == 50
    kinds = dict(db.execute(select(Invoice.type, func.count()).group_by(Invoice.type)).all())
    assert kinds == {"proforma": 50, "invoice": 50}
    assert db.scalar(select(func.count()).where(Invoice.type == "proforma", Invoice.status != "invoiced")) == 0
    numbers = {s.doc_type: s.last_number for s in numbering.series_report()}
    assert numbers == {"proforma": 50, "invoice": 50}


def test_twenty_concurrent_payers_of_one_proforma_pay_it_once(app, db, client_id):
    proforma = invoicing.create_add_funds_proforma(db.get(Client, client_id), "100")
    proforma_id, total = proforma.id, proforma.total

    def pay_all(i):
        document = fsa.session.get(Invoice, proforma_id)
        return plain(payments.record_payment(document, gateway="test", external_id=f"RACE-{i}", amount=total))

    results = run_threads(app, 20, pay_all)
    succeeded = [result for result, exc in results if exc is None]
    refused = [exc for _result, exc in results if exc is not None]
    assert len(succeeded) == 1 and succeeded[0].created
    assert len(refused) == 19 and all(isinstance(exc, DomainError) for exc in refused), refused
    assert all("already paid" in str(exc) for exc in refused)
    client = check_books(db, client_id)
    assert client.balance == D("100.0000")
    assert db.scalar(select(func.count()).select_from(Payment)) == 1
    assert db.scalar(select(func.count()).where(Invoice.type == "invoice")) == 1
    db.expire_all()
    assert db.get(Invoice, proforma_id).status == "invoiced" and db.get(Invoice, proforma_id).amount_paid == total


def test_one_gateway_transaction_recorded_once_across_documents(app, db, client_id):
    """The same gateway transaction id reported for twenty different proformas at once (and twice for
    the same one): the unique key lets one through; the others get it back as created=False."""
    client = db.get(Client, client_id)
    ids = [invoicing.create_add_funds_proforma(client, "50").id for _ in range(10)]
    targets = ids + ids  # every proforma twice

    def pay_dup(i):
        document = fsa.session.get(Invoice, targets[i])
        return plain(payments.record_payment(document, gateway="test", external_id="SAME-TXN", amount="10.00"))

    results = run_threads(app, len(targets), pay_dup)
    assert [exc for _result, exc in results if exc is not None] == []
    created = [result for result, _exc in results if result.created]
    assert len(created) == 1
    winner = created[0].payment_id
    assert all(result.payment_id == winner for result, _exc in results)
    client = check_books(db, client_id)
    assert db.scalar(select(func.count()).select_from(Payment)) == 1
    assert db.scalar(select(func.count()).where(Transaction.type == "payment")) == 1
    assert client.balance == D("8.1301")  # 10 × 50 / 61.50
