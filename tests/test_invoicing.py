"""billing.invoicing: add-funds quotes and proformas, staff invoices with items, drafts, publish, cancel,
snapshots and lists — exact Decimal values."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from puqpanel.billing import clock, invoicing, ledger, numbering
from puqpanel.billing.tax import REVERSE_CHARGE_NOTE
from puqpanel.domain import DomainError, NotFound
from puqpanel.domain.session import transaction
from puqpanel.models import ActivityLog, Client, ClientAddress, Currency, HomeCompany, Invoice, InvoiceItem, TaxRule

D = Decimal
NOW = dt.datetime(2026, 3, 10, 12, 0)


# -- shared fixtures and helpers (imported by the other billing test modules) -----------------------------
@pytest.fixture()
def frozen():
    """The billing clock stands at 2026-03-10 12:00 UTC."""
    with clock.frozen_at(NOW) as moment:
        yield moment


@pytest.fixture()
def home(db):
    """The default home company (Warsaw) and one rule: every client pays 23 % VAT."""
    company = HomeCompany(
        name="Main", company_name="PUQ Cloud Sp. z o.o.", address1="ul. Chmurna 1", city="Warszawa",
        postcode="00-001", country="PL", tax_id="PL5260250274",
        bank_details="IBAN PL61 1090 1014 0000 0712 1981 2874\nSWIFT WBKPPLPP", email="billing@puq.example",
        phone="+48 22 123 45 67", website="https://puq.example", pdf_footer="KRS 0000123456", is_default=True,
    )
    db.add(company)
    db.flush()
    db.add(TaxRule(category="", country="", region="", home_company_id=company.id, tax1_name="VAT",
                   tax1_rate=D("23")))
    db.commit()
    return company


@pytest.fixture()
def billing_client(new_client, home, frozen):
    return new_client(company_name="Schmidt Cloud GmbH")


def add_funds(client, net="100.00") -> Invoice:
    return invoicing.create_add_funds_proforma(client, net)


def seed_balance(client, amount) -> None:
    """Move a client's balance through the ledger (an adjustment), as anything real would."""
    with transaction():
        locked = ledger.lock_client(client.id)
        ledger.post(locked, "adjustment", D(amount), description="test seed")


def count(db, model, *where) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model).where(*where))


def items(*rows):
    return [dict(description=d, quantity=q, unit_price=p) for d, q, p in rows]


# -- add funds: quote --------------------------------------------------------------------------------------
def test_quote_adds_the_clients_taxes(db, billing_client):
    quote = invoicing.quote_add_funds(billing_client, "100")
    assert quote.net == D("100.00")
    assert quote.tax_lines == quote.taxes == [("VAT", D("23.0000"), D("23.00"))]
    assert quote.total == D("123.00")
    assert quote.balance_after == D("100.0000")
    assert (quote.min, quote.max, quote.max_balance) == (D("10.00"), D("10000.00"), D("100000.00"))
    assert not quote.reverse_charge and quote.note == ""
    assert quote.home_company.name == "Main" and quote.currency.code == "EUR"


def test_quote_accepts_decimal_and_rounds_taxes_half_up(db, billing_client):
    quote = invoicing.quote_add_funds(billing_client, D("10.50"))
    assert quote.tax_lines[0][2] == D("2.42")  # 2.415 → 2.42 (half-up)
    assert quote.total == D("12.92")


@pytest.mark.parametrize("raw", ["", "abc", "0", "-5", "10.001", "NaN", "1e400"])
def test_quote_refuses_bad_amounts(db, billing_client, raw):
    with pytest.raises(DomainError) as exc:
        invoicing.quote_add_funds(billing_client, raw)
    assert set(exc.value.errors) == {"amount"}


def test_limits_are_scaled_by_the_exchange_rate(db, new_client, home, frozen):
    pln = Currency(code="PLN", suffix=" zł", exchange_rate=D("4.3"))
    odd = Currency(code="USD", prefix="$", exchange_rate=D("1.0865"))
    db.add_all([pln, odd])
    db.commit()
    client = new_client(currency_id=pln.id)
    limits = invoicing.add_funds_limits(client)
    assert (limits.min, limits.max, limits.max_balance) == (D("43.00"), D("43000.00"), D("430000.00"))
    assert invoicing.quote_add_funds(client, "43").net == D("43.00")
    assert invoicing.quote_add_funds(client, "43000").net == D("43000.00")
    for raw in ("42.99", "43000.01"):
        with pytest.raises(DomainError) as exc:
            invoicing.quote_add_funds(client, raw)
        message = exc.value.errors["amount"]
        assert "43.00" in message and "43,000.00" in message and "PLN" in message, message
    # min rounds up, maxima round down (every bound is an amount one can type)
    usd_client = new_client(currency_id=odd.id)
    limits = invoicing.add_funds_limits(usd_client)
    assert (limits.min, limits.max, limits.max_balance) == (D("10.87"), D("10865.00"), D("108650.00"))


def test_limits_follow_the_settings(db, app, billing_client, monkeypatch):
    monkeypatch.setitem(app.config, "PUQPANEL_ADD_FUNDS_MIN", "5")
    monkeypatch.setitem(app.config, "PUQPANEL_ADD_FUNDS_MAX", D("50"))
    monkeypatch.setitem(app.config, "PUQPANEL_MAX_BALANCE", 60)
    assert invoicing.quote_add_funds(billing_client, "5").net == D("5.00")
    with pytest.raises(DomainError):
        invoicing.quote_add_funds(billing_client, "4.99")
    with pytest.raises(DomainError):
        invoicing.quote_add_funds(billing_client, "50.01")


def test_max_resulting_balance(db, app, billing_client):
    seed_balance(billing_client, "99000")
    db.refresh(billing_client)
    limits = invoicing.add_funds_limits(billing_client)
    assert limits.max == D("1000.00")  # 100000 − 99000
    assert invoicing.quote_add_funds(billing_client, "1000").balance_after == D("100000.0000")
    with pytest.raises(DomainError) as exc:
        invoicing.quote_add_funds(billing_client, "1000.01")
    assert "100,000.00" in exc.value.errors["amount"] and "1,000.00" in exc.value.errors["amount"]


def test_negative_balance_leaves_room_up_to_the_top_up_maximum(db, billing_client):
    seed_balance(billing_client, "-500")
    db.refresh(billing_client)
    quote = invoicing.quote_add_funds(billing_client, "10000")
    assert quote.balance_after == D("9500.0000")
    with pytest.raises(DomainError):
        invoicing.quote_add_funds(billing_client, "10000.01")  # the single top-up maximum still applies


def test_balance_at_its_maximum_refuses_every_amount(db, billing_client):
    seed_balance(billing_client, "99999.995")
    db.refresh(billing_client)
    with pytest.raises(DomainError) as exc:
        invoicing.quote_add_funds(billing_client, "10")
    assert "maximum" in exc.value.errors["amount"]


def test_reverse_charge_quote_and_proforma(db, new_client, home, frozen):
    client = new_client(company_name="Kunde GmbH")
    client.tax_id = "DE136695976"
    client.vies_status = "valid"
    db.commit()
    quote = invoicing.quote_add_funds(client, "200")
    assert quote.tax_lines == [] and quote.total == D("200.00")
    assert quote.reverse_charge and quote.note == REVERSE_CHARGE_NOTE
    proforma = add_funds(client, "200")
    assert proforma.reverse_charge and proforma.tax_lines == [] and proforma.total == D("200.00")
    assert proforma.client_snapshot["tax_note"] == REVERSE_CHARGE_NOTE
    assert invoicing.legal_note(proforma) == REVERSE_CHARGE_NOTE
    assert proforma.client_snapshot["tax_id"] == "DE136695976" and proforma.client_snapshot["vies_status"] == "valid"


# -- add funds: proforma -----------------------------------------------------------------------------------
def test_add_funds_proforma_is_published_unpaid_with_one_taxed_item(db, billing_client, home):
    proforma = add_funds(billing_client, "100")
    db.expire_all()
    proforma = db.get(Invoice, proforma.id)
    assert (proforma.type, proforma.kind, proforma.status) == ("proforma", "add_funds", "unpaid")
    assert proforma.number == "PF-2026-00001" and proforma.number_seq == 1 and proforma.number_period == "2026"
    assert proforma.issue_date == dt.date(2026, 3, 10) and proforma.due_date == dt.date(2026, 3, 17)
    assert proforma.paid_date is None
    assert [(i.description, i.quantity, i.unit_price, i.amount) for i in proforma.items] == [
        ("Add funds", D("1.0000"), D("100.0000"), D("100.0000"))
    ]
    assert proforma.subtotal == D("100.0000")
    assert proforma.tax_lines == [("VAT", D("23.0000"), D("23.0000"))]
    assert proforma.total == D("123.0000") and proforma.outstanding == D("123.0000")
    assert proforma.home_company_id == home.id and proforma.currency.code == "EUR"
    assert proforma.client_snapshot["legal_name"] == "Schmidt Cloud GmbH"
    assert proforma.company_snapshot["legal_name"] == "PUQ Cloud Sp. z o.o."
    assert db.get(Client, billing_client.id).balance == D("0.0000")  # nothing credited before payment
    log = db.scalars(select(ActivityLog).where(ActivityLog.action == "invoice.create")).one()
    assert log.client_id == billing_client.id and log.object_id == proforma.id and "PF-2026-00001" in log.description


def test_due_days_setting(db, app, billing_client, monkeypatch):
    monkeypatch.setitem(app.config, "PUQPANEL_INVOICE_DUE_DAYS", 14)
    assert add_funds(billing_client).due_date == dt.date(2026, 3, 24)


def test_refused_add_funds_writes_nothing(db, billing_client):
    before = (count(db, Invoice), count(db, ActivityLog))
    with pytest.raises(DomainError):
        add_funds(billing_client, "5")
    assert (count(db, Invoice), count(db, ActivityLog)) == before


def test_proformas_are_numbered_in_sequence(db, billing_client):
    numbers = [add_funds(billing_client, "10").number for _ in range(3)]
    assert numbers == ["PF-2026-00001", "PF-2026-00002", "PF-2026-00003"]
    series = [s for s in numbering.series_report() if s.doc_type == "proforma"]
    assert len(series) == 1 and series[0].last_number == 3 and series[0].issued == 3 and series[0].gaps == []


# -- snapshots ---------------------------------------------------------------------------------------------
def test_snapshots_hold_legal_details_and_billing_address(db, billing_client, home):
    client_snap = invoicing.snapshot_client(billing_client)
    assert client_snap["legal_name"] == "Schmidt Cloud GmbH"
    assert client_snap["company_name"] == "Schmidt Cloud GmbH"
    assert (client_snap["firstname"], client_snap["lastname"]) == ("Anna", billing_client.lastname)
    assert client_snap["email"] == billing_client.owner.email
    assert client_snap["country"] == "DE" and client_snap["country_name"] == "Germany"
    assert client_snap["region"] == "DE-BE" and client_snap["region_name"] == "Berlin"
    assert client_snap["address_lines"] == ["Hauptstr. 1", "Berlin", "Germany"]
    assert client_snap["vies_status"] == "unchecked"
    company = invoicing.snapshot_company(home)
    assert company["legal_name"] == "PUQ Cloud Sp. z o.o." and company["name"] == "Main"
    assert company["tax_id"] == "PL5260250274" and company["bank_details"].startswith("IBAN PL61")
    assert company["address_lines"] == ["ul. Chmurna 1", "00-001 Warszawa", "Poland"]
    assert (company["email"], company["phone"], company["website"], company["pdf_footer"]) == (
        "billing@puq.example", "+48 22 123 45 67", "https://puq.example", "KRS 0000123456")
    private = invoicing.snapshot_client(Client(firstname="Jan", lastname="Kowalski", company_name="", currency_id=1))
    assert private["legal_name"] == "Jan Kowalski" and private["address_lines"] == []


def test_snapshot_unchanged_after_editing_the_client_and_home_company(db, billing_client, home):
    proforma = add_funds(billing_client)
    frozen_client = dict(proforma.client_snapshot)
    frozen_company = dict(proforma.company_snapshot)
    billing_client.company_name = "Renamed AG"
    address = db.scalar(select(ClientAddress).where(ClientAddress.client_id == billing_client.id))
    address.address1 = "Neue Str. 9"
    home.bank_details = "IBAN CHANGED"
    db.commit()
    db.expire_all()
    stored = db.get(Invoice, proforma.id)
    assert stored.client_snapshot == frozen_client and stored.client_snapshot["legal_name"] == "Schmidt Cloud GmbH"
    assert stored.company_snapshot == frozen_company and "IBAN PL61" in stored.company_snapshot["bank_details"]
    newer = add_funds(db.get(Client, billing_client.id))
    assert newer.client_snapshot["legal_name"] == "Renamed AG" and "Neue Str. 9" in newer.client_snapshot["address_lines"]
    assert newer.company_snapshot["bank_details"] == "IBAN CHANGED"


# -- staff invoices with items -----------------------------------------------------------------------------
def test_new_invoice_item_arithmetic_is_exact(db, billing_client):
    draft = invoicing.new_invoice(
        billing_client,
        items(("Consulting", "3", "19.99"), ("Disk", "1.5", "10.005"), ("Bandwidth", "2", "0.125"),
              ("Rounding", "0.5", "0.01"), ("", "", "")),
        notes="  Thank you  ",
    )
    db.expire_all()
    draft = db.get(Invoice, draft.id)
    assert (draft.type, draft.kind, draft.status, draft.number, draft.issue_date) == (
        "proforma", "items", "draft", None, None)
    assert [i.amount for i in draft.items] == [D("59.97"), D("15.01"), D("0.25"), D("0.01")]  # half-up
    assert [i.position for i in draft.items] == [0, 1, 2, 3]
    assert draft.items[1].quantity == D("1.5") and draft.items[1].unit_price == D("10.005")
    assert draft.subtotal == D("75.24")
    assert draft.tax_lines == [("VAT", D("23"), D("17.31"))]  # 17.3052 → 17.31
    assert draft.total == D("92.55")
    assert draft.notes == "Thank you"
    assert count(db, ActivityLog, ActivityLog.action == "invoice.create") == 1


@pytest.mark.parametrize(
    "rows, notes, due, keys",
    [
        ([], "", None, {"items"}),
        ([("", "", "")], "", None, {"items"}),
        ([("", "1", "10")], "", None, {"items-0-description"}),
        ([("x" * 256, "1", "10")], "", None, {"items-0-description"}),
        ([("A", "0", "10")], "", None, {"items-0-quantity"}),
        ([("A", "-1", "10")], "", None, {"items-0-quantity"}),
        ([("A", "1", "-10")], "", None, {"items-0-unit_price"}),
        ([("A", "1", "1.00001")], "", None, {"items-0-unit_price"}),
        ([("A", "1", "ten"), ("B", "x", "1")], "", None, {"items-0-unit_price", "items-1-quantity"}),
        ([("A", "1", "0")], "", None, {"items"}),  # total must be above zero
        ([("A", "1", "60000000000000")], "", None, {"items"}),  # too large once taxed
        ([("A", "99999999999999", "99999999999999")], "", None, {"items-0-unit_price"}),  # product too large
        ([("A", "1", "1e400")], "", None, {"items-0-unit_price"}),
        ([("A", "1", "10")], "n" * 5001, None, {"notes"}),
        ([("A", "1", "10")], "", "2026-03-09", {"due_date"}),  # before today
        ([("A", "1", "10")], "", "2028-01-01", {"due_date"}),  # too far
        ([("A", "1", "10")], "", "10/03/2026", {"due_date"}),
        ([("", "1", "10")], "", "nope", {"items-0-description", "due_date"}),  # every bad field at once
    ],
)
def test_new_invoice_refuses_bad_input_and_writes_nothing(db, billing_client, rows, notes, due, keys):
    with pytest.raises(DomainError) as exc:
        invoicing.new_invoice(billing_client, items(*rows), notes, due)
    assert set(exc.value.errors) == keys
    assert count(db, Invoice) == 0 and count(db, ActivityLog, ActivityLog.action.like("invoice.%")) == 0


def test_too_many_items(db, billing_client):
    with pytest.raises(DomainError) as exc:
        invoicing.new_invoice(billing_client, items(*[("A", "1", "1")] * (invoicing.MAX_ITEMS + 1)))
    assert set(exc.value.errors) == {"items"}


def test_update_draft_replaces_items_and_recomputes(db, billing_client):
    draft = invoicing.new_invoice(billing_client, items(("A", "1", "10")), due_date=dt.date(2026, 3, 31))
    invoicing.update_draft(draft, items(("B", "2", "50"), ("C", "1", "0.99")), "new notes", "2026-04-01")
    db.expire_all()
    draft = db.get(Invoice, draft.id)
    assert [(i.description, i.amount) for i in draft.items] == [("B", D("100.00")), ("C", D("0.99"))]
    assert count(db, InvoiceItem) == 2  # the old item is gone
    assert draft.subtotal == D("100.99") and draft.tax1_amount == D("23.23") and draft.total == D("124.22")
    assert draft.notes == "new notes" and draft.due_date == dt.date(2026, 4, 1)
    log = db.scalars(select(ActivityLog).where(ActivityLog.action == "invoice.update")).one()
    assert log.changes["total"] == ["12.30", "124.22"] and log.changes["items"] == [1, 2]
    with pytest.raises(DomainError) as exc:
        invoicing.update_draft(draft, [], "", None)
    assert set(exc.value.errors) == {"items"}
    assert db.get(Invoice, draft.id).total == D("124.22")


def test_publish_numbers_the_draft_now(db, billing_client):
    draft = invoicing.new_invoice(billing_client, items(("A", "1", "10")))
    first = add_funds(billing_client, "10")  # drafts take no number
    assert first.number == "PF-2026-00001"
    with clock.frozen_at(dt.datetime(2026, 3, 12, 9, 0)):
        published = invoicing.publish(draft)
    db.expire_all()
    published = db.get(Invoice, draft.id)
    assert published.status == "unpaid" and published.number == "PF-2026-00002"
    assert published.issue_date == dt.date(2026, 3, 12) and published.due_date == dt.date(2026, 3, 19)
    assert published.total == D("12.30") and published.outstanding == D("12.30")
    assert published.client_snapshot["legal_name"] == "Schmidt Cloud GmbH"
    log = db.scalars(select(ActivityLog).where(ActivityLog.action == "invoice.publish")).one()
    assert log.changes == {"status": ["draft", "unpaid"], "number": [None, "PF-2026-00002"]}
    for action in (lambda: invoicing.publish(published), lambda: invoicing.delete_draft(published),
                   lambda: invoicing.update_draft(published, items(("Z", "1", "1")))):
        with pytest.raises(DomainError):
            action()
    assert db.get(Invoice, draft.id).number == "PF-2026-00002" and db.get(Invoice, draft.id).total == D("12.30")


def test_publish_keeps_a_chosen_due_date_and_refuses_one_in_the_past(db, billing_client):
    draft = invoicing.new_invoice(billing_client, items(("A", "1", "10")), due_date="2026-03-20")
    with clock.frozen_at(dt.datetime(2026, 3, 21, 9, 0)):
        with pytest.raises(DomainError) as exc:
            invoicing.publish(draft)
    assert set(exc.value.errors) == {"due_date"}
    assert db.get(Invoice, draft.id).status == "draft" and db.get(Invoice, draft.id).number is None
    published = invoicing.publish(draft)
    assert published.due_date == dt.date(2026, 3, 20) and published.number == "PF-2026-00001"
    assert all(s.gaps == [] for s in numbering.series_report())


def test_publish_applies_the_tax_rule_in_force_at_issue(db, billing_client, home):
    draft = invoicing.new_invoice(billing_client, items(("A", "1", "100")))
    assert draft.total == D("123.00")
    rule = db.scalar(select(TaxRule))
    rule.tax1_rate = D("20")
    db.commit()
    assert invoicing.publish(draft).total == D("120.00")


def test_delete_draft(db, billing_client):
    draft = invoicing.new_invoice(billing_client, items(("A", "1", "10"), ("B", "1", "5")))
    invoicing.delete_draft(draft)
    assert count(db, Invoice) == 0 and count(db, InvoiceItem) == 0
    log = db.scalars(select(ActivityLog).where(ActivityLog.action == "invoice.delete")).one()
    assert log.object_id == draft.id and log.changes["status"] == "draft"
    proforma = add_funds(billing_client)
    with pytest.raises(DomainError):
        invoicing.delete_draft(proforma)
    assert count(db, Invoice) == 1


def test_cancel_unpaid_proforma_keeps_its_number(db, billing_client):
    proforma = add_funds(billing_client)
    invoicing.cancel(proforma)
    db.expire_all()
    canceled = db.get(Invoice, proforma.id)
    assert canceled.status == "canceled" and canceled.number == "PF-2026-00001" and canceled.canceled_at == NOW
    assert count(db, ActivityLog, ActivityLog.action == "invoice.cancel") == 1
    with pytest.raises(DomainError):
        invoicing.cancel(canceled)
    draft = invoicing.new_invoice(billing_client, items(("A", "1", "10")))
    with pytest.raises(DomainError):
        invoicing.cancel(draft)
    assert add_funds(billing_client).number == "PF-2026-00002"
    assert all(s.gaps == [] for s in numbering.series_report())


def test_get_invoice_is_scoped_to_the_client(db, billing_client, new_client):
    other = new_client()
    mine, theirs = add_funds(billing_client), add_funds(other)
    assert invoicing.get_invoice(billing_client, mine.id).id == mine.id
    with pytest.raises(NotFound):
        invoicing.get_invoice(billing_client, theirs.id)
    with pytest.raises(NotFound):
        invoicing.get_invoice(billing_client, 987654)
    with pytest.raises(NotFound):
        invoicing.invoice_detail(billing_client, theirs.id)


def test_list_invoices_filters_and_pages(db, billing_client, new_client):
    other = new_client()
    add_funds(other)
    unpaid = [add_funds(billing_client, "10") for _ in range(3)]
    invoicing.cancel(unpaid[0])
    draft = invoicing.new_invoice(billing_client, items(("A", "1", "10")))
    everything = invoicing.list_invoices(billing_client)
    assert [r.id for r in everything.rows] == [draft.id, unpaid[2].id, unpaid[1].id, unpaid[0].id]
    assert not everything.has_next
    assert [r.id for r in invoicing.list_invoices(billing_client, status="canceled").rows] == [unpaid[0].id]
    assert [r.id for r in invoicing.list_invoices(billing_client, status="draft").rows] == [draft.id]
    assert invoicing.list_invoices(billing_client, type="credit_note").rows == []
    ignored = invoicing.list_invoices(billing_client, type="bogus", status="nope")
    assert len(ignored.rows) == 4 and ignored.type is None and ignored.status is None
    page1 = invoicing.list_invoices(billing_client, page=1, page_size=3)
    page2 = invoicing.list_invoices(billing_client, page=2, page_size=3)
    assert len(page1.rows) == 3 and page1.has_next and [r.id for r in page2.rows] == [unpaid[0].id]
    assert not page2.has_next


def test_parse_date(db):
    assert invoicing.parse_date("", "d") is None and invoicing.parse_date(None, "d") is None
    assert invoicing.parse_date("2026-03-10", "d") == dt.date(2026, 3, 10)
    assert invoicing.parse_date(dt.datetime(2026, 3, 10, 5), "d") == dt.date(2026, 3, 10)
    for bad in ("2026-02-30", "1999-12-31", "x"):
        with pytest.raises(DomainError):
            invoicing.parse_date(bad, "d")
