"""Client area → Services: the list (status filters, search, sort, pages, no N+1), the detail page, the
termination request and its withdrawal (billing.services.request_termination / withdraw_termination, and the
billing engine ending a requested service at the end of its paid period), the client's own label, and the
security of every route (another client's service, a missing permission key, CSRF, methods, injection)."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from conftest import PASSWORD
from sqlalchemy import event, select
from test_engine_charge import fund, make_price, order, run, started

from puqpanel.billing import clock
from puqpanel.billing import services as svc
from puqpanel.domain import DomainError
from puqpanel.domain.client_users import create_and_associate
from puqpanel.models import ActivityLog, Product, Service, User

T0 = dt.datetime(2026, 3, 1, 0, 0)
LIST = "/client/services/"


@pytest.fixture()
def owned_client(new_client):
    return lambda **kw: new_client(password=PASSWORD, **kw)


def name_product(db, service, name: str) -> None:
    db.execute(Product.__table__.update().where(Product.id == service.product_id).values(name=name))
    db.commit()


def listed(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'class="puq-service-row" data-service-id="(\d+)"', html)]


def fresh(db, service) -> Service:
    db.expire_all()
    return db.get(Service, service.id)


def state(db, service) -> tuple:
    s = fresh(db, service)
    return (s.status, s.termination_requested_at, s.termination_request_reason, s.client_label, s.paid_until)


def user_id(db, username: str) -> int:
    return db.scalar(select(User.id).where(User.username == username))


def actions(db, service) -> list[str]:
    return list(db.scalars(select(ActivityLog.action).where(
        ActivityLog.object_type == "service", ActivityLog.object_id == service.id).order_by(ActivityLog.id)))


@pytest.fixture()
def world(db, eur, owned_client):
    """Client A (owner1) with services in every state, named Alpha … Golf, and client B (owner2) with one."""
    a, b = owned_client(), owned_client()
    fund(a, "1000")
    fund(b, "100")
    s = {
        "active": started(a, make_price(db, eur, "monthly", "10"), T0, client_label="web-1"),
        "suspended": started(a, make_price(db, eur, "weekly", "7"), T0),
        "pending": order(a, make_price(db, eur, "quarterly", "15", setup="4.5"), T0),
        "terminated": started(a, make_price(db, eur, "daily", "1"), T0),
        "cancelled": order(a, make_price(db, eur, "monthly", "3"), T0),
        "leaving": started(a, make_price(db, eur, "annually", "120"), T0, client_label="Mail box"),
        "wild": started(a, make_price(db, eur, "hourly", "0.05"), T0, client_label="100%_off deal"),
        "theirs": started(b, make_price(db, eur, "monthly", "20"), T0, client_label="web-other"),
    }
    svc.suspend(s["suspended"], "staff hold")
    svc.terminate(s["terminated"], "done")
    svc.cancel(s["cancelled"], "not wanted")
    svc.request_termination(s["leaving"], "moving away")
    for key, name in zip(s, ("Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel")):
        name_product(db, s[key], name)
    return {"a": a, "b": b, "s": s}


# -- the list ---------------------------------------------------------------------------------------------------

def test_status_filters(app, db, world, make_browser):
    s = world["s"]
    owner = make_browser("owner1@example.com")
    ids = {k: v.id for k, v in s.items()}
    expected = {
        "": ["wild", "leaving", "cancelled", "terminated", "pending", "suspended", "active"],
        "all": ["wild", "leaving", "cancelled", "terminated", "pending", "suspended", "active"],
        "current": ["wild", "leaving", "pending", "suspended", "active"],
        "active": ["wild", "leaving", "active"],
        "suspended": ["suspended"],
        "pending": ["pending"],
        "terminated": ["terminated"],
        "cancelled": ["cancelled"],
        "termination_requested": ["leaving"],
        "bogus": ["wild", "leaving", "cancelled", "terminated", "pending", "suspended", "active"],
    }
    for status, keys in expected.items():
        page = owner.get(LIST, query_string={"status": status})
        assert page.status_code == 200
        assert listed(page.text) == [ids[k] for k in keys], status
    page = owner.get(LIST, query_string={"status": "termination_requested"}).text
    assert "puq-termination-flag" in page and "Foxtrot" in page and "Mail box" in page
    assert "Hotel" not in owner.get(LIST).text  # never the other client's service


@pytest.mark.parametrize("q, keys", [
    ("web", ["active"]),                  # the client label; the other client's "web-other" is not listed
    ("WEB-1", ["active"]),                # case-insensitive
    ("alpha", ["active"]),                # the product name
    ("fox", ["leaving"]),
    ("%", ["wild"]),                      # wildcards are literal characters
    ("_", ["wild"]),
    ("0%_o", ["wild"]),
    ("no such thing", []),
    ("' OR 1=1 --", []),
    ("{{7*7}}", []),
])
def test_search(app, db, world, make_browser, q, keys):
    owner = make_browser("owner1@example.com")
    page = owner.get(LIST, query_string={"q": q})
    assert page.status_code == 200
    assert listed(page.text) == [world["s"][k].id for k in keys]
    assert "49" not in re.findall(r'name="q" value="([^"]*)"', page.text)


def test_search_by_service_number(app, db, world, make_browser):
    owner = make_browser("owner1@example.com")
    pending = world["s"]["pending"].id
    assert pending in listed(owner.get(LIST, query_string={"q": f"#{pending}"}).text)
    theirs = world["s"]["theirs"].id
    assert listed(owner.get(LIST, query_string={"q": str(theirs)}).text) == []
    assert owner.get(LIST, query_string={"q": "99999999999999999999"}).status_code == 200
    # digits other than ASCII are text, never a number (int("²") was a 500; "٣" matched service 3)
    arabic = "".join(chr(0x0660 + int(d)) for d in str(pending))
    for q in ("²", "#²", "١²", arabic):
        page = owner.get(LIST, query_string={"q": q})
        assert page.status_code == 200 and listed(page.text) == [], q


def test_sort(app, db, world, make_browser):
    s = world["s"]
    owner = make_browser("owner1@example.com")
    by_name = ["active", "suspended", "pending", "terminated", "cancelled", "leaving", "wild"]  # Alpha … Golf
    assert listed(owner.get(LIST, query_string={"sort": "product", "dir": "asc"}).text) == [s[k].id for k in by_name]
    assert listed(owner.get(LIST, query_string={"sort": "product", "dir": "desc"}).text) == [
        s[k].id for k in reversed(by_name)]
    assert listed(owner.get(LIST, query_string={"sort": "id", "dir": "asc"}).text) == sorted(
        s[k].id for k in by_name)
    # paid until: the never-paid ones (pending, cancelled) last in both directions; ties by id
    asc = listed(owner.get(LIST, query_string={"sort": "paid_until", "dir": "asc"}).text)
    # paid until T0+1h (wild), Mar 2 (terminated), Mar 8 (suspended), Apr 1 (active), 2027 (leaving)
    assert asc == [s[k].id for k in ("wild", "terminated", "suspended", "active", "leaving", "pending", "cancelled")]
    desc = listed(owner.get(LIST, query_string={"sort": "paid_until", "dir": "desc"}).text)
    assert desc == [s[k].id for k in ("leaving", "active", "suspended", "terminated", "wild", "cancelled", "pending")]
    # sort and direction are whitelisted: anything else is the default (newest first)
    default = listed(owner.get(LIST).text)
    for sort, direction in (("id; DROP TABLE puq_service", "asc"), ("' OR 1=1 --", "desc"), ("{{7*7}}", "x"),
                            ("client_id", "asc"), ("product", "asc; --")):
        page = owner.get(LIST, query_string={"sort": sort, "dir": direction})
        assert page.status_code == 200
        if sort == "product":
            assert listed(page.text) == [s[k].id for k in reversed(by_name)]
        else:
            assert listed(page.text) == default


def test_pages_of_25(app, db, eur, owned_client, make_browser):
    client = owned_client()
    price = make_price(db, eur, "monthly", "1")
    ids = [order(client, price, T0).id for _ in range(27)]
    owner = make_browser("owner1@example.com")
    first = owner.get(LIST).text
    assert listed(first) == sorted(ids, reverse=True)[:25]
    assert 'class="next"' in first and 'class="previous"' not in first
    second = owner.get(LIST, query_string={"page": "2"}).text
    assert listed(second) == sorted(ids, reverse=True)[25:]
    assert 'class="next"' not in second and 'class="previous"' in second
    for bad in ("0", "-3", "abc", "' OR 1=1 --", "10000000000"):
        assert owner.get(LIST, query_string={"page": bad}).status_code == 200


def test_list_has_no_n_plus_one(app, db, eur, owned_client, make_browser):
    client = owned_client()
    fund(client, "1000")
    owner = make_browser("owner1@example.com")
    engine = db.get_bind()

    def count() -> int:
        statements = []
        listener = lambda *a: statements.append(a[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            assert owner.get(LIST).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(statements)

    started(client, make_price(db, eur, "monthly", "2"), T0)
    one = count()
    for period in ("hourly", "daily", "weekly", "annually", "one_time") * 3:
        started(client, make_price(db, eur, period, "3"), T0)
    assert count() == one


# -- the detail page ------------------------------------------------------------------------------------------

def test_detail_shows_the_service_and_no_staff_fields(app, db, world, make_browser):
    active = world["s"]["active"]
    db.execute(Service.__table__.update().where(Service.id == active.id).values(
        admin_label="SECRET-ADMIN-LABEL", admin_notes="SECRET-ADMIN-NOTE", provision_error="SECRET-MODULE-NOTE"))
    db.commit()
    owner = make_browser("owner1@example.com")
    page = owner.get(f"{LIST}{active.id}")
    assert page.status_code == 200
    html = page.text
    assert "Alpha" in html and "web-1" in html
    assert "€10.00 / Monthly" in re.sub(r"\s+", " ", html)
    assert "Active" in html and "Completed" in html
    assert re.search(r'class="puq-paid-until">Apr 1, 2026, 12:00:00\s?AM<', html)
    assert re.search(r'class="puq-next-charge">Apr 1, 2026, 12:00:00\s?AM<', html)
    assert "SECRET" not in html
    assert "puq-request-termination" in html and "puq-withdraw" not in html
    # a pending service: no termination form; its setup fee is shown
    pending = owner.get(f"{LIST}{world['s']['pending'].id}").text
    assert "puq-request-termination" not in pending and "Setup fee" in pending and "€4.50" in pending
    # a suspended one may be terminated on request; the staff's suspension reason is not shown
    suspended = owner.get(f"{LIST}{world['s']['suspended'].id}").text
    assert "puq-request-termination" in suspended and "staff hold" not in suspended


def test_request_and_withdraw_termination(app, db, world, make_browser):
    active = world["s"]["active"]
    owner = make_browser("owner1@example.com")
    detail = f"{LIST}{active.id}"
    with clock.frozen_at(T0 + dt.timedelta(days=2)):
        resp = owner.post_form(f"{detail}/terminate", {"reason": "  too   expensive "}, form_url=detail)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(detail)
    s = fresh(db, active)
    assert s.status == "active"
    assert s.termination_requested_at == T0 + dt.timedelta(days=2)
    assert s.termination_request_reason == "too expensive"
    entry = db.scalar(select(ActivityLog).where(ActivityLog.action == "service.termination_request",
                                                ActivityLog.object_id == active.id))
    assert entry.client_id == world["a"].id and entry.actor_id == user_id(db, "owner1@example.com")
    assert entry.changes["reason"] == "too expensive"

    html = owner.get(detail).text
    assert re.search(r"ends on Apr 1, 2026, 12:00:00\s?AM", html)
    assert "puq-withdraw" in html and "puq-request-termination" not in html and "too expensive" in html
    assert "puq-termination-flag" in html

    # asking again is refused (the request stays as it was)
    before = state(db, active)
    again = owner.post_form(f"{detail}/terminate", {"reason": "again"}, form_url=f"{LIST}{world['s']['wild'].id}")
    assert again.status_code == 400 and "already has a termination request" in again.text
    assert state(db, active) == before

    resp = owner.post_form(f"{detail}/withdraw", {}, form_url=detail)
    assert resp.status_code == 302
    s = fresh(db, active)
    assert s.termination_requested_at is None and s.termination_request_reason == "" and s.status == "active"
    assert actions(db, active)[-2:] == ["service.termination_request", "service.termination_withdraw"]
    # nothing left to withdraw
    before = state(db, active)
    resp = owner.post_form(f"{detail}/withdraw", {}, form_url=detail)
    assert resp.status_code == 400 and "has no termination request" in resp.text
    assert state(db, active) == before


def test_termination_refusals(app, db, world, make_browser):
    s = world["s"]
    owner = make_browser("owner1@example.com")
    for key in ("pending", "terminated", "cancelled"):
        before = state(db, s[key])
        resp = owner.post(f"{LIST}{s[key].id}/terminate", {"reason": "x"})
        assert resp.status_code == 400, key
        assert "Only an active or suspended service" in resp.text
        assert state(db, s[key]) == before
    # a reason longer than the column: refused, nothing written
    before = state(db, s["active"])
    resp = owner.post(f"{LIST}{s['active'].id}/terminate", {"reason": "x" * 256})
    assert resp.status_code == 400 and "At most 255 characters." in resp.text
    assert state(db, s["active"]) == before
    # 255 characters are fine; no reason at all too
    assert owner.post(f"{LIST}{s['active'].id}/terminate", {"reason": "y" * 255}).status_code == 302
    assert fresh(db, s["active"]).termination_request_reason == "y" * 255
    assert owner.post(f"{LIST}{s['suspended'].id}/terminate").status_code == 302
    assert fresh(db, s["suspended"]).termination_requested_at is not None
    # a requested service that got terminated: the request can't be withdrawn any more
    svc.terminate(s["leaving"], "ended")
    before = state(db, s["leaving"])
    resp = owner.post(f"{LIST}{s['leaving'].id}/withdraw")
    assert resp.status_code == 400 and "already ended" in resp.text
    assert state(db, s["leaving"]) == before


def test_domain_functions_refuse_wrong_states(app, db, world):
    s = world["s"]
    with pytest.raises(DomainError):
        svc.request_termination(s["pending"])
    with pytest.raises(DomainError):
        svc.request_termination(s["leaving"], "twice")
    with pytest.raises(DomainError):
        svc.withdraw_termination(s["active"])
    with pytest.raises(DomainError) as exc:
        svc.request_termination(s["active"], "z" * 256)
    assert "reason" in exc.value.errors
    assert fresh(db, s["active"]).termination_requested_at is None
    svc.withdraw_termination(s["leaving"])
    assert fresh(db, s["leaving"]).termination_requested_at is None
    with pytest.raises(DomainError):
        svc.set_client_label(s["active"], "l" * 151)


def test_engine_ends_a_requested_service_at_the_end_of_its_paid_period(app, db, world, make_browser):
    active = world["s"]["active"]  # paid until Apr 1, 2026
    owner = make_browser("owner1@example.com")
    with clock.frozen_at(T0 + dt.timedelta(days=1)):
        assert owner.post(f"{LIST}{active.id}/terminate", {"reason": ""}).status_code == 302
    run("terminate", dt.datetime(2026, 3, 31, 23))
    assert fresh(db, active).status == "active"
    run("terminate", dt.datetime(2026, 4, 1, 0))
    assert fresh(db, active).status == "terminated"
    html = owner.get(f"{LIST}{active.id}").text
    assert "puq-withdraw" not in html and "puq-request-termination" not in html


def test_client_label(app, db, world, make_browser):
    active = world["s"]["active"]
    owner = make_browser("owner1@example.com")
    detail = f"{LIST}{active.id}"
    resp = owner.post_form(f"{detail}/label", {"client_label": "  Shop   front "}, form_url=detail)
    assert resp.status_code == 302
    assert fresh(db, active).client_label == "Shop front"
    entry = db.scalar(select(ActivityLog).where(ActivityLog.action == "service.client_label",
                                                ActivityLog.object_id == active.id))
    assert entry.changes == {"client_label": ["web-1", "Shop front"]}
    resp = owner.post(f"{detail}/label", {"client_label": "q" * 151})
    assert resp.status_code == 400 and "At most 150 characters." in resp.text
    assert fresh(db, active).client_label == "Shop front"
    assert owner.post(f"{detail}/label", {"client_label": "{{7*7}}"}).status_code == 302
    html = owner.get(detail).text
    assert "{{7*7}}" in html and "<td>49" not in html


# -- security ---------------------------------------------------------------------------------------------------

def test_another_clients_service_is_404_and_unchanged(app, db, world, make_browser):
    theirs = world["s"]["theirs"]
    owner = make_browser("owner1@example.com")
    before = state(db, theirs)
    assert owner.get(f"{LIST}{theirs.id}").status_code == 404
    for tail, data in (("terminate", {"reason": "mine now"}), ("label", {"client_label": "mine"}),
                       ("withdraw", {})):
        assert owner.post(f"{LIST}{theirs.id}/{tail}", data).status_code == 404, tail
    assert state(db, theirs) == before
    # and with a request in place, withdrawing it from the other client is a 404 too
    svc.request_termination(theirs, "b's own")
    before = state(db, theirs)
    assert owner.post(f"{LIST}{theirs.id}/withdraw").status_code == 404
    assert state(db, theirs) == before and before[1] is not None
    assert not [a for a in actions(db, theirs) if a != "service.termination_request" and a.startswith("service.t")]
    # unknown and oversized ids
    for bad in ("999999", "99999999999", "0", "-1", "abc"):
        assert owner.get(f"{LIST}{bad}").status_code == 404
        assert owner.post(f"{LIST}{bad}/terminate").status_code == 404


def test_without_manage_services_every_route_is_403(app, db, world, make_browser):
    a, active = world["a"], world["s"]["active"]
    create_and_associate(a, "billing-only@example.com", "Ben", "Billing", ["manage_invoices"], password=PASSWORD)
    user = make_browser("billing-only@example.com")
    before = state(db, active)
    assert user.get(LIST).status_code == 403
    assert user.get(f"{LIST}{active.id}").status_code == 403
    for tail in ("terminate", "withdraw", "label"):
        assert user.post(f"{LIST}{active.id}/{tail}", {"reason": "x", "client_label": "x"}).status_code == 403
    assert state(db, active) == before
    dashboard = user.get("/client/dashboard").text
    assert "/client/services" not in dashboard and "puq-counter" not in dashboard


def test_csrf_and_methods(app, db, world, make_browser):
    active = world["s"]["active"]
    owner = make_browser("owner1@example.com")
    before = state(db, active)
    for tail in ("terminate", "withdraw", "label"):
        url = f"{LIST}{active.id}/{tail}"
        assert owner.client.post(url, data={"reason": "x", "client_label": "x"}).status_code == 400, tail
        assert owner.client.post(url, data={"csrf_token": "forged", "client_label": "x"}).status_code == 400
        assert owner.get(url).status_code == 405, tail
    assert state(db, active) == before


def test_staff_and_anonymous(app, db, staff, world, make_browser, browser):
    active = world["s"]["active"]
    admin = make_browser("admin")
    assert admin.get(LIST).status_code == 404
    assert admin.get(f"{LIST}{active.id}").status_code == 404
    assert admin.post(f"{LIST}{active.id}/terminate").status_code == 404
    assert fresh(db, active).termination_requested_at is None
    assert browser.get(LIST).status_code == 302
