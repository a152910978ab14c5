"""Client area: a login linked to several clients switches between them (POST /client/switch); the session
value is re-checked against the login's links on every request."""
from __future__ import annotations

import re

import pytest
from conftest import PASSWORD
from flask import url_for
from sqlalchemy import select

from puqpanel.domain.client_users import associate_existing, unlink
from puqpanel.models import CLIENT_PERMISSIONS, Client, ClientUser
from puqpanel.views.client_area import NAV, SESSION_CLIENT

SWITCH = "/client/switch"
PROFILE = "/client/profile/"


@pytest.fixture()
def two_clients(new_client, make_browser):
    """owner1 owns Alpha GmbH and is linked to Beta BV (owned by owner2) with every permission."""
    alpha = new_client(company_name="Alpha GmbH", password=PASSWORD)
    beta = new_client(company_name="Beta BV", country="NL", region="", city="Amsterdam", phone="",
                      address1="Damrak 1")
    associate_existing(beta, "owner1@example.com", list(CLIENT_PERMISSIONS))
    return alpha, beta, make_browser("owner1@example.com")


def heading(html: str) -> str:
    """The client named in the client area's header (h2), whitespace-normalised."""
    match = re.search(r"<h2[^>]*>(.*?)<small>#(\d+)</small>", html, re.S)
    assert match, "no client heading"
    return f"{' '.join(match.group(1).split())} #{match.group(2)}"


def selected_client(html: str) -> str:
    match = re.search(r'<option value="(\d+)"\s*selected>', html)
    assert match, "no selected client in the switcher"
    return match.group(1)


def area_urls(app) -> list[str]:
    """Every client-area page of the navigation that is registered."""
    with app.test_request_context():
        return [url_for(endpoint) for _key, endpoint, _label, _perm in NAV if endpoint in app.view_functions]


def test_switching_makes_every_page_show_the_chosen_client(app, db, two_clients):
    alpha, beta, browser = two_clients
    page = browser.get(PROFILE).text
    assert heading(page) == f"Alpha GmbH #{alpha.id}" and 'value="Alpha GmbH"' in page
    assert selected_client(page) == str(alpha.id)
    resp = browser.post_form(SWITCH, {"client_id": str(beta.id)}, form_url=PROFILE)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/client/dashboard")
    urls = area_urls(app)
    assert PROFILE in urls and "/client/users/" in urls
    for url in urls:
        page = browser.get(url)
        assert page.status_code == 200, url
        assert heading(page.text) == f"Beta BV #{beta.id}", url
        assert selected_client(page.text) == str(beta.id), url
    profile = browser.get(PROFILE).text
    assert 'value="Beta BV"' in profile and 'value="Amsterdam"' in profile and 'value="Alpha GmbH"' not in profile
    users = browser.get("/client/users/").text
    assert "owner2@example.com" in users  # Beta's owner, not on Alpha's list
    # A save now changes Beta, never Alpha.
    resp = browser.post_form("/client/profile/save", {"firstname": "Bea", "lastname": "Boer", "language": "en",
                                                      "billing_address1": "Damrak 1", "billing_city": "Amsterdam",
                                                      "billing_country": "NL"}, form_url=PROFILE)
    assert resp.status_code == 302
    db.expire_all()
    assert db.get(Client, beta.id).firstname == "Bea" and db.get(Client, alpha.id).firstname == "Anna"
    # And back.
    browser.post_form(SWITCH, {"client_id": str(alpha.id)}, form_url=PROFILE)
    assert heading(browser.get(PROFILE).text) == f"Alpha GmbH #{alpha.id}"


def test_a_client_the_login_is_not_linked_to_is_404_and_the_current_client_stays(db, two_clients, new_client):
    alpha, beta, browser = two_clients
    gamma = new_client(company_name="Gamma SA")
    browser.post_form(SWITCH, {"client_id": str(beta.id)}, form_url=PROFILE)
    for value in (str(gamma.id), "abc", "", "-1", str(2**31), "99999", f"{beta.id} ", "²", "١"):
        resp = browser.post_form(SWITCH, {"client_id": value}, form_url=PROFILE)
        assert resp.status_code == 404, value
    with browser.client.session_transaction() as sess:
        assert sess[SESSION_CLIENT] == beta.id
    page = browser.get(PROFILE).text
    assert heading(page) == f"Beta BV #{beta.id}" and "Gamma SA" not in page


def test_a_forged_session_value_falls_back_to_the_users_first_client(db, two_clients, new_client):
    alpha, beta, browser = two_clients
    gamma = new_client(company_name="Gamma SA")
    browser.post_form(SWITCH, {"client_id": str(beta.id)}, form_url=PROFILE)
    for forged in (gamma.id, str(gamma.id), "x", None, [beta.id]):
        with browser.client.session_transaction() as sess:
            sess[SESSION_CLIENT] = forged
        page = browser.get(PROFILE)
        assert page.status_code == 200
        # The first link (the owned client) — never Gamma.
        assert heading(page.text) == f"Alpha GmbH #{alpha.id}", forged
        assert "Gamma SA" not in page.text
        users = browser.get("/client/users/").text
        assert "owner3@example.com" not in users  # Gamma's owner
    # Gamma's rows stay untouched by a save made with the forged value.
    with browser.client.session_transaction() as sess:
        sess[SESSION_CLIENT] = gamma.id
    browser.post("/client/profile/save", {"firstname": "Forged", "lastname": "X", "language": "en",
                                          "billing_address1": "a", "billing_city": "b", "billing_country": "DE"})
    db.expire_all()
    assert db.get(Client, gamma.id).firstname == "Anna" and db.get(Client, alpha.id).firstname == "Forged"


def test_the_chosen_clients_link_decides_the_permissions(db, new_client, make_browser):
    alpha = new_client(company_name="Alpha GmbH", password=PASSWORD)
    beta = new_client(company_name="Beta BV")
    associate_existing(beta, "owner1@example.com", ["manage_services"])
    browser = make_browser("owner1@example.com")
    assert browser.get("/client/users/").status_code == 200  # owner of Alpha
    browser.post_form(SWITCH, {"client_id": str(beta.id)}, form_url=PROFILE)
    assert browser.get("/client/users/").status_code == 403
    assert browser.get(PROFILE).status_code == 403
    dashboard = browser.get("/client/dashboard")
    assert dashboard.status_code == 200 and heading(dashboard.text) == f"Beta BV #{beta.id}"
    assert "/client/users/" not in dashboard.text and PROFILE not in dashboard.text


def test_unlinked_from_the_current_client_the_user_falls_back(db, two_clients):
    alpha, beta, browser = two_clients
    browser.post_form(SWITCH, {"client_id": str(beta.id)}, form_url=PROFILE)
    link = db.scalar(select(ClientUser).where(ClientUser.client_id == beta.id, ClientUser.is_owner.is_(False)))
    unlink(beta, link.id)
    page = browser.get(PROFILE)
    assert page.status_code == 200 and heading(page.text) == f"Alpha GmbH #{alpha.id}"
    assert 'id="puq-switch-client"' not in page.text  # one client left: no switcher


def test_switch_needs_csrf_and_post(db, two_clients):
    alpha, beta, browser = two_clients
    assert browser.client.post(SWITCH, data={"client_id": str(beta.id)}).status_code == 400
    assert browser.get(SWITCH).status_code == 405
    assert heading(browser.get(PROFILE).text) == f"Alpha GmbH #{alpha.id}"
