"""Client area → Dashboard: the counters, the recurring cost breakdown and the recommended add-funds amount of
billing.dashboard (tests/test_dashboard.py checks the numbers; here: the page shows exactly those, formatted),
the balance history (billing.dashboard.balance_history, exact values per day) and its chart, the "complete your
profile" notice, and what each client permission shows or hides."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from conftest import PASSWORD
from sqlalchemy import event
from test_dashboard import T0, _scenario
from test_engine_charge import fund, make_price, started

from puqpanel.billing import clock, dashboard, ledger
from puqpanel.domain.client_users import create_and_associate
from puqpanel.models import Client

D = Decimal
DASHBOARD = "/client/dashboard"
NOW = dt.datetime(2026, 3, 1, 12, 0)  # the balance history's "now": the window is Jan 31 … Mar 1, 2026


@pytest.fixture()
def owned_client(new_client):
    """new_client with the owner's password set to conftest.PASSWORD (so the owner can log in)."""
    return lambda **kw: new_client(password=PASSWORD, **kw)


def linked_user(client, email: str, perms) -> None:
    create_and_associate(client, email, "Lea", "Linked", list(perms), password=PASSWORD)


def counters(html: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r'class="puq-counter" data-counter="(\w+)"[^>]*>(\d+)<', html)}


def costs(html: str) -> dict[str, str]:
    return dict(re.findall(r'class="text-right puq-cost" data-period="(\w+)">([^<]*)<', html))


def one(pattern: str, html: str) -> str:
    found = re.findall(pattern, html)
    assert len(found) == 1, (pattern, found)
    return found[0]


def at(moment: dt.datetime, client, amount: str, description: str = "test funds") -> None:
    """A staff adjustment written at `moment` (the ledger's created_at comes from the billing clock)."""
    with clock.frozen_at(moment):
        ledger.adjust(client.id, amount, description)


def count_queries(db, fn):
    statements = []
    listener = lambda *a: statements.append(a[2])  # noqa: E731
    engine = db.get_bind()
    event.listen(engine, "before_cursor_execute", listener)
    try:
        result = fn()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return result, statements


# -- the figures ----------------------------------------------------------------------------------------------

def test_page_shows_the_domain_figures_formatted(app, db, eur, owned_client, make_browser):
    client, other, s = _scenario(db, eur, owned_client)
    owner = make_browser("owner1@example.com")
    with clock.frozen_at(T0):
        page = owner.get(DASHBOARD)
    assert page.status_code == 200
    html = page.text
    # the values of tests/test_dashboard.py, this client's only (the other client's are 2 / 1 / 0 / 0)
    assert counters(html) == {"total": 12, "active": 9, "suspended": 1, "termination_requested": 1}
    # 4-place figures in the currency's format
    assert costs(html) == {"hourly": "€0.1839", "daily": "€4.4125", "weekly": "€30.8875", "monthly": "€132.3750",
                           "yearly": "€1,610.5627"}
    assert one(r'class="puq-recommended-amount"[^>]*>([^<]*)<', html) == "€64.20"
    # three days later the service paid until Apr 1 is due as well (the page reads the billing clock)
    with clock.frozen_at(T0 + dt.timedelta(days=3)):
        assert one(r'class="puq-recommended-amount"[^>]*>([^<]*)<', owner.get(DASHBOARD).text) == "€74.20"
    # the header shows the balance
    db.expire_all()
    balance = db.get(Client, client.id).balance
    assert balance == D("641.7399")
    assert "€641.74" in one(r'class="puq-balance">(.*?)</span>', html)


def test_counters_link_to_the_filtered_services_list(app, db, eur, owned_client, make_browser):
    client, other, s = _scenario(db, eur, owned_client)
    owner = make_browser("owner1@example.com")
    html = owner.get(DASHBOARD).text
    links = dict(re.findall(r'<a class="puq-counter-link" href="([^"]+)" data-counter="(\w+)"', html))
    by_counter = {counter: href for href, counter in links.items()}
    assert by_counter == {
        "total": "/client/services/?status=current",
        "active": "/client/services/?status=active",
        "suspended": "/client/services/?status=suspended",
        "termination_requested": "/client/services/?status=termination_requested",
    }
    # each list holds as many services as its counter says
    expected = counters(html)
    for counter, href in by_counter.items():
        listed = re.findall(r'class="puq-service-row" data-service-id="(\d+)"', owner.get(href).text)
        assert len(listed) == expected[counter], counter
    listed = owner.get(by_counter["termination_requested"]).text
    assert f'data-service-id="{s["leaving"].id}"' in listed


def test_dashboard_queries_do_not_grow_with_services_or_transactions(app, db, eur, owned_client, make_browser):
    client = owned_client()
    fund(client, "1000")
    owner = make_browser("owner1@example.com")
    _, few = count_queries(db, lambda: owner.get(DASHBOARD))
    for i in range(8):
        started(client, make_price(db, eur, "monthly", "5"), T0 + dt.timedelta(days=i))
        fund(client, "1")
    page, many = count_queries(db, lambda: owner.get(DASHBOARD))
    assert page.status_code == 200
    assert counters(page.text)["active"] == 8
    assert len(many) == len(few)


# -- balance history ------------------------------------------------------------------------------------------

def _history_world(owned_client):
    client, other = owned_client(), owned_client()
    at(dt.datetime(2026, 1, 10, 9), client, "100")                 # before the window
    at(dt.datetime(2026, 1, 20, 9), client, "-30")                 # before the window: the opening is 70
    at(dt.datetime(2026, 1, 30, 23, 59, 59), other, "999")         # another client's rows never count
    at(dt.datetime(2026, 1, 31, 0, 0), client, "1")                # the window's first instant: 71
    at(dt.datetime(2026, 2, 3, 10), client, "50")                  # 121
    at(dt.datetime(2026, 2, 3, 15), client, "-21.5")               # 99.5 at the end of Feb 3
    at(dt.datetime(2026, 2, 5, 8), other, "-5000")
    at(dt.datetime(2026, 2, 10, 23, 59, 59), client, "-149.5")     # -50 from Feb 10
    at(dt.datetime(2026, 3, 1, 9), client, "5.1234")               # -44.8766 today by noon
    at(dt.datetime(2026, 3, 1, 13), client, "1000")                # after "now" (12:00): not yet
    return client, other


def test_balance_history_end_of_day_values(app, db, eur, owned_client):
    client, other = _history_world(owned_client)
    client_id = client.id
    history, statements = count_queries(db, lambda: dashboard.balance_history(client_id, 30, now=NOW))
    assert len(statements) == 2
    expected = [(dt.date(2026, 1, 31), D("71.0000")), (dt.date(2026, 2, 1), D("71.0000")),
                (dt.date(2026, 2, 2), D("71.0000"))]
    expected += [(dt.date(2026, 2, d), D("99.5000")) for d in range(3, 10)]
    expected += [(dt.date(2026, 2, d), D("-50.0000")) for d in range(10, 29)]
    expected += [(dt.date(2026, 3, 1), D("-44.8766"))]
    assert history == expected
    assert len(history) == 30

    # a window that starts after some history and has no row of its own: the opening balance throughout
    quiet = dashboard.balance_history(client.id, 3, now=dt.datetime(2026, 2, 28, 23))
    assert quiet == [(dt.date(2026, 2, 26), D("-50.0000")), (dt.date(2026, 2, 27), D("-50.0000")),
                     (dt.date(2026, 2, 28), D("-50.0000"))]
    # one day: today only; at the end of Mar 1 the 13:00 row is included
    assert dashboard.balance_history(client.id, 1, now=dt.datetime(2026, 3, 1, 23, 59)) == [
        (dt.date(2026, 3, 1), D("955.1234"))]
    # the other client: its own rows only (opening 999 from Jan 30, -5000 on Feb 5)
    theirs = dashboard.balance_history(other.id, 30, now=NOW)
    assert theirs[:5] == [(dt.date(2026, 1, 31) + dt.timedelta(days=i), D("999.0000")) for i in range(5)]
    assert theirs[5:] == [(dt.date(2026, 2, 5) + dt.timedelta(days=i), D("-4001.0000")) for i in range(25)]


def test_balance_history_without_rows_and_the_default_clock(app, db, eur, owned_client):
    client = owned_client()
    assert dashboard.balance_history(client.id, 30, now=NOW) == [
        (dt.date(2026, 1, 31) + dt.timedelta(days=i), D("0.0000")) for i in range(30)]
    at(dt.datetime(2026, 2, 14, 8), client, "12.5")
    with clock.frozen_at(dt.datetime(2026, 2, 15, 6)):
        assert dashboard.balance_history(client.id, 3) == [
            (dt.date(2026, 2, 13), D("0.0000")), (dt.date(2026, 2, 14), D("12.5000")),
            (dt.date(2026, 2, 15), D("12.5000"))]


def test_balance_chart_on_the_page(app, db, eur, owned_client, make_browser):
    client, _other = _history_world(owned_client)
    owner = make_browser("owner1@example.com")
    with clock.frozen_at(NOW):
        html = owner.get(DASHBOARD).text
    assert one(r'class="puq-chart-max">([^<]*)<', html) == "€99.50"
    assert one(r'class="puq-chart-min">([^<]*)<', html) == "-€50.00"
    points = one(r'<polyline class="puq-balance-line"[^>]* points="([^"]+)"', html).split()
    assert len(points) == 30
    ys = [float(p.split(",")[1]) for p in points]
    xs = [float(p.split(",")[0]) for p in points]
    assert xs == sorted(xs) and xs[0] == 6.0 and xs[-1] == 594.0
    # the maximum (Feb 3 … 9) at the top, the minimum (Feb 10 … 28) at the bottom of the 120-high box
    assert ys[3:10] == [6.0] * 7 and ys[10:29] == [114.0] * 19
    assert ys[0] == round(6 + (99.5 - 71) / 149.5 * 108, 2)
    # the zero line is drawn (the balance crossed zero), no script or external asset is used for the chart
    chart = html.split('puq-balance-chart"')[1].split("</svg>")[0]
    assert "<line " in chart
    assert "<script" not in chart and "http" not in chart.replace("http://www.w3.org/2000/svg", "")
    assert "Jan 31, 2026" in html and "Mar 1, 2026" in html


def test_flat_history_is_drawn_in_the_middle(app, db, eur, owned_client, make_browser):
    owned_client()
    owner = make_browser("owner1@example.com")
    with clock.frozen_at(NOW):
        html = owner.get(DASHBOARD).text
    points = one(r'<polyline class="puq-balance-line"[^>]* points="([^"]+)"', html).split()
    assert {p.split(",")[1] for p in points} == {"60.0"}
    assert one(r'class="puq-chart-max">([^<]*)<', html) == "€0.00"
    assert one(r'class="puq-chart-min">([^<]*)<', html) == "€0.00"


# -- notices and permissions ----------------------------------------------------------------------------------

def test_complete_profile_notice_while_new(app, db, eur, owned_client, make_browser):
    client = owned_client()
    linked_user(client, "noprofile@example.com", ["manage_services"])
    owner = make_browser("owner1@example.com")
    html = owner.get(DASHBOARD).text
    assert client.status == "new"
    assert "puq-complete-profile" in html
    profile_registered = "ClientCompanyProfileView.profile" in app.view_functions
    assert ("puq-complete-profile-link" in html) == profile_registered
    # without modify_profile: the notice, never the link
    other = make_browser("noprofile@example.com")
    html = other.get(DASHBOARD).text
    assert "puq-complete-profile" in html and "puq-complete-profile-link" not in html
    # an active client: no notice
    db.execute(Client.__table__.update().where(Client.id == client.id).values(status="active"))
    db.commit()
    assert "puq-complete-profile" not in owner.get(DASHBOARD).text


def test_add_funds_button_follows_the_add_funds_page(app, db, eur, owned_client, make_browser):
    owned_client()
    html = make_browser("owner1@example.com").get(DASHBOARD).text
    registered = "ClientAddFundsView.add_funds" in app.view_functions
    assert ('class="btn btn-success puq-add-funds-link"' in html) == registered
    assert "puq-recommended-amount" in html


def test_each_permission_shows_its_own_blocks(app, db, eur, owned_client, make_browser):
    client, _other, _s = _scenario(db, eur, owned_client)
    linked_user(client, "nothing@example.com", [])
    linked_user(client, "services@example.com", ["manage_services"])
    linked_user(client, "money@example.com", ["manage_invoices"])

    html = make_browser("nothing@example.com").get(DASHBOARD).text
    assert "puq-service-counters" not in html and "puq-counter-link" not in html
    assert "puq-recurring-cost" not in html and "puq-recommended" not in html and "puq-balance-chart" not in html
    assert "/client/services" not in html and "/client/transactions" not in html
    assert "€641.74" in html  # the header's balance is shown to every linked user

    html = make_browser("services@example.com").get(DASHBOARD).text
    assert counters(html) == {"total": 12, "active": 9, "suspended": 1, "termination_requested": 1}
    assert "puq-recurring-cost" not in html and "puq-recommended" not in html and "puq-balance-chart" not in html
    assert "€132.3750" not in html and "/client/transactions" not in html

    html = make_browser("money@example.com").get(DASHBOARD).text
    assert counters(html) == {} and "puq-counter-link" not in html and "/client/services" not in html
    assert costs(html)["monthly"] == "€132.3750"
    assert "puq-balance-chart" in html and "puq-recommended-amount" in html


def test_staff_and_anonymous_have_no_dashboard(app, db, staff, eur, owned_client, make_browser, browser):
    owned_client()
    assert make_browser("admin").get(DASHBOARD).status_code == 404
    assert make_browser("billing").get(DASHBOARD).status_code in (302, 403)  # no client-area permission
    anonymous = browser.get(DASHBOARD)
    assert anonymous.status_code == 302 and "/login/" in anonymous.headers["Location"]
