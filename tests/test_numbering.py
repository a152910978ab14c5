"""Document numbering: formats and tokens, padding, resets, refusals, the series report (gaps), and gapless
unique numbers under concurrent issuers on PostgreSQL."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select, text

from puqpanel.billing import numbering
from puqpanel.billing.numbering import assign_number, check_format, format_number, period_key, series_report
from puqpanel.billing.reference import check_numbering
from puqpanel.domain import DomainError
from puqpanel.models import DocumentCounter, HomeCompany, Invoice
from conftest import IS_POSTGRES

D = dt.date


@pytest.fixture()
def home(db):
    company = HomeCompany(name="Demo GmbH", company_name="Demo GmbH", country="DE", is_default=True)
    db.add(company)
    db.commit()
    return company


@pytest.fixture()
def client_row(new_client):
    return new_client()


def issue(db, client, company, doc_type="invoice", day=D(2026, 3, 9)) -> Invoice:
    invoice = Invoice(client_id=client.id, home_company=company, currency_id=client.currency_id, type=doc_type,
                      status="paid", issue_date=day)
    db.add(invoice)
    assign_number(invoice, day)
    db.commit()
    return invoice


# --- formats ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, padding, seq, expected", [
    ("INV-{YEAR}-{NUMBER}", 5, 1, "INV-2026-00001"),
    ("INV-{YEAR}{MONTH}{DAY}-{NUMBER}", 4, 7, "INV-20260309-0007"),
    ("{NUMBER}", 0, 42, "42"),
    ("{NUMBER}/{MONTH}/{YEAR}", 3, 5, "005/03/2026"),
    ("CN {YEAR}.{MONTH}.{DAY} #{NUMBER}", 2, 123456, "CN 2026.03.09 #123456"),  # longer than the padding
])
def test_format_number_tokens_and_padding(fmt, padding, seq, expected):
    assert format_number(fmt, padding, seq, D(2026, 3, 9)) == expected


def test_period_keys():
    assert [period_key(reset, D(2026, 3, 9)) for reset in ("never", "monthly", "yearly")] == ["", "2026-03", "2026"]


@pytest.mark.parametrize("fmt, padding, reset, field", [
    ("INV-{YEAR}", 5, "yearly", "format"),  # no {NUMBER}
    ("{NUMBER}-{NUMBER}-{YEAR}", 5, "yearly", "format"),
    ("INV-{YEAR}-{SEQ}-{NUMBER}", 5, "yearly", "format"),  # unknown token
    ("INV-{NUMBER}", 5, "yearly", "format"),  # yearly reset without {YEAR}
    ("INV-{YEAR}-{NUMBER}", 5, "monthly", "format"),  # monthly reset without {MONTH}
    ("INV-{MONTH}-{NUMBER}", 5, "monthly", "format"),  # ... and without {YEAR}
    ("INV-{NUMBER}", 5, "weekly", "reset"),
    ("INV-{NUMBER}", 13, "never", "padding"),
    ("INV-{NUMBER}", -1, "never", "padding"),
])
def test_check_format_refusals(fmt, padding, reset, field):
    with pytest.raises(DomainError) as exc:
        check_format(fmt, padding, reset)
    assert field in exc.value.errors


def test_check_format_accepts_good_formats():
    check_format("INV-{NUMBER}", 0, "never")
    check_format("{YEAR}-{NUMBER}", 12, "yearly")
    check_format("{YEAR}{MONTH}-{NUMBER}", 5, "monthly")


@pytest.mark.parametrize("data, field", [
    ({"invoice_format": "INV<script>-{YEAR}-{NUMBER}"}, "invoice_format"),  # characters outside the safe set
    ({"invoice_format": "X" * 55 + "{YEAR}-{NUMBER}"}, "invoice_format"),  # longer than the column
    ({"invoice_format": "X" * 50 + "-{NUMBER}", "invoice_padding": "12", "invoice_reset": "never"},
     "invoice_format"),  # a 59-character format whose numbers have 63
    ({"invoice_format": ""}, "invoice_format"),
    ({"invoice_padding": "x"}, "invoice_padding"),
    ({"invoice_reset": "daily"}, "invoice_reset"),
])
def test_home_company_numbering_settings_refusals(data, field):
    settings = {"invoice_format": "INV-{YEAR}-{NUMBER}", "invoice_padding": "5", "invoice_reset": "yearly", **data}
    with pytest.raises(DomainError) as exc:
        check_numbering(settings, "invoice")
    assert field in exc.value.errors


def test_home_company_numbering_settings_normalised():
    assert check_numbering({"proforma_format": " PF/{YEAR}/{NUMBER} ", "proforma_padding": "4",
                            "proforma_reset": "yearly"}, "proforma") == {
        "proforma_format": "PF/{YEAR}/{NUMBER}", "proforma_padding": 4, "proforma_reset": "yearly"}


# --- issuing ---------------------------------------------------------------------------------------------


def test_yearly_reset_restarts_at_one_and_numbers_stay_unique(db, home, client_row):
    numbers = [issue(db, client_row, home, day=day).number for day in (
        D(2026, 1, 2), D(2026, 6, 30), D(2026, 12, 31), D(2027, 1, 1), D(2027, 1, 2))]
    assert numbers == ["INV-2026-00001", "INV-2026-00002", "INV-2026-00003", "INV-2027-00001", "INV-2027-00002"]
    assert len(set(numbers)) == len(numbers)
    counters = db.execute(select(DocumentCounter.period_key, DocumentCounter.last_number)
                          .order_by(DocumentCounter.period_key)).all()
    assert [tuple(c) for c in counters] == [("2026", 3), ("2027", 2)]


def test_monthly_reset_and_types_have_their_own_series(db, home, client_row):
    home.proforma_format, home.proforma_padding, home.proforma_reset = "PF{YEAR}{MONTH}-{NUMBER}", 3, "monthly"
    db.commit()
    proformas = [issue(db, client_row, home, "proforma", day).number for day in (
        D(2026, 1, 5), D(2026, 1, 31), D(2026, 2, 1), D(2027, 1, 5))]
    assert proformas == ["PF202601-001", "PF202601-002", "PF202602-001", "PF202701-001"]
    assert issue(db, client_row, home, "invoice", D(2026, 1, 6)).number == "INV-2026-00001"
    assert issue(db, client_row, home, "credit_note", D(2026, 1, 6)).number == "CN-2026-00001"


def test_never_reset_continues_across_years_and_companies_are_separate(db, home, client_row):
    home.invoice_format, home.invoice_padding, home.invoice_reset = "{NUMBER}", 0, "never"
    other = HomeCompany(name="Maple Inc", company_name="Maple Inc", country="CA")
    db.add(other)
    db.commit()
    assert [issue(db, client_row, home, day=day).number for day in (D(2026, 12, 31), D(2027, 1, 1))] == ["1", "2"]
    assert issue(db, client_row, other, day=D(2027, 1, 1)).number == "INV-2027-00001"
    invoice = db.scalar(select(Invoice).where(Invoice.number == "2"))
    assert (invoice.number_period, invoice.number_seq) == ("", 2)


def test_a_rolled_back_issue_gives_its_number_back(db, home, client_row):
    assert issue(db, client_row, home).number == "INV-2026-00001"
    invoice = Invoice(client_id=client_row.id, home_company=home, currency_id=client_row.currency_id, type="invoice")
    db.add(invoice)
    assign_number(invoice, D(2026, 3, 9))
    assert invoice.number == "INV-2026-00002"
    db.rollback()  # the issuing transaction failed
    assert issue(db, client_row, home).number == "INV-2026-00002"


def test_a_number_issued_before_a_settings_change_is_refused_not_duplicated(db, home, client_row):
    """Reset yearly → never with the same format restarts the counter at 1: the next number would repeat
    INV-2026-00001 (an IntegrityError, a 500 on the add-funds / payment page); now a DomainError, nothing
    written, the counter given back."""
    assert issue(db, client_row, home).number == "INV-2026-00001"
    home.invoice_reset = "never"
    db.commit()
    with pytest.raises(DomainError, match="INV-2026-00001 was already issued"):
        issue(db, client_row, home)
    db.rollback()
    assert db.scalar(select(DocumentCounter.last_number).where(DocumentCounter.period_key == "")) is None
    home.invoice_format = "INV-{NUMBER}"
    db.commit()
    assert issue(db, client_row, home).number == "INV-00001"


# --- series report ---------------------------------------------------------------------------------------


def report(db):
    db.expire_all()
    return {(s.home_company, s.doc_type, s.period_key): s for s in series_report()}


def test_series_report_lists_series_and_finds_gaps_made_behind_the_apps_back(db, home, client_row):
    invoices = [issue(db, client_row, home) for _ in range(6)]
    issue(db, client_row, home, "proforma")
    series = report(db)
    row = series[("Demo GmbH", "invoice", "2026")]
    assert (row.last_number, row.issued, row.gaps) == (6, 6, [])
    assert series[("Demo GmbH", "proforma", "2026")].gaps == []

    # Someone deletes numbered documents directly in the database.
    for seq in (2, 3, 5, 6):
        db.execute(text("DELETE FROM puq_invoice WHERE id = :id"), {"id": invoices[seq - 1].id})
    db.commit()
    row = report(db)[("Demo GmbH", "invoice", "2026")]
    assert (row.last_number, row.issued, row.gaps) == (6, 2, [(2, 3), (5, 6)])  # inner and trailing gaps

    db.execute(text("DELETE FROM puq_invoice WHERE id = :id"), {"id": invoices[0].id})
    db.commit()
    assert report(db)[("Demo GmbH", "invoice", "2026")].gaps == [(1, 3), (5, 6)]  # a gap at the start


def test_series_report_is_empty_without_numbered_documents(db, home):
    assert series_report() == []


# --- concurrency (PostgreSQL) ----------------------------------------------------------------------------

THREADS = 10
PER_THREAD = 25


@pytest.mark.skipif(not IS_POSTGRES, reason="concurrent issuers need PostgreSQL row locks "
                                           "(set PUQPANEL_TEST_DATABASE_URL); SQLite serialises all writers")
def test_concurrent_issuers_get_a_gapless_series_without_duplicates(app, db, home, client_row):
    from puqpanel.extensions import db as fsa

    company_id, client_id, currency_id = home.id, client_row.id, client_row.currency_id
    db.commit()
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []
    day = D(2026, 11, 23)

    def issuer():
        try:
            with app.app_context():  # its own app context → its own session and connection
                session = fsa.session
                start.wait()
                for _ in range(PER_THREAD):
                    company = session.get(HomeCompany, company_id)
                    invoice = Invoice(client_id=client_id, home_company=company, currency_id=currency_id,
                                      type="invoice", status="paid", issue_date=day)
                    session.add(invoice)
                    assign_number(invoice, day)
                    session.commit()
                session.remove()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=issuer) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    total = THREADS * PER_THREAD
    seqs = sorted(db.scalars(select(Invoice.number_seq).where(Invoice.home_company_id == company_id)))
    assert seqs == list(range(1, total + 1))  # no gap, no duplicate
    numbers = set(db.scalars(select(Invoice.number)))
    assert len(numbers) == total and f"INV-2026-{total:05d}" in numbers
    row = report(db)[("Demo GmbH", "invoice", "2026")]
    assert (row.last_number, row.issued, row.gaps) == (total, total, [])
    assert numbering.series_settings(home, "invoice") == ("INV-{YEAR}-{NUMBER}", 5, "yearly")
