"""The ledger's domain side: manual adjustments, reading a client's ledger, verify() / `puqpanel verify-ledger`,
immutability of ledger rows (ORM and database triggers), and money formatting."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from decimal import Decimal
from types import SimpleNamespace

import pytest
from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from conftest import IS_POSTGRES, TEST_DB_URL
from puqpanel.billing import clock
from puqpanel.billing.ledger import (
    adjust,
    client_transactions,
    lock_client,
    parse_filters,
    post,
    recent_transactions,
    verify,
)
from puqpanel.domain import DomainError
from puqpanel.models import ActivityLog, Client, HomeCompany, Invoice, Product, Service, Transaction


def balance(db, client) -> Decimal:
    db.expire_all()
    return db.get(Client, client.id).balance


def rows_of(db, client) -> list[Transaction]:
    db.expire_all()
    return list(db.scalars(select(Transaction).where(Transaction.client_id == client.id).order_by(Transaction.id)))


# -- adjust ------------------------------------------------------------------------------------------------
def test_adjust_credits_and_debits_with_a_chain_and_a_log_entry(app, db, new_client):
    client = new_client()
    first = adjust(client, "12.3456", "Goodwill", external_id="REF-7")
    second = adjust(client.id, Decimal("-20"), "Correction of an overpayment")
    assert balance(db, client) == Decimal("-7.6544")  # a staff debit may take the balance below zero
    rows = rows_of(db, client)
    assert [r.id for r in rows] == [first.id, second.id]
    assert [(r.type, r.gross, r.net, r.fees, r.balance_before, r.balance_after) for r in rows] == [
        ("adjustment", Decimal("12.3456"), Decimal("12.3456"), Decimal("0"), Decimal("0"), Decimal("12.3456")),
        ("adjustment", Decimal("-20"), Decimal("-20"), Decimal("0"), Decimal("12.3456"), Decimal("-7.6544")),
    ]
    assert rows[0].external_id == "REF-7" and rows[0].currency_id == client.currency_id
    assert rows[0].author_id is None  # outside a request: the system
    logs = list(db.scalars(select(ActivityLog).where(ActivityLog.action == "ledger.adjustment")
                           .order_by(ActivityLog.id)))
    assert [(entry.object_id, entry.changes["net"]) for entry in logs] == [(first.id, "12.3456"), (second.id, "-20.0000")]
    assert logs[1].changes["balance"] == ["12.3456", "-7.6544"]
    assert verify() == []


@pytest.mark.parametrize(
    "amount, description, external_id, errors",
    [
        ("0", "x", "", {"amount"}),
        ("0.00001", "x", "", {"amount"}),
        ("1.23456", "x", "", {"amount"}),
        ("100000000000000", "x", "", {"amount"}),
        ("-100000000000000", "x", "", {"amount"}),
        ("Infinity", "x", "", {"amount"}),
        ("sNaN", "x", "", {"amount"}),
        (None, "x", "", {"amount"}),
        ("5", "", "", {"description"}),
        ("5", " \t\n ", "", {"description"}),
        ("5", "x" * 256, "", {"description"}),
        ("5", "x", "r" * 101, {"external_id"}),
        ("5", "x", "tab\there", {"external_id"}),
        ("", "", "r" * 101, {"amount", "description", "external_id"}),
    ],
)
def test_adjust_refuses_bad_input_and_writes_nothing(app, db, new_client, amount, description, external_id, errors):
    client = new_client()
    adjust(client, "1", "opening")
    logs = db.scalar(select(func.count()).select_from(ActivityLog))
    with pytest.raises(DomainError) as exc:
        adjust(client, amount, description, external_id=external_id)
    assert set(exc.value.errors) == errors
    assert len(rows_of(db, client)) == 1 and balance(db, client) == Decimal("1")
    assert db.scalar(select(func.count()).select_from(ActivityLog)) == logs


def test_adjust_accepts_limits_and_decimal_comma(app, db, new_client):
    client = new_client()
    adjust(client, "99999999999999.9999", "x" * 255, external_id="r" * 100)
    adjust(client, "-99999999999999,9999", "back")
    adjust(client, " -0,0001 ", "smallest debit")
    assert balance(db, client) == Decimal("-0.0001")
    assert [r.net for r in rows_of(db, client)] == [
        Decimal("99999999999999.9999"), Decimal("-99999999999999.9999"), Decimal("-0.0001")]


def test_adjust_of_an_unknown_client_is_not_found(app, db, eur):
    from puqpanel.domain import NotFound

    with pytest.raises(NotFound):
        adjust(424242, "5", "nobody")
    assert db.scalar(select(func.count()).select_from(Transaction)) == 0


@pytest.mark.skipif(not IS_POSTGRES, reason="PostgreSQL only: concurrent writers need row locks (SELECT … FOR UPDATE)")
def test_concurrent_adjustments_are_all_counted(app, db, new_client):
    from puqpanel.extensions import db as fsa

    client = new_client()
    client_id = client.id  # read here: the threads must not touch this session
    errors = []
    barrier = threading.Barrier(10)

    def worker(n: int) -> None:
        with app.app_context():
            try:
                barrier.wait()
                for i in range(5):
                    adjust(client_id, "1.0001" if (n + i) % 2 else "-0.5", f"thread {n} #{i}")
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                fsa.session.remove()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    rows = rows_of(db, client)
    assert len(rows) == 50
    assert balance(db, client) == sum((r.net for r in rows), Decimal(0)) == Decimal("25") * Decimal("1.0001") - Decimal("12.5")
    assert verify() == []


# -- reading the ledger ------------------------------------------------------------------------------------
def test_client_transactions_one_statement_with_related_rows(app, db, new_client, staff):
    from puqpanel.extensions import db as fsa

    client, other = new_client(), new_client()
    home = HomeCompany(name="Main", company_name="PUQ", country="DE", is_default=True)
    product = Product(name="Mail")
    db.add_all([home, product])
    db.flush()
    service = Service(client_id=client.id, product_id=product.id, status="active")
    document = Invoice(client_id=client.id, home_company_id=home.id, currency_id=client.currency_id, type="credit_note",
                       status="refunded", number="CN-1")
    db.add_all([service, document])
    db.commit()
    post(lock_client(client.id), "charge", Decimal("-3"), description="Mail", service_id=service.id,
         author_id=staff["billing"].id, impersonator_id=staff["admin"].id)
    post(lock_client(client.id), "refund", Decimal("-2"), description="Refund", invoice_id=document.id)
    db.commit()
    adjust(other, "100", "someone else's")

    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    client_id = client.id
    db.expire_all()
    event.listen(fsa.engine, "before_cursor_execute", count)
    try:
        page = client_transactions(client_id)
        shown = [(e.tx.description, str(e.tx.currency.code), e.invoice_number, e.invoice_type, e.service_label,
                  e.author, e.impersonator) for e in page.entries]
    finally:
        event.remove(fsa.engine, "before_cursor_execute", count)
    assert len(statements) == 1
    assert shown == [
        ("Refund", "EUR", "CN-1", "credit_note", None, None, None),
        ("Mail", "EUR", None, None, "Mail", "billing", "admin"),
    ]
    assert not page.has_next and page.page == 1
    assert [t.description for t in recent_transactions(client.id, 1)] == ["Refund"]


def test_client_transactions_filters_and_pages(app, db, new_client):
    client = new_client()
    for day in range(1, 11):
        with clock.frozen_at(dt.datetime(2026, 4, day, 23, 59)):
            adjust(client, str(day), f"Day {day}", external_id=f"ext-{day}")
    page = client_transactions(client.id, page_size=4)
    assert [e.tx.description for e in page.entries] == ["Day 10", "Day 9", "Day 8", "Day 7"] and page.has_next
    page = client_transactions(client.id, page_size=4, page=3)
    assert [e.tx.description for e in page.entries] == ["Day 2", "Day 1"] and not page.has_next
    found = client_transactions(client.id, date_from=dt.date(2026, 4, 3), date_to=dt.date(2026, 4, 4))
    assert [e.tx.description for e in found.entries] == ["Day 4", "Day 3"]
    assert [e.tx.description for e in client_transactions(client.id, search="EXT-1").entries] == ["Day 10", "Day 1"]
    assert client_transactions(client.id, type="charge").entries == []
    by_net = client_transactions(client.id, sort="net", direction="asc", page_size=3)
    assert [e.tx.net for e in by_net.entries] == [Decimal(1), Decimal(2), Decimal(3)]
    # out-of-range input is clamped, never an error
    assert client_transactions(client.id, page=10**9, page_size=10**9).entries == []
    assert client_transactions(client.id, sort="evil; drop", direction="x").sort == "date"
    filters, errors = parse_filters({"q": " x " * 100, "type": "payment", "date_from": "2026-04-31", "date_to": "1.1.2026"})
    assert filters.type == "payment" and len(filters.search) <= 100 and set(errors) == {"date_from", "date_to"}


# -- verify / verify-ledger ------------------------------------------------------------------------------
def _ledger_of_three(db, new_client):
    a, b, c = new_client(), new_client(), new_client()
    adjust(a, "10", "a1")
    adjust(a, "-2.5", "a2")
    adjust(b, "7.0001", "b1")
    return a, b, c


@contextmanager
def ledger_triggers_lifted():
    """Drop the immutability triggers of puq_transaction for the block (to simulate tampering), then put
    them back exactly as they were."""
    from puqpanel.extensions import db as fsa

    with fsa.engine.begin() as conn:
        if IS_POSTGRES:
            triggers = conn.execute(text(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE tgrelid = 'puq_transaction'::regclass AND NOT tgisinternal"
            )).all()
            for name, _sql in triggers:
                conn.execute(text(f"DROP TRIGGER {name} ON puq_transaction"))
        else:
            triggers = conn.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'puq_transaction'"
            )).all()
            for name, _sql in triggers:
                conn.execute(text(f"DROP TRIGGER {name}"))
    assert triggers, "the ledger has immutability triggers"
    try:
        yield
    finally:
        with fsa.engine.begin() as conn:
            for _name, sql in triggers:
                conn.execute(text(sql))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PUQPANEL_DATABASE_URL=TEST_DB_URL)
    return subprocess.run([sys.executable, "-m", "puqpanel.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_verify_clean_and_cli_exit_zero(app, db, new_client):
    _ledger_of_three(db, new_client)
    assert verify() == []
    result = run_cli("verify-ledger")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ledger OK: 3 clients, 3 transactions" in result.stdout


def test_verify_names_a_client_whose_balance_was_tampered_with(app, db, new_client):
    a, b, c = _ledger_of_three(db, new_client)
    db.execute(update(Client).where(Client.id == b.id).values(balance=Decimal("7.0002")))
    db.execute(update(Client).where(Client.id == c.id).values(balance=Decimal("-1")))
    db.commit()
    problems = verify()
    assert [p.client_id for p in problems] == [b.id, c.id]
    assert "7.0002" in problems[0].problem and "7.0001" in problems[0].problem
    result = run_cli("verify-ledger")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"client {b.id}:" in result.stderr and f"client {c.id}:" in result.stderr
    assert f"client {a.id}:" not in result.stderr
    assert "ledger OK" not in result.stdout


def test_verify_names_a_broken_chain_from_a_raw_insert(app, db, new_client):
    a, b, _c = _ledger_of_three(db, new_client)
    # A row written behind the ledger's back: its before is not the previous row's after (sum kept right).
    db.execute(insert(Transaction).values(
        client_id=a.id, type="adjustment", gross=Decimal("1"), net=Decimal("1"), fees=Decimal("0"),
        balance_before=Decimal("100"), balance_after=Decimal("101"), currency_id=a.currency_id,
        description="forged", gateway="", external_id="", created_at=clock.now(),
    ))
    db.execute(update(Client).where(Client.id == a.id).values(balance=Decimal("8.5")))
    db.commit()
    problems = verify()
    assert [p.client_id for p in problems] == [a.id]
    assert "chain broken" in problems[0].problem
    result = run_cli("verify-ledger")
    assert result.returncode == 1 and f"client {a.id}: ledger chain broken" in result.stderr


def test_verify_names_edited_and_first_rows_with_the_triggers_dropped(app, db, new_client):
    a, b, _c = _ledger_of_three(db, new_client)
    first_a, second_a = (r.id for r in rows_of(db, a))
    first_b = rows_of(db, b)[0].id
    db.commit()
    with ledger_triggers_lifted():
        from puqpanel.extensions import db as fsa

        with fsa.engine.begin() as conn:
            # a: an edited amount (after - before != net, sum != balance)
            conn.execute(update(Transaction).where(Transaction.id == second_a).values(net=Decimal("-3")))
            # b: its first row does not start at zero (sum still equal to the balance)
            conn.execute(update(Transaction).where(Transaction.id == first_b).values(
                balance_before=Decimal("1"), balance_after=Decimal("8.0001")))
    problems = verify()
    by_client = {}
    for p in problems:
        by_client.setdefault(p.client_id, []).append(p.problem)
    assert set(by_client) == {a.id, b.id}
    assert any("balance" in p for p in by_client[a.id]) and any(str(second_a) in p for p in by_client[a.id])
    assert by_client[b.id] == [f"ledger chain broken at transaction {first_b}"]
    assert first_a  # untouched
    result = run_cli("verify-ledger")
    assert result.returncode == 1
    assert f"client {a.id}:" in result.stderr and f"client {b.id}:" in result.stderr


# -- immutability --------------------------------------------------------------------------------------------
def test_orm_refuses_to_update_or_delete_a_ledger_row(app, db, new_client):
    client = new_client()
    row = adjust(client, "5", "opening")
    row = db.get(Transaction, row.id)
    row.description = "rewritten"
    with pytest.raises(ValueError, match="immutable"):
        db.commit()
    db.rollback()
    row = db.get(Transaction, row.id)
    db.delete(row)
    with pytest.raises(ValueError, match="immutable"):
        db.commit()
    db.rollback()
    assert [(r.description, r.net) for r in rows_of(db, client)] == [("opening", Decimal("5"))]


@pytest.mark.parametrize("statement", [
    "UPDATE puq_transaction SET description = 'rewritten'",
    "UPDATE puq_transaction SET net = 0",
    "DELETE FROM puq_transaction",
])
def test_database_triggers_refuse_raw_sql_changes(app, db, new_client, statement):
    from puqpanel.extensions import db as fsa

    client = new_client()
    adjust(client, "5", "opening")
    with pytest.raises(DBAPIError, match="immutable"):
        with fsa.engine.begin() as conn:
            conn.execute(text(statement))
    assert [(r.description, r.net) for r in rows_of(db, client)] == [("opening", Decimal("5"))]
    assert verify() == []


# -- money formatting ----------------------------------------------------------------------------------------
def currency(code, minor_units=2, prefix="", suffix=""):
    return SimpleNamespace(code=code, minor_units=minor_units, prefix=prefix, suffix=suffix)


@pytest.mark.parametrize(
    "amount, cur, locale, expected",
    [
        ("1234.5", currency("EUR", suffix=" €"), "en", "€1,234.50"),
        ("1234.5", currency("EUR"), "de", "1.234,50\xa0€"),
        ("-1234.5", currency("EUR"), "de", "-1.234,50\xa0€"),
        ("1234.5", currency("EUR"), "fr", "1\u202f234,50\xa0€"),
        ("0.005", currency("USD"), "en", "$0.01"),  # half-up, not banker's rounding
        ("0.025", currency("USD"), "en", "$0.03"),
        ("-0.005", currency("USD"), "en", "-$0.01"),
        ("1234.5", currency("JPY", 0), "en", "¥1,235"),
        ("2.5", currency("JPY", 0), "en", "¥3"),
        ("1.2345", currency("KWD", 3), "en", "KWD1.235"),
        ("1.2345", currency("BHD", 4), "en", "BHD1.2345"),
        ("12", currency("usd"), "en", "$12.00"),
        ("1234.5", currency("PTS", 1, prefix="P "), "en", "P 1,234.5"),
        ("-1234.5", currency("PTS", 1, suffix=" pts"), "de", "-1.234,5 pts"),
        ("7", currency("ZZZ"), "en", "7.00 ZZZ"),
        ("1234.5", None, "en", "1,234.50"),
        (None, currency("EUR"), "en", "€0.00"),
        ("99999999999999.9999", currency("EUR"), "en", "€100,000,000,000,000.00"),
    ],
)
def test_money_formatting(app, amount, cur, locale, expected):
    from puqpanel.views.formatting import money

    with app.test_request_context():
        assert money(Decimal(amount) if amount is not None else None, cur, locale) == expected


def test_money_uses_the_request_locale(app):
    from flask import session

    from puqpanel.views.formatting import money

    with app.test_request_context():
        assert money(Decimal("1234.5"), currency("EUR")) == "€1,234.50"
    with app.test_request_context():
        session["locale"] = "de"
        assert money(Decimal("1234.5"), currency("EUR")) == "1.234,50\xa0€"
    assert money(Decimal("1"), currency("EUR"), "xx-bogus") == "€1.00"  # unknown locale: English


def test_a_balance_beyond_the_money_range_is_refused(db, new_client):
    from puqpanel.billing import ledger
    from puqpanel.domain import DomainError

    client = new_client()
    ledger.adjust(client, "99999999999999.99", "big credit")  # just below MONEY_MAX (1e14)
    with pytest.raises(DomainError, match="out of range"):
        ledger.adjust(client, "0.01", "one cent too many")
    db.expire_all()
    assert ledger.verify() == []
    assert db.get(type(client), client.id).balance == Decimal("99999999999999.99")
