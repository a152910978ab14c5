"""Property tests (hypothesis): whatever sequence of money operations happens to a client — staff adjustments
(±), add-funds proformas paid in full or in parts (with fees, and the same gateway transaction recorded twice),
refunds of paid invoices, service charges (re-run for the same period) and direct ledger posts — its balance is
exactly Σ net of its ledger rows, the before/after chain is unbroken and verify() finds nothing.

Each example works on a fresh client (the `db` fixture wipes tables per test, not per example).
"""
from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from puqpanel.billing import charging, invoicing, ledger, payments
from puqpanel.billing.money import invoice as round_invoice
from puqpanel.domain import DomainError
from puqpanel.domain.session import transaction
from puqpanel.models import Client, HomeCompany, Invoice, Product, ProductPrice, Service, TaxRule, Transaction

D = Decimal
PROPERTY_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

cents = st.integers(min_value=1000, max_value=200_000).map(lambda n: D(n).scaleb(-2))  # 10.00 … 2000.00
ledger_amounts = st.builds(
    lambda n, negative: D(-n if negative else n).scaleb(-4), st.integers(1, 50_000_000), st.booleans()
)  # ±0.0001 … ±5000.0000, never zero
fractions = st.integers(min_value=1, max_value=100)  # percent

operations = st.lists(
    st.one_of(
        st.tuples(st.just("adjust"), ledger_amounts),
        st.tuples(st.just("add_funds"), cents, st.integers(1, 3), st.booleans(), st.integers(0, 300)),
        st.tuples(st.just("pay_again")),
        st.tuples(st.just("refund"), fractions),
        st.tuples(st.just("charge")),
        st.tuples(st.just("post"), st.sampled_from(("charge", "payment")), ledger_amounts),
    ),
    min_size=1,
    max_size=12,
)
# A story that reaches every branch (hypothesis runs it first, then random ones).
STORY = [
    ("adjust", D("-12.3456")),
    ("add_funds", D("100.00"), 3, True, 50),
    ("pay_again",),
    ("charge",),
    ("charge",),
    ("refund", 33),
    ("add_funds", D("19.99"), 2, False, 0),
    ("pay_again",),
    ("refund", 100),
    ("refund", 100),
    ("post", "payment", D("0.0001")),
    ("adjust", D("5000")),
]


@pytest.fixture()
def billing_world(db, new_client):
    """Default home company with 23 % VAT for everyone, a monthly product with a setup fee."""
    home = HomeCompany(name="Main", company_name="PUQ Cloud", country="PL", is_default=True)
    db.add(home)
    db.flush()
    db.add(TaxRule(category="", country="", region="", home_company_id=home.id, tax1_name="VAT", tax1_rate=D("23")))
    product = Product(name="VPS")
    db.add(product)
    db.flush()
    return {"home": home, "product": product, "new_client": new_client, "ids": itertools.count(1)}


def _price(db, product, currency_id) -> ProductPrice:
    price = db.scalar(select(ProductPrice).where(ProductPrice.product_id == product.id))
    if price is None:
        price = ProductPrice(product_id=product.id, currency_id=currency_id, period="monthly", setup=D("4.9999"),
                             base=D("9.99"), idle=D("1"))
        db.add(price)
        db.flush()
    return price


def _state(db, client_id):
    db.expire_all()
    count = db.scalar(select(func.count()).select_from(Transaction).where(Transaction.client_id == client_id))
    return count, db.get(Client, client_id).balance


def check_invariants(db, client_id, expected: Decimal) -> None:
    db.expire_all()
    client = db.get(Client, client_id)
    rows = list(db.scalars(select(Transaction).where(Transaction.client_id == client_id).order_by(Transaction.id)))
    assert client.balance == expected, (client.balance, expected)
    assert client.balance == sum((r.net for r in rows), D(0))
    previous = D(0)
    for r in rows:
        assert r.balance_before == previous and r.balance_after - r.balance_before == r.net
        previous = r.balance_after
    assert ledger.verify() == []


@given(ops=operations)
@example(ops=STORY)
@PROPERTY_SETTINGS
def test_any_sequence_keeps_balance_equal_to_the_ledger(db, billing_world, ops):
    client = billing_world["new_client"]()
    client_id, currency_id = client.id, client.currency_id
    product = billing_world["product"]
    price = _price(db, product, currency_id)
    service = Service(client_id=client_id, product_id=product.id, price_id=price.id, status="active",
                      activated_at=dt.datetime(2026, 1, 31, 10, 0))
    db.add(service)
    db.commit()
    service_id = service.id
    expected = D(0)
    paid_invoices: list[int] = []
    last_payment: tuple[int, str] | None = None
    next_id = billing_world["ids"]

    for op in ops:
        kind = op[0]
        before = _state(db, client_id)
        if kind == "adjust":
            row = ledger.adjust(client_id, op[1], f"adjust {op[1]}")
            assert row.net == op[1]
            expected += op[1]
        elif kind == "add_funds":
            _kind, net, parts, complete, fee_cents = op
            try:
                proforma = invoicing.create_add_funds_proforma(db.get(Client, client_id), net)
            except DomainError:  # beyond the add-funds limits / maximum balance: refused, nothing written
                assert _state(db, client_id) == before
                event("add funds refused")
                continue
            assert proforma.subtotal == net and proforma.total == round_invoice(net * D("1.23"))
            total = proforma.total
            share = round_invoice(total / parts)
            amounts = [share] * (parts - 1) + [total - share * (parts - 1)]
            if not complete and parts > 1:
                amounts = amounts[:-1]
            nets = D(0)
            result = None
            for amount in amounts:
                external_id = f"TX-{next(next_id)}"
                fee = min(D(fee_cents).scaleb(-2), amount)
                result = payments.record_payment(db.get(Invoice, proforma.id), gateway="bank_transfer",
                                                 external_id=external_id, amount=amount, fee=fee)
                assert result.created
                nets += result.payment.net
                last_payment = (proforma.id, external_id)
            expected += nets
            if len(amounts) == parts:  # fully paid: the nets add up to exactly what was asked for
                assert nets == net and result.invoice.type == "invoice" and result.invoice.status == "paid"
                paid_invoices.append(result.invoice.id)
                event("proforma paid in full")
            else:
                event("proforma paid in part")
                assert db.get(Invoice, proforma.id).status == "unpaid"
        elif kind == "pay_again":
            if last_payment is None:
                continue
            proforma_id, external_id = last_payment
            result = payments.record_payment(db.get(Invoice, proforma_id), gateway="bank_transfer",
                                             external_id=external_id, amount="0.01")
            assert not result.created
            event("duplicate payment ignored")
            assert _state(db, client_id) == before
        elif kind == "refund":
            candidates = [i for i in paid_invoices if invoicing.refundable_amount(db.get(Invoice, i)) > 0]
            if not candidates:
                continue
            document = db.get(Invoice, candidates[-1])
            refundable = invoicing.refundable_amount(document)
            amount = max(D("0.01"), round_invoice(refundable * op[1] / 100))
            note = payments.refund(document, amount, "property test")
            event("refund")
            assert note.type == "credit_note" and note.subtotal == amount
            expected -= amount
        elif kind == "charge":
            with transaction():
                locked = ledger.lock_client(client_id)
                svc = db.get(Service, service_id)
                setup = charging.charge_setup(locked, svc)
                start = svc.paid_until or svc.activated_at
                row = charging.charge_period(locked, svc, start)
                charged = (setup.net if setup else D(0)) + (row.net if row else D(0))
            assert row is not None and row.net == D("-9.99")
            expected += charged
            with transaction():  # the same period again: nothing
                locked = ledger.lock_client(client_id)
                assert charging.charge_period(locked, db.get(Service, service_id), start) is None
        elif kind == "post":
            _kind, type_, amount = op
            with transaction():
                ledger.post(ledger.lock_client(client_id), type_, amount, description=f"direct {type_}")
            expected += amount
        check_invariants(db, client_id, expected)
    check_invariants(db, client_id, expected)
