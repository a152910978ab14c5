"""Client record → Services tab: list, Add Service, every action, Suspend All; permissions and scoping."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select

from conftest import PASSWORD, csrf_token, make_user
from puqpanel.billing import clock, ledger
from puqpanel.billing import services as svc
from puqpanel.domain.session import transaction
from puqpanel.models import ActivityLog, Client, Product, ProductPrice, Service, Transaction

D = Decimal


@pytest.fixture()
def prices(db, eur):
    vps = Product(name="VPS S")
    failing = Product(name="Flaky", module="test")
    db.add_all([vps, failing])
    db.flush()
    rows = {
        "monthly": ProductPrice(product_id=vps.id, currency_id=eur.id, period="monthly", setup=D("5"), base=D("10")),
        "annually": ProductPrice(product_id=vps.id, currency_id=eur.id, period="annually", base=D("100")),
        "test": ProductPrice(product_id=failing.id, currency_id=eur.id, period="monthly", base=D("1")),
    }
    db.add_all(rows.values())
    db.commit()
    return rows


@pytest.fixture()
def world(db, staff, new_client, prices):
    """A client per manager, each with one service in every state."""
    clients = {}
    for manager in ("manager1", "manager2"):
        client = new_client(lastname=f"Client-{manager}", manager_id=staff[manager].id)
        clients[manager] = client
    return clients


def fund(client, amount):
    with transaction():
        ledger.post(ledger.lock_client(client.id), "adjustment", D(amount), description="funds")


def make_services(db, client, prices) -> dict[str, Service]:
    """One service per status (+ a provisioning error and a termination request)."""
    out = {}
    out["pending"] = svc.add_service(client, prices["monthly"].id, client_label="pending-one")
    out["error"] = svc.add_service(client, prices["test"].id, admin_label="fail me")
    svc.activate(out["error"], force=True)
    out["active"] = svc.activate(svc.add_service(client, prices["monthly"].id, client_label="active-one"), force=True)
    out["suspended"] = svc.activate(svc.add_service(client, prices["annually"].id), force=True)
    svc.suspend(out["suspended"], "abuse desk")
    out["terminated"] = svc.activate(svc.add_service(client, prices["monthly"].id), force=True)
    svc.terminate(out["terminated"], "gone")
    out["cancelled"] = svc.cancel(svc.add_service(client, prices["monthly"].id), "mistake")
    out["fraud"] = svc.add_service(client, prices["monthly"].id)
    out["fraud"].status = "fraud"
    out["requested"] = svc.activate(svc.add_service(client, prices["monthly"].id), force=True)
    out["requested"].termination_requested_at = dt.datetime(2026, 1, 1)
    db.commit()
    return out


def tab(client) -> str:
    return f"/clients/{client.id}/services"


def snapshot(db):
    db.expire_all()
    return (
        sorted(db.execute(select(Service.id, Service.status, Service.provision_status, Service.status_reason)).all()),
        db.scalar(select(func.count()).select_from(Transaction)),
        db.scalar(select(func.count()).select_from(ActivityLog)),
    )


def routes(client, services) -> list[tuple[str, dict]]:
    """Every POST route of the tab with a valid payload."""
    base = tab(client)
    return [
        (f"{base}/add", {"price_id": "", "client_label": "x"}),
        (f"{base}/{services['pending'].id}/activate", {"force": "1"}),
        (f"{base}/{services['error'].id}/retry", {}),
        (f"{base}/{services['active'].id}/suspend", {"reason": "r"}),
        (f"{base}/{services['suspended'].id}/unsuspend", {}),
        (f"{base}/{services['active'].id}/terminate", {"reason": "r"}),
        (f"{base}/{services['pending'].id}/cancel", {"reason": "r"}),
        (f"{base}/suspend-all", {"reason": "r", "password": PASSWORD}),
    ]


# -- rendering ----------------------------------------------------------------------------------------------
def test_tab_renders_every_state(app, db, world, prices, make_browser):
    client = world["manager1"]
    services = make_services(db, client, prices)
    admin = make_browser("admin")
    resp = admin.get(tab(client))
    assert resp.status_code == 200
    html = resp.text
    assert "nav-tabs" in html and 'class="active"' in html
    for label in ("Pending", "Active", "Suspended", "Terminated", "Cancelled", "Fraud", "Termination requested"):
        assert label in html, label
    assert "Test module: provisioning failed on purpose." in html
    assert "abuse desk" in html and "pending-one" in html and "fail me" in html
    assert "10.00 €" in html or "€10.00" in html
    rows = dict(re.findall(r'data-service-id="(\d+)" data-status="(\w+)"', html))
    assert {rows[str(s.id)] for s in services.values()} == {"pending", "active", "suspended", "terminated",
                                                            "cancelled", "fraud"}

    def row(service):
        start = html.index(f'data-service-id="{service.id}"')
        return html[start:html.index("</tr>", start)]

    assert "puq-activate" in row(services["pending"]) and "puq-cancel" in row(services["pending"])
    assert "puq-retry" in row(services["error"]) and "puq-retry" not in row(services["pending"])
    assert "puq-suspend" in row(services["active"]) and "puq-terminate" in row(services["active"])
    assert "puq-unsuspend" in row(services["suspended"]) and "puq-terminate" in row(services["suspended"])
    for key in ("terminated", "cancelled", "fraud"):
        assert "<button" not in row(services[key]), key
    assert "puq-suspend-all" in html and "puq-add-service" in html
    # the Add Service form offers the client's currency's prices of orderable products
    assert f'value="{prices["monthly"].id}"' in html and "Monthly" in html


def test_empty_tab_and_legacy_service_without_price(app, db, world, make_browser):
    client = world["manager1"]
    admin = make_browser("admin")
    assert "No services yet." in admin.get(tab(client)).text
    db.add(Service(client_id=client.id, status="active"))
    db.commit()
    assert admin.get(tab(client)).status_code == 200


def test_list_has_no_n_plus_one(app, db, world, prices, make_browser):
    client = world["manager1"]
    admin = make_browser("admin")
    engine = db.get_bind()

    def count_queries():
        statements = []
        listener = lambda *a: statements.append(a[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            assert admin.get(tab(client)).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(statements)

    svc.add_service(client, prices["monthly"].id)
    one = count_queries()
    for _ in range(15):
        svc.activate(svc.add_service(client, prices["annually"].id), force=True)
    assert count_queries() == one


def test_support_sees_the_list_without_actions(app, db, world, prices, make_browser):
    client = world["manager1"]
    make_services(db, client, prices)
    support = make_browser("support")
    resp = support.get(tab(client))
    assert resp.status_code == 200
    for marker in ("puq-activate", "puq-suspend", "puq-add-service", "puq-suspend-all", "service-add-modal"):
        assert marker not in resp.text, marker


def test_manager_has_no_suspend_all_button(app, db, world, prices, make_browser):
    html = make_browser("manager1").get(tab(world["manager1"])).text
    assert "puq-add-service" in html and "puq-suspend-all" not in html


# -- add service ----------------------------------------------------------------------------------------------
def test_add_service_through_the_form(app, db, world, prices, make_browser):
    client = world["manager1"]
    manager = make_browser("manager1")
    resp = manager.post_form(f"{tab(client)}/add", {"product_id": str(prices["monthly"].product_id),
                                                   "price_id": str(prices["monthly"].id), "client_label": "web1",
                                                   "admin_label": "r4", "notes": "n"}, form_url=tab(client))
    assert resp.status_code == 302
    service = db.scalar(select(Service).where(Service.client_id == client.id))
    assert (service.status, service.client_label, service.admin_label, service.price_id) == (
        "pending", "web1", "r4", prices["monthly"].id)
    page = manager.get(tab(client))
    assert "added (pending)" in page.text


@pytest.mark.parametrize("data, message", [
    ({"price_id": ""}, "This field is required."),
    ({"price_id": "abc"}, "Not a valid choice."),
    ({"price_id": "99999999999"}, "Not a valid choice."),
    ({"price_id": "999999"}, "Choose a price"),
    ({"price_id": "PRICE", "client_label": "x" * 151}, "At most 150 characters."),
])
def test_add_service_bad_input_is_400(app, db, world, prices, make_browser, data, message):
    client = world["manager1"]
    data = {k: (str(prices["monthly"].id) if v == "PRICE" else v) for k, v in data.items()}
    before = snapshot(db)
    resp = make_browser("admin").post_form(f"{tab(client)}/add", data, form_url=tab(client))
    assert resp.status_code == 400
    assert message in resp.text
    assert '$("#service-add-modal").modal("show")' in resp.text
    assert snapshot(db) == before


# -- actions ----------------------------------------------------------------------------------------------------
def test_activate_refused_for_funds_then_forced(app, db, world, prices, make_browser):
    client = world["manager1"]
    service = svc.add_service(client, prices["monthly"].id)
    admin = make_browser("admin")
    url = f"{tab(client)}/{service.id}/activate"
    before = snapshot(db)
    resp = admin.post_form(url, {}, form_url=tab(client))
    assert resp.status_code == 400 and "Insufficient funds" in resp.text
    assert f'action="{url}"' in resp.text  # the modal reopens on this service
    assert snapshot(db) == before
    assert admin.post_form(url, {"force": "1"}, form_url=tab(client)).status_code == 302
    db.expire_all()
    assert db.get(Service, service.id).status == "active"
    assert db.get(Client, client.id).balance == D("-15.0000")
    entry = db.scalar(select(ActivityLog).where(ActivityLog.action == "service.activate"))
    assert entry.changes["forced"] is True and entry.actor_id is not None


def test_activate_with_funds_and_provisioning_error_flash(app, db, world, prices, make_browser):
    client = world["manager1"]
    fund(client, "100")
    good = svc.add_service(client, prices["monthly"].id)
    bad = svc.add_service(client, prices["test"].id, admin_label="FAIL")
    manager = make_browser("manager1")
    assert manager.post_form(f"{tab(client)}/{good.id}/activate", {}, form_url=tab(client)).status_code == 302
    resp = manager.post_form(f"{tab(client)}/{bad.id}/activate", {}, form_url=tab(client))
    assert resp.status_code == 302
    page = manager.get(tab(client)).text
    assert "Provisioning failed: Test module" in page
    db.expire_all()
    assert db.get(Service, good.id).status == "active" and db.get(Service, bad.id).provision_status == "error"
    assert db.get(Client, client.id).balance == D("85.0000")
    # retry after fixing the label
    db.get(Service, bad.id).admin_label = "ok"
    db.commit()
    assert manager.post_form(f"{tab(client)}/{bad.id}/retry", {}, form_url=tab(client)).status_code == 302
    db.expire_all()
    assert db.get(Service, bad.id).status == "active"
    # retry of a service without a provisioning error: 400 with the message
    resp = manager.post_form(f"{tab(client)}/{good.id}/retry", {}, form_url=tab(client))
    assert resp.status_code == 400 and "provisioning failed can be retried" in resp.text


def test_suspend_unsuspend_terminate_cancel_through_forms(app, db, world, prices, make_browser):
    client = world["manager1"]
    active = svc.activate(svc.add_service(client, prices["monthly"].id), force=True)
    pending = svc.add_service(client, prices["monthly"].id)
    manager = make_browser("manager1")
    base = tab(client)
    resp = manager.post_form(f"{base}/{active.id}/suspend", {"reason": ""}, form_url=base)
    assert resp.status_code == 400 and "This field is required." in resp.text
    assert '$("#service-suspend-modal").modal("show")' in resp.text
    assert manager.post_form(f"{base}/{active.id}/suspend", {"reason": "abuse"}, form_url=base).status_code == 302
    db.expire_all()
    assert (db.get(Service, active.id).status, db.get(Service, active.id).status_reason) == ("suspended", "abuse")
    # an illegal move: 400 with the message, nothing changed
    before = snapshot(db)
    resp = manager.post_form(f"{base}/{active.id}/suspend", {"reason": "again"}, form_url=base)
    assert resp.status_code == 400 and "Only an active service can be suspended." in resp.text
    resp = manager.post_form(f"{base}/{pending.id}/unsuspend", {}, form_url=base)
    assert resp.status_code == 400 and "Only a suspended service can be unsuspended." in resp.text
    assert snapshot(db) == before
    assert manager.post_form(f"{base}/{active.id}/unsuspend", {}, form_url=base).status_code == 302
    resp = manager.post_form(f"{base}/{active.id}/terminate", {"reason": ""}, form_url=base)
    assert resp.status_code == 400 and "This field is required." in resp.text
    assert manager.post_form(f"{base}/{active.id}/terminate", {"reason": "left"}, form_url=base).status_code == 302
    resp = manager.post_form(f"{base}/{pending.id}/cancel", {"reason": "x" * 256}, form_url=base)
    assert resp.status_code == 400 and "At most 255 characters." in resp.text
    assert manager.post_form(f"{base}/{pending.id}/cancel", {"reason": "oops"}, form_url=base).status_code == 302
    db.expire_all()
    assert db.get(Service, active.id).status == "terminated" and db.get(Service, pending.id).status == "cancelled"
    actions = set(db.scalars(select(ActivityLog.action).where(ActivityLog.client_id == client.id)))
    assert {"service.suspend", "service.unsuspend", "service.terminate", "service.cancel"} <= actions
    activity = manager.get(f"/clients/{client.id}/activity").text
    assert "service.terminate" in activity and "status: active → terminated" in activity


def test_suspend_all_asks_the_staff_password(app, db, world, prices, make_browser):
    client = world["manager1"]
    services = [svc.activate(svc.add_service(client, prices["monthly"].id), force=True) for _ in range(2)]
    billing = make_browser("billing")
    url = f"{tab(client)}/suspend-all"
    before = snapshot(db)
    resp = billing.post_form(url, {"reason": "fraud", "password": "wrong"}, form_url=tab(client))
    assert resp.status_code == 400 and "Wrong password." in resp.text
    assert "wrong" not in re.findall(r'name="password"[^>]*>', resp.text)[0]  # never echoed
    resp = billing.post_form(url, {"reason": "", "password": PASSWORD}, form_url=tab(client))
    assert resp.status_code == 400 and "This field is required." in resp.text
    assert snapshot(db) == before
    resp = billing.post_form(url, {"reason": "fraud", "password": PASSWORD}, form_url=tab(client))
    assert resp.status_code == 302
    assert "2 active services suspended." in billing.get(tab(client)).text
    db.expire_all()
    assert {db.get(Service, s.id).status for s in services} == {"suspended"}
    entry = db.scalar(select(ActivityLog).where(ActivityLog.action == "service.suspend_all"))
    assert entry.changes["count"] == 2 and entry.actor_id is not None


# -- permissions and scoping -------------------------------------------------------------------------------------
def test_support_gets_403_on_every_post(app, db, world, prices, make_browser):
    client = world["manager1"]
    services = make_services(db, client, prices)
    support = make_browser("support")
    before = snapshot(db)
    for url, data in routes(client, services):
        assert support.post(url, data).status_code == 403, url
    assert snapshot(db) == before


def test_manager_cannot_suspend_all(app, db, world, prices, make_browser):
    client = world["manager1"]
    services = make_services(db, client, prices)
    before = snapshot(db)
    assert make_browser("manager1").post(f"{tab(client)}/suspend-all",
                                         {"reason": "r", "password": PASSWORD}).status_code == 403
    assert snapshot(db) == before
    assert services


def test_other_managers_client_is_404_everywhere(app, db, world, prices, make_browser):
    mine, theirs = world["manager1"], world["manager2"]
    their_services = make_services(db, theirs, prices)
    my_services = make_services(db, mine, prices)
    manager = make_browser("manager1")
    assert manager.get(tab(theirs)).status_code == 404
    assert manager.get(tab(mine)).status_code == 200
    before = snapshot(db)
    for url, data in routes(theirs, their_services):
        assert manager.post(url, data).status_code in (404, 403), url  # suspend-all: 403 before scope
    # my client's URL with another client's service id
    for url, data in routes(mine, their_services):
        if "/add" in url or "suspend-all" in url:
            continue
        assert manager.post(url, data).status_code == 404, url
    assert snapshot(db) == before
    # an admin reaches both clients, but still not a service through the wrong client
    admin = make_browser("admin")
    for url, data in routes(mine, their_services):
        if "/add" in url or "suspend-all" in url:
            continue
        assert admin.post(url, data).status_code == 404, url
    assert snapshot(db) == before
    assert my_services


def test_suspend_all_on_out_of_scope_client_is_404(app, db, world, prices, make_browser, staff):
    """A role with suspend_all but without access-all: another manager's client is a 404."""
    sm = app.appbuilder.sm
    role = sm.find_role("Manager")
    sm.add_permission_role(role, sm.find_permission_view_menu("can_suspend_all", "ClientBilling"))
    db.commit()
    theirs = world["manager2"]
    svc.activate(svc.add_service(theirs, prices["monthly"].id), force=True)
    before = snapshot(db)
    try:
        resp = make_browser("manager1").post(f"{tab(theirs)}/suspend-all", {"reason": "r", "password": PASSWORD})
        assert resp.status_code == 404
    finally:
        sm.del_permission_role(role, sm.find_permission_view_menu("can_suspend_all", "ClientBilling"))
        db.commit()
    assert snapshot(db) == before


def test_unknown_and_oversized_ids_are_404(app, db, world, prices, make_browser):
    client = world["manager1"]
    admin = make_browser("admin")
    assert admin.get("/clients/999999/services").status_code == 404
    assert admin.get("/clients/99999999999/services").status_code == 404
    for tail in ("/999999/activate", "/99999999999/suspend", "/0/cancel"):
        assert admin.post(f"{tab(client)}{tail}", {"reason": "r"}).status_code == 404, tail


def test_csrf_and_methods(app, db, world, prices, make_browser):
    client = world["manager1"]
    services = make_services(db, client, prices)
    admin = make_browser("admin")
    before = snapshot(db)
    for url, data in routes(client, services):
        assert admin.client.post(url, data=data).status_code == 400, url  # no CSRF token
        assert admin.client.post(url, data={**data, "csrf_token": "forged"}).status_code == 400, url
        assert admin.get(url).status_code == 405, url
    assert snapshot(db) == before


def test_client_role_and_anonymous(app, db, world, make_browser):
    client = world["manager1"]
    make_user("someclient", "Client")
    assert make_browser("someclient").get(tab(client)).status_code == 403
    resp = make_browser().get(tab(client))
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_tab_page_token_posts(app, db, world, prices, make_browser):
    """The tab's own forms carry the CSRF token (a browser's path)."""
    client = world["manager1"]
    admin = make_browser("admin")
    token = csrf_token(admin.get(tab(client)).text)
    resp = admin.client.post(f"{tab(client)}/add", data={"csrf_token": token, "price_id": str(prices["monthly"].id)})
    assert resp.status_code == 302
