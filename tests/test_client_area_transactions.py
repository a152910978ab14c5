"""Client area → Transactions: the current client's ledger through billing.ledger.client_transactions and the
staff tab's parsing (search by description / transaction id, type, date range, sort, pages); staff-only
details hidden (staff user names, admin labels); the permission, IDOR and injection refusals."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from conftest import PASSWORD, make_user
from sqlalchemy import select
from test_engine_charge import make_price, started

from puqpanel.billing import clock, ledger
from puqpanel.domain.client_users import create_and_associate
from puqpanel.domain.session import transaction
from puqpanel.models import Service, Transaction, User

D = Decimal
URL = "/client/transactions/"


@pytest.fixture()
def owned_client(new_client):
    return lambda **kw: new_client(password=PASSWORD, **kw)


def write(client, moment: dt.datetime, amount: str, description: str, *, external_id: str = "",
          author_id=None, impersonator_id=None, type_: str = "adjustment") -> int:
    """One ledger row at `moment` with the given author / impersonator (as a request would record them)."""
    with clock.frozen_at(moment), transaction():
        locked = ledger.lock_client(client.id)
        row = ledger.post(locked, type_, D(amount), description=description, external_id=external_id,
                          author_id=author_id, impersonator_id=impersonator_id)
    return row.id


def rows(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'class="puq-ledger-row" data-transaction-id="(\d+)"', html)]


def authors(html: str) -> dict[int, str]:
    found = re.findall(r'data-transaction-id="(\d+)".*?class="puq-author"><small>([^<]*)<', html, re.S)
    return {int(i): name for i, name in found}


@pytest.fixture()
def world(db, eur, owned_client):
    a, b = owned_client(), owned_client()
    zorro = make_user("zorro_staff", "Billing")
    owner = db.scalar(select(User.id).where(User.username == "owner1@example.com"))
    ids = {
        "bank": write(a, dt.datetime(2026, 2, 1, 10), "100", "Top up by bank transfer", external_id="BANK-REF-1"),
        "staff": write(a, dt.datetime(2026, 2, 5, 9), "-10", "Correction", author_id=zorro.id),
        "impersonated": write(a, dt.datetime(2026, 2, 10, 23, 59), "25", "Paid for the client",
                              author_id=owner, impersonator_id=zorro.id),
        "own": write(a, dt.datetime(2026, 2, 12, 8), "5", "Own top-up", author_id=owner),
        "promo": write(a, dt.datetime(2026, 2, 14, 8), "1", "50% off_promo credit"),
        "theirs": write(b, dt.datetime(2026, 2, 6, 8), "7", "Top up by bank of B", external_id="B-REF-9"),
    }
    service = started(a, make_price(db, eur, "monthly", "20"), dt.datetime(2026, 2, 15, 12), client_label="")
    db.execute(Service.__table__.update().where(Service.id == service.id).values(admin_label="SECRET-ADMIN-LABEL"))
    db.commit()
    ids["charge"] = db.scalar(select(Transaction.id).where(Transaction.service_id == service.id))
    return {"a": a, "b": b, "ids": ids, "service": service, "zorro": zorro}


def test_ledger_of_the_current_client_only_without_staff_details(app, db, world, make_browser):
    ids = world["ids"]
    owner = make_browser("owner1@example.com")
    page = owner.get(URL)
    assert page.status_code == 200
    html = page.text
    order = ["charge", "promo", "own", "impersonated", "staff", "bank"]  # newest first
    assert rows(html) == [ids[k] for k in order]
    assert authors(html) == {ids["charge"]: "System", ids["promo"]: "System", ids["own"]: "owner1@example.com",
                             ids["impersonated"]: "Staff", ids["staff"]: "Staff", ids["bank"]: "System"}
    assert "zorro" not in html.lower()
    assert "SECRET-ADMIN-LABEL" not in html
    product = world["service"].product.name
    assert re.search(rf'class="text-muted puq-service-ref">Service #{world["service"].id} · {product}<', html)
    assert "B-REF-9" not in html and "of B" not in html
    assert "BANK-REF-1" in html
    # amounts and running balance: 100 - 10 + 25 + 5 + 1 - 20 = 101
    assert re.findall(r'class="text-right puq-nowrap puq-after">([^<]*)<', html) == [
        "€101.00", "€121.00", "€120.00", "€115.00", "€90.00", "€100.00"]


@pytest.mark.parametrize("q, keys", [
    ("bank transfer", ["bank"]),         # description
    ("BANK-REF", ["bank"]),              # the transaction id (gateway reference)
    ("bank-ref-1", ["bank"]),
    ("B-REF-9", []),                     # another client's reference
    ("%", ["promo"]),                    # literal wildcards
    ("_", ["promo"]),
    ("' OR 1=1 --", []),
    ("{{7*7}}", []),
    ("\\", []),
])
def test_search(app, db, world, make_browser, q, keys):
    page = make_browser("owner1@example.com").get(URL, query_string={"q": q})
    assert page.status_code == 200
    assert rows(page.text) == [world["ids"][k] for k in keys]
    assert "No transactions found." in page.text or keys


def test_template_text_is_not_evaluated(app, db, world, make_browser):
    write(world["a"], dt.datetime(2026, 2, 20), "1", "{{7*7}} {% raw %}")
    html = make_browser("owner1@example.com").get(URL, query_string={"q": "{{7*7}}"}).text
    assert len(rows(html)) == 1
    assert "{{7*7}} {% raw %}" in html and ">49" not in html


def test_date_range_and_type(app, db, world, make_browser):
    ids = world["ids"]
    owner = make_browser("owner1@example.com")
    page = owner.get(URL, query_string={"date_from": "2026-02-05", "date_to": "2026-02-10"})
    assert rows(page.text) == [ids["impersonated"], ids["staff"]]  # both ends inclusive (Feb 10, 23:59)
    page = owner.get(URL, query_string={"date_from": "2026-02-13"})
    assert rows(page.text) == [ids["charge"], ids["promo"]]
    page = owner.get(URL, query_string={"type": "charge"})
    assert rows(page.text) == [ids["charge"]]
    # bad values are reported and dropped, never a 500
    page = owner.get(URL, query_string={"date_from": "2026-13-45", "date_to": "' OR 1=1 --", "type": "{{7*7}}"})
    assert page.status_code == 200
    assert len(rows(page.text)) == 6
    assert "Enter a date like 2025-01-31." in page.text and "Not a valid choice." in page.text


def test_sort_whitelisted(app, db, world, make_browser):
    ids = world["ids"]
    owner = make_browser("owner1@example.com")
    by_net = ["charge", "staff", "promo", "own", "impersonated", "bank"]  # -20, -10, 1, 5, 25, 100
    assert rows(owner.get(URL, query_string={"sort": "net", "dir": "asc"}).text) == [ids[k] for k in by_net]
    assert rows(owner.get(URL, query_string={"sort": "net", "dir": "desc"}).text) == [ids[k] for k in reversed(by_net)]
    assert rows(owner.get(URL, query_string={"sort": "date", "dir": "asc"}).text) == sorted(
        ids[k] for k in by_net)
    default = rows(owner.get(URL).text)
    for sort, direction in (("id; DROP TABLE puq_transaction", "asc"), ("' OR 1=1 --", "asc"),
                            ("{{7*7}}", "desc"), ("author_id", "asc")):
        page = owner.get(URL, query_string={"sort": sort, "dir": direction})
        assert page.status_code == 200 and rows(page.text) == default
    page = owner.get(URL, query_string={"sort": "net", "dir": "sideways"})
    assert rows(page.text) == [ids[k] for k in reversed(by_net)]


def test_pages_of_50(app, db, eur, owned_client, make_browser):
    client = owned_client()
    written = [write(client, dt.datetime(2026, 1, 1) + dt.timedelta(hours=i), "1", f"row {i}") for i in range(51)]
    owner = make_browser("owner1@example.com")
    first = owner.get(URL).text
    assert rows(first) == sorted(written, reverse=True)[:50] and 'class="next"' in first
    second = owner.get(URL, query_string={"page": "2"}).text
    assert rows(second) == [min(written)] and 'class="next"' not in second
    for bad in ("0", "-1", "x", "' OR 1=1 --", "99999999999"):
        assert owner.get(URL, query_string={"page": bad}).status_code == 200


def test_needs_manage_invoices(app, db, world, make_browser):
    a = world["a"]
    create_and_associate(a, "services-only@example.com", "Sam", "Service", ["manage_services"], password=PASSWORD)
    create_and_associate(a, "money@example.com", "Mia", "Money", ["manage_invoices"], password=PASSWORD)
    services_only = make_browser("services-only@example.com")
    assert services_only.get(URL).status_code == 403
    assert services_only.get(URL, query_string={"q": "bank"}).status_code == 403
    dashboard = services_only.get("/client/dashboard").text
    assert "/client/transactions" not in dashboard
    assert "puq-recurring-cost" not in dashboard and "puq-balance-chart" not in dashboard
    money = make_browser("money@example.com")
    assert len(rows(money.get(URL).text)) == 6
    assert "/client/transactions" in money.get("/client/dashboard").text


def test_each_client_sees_its_own_ledger(app, db, world, make_browser):
    html = make_browser("owner2@example.com").get(URL).text
    assert rows(html) == [world["ids"]["theirs"]]
    assert "BANK-REF-1" not in html


def test_staff_and_anonymous(app, db, staff, world, make_browser, browser):
    assert make_browser("admin").get(URL).status_code == 404
    assert browser.get(URL).status_code == 302
    assert make_browser("owner1@example.com").post(URL).status_code == 405


def test_page_queries_do_not_grow_with_rows_authors_and_services(app, db, eur, owned_client, make_browser):
    """No N+1: rows written by several client logins, staff users, impersonation and charges of several
    services cost the same statements as a few rows."""
    from sqlalchemy import event

    client = owned_client()
    owner_id = db.scalar(select(User.id).where(User.username == "owner1@example.com"))
    browser = make_browser("owner1@example.com")

    def statements() -> int:
        seen = []
        listener = lambda *a: seen.append(a[2])  # noqa: E731
        event.listen(db.get_bind(), "before_cursor_execute", listener)
        try:
            assert browser.get(URL).status_code == 200
        finally:
            event.remove(db.get_bind(), "before_cursor_execute", listener)
        return len(seen)

    write(client, dt.datetime(2026, 2, 1, 9), "10", "first", author_id=owner_id)
    started(client, make_price(db, eur, "monthly", "1"), dt.datetime(2026, 2, 2, 9))
    few = statements()
    for i in range(6):
        helper, _pw = create_and_associate(client, f"helper{i}@example.com", "H", str(i), ["manage_invoices"],
                                           PASSWORD)
        staff = make_user(f"staff{i}", "Billing")
        write(client, dt.datetime(2026, 2, 3 + i, 9), "5", f"own {i}", author_id=helper.user_id)
        write(client, dt.datetime(2026, 2, 3 + i, 10), "-1", f"staff {i}", author_id=staff.id)
        write(client, dt.datetime(2026, 2, 3 + i, 11), "2", f"as client {i}", author_id=helper.user_id,
              impersonator_id=staff.id)
        started(client, make_price(db, eur, "monthly", "1"), dt.datetime(2026, 2, 3 + i, 12),
                client_label=f"box {i}")
    assert statements() == few
