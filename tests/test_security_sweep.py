"""Security sweep over the URL map (issue 5, "Security tests").

The routes are not listed by hand: every rule of `app.url_map` served by the client area (/client/…), the
account pages, the impersonation views and the sign-in views is taken from the map, and each must have an
entry in ROUTES (its kind and, for client-area routes, the client permission key it needs) — a new route
without one fails `test_every_route_in_scope_is_classified`, and once classified it is swept by every test
below. Two clients A and B each have an owner login, a service, an unpaid add-funds proforma, a paid invoice,
ledger rows, a second linked user and an authenticator method; A's logins attack B's rows.

Swept: another client's ids in every id parameter (404 / 403 and nothing changed), POST without CSRF token
(400, nothing changed), GET on POST-only routes (405), a missing client permission key (403 and the
navigation hides the page), injection text in every search / sort / filter parameter a page offers (no 500,
no template evaluation, no other client's data), a login stopped at the 2FA step against every page of the
map and the API token, the same page for the 6th wrong password of a known and an unknown name, TOTP codes
replayed across the login form, the API and the account pages, and impersonation abuse (client logins, staff
without the permission, forged session keys, staff pages and account changes while impersonating).
"""
from __future__ import annotations

import datetime as dt
import itertools
import re
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from flask_appbuilder import Model
from sqlalchemy import func, select
from werkzeug.routing import IntegerConverter

from conftest import PASSWORD
from puqpanel.billing import clock, ledger, payments
from puqpanel.domain.client_users import create_and_associate
from puqpanel.domain.clients import find_login
from puqpanel.models import (CLIENT_PERMISSIONS, ActivityLog, ClientUser, Invoice, LoginSession, MfaMethod, User,
                             UserSecurity)
from test_engine_charge import make_price, started
from test_invoicing import add_funds, home  # noqa: F401  (home is a fixture)
from test_login import api_login, session_of, submit_login
from test_login_2fa import enable_totp, post_code
from test_mfa import code_at

# -- the routes in scope and what each is ------------------------------------------------------------------------

# View modules whose routes are swept (with every rule under /client/).
SCOPE_MODULES = ("puqpanel.views.client_area", "puqpanel.views.account", "puqpanel.views.impersonation",
                 "puqpanel.views.auth")

CLIENT, ACCOUNT, STAFF, PUBLIC, API, STOP = "client", "account", "staff", "public", "api", "stop"

# endpoint → (kind, client permission key). Kinds: CLIENT = client area (Client role, current client's rows);
# ACCOUNT = any signed-in login's own account; STAFF = needs a staff permission; PUBLIC = no login needed;
# API = JSON API (JWT, no CSRF); STOP = only an impersonated session may call it. Keys: the decided client
# permission rule (helper notes): dashboard and switch for every linked user, the rest per page.
ROUTES = {
    "ClientDashboardView.dashboard": (CLIENT, None),
    "ClientSwitchView.switch": (CLIENT, None),
    "ClientAreaServicesView.services": (CLIENT, "manage_services"),
    "ClientAreaServicesView.service": (CLIENT, "manage_services"),
    "ClientAreaServicesView.request_termination": (CLIENT, "manage_services"),
    "ClientAreaServicesView.withdraw_termination": (CLIENT, "manage_services"),
    "ClientAreaServicesView.set_label": (CLIENT, "manage_services"),
    "ClientAreaInvoicesView.invoices": (CLIENT, "manage_invoices"),
    "ClientAreaInvoicesView.invoice": (CLIENT, "manage_invoices"),
    "ClientAreaInvoicesView.pdf": (CLIENT, "manage_invoices"),
    "ClientAreaInvoicesView.pay_test": (CLIENT, "manage_invoices"),
    "ClientAreaInvoicesView.pay_test_confirm": (CLIENT, "manage_invoices"),
    "ClientAreaTransactionsView.transactions": (CLIENT, "manage_invoices"),
    "ClientAddFundsView.add_funds": (CLIENT, "manage_invoices"),
    "ClientAddFundsView.quote": (CLIENT, "manage_invoices"),
    "ClientCompanyProfileView.profile": (CLIENT, "modify_profile"),
    "ClientCompanyProfileView.save": (CLIENT, "modify_profile"),
    "ClientCompanyProfileView.region_list": (CLIENT, "modify_profile"),
    "ClientAreaUsersView.users": (CLIENT, "manage_users"),
    "ClientAreaUsersView.invite": (CLIENT, "manage_users"),
    "ClientAreaUsersView.permissions": (CLIENT, "manage_users"),
    "ClientAreaUsersView.remove": (CLIENT, "manage_users"),
    "AccountView.account": (ACCOUNT, None),
    "AccountView.save": (ACCOUNT, None),
    "AccountView.password": (ACCOUNT, None),
    "AccountView.password_save": (ACCOUNT, None),
    "AccountView.security": (ACCOUNT, None),
    "AccountView.add_email": (ACCOUNT, None),
    "AccountView.add_totp": (ACCOUNT, None),
    "AccountView.confirm_method": (ACCOUNT, None),
    "AccountView.set_default": (ACCOUNT, None),
    "AccountView.send_code": (ACCOUNT, None),
    "AccountView.remove_method": (ACCOUNT, None),
    "AccountView.two_factor": (ACCOUNT, None),
    "AccountView.enable_2fa": (ACCOUNT, None),
    "AccountView.disable_2fa": (ACCOUNT, None),
    "AccountView.regenerate_codes": (ACCOUNT, None),
    "AccountPublicView.forgot": (PUBLIC, None),
    "AccountPublicView.reset": (PUBLIC, None),
    "UserSecurityView.users_2fa": (STAFF, None),
    "UserSecurityView.reset_2fa": (STAFF, None),
    "ImpersonationView.start": (STAFF, None),
    "ImpersonationView.start_owner": (STAFF, None),
    "ImpersonationView.stop": (STOP, None),
    "PuqAuthDBView.login": (PUBLIC, None),
    "PuqAuthDBView.two_factor": (PUBLIC, None),
    "PuqAuthDBView.two_factor_resend": (PUBLIC, None),
    "PuqAuthDBView.logout": (PUBLIC, None),
    "PuqSecurityApi.login": (API, None),
    "PuqSecurityApi.refresh": (API, None),
}

# Routes outside the sweep's scope that are not staff pages: the index redirect, FAB's utility routes, the
# gateway's server-to-server callback, the menu API (the current login's own menu).
NOT_STAFF_PAGES = {"PuqIndexView.index", "UtilView.back", "LocaleView.index", "TestGatewayView.test_callback",
                   "MenuApi.get_menu_data", "static", "appbuilder.static"}
# FAB's own model views' "/action/<name>/<pk>" and "/action_post" look the action up before any permission
# check (Flask-AppBuilder 5.3 answered an unknown name with a 500): plugin.refuse_unknown_actions makes that a
# 404, which counts as a refusal here; "/action_post" without any action is FAB's 400, a refusal too.
FAB_ACTION_ROUTE = re.compile(r"^[A-Za-z]+ModelView\.action(_post)?$")

INVALID = "Invalid login. Please try again."


@dataclass(frozen=True)
class Route:
    rule: str
    endpoint: str
    methods: frozenset
    kind: str
    key: str | None
    int_params: tuple
    str_params: tuple

    @property
    def post_only(self) -> bool:
        return "GET" not in self.methods

    def url(self, values: dict) -> str:
        """The rule filled from `values` (a parameter not named there: 1 if an integer, else "x")."""

        def value(match) -> str:
            name = match.group(1)
            return quote(str(values.get(name, 1 if name in self.int_params else "x")), safe="")

        return re.sub(r"<(?:[^:<>]+:)?([a-z_]+)>", value, self.rule)


def _view_modules(app) -> dict[str, str]:
    return {type(v).__name__: type(v).__module__ for v in app.appbuilder.baseviews}


def _route(rule, kind=None, key=None) -> Route:
    ints = tuple(n for n, c in rule._converters.items() if isinstance(c, IntegerConverter))
    strs = tuple(n for n in rule.arguments if n not in ints)
    return Route(rule.rule, rule.endpoint, frozenset(rule.methods - {"HEAD", "OPTIONS"}), kind, key, ints, strs)


def in_scope(app) -> list[Route]:
    """Every rule of the client area, account, impersonation and sign-in views (by the view's module)."""
    modules = _view_modules(app)
    routes = []
    for rule in app.url_map.iter_rules():
        module = modules.get(rule.endpoint.split(".")[0], "")
        if rule.rule.startswith("/client/") or module.startswith(SCOPE_MODULES):
            kind, key = ROUTES.get(rule.endpoint, (None, None))
            routes.append(_route(rule, kind, key))
    return sorted(routes, key=lambda r: (r.rule, r.endpoint))


def staff_routes(app) -> list[Route]:
    """Every other rule of the map: the staff screens (puqpanel's and FAB's security views) and the APIs."""
    scoped = {r.endpoint for r in in_scope(app)}
    return sorted((_route(rule) for rule in app.url_map.iter_rules()
                   if rule.endpoint not in scoped and rule.endpoint not in NOT_STAFF_PAGES
                   and not rule.endpoint.endswith(".static")),
                  key=lambda r: (r.rule, r.endpoint))


# -- the two clients -------------------------------------------------------------------------------------------------

@dataclass
class Side:
    client: object
    owner: User
    owner_link_id: int
    member: User
    member_link_id: int
    service_id: int
    proforma_id: int
    invoice_id: int
    method_id: int
    address_id: int
    markers: list = field(default_factory=list)  # texts that identify this client's data on a page

    def ids(self) -> dict[str, list[int]]:
        """This client's ids by URL parameter name (every value is tried)."""
        return {
            "client_id": [self.client.id],
            "invoice_id": [self.proforma_id, self.invoice_id],
            "service_id": [self.service_id],
            "link_id": [self.member_link_id, self.owner_link_id],
            "method_id": [self.method_id],
            "user_id": [self.owner.id, self.member.id],
            "address_id": [self.address_id],
        }


@dataclass
class World:
    a: Side
    b: Side


def _side(db, new_client, price, tag: str, company: str) -> Side:
    client = new_client(company_name=company, password=PASSWORD)
    owner = find_login(client.users[0].user.email)
    ledger.adjust(client.id, "50", f"{tag} hidden adjustment")
    service = started(client, price, dt.datetime(2026, 1, 5, 9, 0), client_label=f"{tag}-hidden-service")
    proforma = add_funds(client, "100")
    paid_proforma = add_funds(client, "200")
    invoice = payments.record_payment(paid_proforma, gateway="bank_transfer", external_id=f"{tag}-WIRE-1",
                                      amount=paid_proforma.total).invoice
    member_link, _password = create_and_associate(client, f"{tag}.member@example.com", "Mia", f"{tag}member",
                                                  ["support_tickets"], PASSWORD)
    member = find_login(f"{tag}.member@example.com")
    method = MfaMethod(user_id=owner.id, kind="totp", name=f"{tag} phone", secret="JBSWY3DPEHPK3PXP",
                       is_default=True, confirmed_at=dt.datetime(2026, 1, 1))
    db.add(method)
    db.commit()
    db.refresh(client)
    numbers = [n for n in db.scalars(select(Invoice.number).where(Invoice.client_id == client.id)) if n]
    markers = [company, f"{tag}-hidden-service", f"{tag} hidden adjustment", f"{tag}-WIRE-1", owner.email,
               member.email, f"{tag}member", *numbers]
    return Side(client=client, owner=owner, owner_link_id=client.users[0].id, member=member,
                member_link_id=member_link.id, service_id=service.id, proforma_id=proforma.id,
                invoice_id=invoice.id, method_id=method.id, address_id=client.addresses[0].id, markers=markers)


def build_world(db, eur, new_client) -> World:
    price = make_price(db, eur, "monthly", "10")
    a = _side(db, new_client, price, "alpha", "Alpha Visible GmbH")
    b = _side(db, new_client, price, "bravo", "Bravo Hidden GmbH")
    return World(a=a, b=b)


@pytest.fixture()
def world(db, eur, new_client, home):  # noqa: F811
    return build_world(db, eur, new_client)


def snapshot(db) -> dict:
    """Every row of every table but the ones a request may write without changing anything (sign-in
    throttle counters and server-side session rows), in primary-key order."""
    db.expire_all()
    skip = {"puq_auth_throttle", "puq_login_session"}
    state = {}
    for table in Model.metadata.sorted_tables:
        if table.name in skip:
            continue
        state[table.name] = [tuple(row) for row in db.execute(select(table).order_by(*table.primary_key.columns))]
    return state


def changed(before: dict, after: dict) -> list[str]:
    return [name for name in before if before[name] != after[name]]


def leaked(side: Side, html: str) -> list[str]:
    """The texts of `side`'s data present in the page (invoice numbers as whole words)."""
    found = []
    for marker in side.markers:
        if re.search(r"(?<![\w/-])" + re.escape(marker) + r"(?![\w/-])", html):
            found.append(marker)
    return found


# A POST body that would change something on every route if it were accepted.
POST_DATA = {
    "reason": "sweep", "client_label": "sweep-label", "permissions": ["manage_users", "manage_invoices"],
    "amount": "10.00", "token": "sweep-token-0123456789abcdef", "code": "123456", "name": "Sweep",
    "email": "sweep@example.com", "firstname": "Sweep", "lastname": "Sweep", "first_name": "Sweep",
    "last_name": "Sweep", "current_password": PASSWORD, "password": "Sweep-pass9!", "password_repeat":
    "Sweep-pass9!", "client_id": "1", "company_name": "Sweep Ltd",
}


def own_values(side: Side) -> dict:
    """URL values naming `side`'s own rows (first of each), plus harmless values for string parameters."""
    values = {name: ids[0] for name, ids in side.ids().items()}
    values.update(country="DE", token="not-a-token", job="charge", run_id=1, pk=1, price_id=1, name="x",
                  filename="x.csv", group_by="x", locale="en")
    return values


def combos(route: Route, side: Side):
    """Every way of filling the route's int parameters with `side`'s ids (string parameters harmless)."""
    ids = side.ids()
    base = own_values(side)
    missing = [p for p in route.int_params if p not in ids]
    assert not missing, f"{route.endpoint}: no ids for {missing}; add them to Side.ids()"
    for chosen in itertools.product(*(ids[p] for p in route.int_params)):
        yield {**base, **dict(zip(route.int_params, chosen))}


def owner_browser(make_browser, side: Side):
    return make_browser(side.owner.username)


# -- the map ---------------------------------------------------------------------------------------------------------

def test_every_route_in_scope_is_classified(app):
    routes = in_scope(app)
    endpoints = {r.endpoint for r in routes}
    assert {r.endpoint for r in routes if r.kind is None} == set(), "classify these routes in ROUTES"
    assert set(ROUTES) - endpoints == set(), "ROUTES names endpoints that no longer exist"
    # every client-area route is under /client/ and every /client/ route is a client-area route
    assert {r.endpoint for r in routes if r.rule.startswith("/client/")} == {
        e for e, (kind, _key) in ROUTES.items() if kind == CLIENT}
    for route in routes:
        assert route.key is None or route.key in CLIENT_PERMISSIONS, route.endpoint
    # the sweep covers the features it is about
    assert len([r for r in routes if r.kind == CLIENT]) >= 20
    assert len([r for r in routes if r.int_params]) >= 12


# -- another client's ids ----------------------------------------------------------------------------------------

IDOR_EXPECTED = {CLIENT: 404, ACCOUNT: 404, STAFF: 403}


def test_another_clients_ids_on_every_route_are_refused_and_change_nothing(app, db, world, make_browser):
    owner = owner_browser(make_browser, world.a)
    before = snapshot(db)
    failures, tried = [], 0
    for route in in_scope(app):
        if not route.int_params:
            continue
        expected = IDOR_EXPECTED[route.kind]
        for values in combos(route, world.b):
            url = route.url(values)
            for method in sorted(route.methods):
                tried += 1
                if method == "GET":
                    resp = owner.get(url)
                else:
                    resp = owner.post(url, POST_DATA)
                if resp.status_code != expected:
                    failures.append((method, url, resp.status_code, expected))
                elif leaked(world.b, resp.text):
                    failures.append((method, url, "shows", leaked(world.b, resp.text)))
                after = snapshot(db) if method != "GET" else before
                if changed(before, after):
                    failures.append((method, url, "changed", changed(before, after)))
                    before = after
    assert failures == [], "\n".join(map(str, failures))
    assert tried >= 25
    # a form field naming the other client: switching to it
    assert owner.post("/client/switch", {"client_id": str(world.b.client.id)}).status_code == 404
    assert changed(before, snapshot(db)) == []
    # and the owner still works on its own client
    dashboard = owner.get("/client/dashboard")
    assert dashboard.status_code == 200 and "Alpha Visible GmbH" in dashboard.text
    assert leaked(world.b, dashboard.text) == []


def test_another_clients_ids_with_a_second_client_of_the_same_login(app, db, world, make_browser):
    """A's member is also linked to B without any key: B's rows stay out of reach while A is current, and
    switching to B gives the pages of B's link (403 without the keys), never A's keys on B's rows."""
    from puqpanel.domain.client_users import associate_existing

    associate_existing(world.b.client, world.a.member.email, [])
    db.get(ClientUser, world.a.member_link_id).permissions = list(CLIENT_PERMISSIONS)
    db.commit()
    member = make_browser(world.a.member.username)
    before = snapshot(db)
    failures = []
    client_routes = [r for r in in_scope(app) if r.kind == CLIENT and r.int_params]
    for route in client_routes:
        for values in combos(route, world.b):
            for method in sorted(route.methods):
                url = route.url(values)
                resp = member.get(url) if method == "GET" else member.post(url, POST_DATA)
                if resp.status_code != 404:
                    failures.append((method, url, resp.status_code))
    # switched to B (no keys there): every keyed route is 403, B's own ids included
    assert member.post("/client/switch", {"client_id": str(world.b.client.id)}).status_code == 302
    for route in client_routes:
        if route.key is None:
            continue
        for values in combos(route, world.b):
            for method in sorted(route.methods):
                url = route.url(values)
                resp = member.get(url) if method == "GET" else member.post(url, POST_DATA)
                if resp.status_code != 403:
                    failures.append(("on B", method, url, resp.status_code))
    assert failures == [], "\n".join(map(str, failures))
    assert changed(before, snapshot(db)) == []


# -- CSRF and methods ------------------------------------------------------------------------------------------------

def test_every_post_without_csrf_token_is_400_and_changes_nothing(app, db, world, make_browser):
    owner = owner_browser(make_browser, world.a)
    other_token = owner_browser(make_browser, world.b).session_csrf_token()
    before = snapshot(db)
    failures = []
    posts = [r for r in in_scope(app) if "POST" in r.methods and r.kind != API]
    assert len(posts) >= 25
    for route in posts:
        for side in (world.a, world.b):  # own ids (only the token is missing) and the other client's
            url = route.url(own_values(side))
            resp = owner.client.post(url, data=POST_DATA)
            if resp.status_code != 400:
                failures.append((url, resp.status_code))
            # a valid token of another session (B's owner) is no token either
            resp = owner.client.post(url, data={**POST_DATA, "csrf_token": other_token})
            if resp.status_code != 400:
                failures.append(("other session's token", url, resp.status_code))
    assert failures == [], "\n".join(map(str, failures))
    assert changed(before, snapshot(db)) == []
    # the owner is still signed in: the refusals were not a logout
    assert owner.get("/client/dashboard").status_code == 200


def test_every_post_only_route_refuses_get(app, db, world, make_browser):
    owner = owner_browser(make_browser, world.a)
    anonymous = make_browser()
    before = snapshot(db)
    failures = []
    post_only = [r for r in in_scope(app) if r.post_only]
    assert len(post_only) >= 20
    for route in post_only:
        for who in (owner, anonymous):
            resp = who.get(route.url(own_values(world.a)))
            if resp.status_code != 405:
                failures.append((route.rule, resp.status_code))
    assert failures == [], "\n".join(map(str, failures))
    assert changed(before, snapshot(db)) == []


# -- client permission keys ------------------------------------------------------------------------------------------

def test_every_keyed_route_is_403_without_its_key_and_hidden(app, db, world, make_browser):
    routes = [r for r in in_scope(app) if r.kind == CLIENT]
    keys = sorted({r.key for r in routes if r.key})
    assert set(keys) >= {"manage_services", "manage_invoices", "modify_profile", "manage_users"}
    nav_urls = {}
    with app.test_request_context():
        from flask import url_for

        from puqpanel.views.client_area import NAV

        for _name, endpoint, _label, key in NAV:
            nav_urls.setdefault(key, []).append(url_for(endpoint))
    failures = []
    for n, missing in enumerate(keys):
        email = f"lacks{n}@example.com"
        create_and_associate(world.a.client, email, "Lacks", missing, [k for k in CLIENT_PERMISSIONS if k != missing],
                             PASSWORD)
        user = make_browser(email)
        before = snapshot(db)
        values = own_values(world.a)
        for route in routes:
            url = route.url(values)
            for method in sorted(route.methods):
                if method != "GET" and route.key != missing:
                    continue  # a state change it may make: not this test's business
                resp = user.get(url) if method == "GET" else user.post(url, POST_DATA)
                if route.key == missing and resp.status_code != 403:
                    failures.append((missing, method, url, resp.status_code))
                if route.key != missing and method == "GET" and resp.status_code in (403, 404):
                    failures.append(("reachable with its key", missing, url, resp.status_code))
        assert changed(before, snapshot(db)) == [], missing
        dashboard = user.get("/client/dashboard").text
        for url in nav_urls.get(missing, []):
            if f'href="{url}' in dashboard:
                failures.append(("link shown", missing, url))
    # the member with none of these keys: only the dashboard and the switcher
    member = make_browser(world.a.member.username)
    for route in routes:
        if route.key is None or "GET" not in route.methods:
            continue
        resp = member.get(route.url(own_values(world.a)))
        if resp.status_code != 403:
            failures.append(("member", route.rule, resp.status_code))
    assert failures == [], "\n".join(map(str, failures))


# -- injection text in query parameters ------------------------------------------------------------------------------

PAYLOADS = ["' OR 1=1 --", "1; DROP TABLE puq_client", "{{7*7}}", "${7*7}", "{{7*1919}}", "${7*1919}", "%", "_", "\\",
            "x" * 5000, "²", "٣", "99999999999999999999", "\x00", "<script>alert(1)</script>"]
NEUTRAL = "7*7"  # the baseline value: a page echoing "{{7*7}}" literally shows no more "49" than with this
BASE_PARAMS = ("q", "search", "sort", "dir", "order", "status", "tab", "type", "date_from", "date_to", "page",
               "per_page", "amount", "next", "client_id")
_TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')
_NONCE = re.compile(r'nonce="[^"]*"')


def _stable(html: str) -> str:
    """The page without what differs on every request (CSRF tokens, script nonces)."""
    for match in _TOKEN.finditer(html):
        html = html.replace(match.group(1) or match.group(2), "TOKEN")
    return _NONCE.sub('nonce=""', html)


def offered_params(html: str, path: str) -> set[str]:
    """The query parameters a page offers: keys of its links back to itself and names in its GET forms."""
    params = set()
    for href in re.findall(r'href="([^"]*)"', html):
        href = href.replace("&amp;", "&")
        if href.split("?")[0] == path and "?" in href:
            params |= set(re.findall(r"(?:^|&)([A-Za-z_]+)=", href.split("?", 1)[1]))
    for form in re.findall(r"<form\b[^>]*>.*?</form>", html, re.S | re.I):
        if re.search(r'method="post"', form, re.I):
            continue
        params |= set(re.findall(r'name="([A-Za-z_]+)"', form))
    return params - {"csrf_token"}


def _check_page(resp, baseline, world, what, failures) -> None:
    if resp.status_code >= 500:
        failures.append((what, resp.status_code))
        return
    text = resp.get_data(as_text=True)
    if "13433" in text:
        failures.append((what, "template evaluated 7*1919"))
    # Counting "49" against the baseline would also count times and amounts of rows a payload happens to match
    # ("_" matches every row): 7*1919 = 13433 (above) is the evaluation check; "49" only where the baseline
    # had none and the page echoes no payload text at all.
    if "49" in _stable(text) and "49" not in _stable(baseline) and "7*7" not in text:
        failures.append((what, "'49' appears: template evaluated 7*7?"))
    if leaked(world.b, text):
        failures.append((what, "shows B", leaked(world.b, text)))


def test_injection_text_in_every_query_parameter(app, db, world, staff, make_browser):
    owner = owner_browser(make_browser, world.a)
    admin = make_browser("admin")
    anonymous = make_browser()
    before = snapshot(db)
    failures = []
    pages = [r for r in in_scope(app) if "GET" in r.methods and not r.int_params and r.kind != API
             and r.endpoint != "PuqAuthDBView.logout"]
    with_params = 0
    for route in pages:
        who = {STAFF: admin, PUBLIC: anonymous}.get(route.kind, owner)
        values = own_values(world.a)
        path = route.url(values)
        first = who.get(path)
        assert first.status_code < 500, path
        if route.kind in (CLIENT, ACCOUNT, STAFF):
            assert first.status_code in (200, 400), path  # 400: the add-funds quote without an amount
        offered = offered_params(first.get_data(as_text=True), path)
        with_params += bool(offered)
        # every parameter at once, then each offered one alone
        sets = [tuple(sorted(set(BASE_PARAMS) | offered))] + [(p,) for p in sorted(offered)]
        for names in sets:
            baseline = who.get(path, query_string={n: NEUTRAL for n in names}).get_data(as_text=True)
            for payload in PAYLOADS:
                resp = who.get(path, query_string={n: payload for n in names})
                _check_page(resp, baseline, world, (path, names, payload[:30]), failures)
        # string path parameters take the payloads too
        for name in route.str_params:
            for payload in PAYLOADS:
                resp = who.get(route.url({**values, name: payload}))
                if resp.status_code >= 500:
                    failures.append((route.rule, name, payload[:30], resp.status_code))
    assert failures == [], "\n".join(map(str, failures))
    assert with_params >= 4  # the client area's lists and the staff 2FA list offer parameters
    assert changed(before, snapshot(db)) == []
    # the tables are all still there
    assert owner.get("/client/invoices/").status_code == 200


# -- skipping the second step ----------------------------------------------------------------------------------------

T1 = dt.datetime(2030, 1, 1, 12, 3, 15)


def _pending_browser(make_browser, username: str):
    browser = make_browser()
    resp = submit_login(browser, username)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login/2fa")
    return browser


def _to_login(resp) -> bool:
    return resp.status_code == 302 and "/login/" in resp.headers.get("Location", "")


def test_a_login_stopped_at_the_second_step_reaches_no_page_of_the_map(app, db, world, staff, make_browser):
    enable_totp(db, world.a.owner)
    enable_totp(db, staff["admin"])
    before = snapshot(db)
    failures = []
    with clock.frozen_at(T1):
        for username in (world.a.owner.username, "admin"):
            browser = _pending_browser(make_browser, username)
            for route in in_scope(app) + staff_routes(app):
                url = route.url(own_values(world.a))
                if route.kind in (CLIENT, ACCOUNT, STAFF) or route.kind is None:
                    for method in sorted(route.methods):
                        if method == "GET":
                            resp = browser.get(url)
                        elif method == "POST":
                            resp = browser.post(url, POST_DATA)
                        else:
                            resp = browser.client.open(url, method=method, json={})
                        refused = (_to_login(resp) or (url.startswith("/api/") and resp.status_code == 401)
                                   or (FAB_ACTION_ROUTE.match(route.endpoint) and resp.status_code in (400, 404)))
                        if not refused:
                            failures.append((username, method, url, resp.status_code))
                elif route.kind == STOP:
                    if browser.post(url).status_code != 404:
                        failures.append((username, "stop", url))
                elif route.kind == PUBLIC and "GET" in route.methods and route.endpoint != "PuqAuthDBView.logout":
                    if browser.get(url).status_code >= 500:
                        failures.append((username, "public", url))
            state = session_of(browser)
            if "_user_id" in state or "puq_2fa_pending" not in state:
                failures.append((username, "session", sorted(state)))
            # no API token without the code, whatever "otp" holds
            for otp in (None, "", "   ", 0, 123456, ["123456"], {"code": "1"}, True):
                body = {} if otp is None else {"otp": otp}
                resp = api_login(app.test_client(), username, refresh=True, **body)
                if resp.status_code != 401 or "access_token" in (resp.json or {}):
                    failures.append((username, "api", otp, resp.status_code))
    assert failures == [], "\n".join(map(str, failures))
    assert changed(before, snapshot(db)) == []
    assert db.scalar(select(func.count()).select_from(LoginSession)) == 0


# -- the JSON API with a client login's tokens ----------------------------------------------------------------------

def test_a_client_logins_api_tokens_open_no_api_route_of_the_map(app, db, world):
    api = app.test_client()
    tokens = api_login(api, world.a.owner.username, refresh=True).json
    access = {"Authorization": f"Bearer {tokens['access_token']}"}
    refresh = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    before = snapshot(db)
    failures = []
    routes = [r for r in staff_routes(app) if r.rule.startswith("/api/")]
    assert len(routes) >= 30
    for route in routes:
        for side in (world.a, world.b):
            url = route.url(own_values(side))
            for method in sorted(route.methods):
                body = {"name": "sweep", "username": "sweep", "email": "sweep@example.com", "roles": [1],
                        "permissions": [1], "first_name": "S", "last_name": "S", "password": "Sweep-pass9!"}
                resp = api.open(url, method=method, json=body, headers=access)
                if resp.status_code != 403:
                    failures.append((method, url, resp.status_code))
                # a refresh token is no access token
                resp = api.open(url, method=method, json=body, headers=refresh)
                if resp.status_code not in (401, 422):
                    failures.append(("refresh token", method, url, resp.status_code))
    assert failures == [], "\n".join(map(str, failures))
    assert changed(before, snapshot(db)) == []


# -- the 6th wrong password ------------------------------------------------------------------------------------------

def test_sixth_wrong_password_gives_the_same_page_for_known_and_unknown_names(db, world, staff, make_browser):
    answers = {}
    with clock.frozen_at(T1):
        for name in (world.a.owner.username, "nobody@example.com", "support", "nobody"):
            browser = make_browser()
            seen = []
            for _ in range(6):
                resp = submit_login(browser, name, "Wrong-pass1!")
                follow = browser.get(resp.headers["Location"]) if resp.status_code == 302 else None
                seen.append((resp.status_code, resp.headers.get("Location"), _stable(resp.get_data(as_text=True)),
                             _stable(follow.get_data(as_text=True)) if follow else None))
            answers[name] = seen
    known_client, unknown_email, known_staff, unknown_name = answers.values()
    assert [a[0] for a in known_client] == [302] * 5 + [429]
    assert known_client == unknown_email, "a client login's answers differ from an unknown address's"
    assert known_staff == unknown_name, "a staff login's answers differ from an unknown name's"
    assert INVALID in known_client[0][3]
    # even the right password is refused now, with that same page
    with clock.frozen_at(T1):
        browser = make_browser()
        locked = submit_login(browser, world.a.owner.username, PASSWORD)
    assert (locked.status_code, _stable(locked.get_data(as_text=True))) == known_client[5][0:3:2]
    assert "_user_id" not in session_of(browser)


# -- TOTP replay across the login form, the API and the account pages ------------------------------------------------

def _secret_from(html: str) -> str:
    match = re.search(r'id="totp-secret"[^>]*>([A-Z2-7]+)<', html)
    assert match, "no TOTP secret on the page"
    return match.group(1)


def test_a_totp_code_is_used_once_across_form_api_and_account_pages(app, db, world, make_browser):
    owner = owner_browser(make_browser, world.a)
    db.execute(MfaMethod.__table__.delete().where(MfaMethod.user_id == world.a.owner.id))
    db.commit()
    steps = [T1 + dt.timedelta(seconds=30 * i) for i in range(8)]
    with clock.frozen_at(steps[0]):
        assert owner.post_form("/account/security/totp", {"name": "Phone"}, form_url="/account/security"
                               ).status_code == 302
        page = owner.get("/account/security").text
        secret = _secret_from(page)
        confirm = re.search(r'action="(/account/security/methods/[0-9]+/confirm)"', page).group(1)
        used_to_confirm = code_at(secret, steps[0])
        assert owner.post_form(confirm, {"code": used_to_confirm}, form_url="/account/security").status_code == 302
        # the code that confirmed the method does not switch 2FA on
        refused = owner.post_form("/account/security/2fa/enable", {"code": used_to_confirm},
                                  form_url="/account/security/2fa")
        assert refused.status_code == 400
    with clock.frozen_at(steps[1]):
        used_to_enable = code_at(secret, steps[1])
        enabled = owner.post_form("/account/security/2fa/enable", {"code": used_to_enable},
                                  form_url="/account/security/2fa")
        assert enabled.status_code == 200 and db.get(UserSecurity, world.a.owner.id).two_factor_enabled
        owner.get("/logout/")
        # the code that switched 2FA on does not sign in, neither on the form nor on the API
        submit_login(owner, world.a.owner.username)
        assert post_code(owner, used_to_enable).status_code == 400
        resp = api_login(app.test_client(), world.a.owner.username, otp=used_to_enable)
        assert resp.status_code == 401 and "access_token" not in resp.json
    with clock.frozen_at(steps[2]):
        form_code = code_at(secret, steps[2])
        assert post_code(owner, form_code).status_code == 302
        assert session_of(owner)["_user_id"] == str(world.a.owner.id)
        # the code that signed in on the form gives no API token and does not switch 2FA off
        resp = api_login(app.test_client(), world.a.owner.username, otp=form_code)
        assert resp.status_code == 401 and "access_token" not in resp.json
        off = owner.post_form("/account/security/2fa/disable", {"code": form_code}, form_url="/account/security/2fa")
        assert off.status_code == 400
        db.expire_all()
        assert db.get(UserSecurity, world.a.owner.id).two_factor_enabled
    with clock.frozen_at(steps[3]):
        api_code = code_at(secret, steps[3])
        assert api_login(app.test_client(), world.a.owner.username, otp=api_code).status_code == 200
        # the API's code does not sign in on the form
        other = make_browser()
        submit_login(other, world.a.owner.username)
        assert post_code(other, api_code).status_code == 400
        assert "_user_id" not in session_of(other)
    # an older step's code (outside the window) is refused too
    with clock.frozen_at(steps[6]):
        assert post_code(other, code_at(secret, steps[4])).status_code == 400


# -- impersonation abuse ---------------------------------------------------------------------------------------------

def _impersonation_rows(db) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(ActivityLog).where(ActivityLog.action.like("impersonation.%")))


def test_impersonation_routes_refuse_clients_and_staff_without_the_permission(app, db, world, staff, make_browser):
    starts = [r for r in in_scope(app) if r.endpoint.startswith("ImpersonationView.") and r.kind == STAFF]
    assert len(starts) >= 2
    failures = []
    browsers = {"client owner": (owner_browser(make_browser, world.a), world.a.owner.id, 403),
                "member": (make_browser(world.a.member.username), world.a.member.id, 403),
                "billing": (make_browser("billing"), staff["billing"].id, 403),
                "manager1": (make_browser("manager1"), staff["manager1"].id, 403)}
    for who, (browser, user_id, expected) in browsers.items():
        for route in starts:
            for side in (world.a, world.b):
                for values in combos(route, side):
                    url = route.url(values)
                    resp = browser.post(url, {"reason": "sweep"})
                    if resp.status_code != expected:
                        failures.append((who, url, resp.status_code))
        if browser.post("/impersonate/stop").status_code != 404:
            failures.append((who, "stop"))
        if session_of(browser).get("_user_id") != str(user_id) or "puq_impersonator_id" in session_of(browser):
            failures.append((who, "session changed"))
    assert failures == [], "\n".join(map(str, failures))
    assert _impersonation_rows(db) == 0


def _impersonate(make_browser, world, staff_name="support"):
    browser = make_browser(staff_name)
    resp = browser.post(f"/impersonate/{world.a.client.id}/owner", {"reason": "sweep"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/client/dashboard")
    return browser


def test_while_impersonating_no_staff_page_and_no_account_change(app, db, world, staff, make_browser):
    browser = _impersonate(make_browser, world)
    before = snapshot(db)
    failures = []
    values = own_values(world.a)
    pages = staff_routes(app) + [r for r in in_scope(app) if r.kind == STAFF]
    assert len(pages) >= 60
    for route in pages:
        url = route.url(values)
        for method in sorted(route.methods):
            if method == "GET":
                resp = browser.get(url)
            elif method == "POST":
                resp = browser.post(url, POST_DATA)
            else:
                resp = browser.client.open(url, method=method, json={})
            refused = (resp.status_code == 403 or (url.startswith("/api/") and resp.status_code == 401)
                       or (FAB_ACTION_ROUTE.match(route.endpoint) and resp.status_code in (400, 404)))
            if not refused:
                failures.append((method, url, resp.status_code))
    for route in in_scope(app):
        if route.kind == ACCOUNT and "POST" in route.methods:
            url = route.url({**values, "method_id": world.a.method_id})
            resp = browser.post(url, POST_DATA)
            if resp.status_code != 403:
                failures.append(("account", url, resp.status_code))
    assert failures == [], "\n".join(map(str, failures))
    assert changed(before, snapshot(db)) == []
    # still the impersonated client session, with its banner
    state = session_of(browser)
    assert state["puq_impersonator_id"] == staff["support"].id and state["_user_id"] == str(world.a.owner.id)
    page = browser.get("/client/dashboard")
    assert page.status_code == 200 and "You are signed in as" in page.text


def test_forged_session_keys_give_no_identity_and_no_other_client(app, db, world, staff, make_browser):
    # a client session claiming to be impersonated by the admin: logged out, "stop" does not make it the admin
    owner = owner_browser(make_browser, world.a)
    token = owner.session_csrf_token()
    with owner.client.session_transaction() as sess:
        sess["puq_impersonator_id"] = staff["admin"].id
        sess["puq_impersonation_client_id"] = world.b.client.id
    resp = owner.client.post("/impersonate/stop", data={"csrf_token": token})
    assert resp.status_code in (302, 400, 404) and "/clients/" not in resp.headers.get("Location", "")
    assert session_of(owner).get("_user_id") not in (str(staff["admin"].id), str(world.a.owner.id))
    assert owner.get("/clients/").status_code == 302
    # an impersonating staff user who rewrites the impersonator to the admin: logged out, never the admin
    support = _impersonate(make_browser, world)
    token = support.session_csrf_token()
    with support.client.session_transaction() as sess:
        sess["puq_impersonator_id"] = staff["admin"].id
    resp = support.client.post("/impersonate/stop", data={"csrf_token": token})
    assert resp.status_code in (302, 400, 404)
    assert session_of(support).get("_user_id") != str(staff["admin"].id)
    assert support.get("/clients/").status_code == 302
    # a session naming another login (B's owner) over A's session id: logged out
    owner = owner_browser(make_browser, world.a)
    with owner.client.session_transaction() as sess:
        sess["_user_id"] = str(world.b.owner.id)
    resp = owner.get("/client/dashboard")
    assert _to_login(resp)
    # the current-client key set to B: the pages stay A's
    owner = owner_browser(make_browser, world.a)
    with owner.client.session_transaction() as sess:
        sess["puq_client_id"] = world.b.client.id
    for url in ("/client/dashboard", "/client/invoices/", "/client/services/", "/client/transactions/",
                "/client/users/", "/client/profile/", f"/client/invoices/{world.a.invoice_id}"):
        page = owner.get(url)
        assert page.status_code == 200, url
        assert leaked(world.b, page.text) == [], url
    assert owner.get(f"/client/invoices/{world.b.invoice_id}").status_code == 404
    # impersonation start/stop keys without an impersonator: no impersonation, "stop" is 404
    owner = owner_browser(make_browser, world.a)
    with owner.client.session_transaction() as sess:
        sess["puq_impersonation_client_id"] = world.b.client.id
        sess["puq_impersonation_started"] = "2000-01-01T00:00:00"
    assert owner.post("/impersonate/stop").status_code == 404
    assert "You are signed in as" not in owner.get("/client/dashboard").text
    assert session_of(owner)["_user_id"] == str(world.a.owner.id)
    # nothing of all this was an impersonation
    db.expire_all()
    starts = db.scalar(select(func.count()).select_from(ActivityLog).where(ActivityLog.action == "impersonation.start"))
    stops = db.scalars(select(ActivityLog).where(ActivityLog.action == "impersonation.stop")).all()
    assert starts == 1  # the one real start by support
    assert all(s.client_id == world.a.client.id for s in stops)
