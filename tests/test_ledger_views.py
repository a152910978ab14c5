"""Staff Transactions tab: listing, search / filters / sort / pages, the Create adjustment modal, permissions,
scoping, CSRF, and no way to edit or delete a ledger row. Also the Summary tab's ledger figures."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select

from puqpanel.billing import clock
from puqpanel.billing.ledger import adjust, lock_client, post
from puqpanel.models import ActivityLog, Client, HomeCompany, Invoice, Product, Service, Transaction


@pytest.fixture()
def world(db, staff, new_client):
    """One client per manager; the first has a small ledger."""
    clients = {
        manager: new_client(company_name=f"{manager} GmbH", manager_id=staff[manager].id)
        for manager in ("manager1", "manager2")
    }
    return clients


def url(client, tail="/transactions"):
    return f"/clients/{client.id}{tail}"


def ledger_state(db, client):
    db.expire_all()
    rows = db.scalar(select(func.count()).select_from(Transaction).where(Transaction.client_id == client.id))
    logs = db.scalar(select(func.count()).select_from(ActivityLog).where(ActivityLog.client_id == client.id))
    return rows, db.get(Client, client.id).balance, logs


def row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-transaction-id="(\d+)"', html)]


def test_tab_lists_rows_newest_first_with_every_column(app, db, world, make_browser, staff):
    client = world["manager1"]
    home = HomeCompany(name="Main", company_name="PUQ Hosting GmbH", country="DE", is_default=True)
    product = Product(name="VPS S")
    db.add_all([home, product])
    db.flush()
    service = Service(client_id=client.id, product_id=product.id, status="active", admin_label="web-01")
    document = Invoice(client_id=client.id, home_company_id=home.id, currency_id=client.currency_id, type="invoice",
                       status="paid", number="INV-2026-0007", total=Decimal("121"), amount_paid=Decimal("121"))
    db.add_all([service, document])
    db.commit()
    with clock.frozen_at(dt.datetime(2026, 1, 5, 10, 0)):
        locked = lock_client(client.id)
        post(locked, "payment", Decimal("100"), description="Payment INV-2026-0007", gross=Decimal("121"),
             fees=Decimal("2.5"), gateway="bank_transfer", external_id="BANK-42", invoice_id=document.id,
             author_id=staff["billing"].id, impersonator_id=staff["admin"].id)
        db.commit()
    with clock.frozen_at(dt.datetime(2026, 1, 6, 0, 0)):
        locked = lock_client(client.id)
        post(locked, "charge", Decimal("-30.5"), description="VPS S monthly", service_id=service.id,
             period_start=dt.datetime(2026, 1, 6), period_stop=dt.datetime(2026, 2, 6))
        db.commit()

    admin = make_browser("admin")
    resp = admin.get(url(client))
    assert resp.status_code == 200
    html = resp.text
    for header in ("Date", "Type", "Description", "Period", "Gross", "Fees", "Net", "Balance", "Transaction id",
                   "Document", "Author"):
        assert f">{header}" in html, header
    ids = row_ids(html)
    assert len(ids) == 2 and ids[0] > ids[1]  # newest first
    charge = html[html.index(f'data-transaction-id="{ids[0]}"'):]
    charge = charge[: charge.index("</tr>")]
    assert "VPS S monthly" in charge and "web-01" in charge and f"#{service.id}" in charge
    assert "2026-01-06 00:00 – 2026-02-06 00:00" in charge
    assert "-€30.50" in charge and "€69.50" in charge and "system" in charge
    payment = html[html.index(f'data-transaction-id="{ids[1]}"'):]
    payment = payment[: payment.index("</tr>")]
    assert "€121.00" in payment and "€2.50" in payment and "€100.00" in payment
    assert "BANK-42" in payment and "Bank transfer" in payment  # the gateway's label
    assert "INV-2026-0007" in payment
    if "ClientInvoicesView.invoice" in app.view_functions:
        assert "puq-invoice-link" in payment
    assert "billing" in payment and "impersonated by admin" in payment
    assert "2026-01-05 10:00" in payment
    # No edit / delete anywhere on the page.
    assert "/delete" not in html and "/edit" not in html and "/update" not in html


def test_search_type_date_filters_sort_and_pages(app, db, world, make_browser, monkeypatch):
    client = world["manager1"]
    for day in range(1, 8):
        with clock.frozen_at(dt.datetime(2026, 3, day, 12, 0)):
            adjust(client, f"{day}.5" if day % 2 else f"-{day}", f"Correction {day}% off", external_id=f"TX_{day}")
    with clock.frozen_at(dt.datetime(2026, 3, 8, 12, 0)):
        post(lock_client(client.id), "charge", Decimal("-1"), description="Hourly charge")
        db.commit()
    admin = make_browser("admin")

    def ids(query: str) -> list[int]:
        resp = admin.get(url(client) + query)
        assert resp.status_code == 200, query
        return row_ids(resp.text)

    all_ids = ids("")
    assert len(all_ids) == 8 and all_ids == sorted(all_ids, reverse=True)
    by_day = {day: all_ids[8 - day] for day in range(1, 9)}
    # search: description, transaction id; LIKE wildcards are literal
    assert ids("?q=correction+3") == [by_day[3]]
    assert ids("?q=TX_5") == [by_day[5]]
    assert ids("?q=tx%25") == []  # "tx%" is not a wildcard
    assert ids("?q=3%25+off") == [by_day[3]]
    # type filter
    assert ids("?type=charge") == [by_day[8]]
    assert len(ids("?type=adjustment")) == 7
    # date range (inclusive)
    assert ids("?date_from=2026-03-02&date_to=2026-03-03") == [by_day[3], by_day[2]]
    assert ids("?date_from=2026-03-08") == [by_day[8]]
    # sort by net, ascending and descending
    nets = {1: "1.5", 2: "-2", 3: "3.5", 4: "-4", 5: "5.5", 6: "-6", 7: "7.5", 8: "-1"}
    ascending = [by_day[d] for d in sorted(nets, key=lambda d: Decimal(nets[d]))]
    assert ids("?sort=net&dir=asc") == ascending
    assert ids("?sort=net&dir=desc") == list(reversed(ascending))
    assert ids("?sort=date&dir=asc") == sorted(all_ids)
    # bad arguments: ignored with a message, never a 500
    resp = admin.get(url(client) + "?type=bogus&date_from=2026-13-45&sort=evil&dir=sideways&page=x")
    assert resp.status_code == 200 and len(row_ids(resp.text)) == 8
    assert "Not a valid choice." in resp.text and "Enter a date like 2025-01-31." in resp.text
    # pages of 3
    monkeypatch.setattr("puqpanel.views.ledger.PAGE_SIZE", 3)
    first = admin.get(url(client))
    assert row_ids(first.text) == all_ids[:3] and "page=2" in first.text
    assert ids("?page=2") == all_ids[3:6]
    last = admin.get(url(client) + "?page=3")
    assert row_ids(last.text) == all_ids[6:] and "page=4" not in last.text
    assert ids("?page=99") == []
    # links keep the filters
    filtered = admin.get(url(client) + "?type=adjustment&sort=net&dir=asc").text
    assert "type=adjustment" in filtered and "sort=net" in filtered


def test_list_is_one_statement_whatever_the_page_size(app, db, world, make_browser, staff, monkeypatch):
    from puqpanel.extensions import db as fsa

    client = world["manager1"]
    home = HomeCompany(name="Main", company_name="PUQ", country="DE", is_default=True)
    db.add(home)
    db.flush()
    documents = [Invoice(client_id=client.id, home_company_id=home.id, currency_id=client.currency_id,
                         type="invoice", status="paid", number=f"N-{i}") for i in range(12)]
    services = [Service(client_id=client.id, status="active", admin_label=f"s{i}") for i in range(12)]
    db.add_all(documents + services)
    db.commit()
    for i in range(12):
        locked = lock_client(client.id)
        post(locked, "payment", Decimal("1"), description=f"p{i}", invoice_id=documents[i].id,
             service_id=services[i].id, author_id=staff["billing"].id, impersonator_id=staff["admin"].id)
        db.commit()
    admin = make_browser("admin")

    def statements(page_size: int) -> int:
        monkeypatch.setattr("puqpanel.views.ledger.PAGE_SIZE", page_size)
        admin.get(url(client))  # warm up
        seen = []

        def count(conn, cursor, statement, parameters, context, executemany):
            if "puq_transaction" in statement:
                seen.append(statement)

        event.listen(fsa.engine, "before_cursor_execute", count)
        try:
            resp = admin.get(url(client))
        finally:
            event.remove(fsa.engine, "before_cursor_execute", count)
        assert resp.status_code == 200 and len(row_ids(resp.text)) == min(page_size, 12)
        return len(seen)

    assert statements(2) == statements(12) == 1


def test_create_adjustment_credit_and_debit(app, db, world, make_browser, staff):
    client = world["manager1"]
    billing = make_browser("billing")
    page = billing.get(url(client)).text
    assert 'id="adjust-modal"' in page and 'name="description"' in page and 'name="external_id"' in page
    resp = billing.post_form(url(client, "/transactions/adjust"),
                             {"amount": "25.1234", "external_id": "REF-1", "description": "Goodwill credit"},
                             form_url=url(client))
    assert resp.status_code == 302 and resp.headers["Location"].endswith(url(client))
    resp = billing.post_form(url(client, "/transactions/adjust"),
                             {"amount": "-5,1", "description": "  Manual   debit "}, form_url=url(client))
    assert resp.status_code == 302
    db.expire_all()
    rows = list(db.scalars(select(Transaction).where(Transaction.client_id == client.id).order_by(Transaction.id)))
    assert [(r.type, r.net, r.gross, r.fees, r.balance_before, r.balance_after) for r in rows] == [
        ("adjustment", Decimal("25.1234"), Decimal("25.1234"), Decimal("0"), Decimal("0"), Decimal("25.1234")),
        ("adjustment", Decimal("-5.1"), Decimal("-5.1"), Decimal("0"), Decimal("25.1234"), Decimal("20.0234")),
    ]
    assert rows[0].external_id == "REF-1" and rows[1].external_id == ""
    assert rows[1].description == "Manual debit"
    assert {r.author_id for r in rows} == {staff["billing"].id}
    assert db.get(Client, client.id).balance == Decimal("20.0234")
    log = db.scalars(select(ActivityLog).where(ActivityLog.action == "ledger.adjustment")
                     .order_by(ActivityLog.id)).all()
    assert len(log) == 2 and log[0].actor_id == staff["billing"].id and log[0].object_id == rows[0].id
    follow = billing.get(url(client)).text
    assert "Adjustment of €25.12 recorded; new balance €25.12." in follow or "€20.02" in follow
    summary = billing.get(url(client, "")).text
    assert re.search(r'puq-balance">\s*€20\.02', summary)
    assert "Goodwill credit" in summary and "Manual debit" in summary  # recent transactions
    assert "puq-all-transactions" in summary


@pytest.mark.parametrize(
    "payload, field, message",
    [
        ({"amount": "0", "description": "x"}, "amount", "The amount must not be zero."),
        ({"amount": "-0.00", "description": "x"}, "amount", "The amount must not be zero."),
        ({"amount": "1.23456", "description": "x"}, "amount", "At most 4 decimal places."),
        ({"amount": "100000000000000", "description": "x"}, "amount", "The amount is too large."),
        ({"amount": "-1e20", "description": "x"}, "amount", "Enter an amount such as 12.50."),
        ({"amount": "NaN", "description": "x"}, "amount", "Enter an amount such as 12.50."),
        ({"amount": "12 EUR", "description": "x"}, "amount", "Enter an amount such as 12.50."),
        ({"amount": "", "description": "x"}, "amount", "This field is required."),
        ({"amount": "10", "description": "   "}, "description", "This field is required."),
        ({"amount": "10"}, "description", "This field is required."),
        ({"amount": "10", "description": "d" * 256}, "description", "At most 255 characters."),
        ({"amount": "10", "description": "x", "external_id": "T" * 101}, "external_id", "At most 100 characters."),
        ({"amount": "10", "description": "x", "external_id": "a\nb"}, "external_id", "Only printable characters."),
    ],
)
def test_refused_adjustment_is_400_with_message_and_writes_nothing(app, db, world, make_browser, payload, field,
                                                                   message):
    client = world["manager1"]
    adjust(client, "3", "opening")
    before = ledger_state(db, client)
    billing = make_browser("billing")
    resp = billing.post_form(url(client, "/transactions/adjust"), payload, form_url=url(client))
    assert resp.status_code == 400
    assert message in resp.text
    assert 'id="adjust-modal"' in resp.text and '$("#adjust-modal").modal("show")' in resp.text
    if payload.get("description", "").strip() and field != "description":
        assert f'value="{payload["description"]}"' in resp.text  # the typed values come back
    assert ledger_state(db, client) == before


def test_every_error_at_once(app, db, world, make_browser):
    client = world["manager1"]
    billing = make_browser("billing")
    resp = billing.post_form(url(client, "/transactions/adjust"), {"amount": "0", "description": ""},
                             form_url=url(client))
    assert resp.status_code == 400
    assert "The amount must not be zero." in resp.text and "This field is required." in resp.text


def test_permissions_support_and_manager_see_but_cannot_adjust(app, db, world, make_browser):
    client = world["manager1"]
    adjust(client, "7", "opening")
    for username in ("support", "manager1"):
        browser = make_browser(username)
        page = browser.get(url(client))
        assert page.status_code == 200, username
        assert 'id="adjust-modal"' not in page.text and "puq-adjust-open" not in page.text
        before = ledger_state(db, client)
        resp = browser.post(url(client, "/transactions/adjust"), {"amount": "5", "description": "sneaky"})
        assert resp.status_code == 403, username
        assert ledger_state(db, client) == before


def test_role_without_billing_show_sees_no_tab(app, db, world, make_browser):
    from flask import current_app

    from conftest import make_user

    sm = current_app.appbuilder.sm
    role = sm.find_role("ClientsOnly") or sm.add_role("ClientsOnly")  # roles outlive the test: removed below
    try:
        for perm in ("can_show", "can_list", "can_access_all"):
            sm.add_permission_role(role, sm.find_permission_view_menu(perm, "Client"))
        make_user("clientsonly", "ClientsOnly")
        client = world["manager1"]
        browser = make_browser("clientsonly")
        summary = browser.get(url(client, ""))
        assert summary.status_code == 200
        assert url(client) not in summary.text and "puq-recent-transactions" not in summary.text
        assert browser.get(url(client)).status_code == 403
    finally:
        db.rollback()
        for pv in list(role.permissions):
            sm.del_permission_role(role, pv)


def test_other_managers_client_is_404_on_get_and_post(app, db, world, make_browser):
    own, foreign = world["manager1"], world["manager2"]
    adjust(foreign, "9", "opening")
    m1 = make_browser("manager1")
    assert m1.get(url(own)).status_code == 200
    assert m1.get(url(foreign)).status_code == 404
    assert m1.get("/clients/999999/transactions").status_code == 404
    assert m1.get("/clients/99999999999/transactions").status_code == 404
    # a role with can_adjust but without can_access_all (a manager allowed to adjust) still gets 404
    from flask import current_app

    sm = current_app.appbuilder.sm
    role = sm.find_role("Manager")
    can_adjust = sm.find_permission_view_menu("can_adjust", "ClientBilling")
    sm.add_permission_role(role, can_adjust)  # roles outlive the test: taken back below
    try:
        before = ledger_state(db, foreign)
        resp = m1.post(url(foreign, "/transactions/adjust"), {"amount": "5", "description": "foreign"})
        assert resp.status_code == 404
        assert ledger_state(db, foreign) == before
        resp = m1.post(url(own, "/transactions/adjust"), {"amount": "5", "description": "own"})
        assert resp.status_code == 302
        assert ledger_state(db, own)[:2] == (1, Decimal("5"))
    finally:
        sm.del_permission_role(sm.find_role("Manager"), can_adjust)


def test_csrf_missing_is_400_and_get_on_post_route_is_405(app, db, world, make_browser):
    client = world["manager1"]
    admin = make_browser("admin")
    before = ledger_state(db, client)
    resp = admin.client.post(url(client, "/transactions/adjust"), data={"amount": "5", "description": "no token"})
    assert resp.status_code == 400
    assert admin.get(url(client, "/transactions/adjust")).status_code == 405
    assert ledger_state(db, client) == before


def test_no_edit_or_delete_routes_exist(app, db, world, make_browser):
    client = world["manager1"]
    row = adjust(client, "5", "opening")
    admin = make_browser("admin")
    for tail in (f"/transactions/{row.id}", f"/transactions/{row.id}/edit", f"/transactions/{row.id}/delete",
                 f"/transactions/{row.id}/update"):
        assert admin.get(url(client, tail)).status_code in (404, 405), tail
        assert admin.post(url(client, tail), {"description": "x"}).status_code in (404, 405), tail
    rules = [r.rule for r in app.url_map.iter_rules() if "transaction" in r.rule.lower()]
    assert all(not re.search(r"edit|delete|update", rule) for rule in rules), rules
    assert ledger_state(db, client)[:2] == (1, Decimal("5"))


def test_summary_shows_vies_status_and_outstanding_of_other_currencies(app, db, world, make_browser):
    from puqpanel.models import Currency

    client = world["manager1"]
    usd = Currency(code="USD", prefix="$", exchange_rate=Decimal("1.1"))
    home = HomeCompany(name="Main", company_name="PUQ", country="DE", is_default=True)
    db.add_all([usd, home])
    db.flush()
    db.add(Invoice(client_id=client.id, home_company_id=home.id, currency_id=usd.id, type="proforma",
                   status="unpaid", total=Decimal("40"), amount_paid=Decimal("15")))
    row = db.get(Client, client.id)
    row.tax_id = "DE136695976"
    row.vies_status = "valid"
    row.vies_checked_at = dt.datetime(2026, 2, 1, 8, 30)
    db.commit()
    admin = make_browser("admin")
    html = admin.get(url(client, "")).text
    assert re.search(r'puq-outstanding">\s*€0\.00', html)
    assert "$25.00" in html  # still due on a document in the client's former currency
    vies = html[html.index("puq-vies"):]
    vies = vies[: vies.index("</td>")]
    assert "valid" in vies and "2026-02-01 08:30" in vies
    row.vies_status = "invalid"
    db.commit()
    assert "label-danger" in admin.get(url(client, "")).text.split("puq-vies", 1)[1].split("</td>", 1)[0]
    row.tax_id = None
    db.commit()
    assert "no tax id" in admin.get(url(client, "")).text


def test_amounts_follow_the_language_of_the_session(app, db, world, make_browser):
    client = world["manager1"]
    adjust(client, "1234.5", "opening")
    admin = make_browser("admin")
    assert "€1,234.50" in admin.get(url(client)).text
    admin.get("/lang/de")
    html = admin.get(url(client)).text
    assert "1.234,50\xa0€" in html


def test_add_credit_shortcut_on_the_summary_opens_the_modal(app, db, world, make_browser):
    client = world["manager1"]
    billing = make_browser("billing")
    summary = billing.get(url(client, "")).text
    assert "puq-add-credit" in summary and f"{url(client)}?adjust=1" in summary
    page = billing.get(url(client) + "?adjust=1").text
    assert '$("#adjust-modal").modal("show")' in page
    assert '$("#adjust-modal").modal("show")' not in billing.get(url(client)).text
    manager = make_browser("manager1")
    assert "puq-add-credit" not in manager.get(url(client, "")).text
    assert '$("#adjust-modal")' not in manager.get(url(client) + "?adjust=1").text
