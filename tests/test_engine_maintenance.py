"""The billing engine's maintenance jobs (billing.engine.maintenance), run through their real entry points
(runs.run_inline, the `puqpanel billing convert-prices` / `revalidate-vat` commands): price conversion after
exchange-rate changes, and VAT ids checked again against a real local HTTP server answering like VIES
(tests/test_vies.py's FakeVies)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, select, text, update
from stdnum import luhn
from stdnum.eu import vat as eu_vat

from puqpanel.billing import clock
from puqpanel.billing.engine import maintenance, runs
from puqpanel.billing.ledger import verify
from puqpanel.billing.tax import tax_for_client
from puqpanel.billing_cli import billing_group
from puqpanel.domain.session import get_session
from puqpanel.models import (ActivityLog, AutomationChunk, AutomationRun, Client, ClientAddress, Currency,
                             Product, ProductPrice)
from test_vies import FakeVies, answer, de_company  # noqa: F401 (fixture)

D = Decimal
T = dt.datetime(2026, 6, 15, 3, 20)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
UNAVAILABLE = (503, {"actionSucceed": False, "errorWrappers": [{"error": "MS_UNAVAILABLE"}]})


def fr_vat(n: int) -> str:
    """A French VAT number python-stdnum accepts (SIREN with its Luhn digit, key = SIREN·100+12 mod 97)."""
    siren = f"{31000000 + n:08d}"
    siren += luhn.calc_check_digit(siren)
    number = f"FR{int(siren + '12') % 97:02d}{siren}"
    assert eu_vat.is_valid(number)
    return number


@pytest.fixture(autouse=True)
def ledger_clean(db):
    yield
    assert verify() == []


@pytest.fixture()
def server(app, monkeypatch):
    """A local VIES; app.config points at it for this test only (monkeypatch restores the keys)."""
    fake = FakeVies()
    monkeypatch.setitem(app.config, "PUQPANEL_VIES_URL", fake.url)
    monkeypatch.setitem(app.config, "PUQPANEL_VIES_TIMEOUT", 2)
    yield fake
    fake.close()


@pytest.fixture()
def vat_client(db, new_client, server):
    """vat_client(n, status, checked_at, error="", country="FR") → a company client in Paris with VAT id
    fr_vat(n) whose last VIES result is set as given (the check made when it was created is forgotten); its
    billing address is then moved to `country`."""

    def factory(n: int, status: str = "unchecked", checked_at: dt.datetime | None = None, error: str = "",
                country: str = "FR") -> Client:
        server.answer(fr_vat(n), *UNAVAILABLE)  # the check on creation changes nothing and logs nothing
        client = new_client(country="FR", region="", city="Paris", phone="", company_name=f"Exemple {n} SARL",
                            tax_id=fr_vat(n))
        del server.answers[("FR", fr_vat(n)[2:])]
        db.execute(update(ClientAddress).where(ClientAddress.client_id == client.id).values(country=country))
        db.execute(update(Client).where(Client.id == client.id).values(
            vies_status=status, vies_checked_at=checked_at, vies_error=error,
            vies_name="EXEMPLE" if status == "valid" else ""))
        db.commit()
        server.requests.clear()
        return client

    return factory


def fresh(db, client) -> Client:
    db.expire_all()
    return db.get(Client, client.id)


def asked(server) -> list[str]:
    """The VAT numbers the server was asked about, in order ("FR" + number)."""
    return ["".join(path.split("/")[-3::2]) for path in server.requests]


def run(job: str, at: dt.datetime) -> AutomationRun:
    with clock.frozen_at(at):
        run_id = runs.run_inline(job, at, "cli")
    row = get_session().get(AutomationRun, run_id)
    get_session().refresh(row)
    return row


def logs(db, client, action=None) -> list[ActivityLog]:
    query = select(ActivityLog).where(ActivityLog.client_id == client.id,
                                      ActivityLog.action.in_(["client.vies", maintenance.VIES_ACTION]))
    if action:
        query = query.where(ActivityLog.action == action)
    return db.scalars(query.order_by(ActivityLog.id)).all()


# -- revalidate VAT ids: selection ------------------------------------------------------------------------------
def test_selection_fresh_checks_skipped_old_ones_rechecked_oldest_first(db, server, vat_client, new_client):
    never = vat_client(1)
    fresh_valid = vat_client(2, "valid", T - 10 * DAY)
    old_valid = vat_client(3, "valid", T - 40 * DAY)
    old_invalid = vat_client(4, "invalid", T - 31 * DAY)
    just_fresh = vat_client(5, "valid", T - 30 * DAY + HOUR)
    outside_eu = vat_client(6, country="CH")
    no_tax_id = new_client(country="FR", region="", city="Paris", phone="")
    for n in (1, 3, 4):
        server.answer(fr_vat(n), 200, answer(True, "VALID", name="EXEMPLE"))
    with clock.frozen_at(T):
        due = maintenance.due_vat_checks(db, T)
    assert [row[0] for row in due] == [never.id, old_valid.id, old_invalid.id]
    assert due[0] == (never.id, fr_vat(1), "FR", "unchecked")

    row = run("revalidate_vat", T)
    assert asked(server) == [fr_vat(1), fr_vat(3), fr_vat(4)]
    assert (row.status, row.counts) == ("succeeded", {"clients": 3, "valid": 3})
    for client in (never, old_valid, old_invalid):
        client = fresh(db, client)
        assert (client.vies_status, client.vies_checked_at, client.vies_error) == ("valid", T, "")
    assert fresh(db, fresh_valid).vies_checked_at == T - 10 * DAY
    assert fresh(db, just_fresh).vies_checked_at == T - 30 * DAY + HOUR
    assert fresh(db, outside_eu).vies_status == "unchecked" and fresh(db, no_tax_id).vies_checked_at is None

    # idempotent: the same moment again asks nothing; a day later only the one that has become due
    again = run("revalidate_vat", T)
    assert (again.status, again.counts, len(server.requests)) == ("succeeded", {}, 3)
    server.answer(fr_vat(5), 200, answer(True, "VALID", name="EXEMPLE"))
    later = run("revalidate_vat", T + DAY)
    assert asked(server)[3:] == [fr_vat(5)] and later.counts == {"clients": 1, "valid": 1}


def test_recheck_days_setting(app, db, server, vat_client, monkeypatch):
    client = vat_client(1, "valid", T - 8 * DAY)
    server.answer(fr_vat(1), 200, answer(True, "VALID", name="EXEMPLE"))
    assert run("revalidate_vat", T).counts == {}
    monkeypatch.setitem(app.config, "PUQPANEL_VIES_RECHECK_DAYS", 7)
    assert run("revalidate_vat", T).counts == {"clients": 1, "valid": 1}
    assert fresh(db, client).vies_checked_at == T


def test_batch_limit_respected_oldest_check_first(app, db, server, vat_client, monkeypatch):
    monkeypatch.setitem(app.config, "PUQPANEL_VIES_BATCH", 2)
    ages = {1: 35, 2: 90, 3: None, 4: 60, 5: 31}  # days since the last check (None: never)
    clients = {n: vat_client(n, "unchecked" if age is None else "valid", None if age is None else T - age * DAY)
               for n, age in ages.items()}
    for n in ages:
        server.answer(fr_vat(n), 200, answer(True, "VALID", name="EXEMPLE"))
    first = run("revalidate_vat", T)
    assert asked(server) == [fr_vat(3), fr_vat(2)]
    assert (first.counts, first.chunks_total, first.chunks_done) == ({"clients": 2, "valid": 2}, 1, 1)
    second = run("revalidate_vat", T + HOUR)
    assert asked(server)[2:] == [fr_vat(4), fr_vat(1)] and second.counts["clients"] == 2
    third = run("revalidate_vat", T + 2 * HOUR)
    assert asked(server)[4:] == [fr_vat(5)] and third.counts == {"clients": 1, "valid": 1}
    assert run("revalidate_vat", T + 3 * HOUR).counts == {}
    assert len(server.requests) == 5
    assert {n: fresh(db, c).vies_checked_at for n, c in clients.items()} == {
        3: T, 2: T, 4: T + HOUR, 1: T + HOUR, 5: T + 2 * HOUR}


# -- revalidate VAT ids: outcomes -------------------------------------------------------------------------------
def test_invalid_after_valid_revokes_the_reverse_charge(db, server, vat_client, de_company):
    client = vat_client(1, "valid", T - 31 * DAY)
    assert tax_for_client(fresh(db, client)).reverse_charge is True
    server.answer(fr_vat(1), 200, answer(False, "INVALID"))
    row = run("revalidate_vat", T)
    assert (row.status, row.counts) == ("succeeded", {"clients": 1, "invalid": 1, "revoked": 1})
    client = fresh(db, client)
    assert (client.vies_status, client.vies_name, client.vies_checked_at) == ("invalid", "", T)
    decision = tax_for_client(client)
    assert (decision.reverse_charge, decision.taxes) == (False, [("VAT", D("20"))])
    # logged once, by check_client_vat (the status change), not again by the job
    [entry] = logs(db, client)
    assert (entry.action, entry.changes) == ("client.vies", {"vies_status": ["valid", "invalid"]})


def test_every_checked_client_logged_once(db, server, vat_client):
    confirmed = vat_client(1, "valid", T - 40 * DAY)
    first_time = vat_client(2)
    down = vat_client(3, "valid", T - 40 * DAY)
    server.answer(fr_vat(1), 200, answer(True, "VALID", name="EXEMPLE"))
    server.answer(fr_vat(2), 200, answer(True, "VALID", name="EXEMPLE 2"))
    server.answer(fr_vat(3), *UNAVAILABLE)
    row = run("revalidate_vat", T)
    assert row.counts == {"clients": 3, "valid": 2, "unavailable": 1}
    [entry] = logs(db, confirmed)
    assert (entry.action, entry.created_at, entry.object_id) == (maintenance.VIES_ACTION, T, confirmed.id)
    assert entry.changes == {"result": "valid", "vies_status": "valid", "run": row.id}
    assert fr_vat(1) in entry.description
    [entry] = logs(db, first_time)
    assert (entry.action, entry.changes) == ("client.vies", {"vies_status": ["unchecked", "valid"]})
    [entry] = logs(db, down)
    assert entry.action == maintenance.VIES_ACTION
    assert entry.changes == {"result": "unavailable", "vies_status": "valid", "error": "MS_UNAVAILABLE",
                             "run": row.id}


def test_unavailable_is_retried_only_after_the_retry_hours(db, server, vat_client):
    client = vat_client(1, "valid", T - 40 * DAY)
    never = vat_client(2)
    server.answer(fr_vat(1), *UNAVAILABLE)
    server.answer(fr_vat(2), *UNAVAILABLE)
    row = run("revalidate_vat", T)
    assert row.counts == {"clients": 2, "unavailable": 2}
    client = fresh(db, client)
    # an unavailable answer keeps the last conclusive result (reverse charge continues)
    assert (client.vies_status, client.vies_checked_at, client.vies_error) == ("valid", T - 40 * DAY,
                                                                               "MS_UNAVAILABLE")
    assert (fresh(db, never).vies_status, fresh(db, never).vies_error) == ("unchecked", "MS_UNAVAILABLE")

    assert run("revalidate_vat", T + 5 * HOUR).counts == {}
    assert run("revalidate_vat", T + 6 * HOUR).counts == {}  # not older than 6 hours yet
    assert len(server.requests) == 2
    server.answer(fr_vat(1), 200, answer(True, "VALID", name="EXEMPLE"))
    retry = run("revalidate_vat", T + 6 * HOUR + dt.timedelta(minutes=1))
    assert retry.counts == {"clients": 2, "valid": 1, "unavailable": 1}
    assert asked(server) == [fr_vat(2), fr_vat(1), fr_vat(1), fr_vat(2)]  # never checked first; then by id
    client = fresh(db, client)
    assert (client.vies_status, client.vies_checked_at, client.vies_error) == (
        "valid", T + 6 * HOUR + dt.timedelta(minutes=1), "")
    # now fresh for 30 days; the other one is retried every 6 hours
    assert run("revalidate_vat", T + 13 * HOUR).counts == {"clients": 1, "unavailable": 1}
    assert asked(server)[-1] == fr_vat(2)


def test_retry_hours_setting(app, db, server, vat_client, monkeypatch):
    monkeypatch.setitem(app.config, "PUQPANEL_VIES_RETRY_HOURS", 1)
    vat_client(1)
    server.answer(fr_vat(1), *UNAVAILABLE)
    assert run("revalidate_vat", T).counts == {"clients": 1, "unavailable": 1}
    assert run("revalidate_vat", T + HOUR).counts == {}
    assert run("revalidate_vat", T + HOUR + dt.timedelta(seconds=1)).counts == {"clients": 1, "unavailable": 1}


def test_a_client_changed_while_checking_is_skipped(db, server, vat_client):
    client = vat_client(1, "valid", T - 40 * DAY)

    engine = create_engine(db.get_bind().url.render_as_string(hide_password=False))

    def staff_edits_the_vat_id():  # another connection saves a new VAT id while VIES answers the job
        with engine.begin() as conn:
            conn.execute(text("UPDATE puq_client SET tax_id = :t, vies_status = 'unchecked', vies_checked_at = NULL "
                              "WHERE id = :id"), {"t": fr_vat(9), "id": client.id})

    server.on_request = staff_edits_the_vat_id
    server.answer(fr_vat(1), 200, answer(False, "INVALID"))
    try:
        row = run("revalidate_vat", T)
    finally:
        server.on_request = None
        engine.dispose()
    assert row.counts == {"clients": 1, "skipped": 1}
    client = fresh(db, client)
    assert (client.tax_id, client.vies_status, client.vies_checked_at) == (fr_vat(9), "unchecked", None)
    assert logs(db, client) == []


# -- convert prices ---------------------------------------------------------------------------------------------
@pytest.fixture()
def currencies(db, eur):
    usd = Currency(code="USD", prefix="$", exchange_rate=D("1.1"))
    pln = Currency(code="PLN", suffix=" zł", exchange_rate=D("4.3217"))
    db.add_all([usd, pln])
    db.commit()
    return {"EUR": eur, "USD": usd, "PLN": pln}


def make_product(db, currencies, name, convert, prices):
    product = Product(name=name, convert_prices=convert)
    db.add(product)
    db.flush()
    for code, period, base in prices:
        db.add(ProductPrice(product_id=product.id, currency_id=currencies[code].id, period=period, base=D(base),
                            setup=D("0"), idle=D("0")))
    db.commit()
    return product


def price_map(db, product) -> dict[tuple[str, str], Decimal]:
    db.expire_all()
    return {(p.currency.code, p.period): p.base
            for p in db.scalars(select(ProductPrice).where(ProductPrice.product_id == product.id))}


def test_convert_prices_follows_exchange_rate_changes_and_is_idempotent(db, currencies):
    vps = make_product(db, currencies, "VPS", True, [("EUR", "monthly", "10"), ("EUR", "annually", "99.99")])
    manual = make_product(db, currencies, "Manual", False, [("EUR", "monthly", "10"), ("USD", "monthly", "12.5")])
    empty = make_product(db, currencies, "No EUR price", True, [("USD", "monthly", "7")])

    row = run("convert_prices", T)
    # the product that can't be converted is named on the run (status page), the run still succeeds
    assert row.status == "succeeded" and "1 products set to convert prices could not be converted" in row.errors
    assert row.counts == {"products": 1, "prices_updated": 4, "products_skipped": 1}
    assert price_map(db, vps) == {
        ("EUR", "monthly"): D("10.0000"), ("EUR", "annually"): D("99.9900"),
        ("USD", "monthly"): D("11.0000"), ("USD", "annually"): D("109.9890"),
        ("PLN", "monthly"): D("43.2170"), ("PLN", "annually"): D("432.1268")}
    assert set(db.scalars(select(ProductPrice.converted_at).where(
        ProductPrice.product_id == vps.id, ProductPrice.currency_id != currencies["EUR"].id))) == {T}
    untouched = {(manual.id,): price_map(db, manual), (empty.id,): price_map(db, empty)}

    # the same rates again: nothing changes
    again = run("convert_prices", T + HOUR)
    assert again.counts == {"products": 1, "products_skipped": 1}
    assert set(db.scalars(select(ProductPrice.converted_at).where(
        ProductPrice.product_id == vps.id, ProductPrice.currency_id != currencies["EUR"].id))) == {T}

    # the USD rate changes: the next run updates the USD prices only
    db.execute(update(Currency).where(Currency.code == "USD").values(exchange_rate=D("1.2")))
    db.commit()
    changed = run("convert_prices", T + DAY)
    assert changed.counts == {"products": 1, "prices_updated": 2, "products_skipped": 1}
    prices = price_map(db, vps)
    assert (prices[("USD", "monthly")], prices[("USD", "annually")]) == (D("12.0000"), D("119.9880"))
    assert prices[("PLN", "monthly")] == D("43.2170")
    assert {(manual.id,): price_map(db, manual), (empty.id,): price_map(db, empty)} == untouched
    assert run("convert_prices", T + 2 * DAY).counts == {"products": 1, "products_skipped": 1}


def test_convert_prices_with_no_product_converting(db, currencies):
    make_product(db, currencies, "Manual", False, [("EUR", "monthly", "10")])
    row = run("convert_prices", T)
    assert (row.status, row.counts, row.chunks_total, row.chunks_done) == ("succeeded", {}, 1, 1)


# -- run records and the CLI ------------------------------------------------------------------------------------
def test_run_record_of_a_maintenance_job(db, server, vat_client):
    vat_client(1)
    server.answer(fr_vat(1), 200, answer(True, "VALID", name="EXEMPLE"))
    row = run("revalidate_vat", T)
    assert (row.job, row.trigger, row.status, row.at, row.started_at, row.finished_at) == (
        "revalidate_vat", "cli", "succeeded", T, T, T)
    assert (row.chunks_total, row.chunks_done, row.error_count, row.errors) == (1, 1, 0, "")
    assert row.counts == {"clients": 1, "valid": 1}
    [chunk] = db.scalars(select(AutomationChunk).where(AutomationChunk.run_id == row.id)).all()
    assert (chunk.status, chunk.counts, chunk.error) == ("done", {"clients": 1, "valid": 1}, "")


def test_cli_commands(app, db, server, vat_client, currencies):
    client = vat_client(1, "valid", T - 40 * DAY)
    server.answer(fr_vat(1), 200, answer(False, "INVALID"))
    vps = make_product(db, currencies, "VPS", True, [("EUR", "monthly", "10")])
    runner = app.test_cli_runner()
    with clock.frozen_at(T + HOUR):
        result = runner.invoke(billing_group, ["revalidate-vat", "--at", T.isoformat()])
        assert result.exit_code == 0, result.output
        assert "revalidate_vat" in result.output and "succeeded" in result.output
        assert "clients 1, invalid 1, revoked 1" in result.output
        result = runner.invoke(billing_group, ["convert-prices", "--at", T.isoformat()])
        assert result.exit_code == 0, result.output
        assert "convert_prices" in result.output and "products 1" in result.output
        assert "prices_updated 2" in result.output
    client = fresh(db, client)
    assert (client.vies_status, client.vies_checked_at) == ("invalid", T)
    assert price_map(db, vps)[("USD", "monthly")] == D("11.0000")
    runs_made = db.scalars(select(AutomationRun).order_by(AutomationRun.id)).all()
    assert [(r.job, r.trigger, r.status, r.at) for r in runs_made] == [
        ("revalidate_vat", "cli", "succeeded", T), ("convert_prices", "cli", "succeeded", T)]
