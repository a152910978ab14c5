"""Staff client directory: columns, search, filters, sorting, pages, CSV export, scoping, query count."""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select, update
from werkzeug.security import generate_password_hash

from puqpanel.billing.ledger import adjust
from puqpanel.domain.clients import NewClient, create_client
from puqpanel.models import (
    Client,
    ClientAddress,
    ClientGroup,
    ClientUser,
    Currency,
    HomeCompany,
    Invoice,
    Service,
    Tag,
    User,
    UserSecurity,
)
from puqpanel.security import ROLE_DEFINITIONS


@pytest.fixture()
def usd(db):
    currency = Currency(code="USD", prefix="$")
    db.add(currency)
    db.commit()
    return currency


def home_company(db) -> HomeCompany:
    """The issuing company every test document needs (created once per test)."""
    home = db.scalar(select(HomeCompany).where(HomeCompany.name == "Main"))
    if home is None:
        home = HomeCompany(name="Main", company_name="PUQ Hosting GmbH", country="DE", is_default=True)
        db.add(home)
        db.flush()
    return home


def unpaid(db, client: Client, total: str, paid: str = "0", status: str = "unpaid") -> Invoice:
    """A document of the client in its currency (`paid`: what was received so far)."""
    return Invoice(client_id=client.id, home_company_id=home_company(db).id, currency_id=client.currency_id,
                   type="proforma", status=status, total=Decimal(total), amount_paid=Decimal(paid))


def add_client(n: int, **kw) -> Client:
    data = dict(
        email=f"client{n}@example.com", password="Client-pass1", firstname=f"First{n}", lastname=f"Last{n}",
        address1=f"Street {n}", city="Berlin", country="DE", region="DE-BE", phone=f"+49 30 {1000000 + n}",
    )
    data.update(kw)
    client, _password = create_client(NewClient(**data))
    return client


def set_created(db, client: Client, when: dt.datetime) -> None:
    db.execute(update(Client).where(Client.id == client.id).values(created_at=when))
    db.commit()


_ROW = re.compile(r'data-client-id="(\d+)"')


def ids_in(html: str) -> list[int]:
    return [int(i) for i in _ROW.findall(html)]


def csv_rows(resp) -> list[dict]:
    assert resp.status_code == 200, resp.status_code
    assert resp.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))


def test_list_shows_columns_aggregates_and_record_link(app, db, staff, browser, eur):
    group = ClientGroup(name="VIP", color="#aa0000")
    tag = Tag(name="priority", color="#00aa00")
    db.add_all([group, tag])
    db.commit()
    client = add_client(1, company_name="Acme GmbH", group_id=group.id, tag_ids=[tag.id])
    other = add_client(2)
    adjust(client, "1234.5", "Opening balance")  # the balance comes only from the ledger
    db.add_all([
        Service(client_id=client.id, status="active"),
        Service(client_id=client.id, status="active"),
        Service(client_id=client.id, status="suspended"),
        Service(client_id=client.id, status="terminated"),
        Service(client_id=other.id, status="active"),
        unpaid(db, client, "99.5"),
        unpaid(db, client, "10.25", paid="10"),  # partly paid: 0.25 still due
        unpaid(db, client, "1000", paid="1000", status="paid"),
    ])
    owner_id = client.users[0].user_id
    db.execute(update(User).where(User.id == owner_id).values(last_login=dt.datetime(2025, 3, 4, 5, 6)))
    db.commit()

    browser.login("admin")
    resp = browser.get("/clients/")
    assert resp.status_code == 200
    html = resp.text
    for header in ("Owner", "Client", "Status", "Located", "Created", "Balance", "Group", "Services",
                   "Outstanding", "Last login"):
        assert f">{header} <i" in html, header
    assert sorted(ids_in(html)) == sorted([client.id, other.id])
    row = html[html.index(f'data-client-id="{client.id}"'):]
    row = row[: row.index("</tr>")]
    assert "client1@example.com" in row and "First1 Last1" in row and "Acme GmbH" in row
    assert "label-info" in row and ">New<" in row
    assert "Berlin, Germany" in row
    assert "€1,234.50" in row  # Babel, English locale
    assert "background-color:#aa0000" in row and "VIP" in row
    assert "priority" in row
    assert '<td class="text-right">2</td>' in row  # two active services
    assert "€99.75" in row  # still due on unpaid documents only
    assert "2025-03-04 05:06" in row
    assert f'href="/clients/{client.id}"' in row
    other_row = html[html.index(f'data-client-id="{other.id}"'):]
    other_row = other_row[: other_row.index("</tr>")]
    assert "€0.00" in other_row and '<td class="text-right">1</td>' in other_row
    assert "2 clients" in html
    # Staff with every permission see both buttons; the menu entry points here.
    assert 'id="puq-create"' in html and 'id="puq-export"' in html
    assert 'href="/clients/"' in browser.get("/").text or 'href="/clients/"' in html


def test_search_by_email_phone_company_and_name(app, db, staff, browser, eur):
    anna = add_client(1, email="anna.schmidt@example.org", company_name="Schmidt Consulting", phone="+49 30 5556677")
    bob = add_client(2, email="bob@other.net", company_name="Bauer AG", phone="+49 30 1112233", firstname="Bob")
    carl = add_client(3, email="carl@other.net", company_name="", phone="", firstname="Carl", lastname="Weiss")
    browser.login("admin")

    def search(q):
        resp = browser.get("/clients/", query_string={"q": q})
        assert resp.status_code == 200
        return set(ids_in(resp.text))

    assert search("SCHMIDT@exam") == {anna.id}  # part of the email, any case
    assert search("other.net") == {bob.id, carl.id}
    assert search("5556") == {anna.id}  # part of the phone
    assert search("030 555 66") == {anna.id}  # national form of the phone (E.164 stored)
    assert search("consult") == {anna.id}  # part of the company
    assert search("bauer") == {bob.id}
    assert search("carl weiss") == {carl.id}  # several words: all must match
    assert search("nobody-matches") == set()
    assert search("100%_") == set()  # LIKE wildcards are escaped
    assert search("") == {anna.id, bob.id, carl.id}


def test_each_filter_narrows(app, db, staff, browser, eur, usd):
    gold = ClientGroup(name="Gold", color="#d4af37")
    vip = Tag(name="vip", color="#ff0000")
    db.add_all([gold, vip])
    db.commit()
    m1, m2 = staff["manager1"].id, staff["manager2"].id
    plain = add_client(1)
    active = add_client(2, status="active", group_id=gold.id, tag_ids=[vip.id], manager_id=m1)
    french = add_client(3, country="FR", region="", city="Paris", phone="+33 1 42 68 53 00", currency_id=usd.id,
                        manager_id=m2)
    blocked = add_client(4, status="suspended", manager_id=staff["admin"].id)
    db.execute(update(Client).where(Client.id == blocked.id).values(blocked=True))
    db.commit()
    set_created(db, plain, dt.datetime(2024, 1, 10, 12))
    set_created(db, active, dt.datetime(2024, 6, 1, 23, 59))
    set_created(db, french, dt.datetime(2024, 6, 2, 0, 1))
    set_created(db, blocked, dt.datetime(2025, 1, 1))
    everyone = {plain.id, active.id, french.id, blocked.id}
    browser.login("admin")

    def listed(**params):
        resp = browser.get("/clients/", query_string=params)
        assert resp.status_code == 200
        return set(ids_in(resp.text))

    assert listed() == everyone
    assert listed(status="active") == {active.id}
    assert listed(status="suspended") == {blocked.id}
    assert listed(group_id=gold.id) == {active.id}
    assert listed(tag_id=vip.id) == {active.id}
    assert listed(manager_id=m1) == {active.id}
    assert listed(scope="managed", manager_id=m2) == {french.id}
    assert listed(scope="managed") == {active.id, french.id, blocked.id}  # any manager
    assert listed(scope="own") == {blocked.id}  # admin manages this one
    assert listed(blocked="yes") == {blocked.id}
    assert listed(blocked="no") == everyone - {blocked.id}
    assert listed(country="FR") == {french.id}
    assert listed(country="de") == everyone - {french.id}
    assert listed(currency_id=usd.id) == {french.id}
    assert listed(currency_id=eur.id) == everyone - {french.id}
    assert listed(created_from="2024-06-02") == {french.id, blocked.id}
    assert listed(created_to="2024-06-01") == {plain.id, active.id}  # inclusive day
    assert listed(created_from="2024-02-01", created_to="2024-12-31") == {active.id, french.id}
    assert listed(status="active", country="FR") == set()


def test_bad_filter_values_are_ignored_with_a_message(app, db, staff, browser, eur):
    client = add_client(1)
    browser.login("admin")
    resp = browser.get("/clients/", query_string={
        "group_id": "abc", "tag_id": "1;drop", "manager_id": "-1", "currency_id": "1.5", "scope": "evil",
        "blocked": "maybe", "country": "Germany", "created_from": "2024-13-45", "created_to": "yesterday",
        "status": "nope", "sort": "password", "dir": "sideways", "page": "x", "page_size": "9999",
    })
    assert resp.status_code == 200
    assert ids_in(resp.text) == [client.id]
    assert "Some filters were ignored" in resp.text
    assert "Enter a date like 2025-01-31." in resp.text


def test_sort_by_created_and_balance_both_directions(app, db, staff, browser, eur):
    a, b, c = add_client(1), add_client(2), add_client(3)
    set_created(db, a, dt.datetime(2024, 5, 1))
    set_created(db, b, dt.datetime(2023, 5, 1))
    set_created(db, c, dt.datetime(2025, 5, 1))
    for client, balance in ((a, "10"), (b, "-5.5"), (c, "200")):
        db.execute(update(Client).where(Client.id == client.id).values(balance=Decimal(balance)))
    db.commit()
    browser.login("admin")

    def order(sort, direction):
        resp = browser.get("/clients/", query_string={"sort": sort, "dir": direction})
        assert resp.status_code == 200
        return ids_in(resp.text)

    assert order("created", "asc") == [b.id, a.id, c.id]
    assert order("created", "desc") == [c.id, a.id, b.id]
    assert order("balance", "asc") == [b.id, a.id, c.id]
    assert order("balance", "desc") == [c.id, a.id, b.id]
    assert ids_in(browser.get("/clients/").text) == [c.id, a.id, b.id]  # default: newest first
    # the header links toggle the direction
    html = browser.get("/clients/?sort=balance&dir=asc").text
    assert "sort=balance&amp;dir=desc" in html


def _bulk_clients(db, currency: Currency, count: int, start: int = 0) -> list[int]:
    """`count` complete clients (owner login, billing address, group, two tags, services, invoices).

    Written with the ORM rather than create_client only to skip 100 password hashings; the rows are the
    same shape create_client writes.
    """
    group = ClientGroup(name=f"Group {start}", color="#123456")
    tags = [Tag(name=f"tag{start}-{i}", color="#654321") for i in range(2)]
    db.add(group)
    db.add_all(tags)
    password = generate_password_hash("Client-pass1")
    clients = []
    for n in range(start, start + count):
        user = User(first_name="F", last_name=f"L{n}", username=f"bulk{n}@example.com",
                    email=f"bulk{n}@example.com", active=True, password=password,
                    last_login=dt.datetime(2025, 1, 1) + dt.timedelta(hours=n))
        client = Client(firstname=f"Bulk{n}", lastname=f"Client{n}", company_name=f"Company {n}",
                        phone=f"+4930{1000000 + n}", currency=currency, group=group, tags=tags,
                        balance=Decimal(n))
        client.addresses.append(ClientAddress(type="billing", address1="Street", city="Berlin", country="DE"))
        client.users.append(ClientUser(user=user, is_owner=True, permissions=[]))
        db.add(client)
        clients.append((client, user))
    db.flush()
    for client, user in clients:
        db.add(UserSecurity(user_id=user.id, is_client_login=True))
        db.add(Service(client_id=client.id, status="active"))
        db.add(unpaid(db, client, "1.5"))
    db.commit()
    return [client.id for client, _ in clients]


def _statements_for(app, browser, url: str) -> tuple[int, str]:
    from puqpanel.extensions import db as fsa

    browser.get(url)  # warm up: the test shares the request's DB session, whose objects its commits expired
    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(fsa.engine, "before_cursor_execute", count)
    try:
        resp = browser.get(url)
    finally:
        event.remove(fsa.engine, "before_cursor_execute", count)
    assert resp.status_code == 200
    return len(statements), resp.text


def test_no_n_plus_one_statement_count_does_not_grow_with_rows(app, db, staff, browser, eur):
    browser.login("admin")
    _bulk_clients(db, eur, 10)
    few, html = _statements_for(app, browser, "/clients/?page_size=100")
    assert len(ids_in(html)) == 10
    _bulk_clients(db, eur, 90, start=10)
    many, html = _statements_for(app, browser, "/clients/?page_size=100")
    assert len(ids_in(html)) == 100
    assert "Company 99" in html and "€1.50" in html
    assert many == few, (few, many)


def test_page_size_and_pagination(app, db, staff, browser, eur):
    app.config["PUQPANEL_PAGE_SIZES"] = (25, 50, 100)
    ids = _bulk_clients(db, eur, 30)
    browser.login("admin")
    first = browser.get("/clients/?sort=id&dir=asc").text
    assert ids_in(first) == ids[:25]  # default page size
    assert "Showing 1–25 of 30" in first
    assert "page=2" in first
    second = browser.get("/clients/?sort=id&dir=asc&page=2").text
    assert ids_in(second) == ids[25:]
    assert "Showing 26–30 of 30" in second
    assert ids_in(browser.get("/clients/?sort=id&dir=asc&page=99").text) == ids[25:]  # clamped to the last page
    assert len(ids_in(browser.get("/clients/?page_size=50").text)) == 30
    assert len(ids_in(browser.get("/clients/?page_size=7").text)) == 25  # not offered: default
    small = browser.get("/clients/?page_size=25&q=bulk1").text  # 1, 10..19
    assert "11 clients" in small
    selector = re.search(r'<select id="f-size".*?</select>', first, re.S).group(0)
    assert re.findall(r'<option value="(\d+)"', selector) == ["25", "50", "100"]


def test_csv_export_honours_filters_and_neutralises_formulas(app, db, staff, browser, eur):
    evil = add_client(1, company_name="=cmd|' /C calc'!A0", firstname="+Eve", status="active")
    add_client(2, company_name="Harmless Ltd")
    add_client(3, company_name="@SUM(1)", status="active", country="FR", region="", city="Lyon",
               phone="+33 1 42 68 53 00")
    browser.login("admin")
    resp = browser.get("/clients/export.csv", query_string={"status": "active", "country": "DE"})
    rows = csv_rows(resp)
    assert "attachment" in resp.headers["Content-Disposition"]
    assert len(rows) == 1
    row = rows[0]
    assert row["ID"] == str(evil.id)
    assert row["Company"] == "'=cmd|' /C calc'!A0"
    assert row["First name"] == "'+Eve"
    assert row["Owner email"] == "client1@example.com"
    assert row["Country"] == "DE" and row["City"] == "Berlin" and row["Currency"] == "EUR"
    assert row["Balance"] == "0.0000" and row["Outstanding"] == "0.0000"
    everything = csv_rows(browser.get("/clients/export.csv?page_size=25&page=2"))  # all pages, always
    assert len(everything) == 3
    assert {r["Company"] for r in everything} == {"'=cmd|' /C calc'!A0", "Harmless Ltd", "'@SUM(1)"}


def test_manager_sees_only_its_clients_in_list_csv_and_own_urls(app, db, staff, make_browser, eur):
    mine = add_client(1, manager_id=staff["manager1"].id, company_name="Mine Ltd")
    theirs = add_client(2, manager_id=staff["manager2"].id, company_name="Theirs Ltd")
    nobody = add_client(3, company_name="Nobody Ltd")
    manager1 = make_browser("manager1")
    assert ids_in(manager1.get("/clients/").text) == [mine.id]
    assert ids_in(manager1.get(f"/clients/?scope=managed&manager_id={staff['manager2'].id}").text) == []
    assert ids_in(manager1.get("/clients/?q=Theirs").text) == []
    assert [r["ID"] for r in csv_rows(manager1.get("/clients/export.csv"))] == [str(mine.id)]
    assert csv_rows(manager1.get("/clients/export.csv?q=Theirs")) == []
    # regions endpoint: read-only data, Manager has can_add
    regions = manager1.get("/clients/regions/de")
    assert regions.status_code == 200 and {"code": "DE-BE", "name": "Berlin"} in regions.json["regions"]
    assert manager1.get("/clients/regions/XX").status_code == 404
    manager2 = make_browser("manager2")
    assert ids_in(manager2.get("/clients/").text) == [theirs.id]
    admin = make_browser("admin")
    assert set(ids_in(admin.get("/clients/").text)) == {mine.id, theirs.id, nobody.id}


def test_support_reads_list_but_not_add_or_export(app, db, staff, make_browser, eur):
    granted = {perm for perm, view in ROLE_DEFINITIONS["Support"] if view == "Client"}
    assert "can_list" in granted and "can_add" not in granted and "can_export" not in granted
    client = add_client(1)
    support = make_browser("support")
    page = support.get("/clients/")
    assert page.status_code == 200 and ids_in(page.text) == [client.id]
    assert 'id="puq-create"' not in page.text and 'id="puq-export"' not in page.text
    assert support.get("/clients/add").status_code == 403
    assert support.post("/clients/add", {"email": "x@example.com"}).status_code == 403
    assert support.get("/clients/export.csv").status_code == 403
    regions = support.get("/clients/regions/DE")  # ISO data for the address forms: can_show is enough
    assert regions.status_code == 200 and {"code": "DE-BE", "name": "Berlin"} in regions.json["regions"]


def test_anonymous_is_sent_to_login(app, db, staff, browser, eur):
    add_client(1)
    for url in ("/clients/", "/clients/export.csv", "/clients/add", "/clients/regions/DE"):
        resp = browser.get(url)
        assert resp.status_code == 302, url
        assert "/login/" in resp.headers["Location"], url
    assert "client1@example.com" not in browser.get("/clients/", follow_redirects=True).text


def test_ids_beyond_32_bits_are_ignored_with_a_message(app, db, staff, browser, eur):
    """PostgreSQL integer columns: a filter id above 2**31-1 never reaches the database."""
    client = add_client(1)
    browser.login("admin")
    for name in ("group_id", "tag_id", "manager_id", "currency_id"):
        for value in ("2147483648", "99999999999999999999", "²", "１"):
            resp = browser.get("/clients/", query_string={name: value, "scope": "managed"})
            assert resp.status_code == 200, (name, value)
            assert "Some filters were ignored" in resp.text and f"<li>{name}: " in resp.text, (name, value)
            assert ids_in(resp.text) == [], (name, value)  # the rest of the filters still apply
            assert browser.get("/clients/export.csv", query_string={name: value}).status_code == 200
        resp = browser.get("/clients/", query_string={name: "2147483647"})  # the largest id: valid, no match
        assert resp.status_code == 200 and "Some filters were ignored" not in resp.text
        assert ids_in(resp.text) == []
        assert csv_rows(browser.get("/clients/export.csv", query_string={name: "2147483647"})) == []
    assert ids_in(browser.get("/clients/", query_string={"currency_id": str(eur.id)}).text) == [client.id]


def test_created_dates_at_the_ends_of_the_calendar(app, db, staff, browser, eur):
    client = add_client(1)
    browser.login("admin")
    for params in ({"created_to": "9999-12-31"}, {"created_from": "0001-01-01", "created_to": "9999-12-31"},
                   {"created_to": "9999-12-30"}, {"created_from": "0001-01-01"}):
        resp = browser.get("/clients/", query_string=params)
        assert resp.status_code == 200, params
        assert ids_in(resp.text) == [client.id], params
        assert "Some filters were ignored" not in resp.text
        assert [r["ID"] for r in csv_rows(browser.get("/clients/export.csv", query_string=params))] == [str(client.id)]
    for params in ({"created_from": "9999-12-31"}, {"created_to": "0001-01-01"}):
        assert ids_in(browser.get("/clients/", query_string=params).text) == [], params
        assert csv_rows(browser.get("/clients/export.csv", query_string=params)) == [], params


def test_links_carry_only_directory_arguments(app, db, staff, browser, eur):
    """url_for's own keywords (_external, _anchor, _method, _scheme) in the query string change nothing."""
    app.config["PUQPANEL_PAGE_SIZES"] = (25, 50)
    _bulk_clients(db, eur, 30)
    browser.login("admin")
    resp = browser.get("/clients/?_method=DELETE&_external=1&_anchor=x&_scheme=javascript&evil=1&status=new"
                       "&sort=balance&dir=asc")
    assert resp.status_code == 200
    assert len(ids_in(resp.text)) == 25 and db.scalar(select(func.count()).select_from(Client)) == 30
    links = re.findall(r'href="([^"]*)"', resp.text)
    directory_links = [link for link in links if link.startswith(("/clients/?", "/clients/export.csv"))]
    assert directory_links and any("page=2" in link for link in directory_links)
    for link in directory_links:
        assert link.startswith("/clients/"), link
        for bad in ("_method", "_external", "_anchor", "_scheme", "evil", "#", "http"):
            assert bad not in link, (bad, link)
    assert "sort=balance&amp;dir=desc" in resp.text and "status=new" in resp.text
    assert not any(link.startswith(("http:", "https:", "javascript:")) for link in links if "127.0.0.1" in link)
    assert "http://localhost/clients" not in resp.text
