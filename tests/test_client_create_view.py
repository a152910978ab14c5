"""Create-client screen: form, one transaction, field errors, generated password shown once, CSRF."""
from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from puqpanel.models import (
    ActivityLog,
    Client,
    ClientAddress,
    ClientGroup,
    ClientUser,
    Currency,
    Tag,
    User,
)


def form_data(currency: Currency, **kw) -> dict:
    data = {
        "currency_id": str(currency.id),
        "email": "Marta@Example.com", "password": "", "firstname": "Marta", "lastname": "Kowalska",
        "company_name": "Kowalska Hosting", "tax_id": "PL5260250274", "phone": "22 123 45 67", "language": "pl",
        "status": "active", "group_id": "", "manager_id": "", "address1": "ul. Marszałkowska 1", "address2": "",
        "city": "Warszawa", "postcode": "00-001", "country": "PL", "region": "PL-14",
    }
    data.update(kw)
    return data


def counts(db) -> tuple[int, int, int, int]:
    return tuple(
        db.scalar(select(func.count()).select_from(model)) for model in (Client, ClientAddress, ClientUser, ActivityLog)
    )


def test_form_offers_currencies_languages_groups_tags_staff_managers_countries(
    app, db, staff, browser, eur, new_client
):
    db.add_all([Currency(code="USD", prefix="$"), ClientGroup(name="Wholesale"), Tag(name="reseller")])
    db.commit()
    new_client(email="login@client-example.com")
    browser.login("admin")
    html = browser.get("/clients/add").text
    assert 'id="create-client"' in html and 'name="csrf_token"' in html
    for text in ("EUR", "USD", "Polski", "Wholesale", "reseller", "Germany", "Manager1 Staff (manager1)",
                 "Support Staff (support)", "Owner email", "State / Region", "Billing address"):
        assert text in html, text
    assert "login@client-example.com" not in html  # client logins are not staff: never offered as a manager
    currency = re.search(r'<select[^>]*name="currency_id".*?</select>', html, re.S).group(0)
    assert re.search(r'<option selected value="%d">EUR' % eur.id, currency)  # the default currency


def test_valid_post_creates_client_address_owner_and_shows_password_once(app, db, staff, browser, eur):
    group = ClientGroup(name="Wholesale")
    tag = Tag(name="reseller")
    db.add_all([group, tag])
    db.commit()
    browser.login("admin")
    resp = browser.post_form(
        "/clients/add",
        form_data(eur, group_id=str(group.id), manager_id=str(staff["manager1"].id), tag_ids=[str(tag.id)]),
    )
    assert resp.status_code == 200, resp.text[:2000]
    client = db.scalar(select(Client))
    assert (client.firstname, client.lastname, client.company_name) == ("Marta", "Kowalska", "Kowalska Hosting")
    assert client.phone == "+48221234567" and client.tax_id == "PL5260250274" and client.language == "pl"
    assert client.status == "active" and client.currency_id == eur.id and client.group_id == group.id
    assert client.manager_id == staff["manager1"].id and [t.name for t in client.tags] == ["reseller"]
    [address] = client.addresses
    assert (address.type, address.city, address.country, address.region) == ("billing", "Warszawa", "PL", "PL-14")
    [link] = client.users
    assert link.is_owner and link.user.email == "marta@example.com"
    assert counts(db) == (1, 1, 1, 1)

    # The response itself is the "Client created" page: the generated password, once, and the record link.
    page = resp.text
    assert "Client Marta Kowalska created." in page and "marta@example.com" in page
    assert re.search(rf'<a [^>]*href="/clients/{client.id}"[^>]*>.*Open client record</a>', page)
    assert resp.headers["Cache-Control"] == "no-store"
    match = re.search(r'<code class="puq-generated-password">([^<]+)</code>', page)
    assert match, "generated password not shown"
    password = html.unescape(match.group(1))
    assert len(password) >= 12
    assert check_password_hash(link.user.password, password)

    # It never reaches the session cookie (a flash would put it there), and no later page shows it.
    for value in session_cookies(resp) + [browser.client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value]:
        session = app.session_interface.get_signing_serializer(app).loads(value)
        assert password not in repr(session) and match.group(1) not in repr(session), session
        assert "_flashes" not in session
    for url in ("/clients/", f"/clients/{client.id}", "/clients/add"):
        later = browser.get(url).text
        assert password not in later and match.group(1) not in later and "puq-generated-password" not in later, url


def session_cookies(resp) -> list[str]:
    """Values of the session cookies a response sets."""
    values = []
    for header in resp.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == "session":
            values.append(rest.split(";", 1)[0])
    return values


def test_given_password_is_used_and_not_displayed(app, db, staff, browser, eur):
    browser.login("admin")
    resp = browser.post_form("/clients/add", form_data(eur, password="Chosen-pass1"))
    assert resp.status_code == 200
    user = db.scalar(select(User).where(User.email == "marta@example.com"))
    assert check_password_hash(user.password, "Chosen-pass1")
    assert "Client Marta Kowalska created." in resp.text and "Open client record" in resp.text
    assert "Chosen-pass1" not in resp.text and "puq-generated-password" not in resp.text
    for value in session_cookies(resp):
        assert "Chosen-pass1" not in repr(app.session_interface.get_signing_serializer(app).loads(value))


@pytest.mark.parametrize(
    "override, field, message",
    [
        ({"tax_id": "PL1234567890"}, "tax_id", "This is not a valid VAT number for PL."),
        ({"phone": "12"}, "phone", "Enter a valid phone number with its country code"),
        ({"region": "DE-BE"}, "region", "Choose a region of the selected country."),
        ({"lastname": ""}, "lastname", "This field is required."),
        ({"email": "not-an-email"}, "email", "Enter a valid email address"),
        ({"country": "ZZ", "region": ""}, "country", "Choose a valid country."),
        ({"password": "abc"}, "password", "At least 6 characters"),
        ({"status": "bogus"}, "status", "Not a valid choice"),
        ({"currency_id": "abc"}, "currency_id", "Invalid Choice"),
        ({"group_id": "999"}, "group_id", "Not a valid choice"),
    ],
)
def test_invalid_input_shows_field_error_and_writes_nothing(app, db, staff, browser, eur, override, field, message):
    browser.login("admin")
    resp = browser.post_form("/clients/add", form_data(eur, **override))
    assert resp.status_code == 200
    errors = re.findall(r'<span class="help-block puq-field-error" data-field="(\w+)">([^<]*)</span>', resp.text)
    assert any(name == field and message in text for name, text in errors), errors
    assert "Nothing was saved." in resp.text
    assert 'value="Kowalska Hosting"' in resp.text  # the form keeps what was typed
    assert counts(db) == (0, 0, 0, 0)
    assert db.scalar(select(func.count()).select_from(User).where(User.email == "marta@example.com")) == 0


def test_several_errors_at_once(app, db, staff, browser, eur):
    browser.login("admin")
    resp = browser.post_form("/clients/add", form_data(eur, tax_id="PL1", phone="1", firstname="", city=""))
    fields = set(re.findall(r'data-field="(\w+)"', resp.text))
    assert {"tax_id", "phone", "firstname", "city"} <= fields
    assert counts(db) == (0, 0, 0, 0)


def test_duplicate_email_is_a_field_error(app, db, staff, browser, eur, new_client):
    new_client(email="marta@example.com")
    browser.login("admin")
    resp = browser.post_form("/clients/add", form_data(eur, tax_id=""))
    assert resp.status_code == 200
    assert 'data-field="email">A user with this email already exists.' in resp.text
    assert db.scalar(select(func.count()).select_from(Client)) == 1


def test_post_without_csrf_token_is_refused(app, db, staff, browser, eur):
    browser.login("admin")
    resp = browser.client.post("/clients/add", data=form_data(eur))
    assert resp.status_code == 400
    resp = browser.client.post("/clients/add", data=dict(form_data(eur), csrf_token="forged"))
    assert resp.status_code == 400
    assert counts(db) == (0, 0, 0, 0)


def test_manager_creates_clients_it_manages(app, db, staff, make_browser, eur):
    manager1 = make_browser("manager1")
    html = manager1.get("/clients/add").text
    manager_select = re.search(r'<select[^>]*name="manager_id".*?</select>', html, re.S).group(0)
    assert re.findall(r'<option[^>]*value="(\d+)"', manager_select) == [str(staff["manager1"].id)]
    # whatever manager is posted, a Manager-role user creates clients it manages itself
    resp = manager1.post_form("/clients/add", form_data(eur, manager_id=str(staff["manager2"].id)))
    assert resp.status_code == 200 and "Client Marta Kowalska created." in resp.text
    client = db.scalar(select(Client))
    assert client.manager_id == staff["manager1"].id
    assert "marta@example.com" in manager1.get("/clients/").text
    assert "marta@example.com" not in make_browser("manager2").get("/clients/").text


def test_regions_endpoint(app, db, staff, make_browser):
    billing = make_browser("billing")
    resp = billing.get("/clients/regions/PL")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    data = resp.json
    assert set(data) == {"country", "regions"} and data["country"] == "PL"
    assert all(set(r) == {"code", "name"} for r in data["regions"])
    assert {"code": "PL-14", "name": "Mazowieckie"} in data["regions"]
    assert billing.get("/clients/regions/pl").json["country"] == "PL"
    assert billing.get("/clients/regions/LI").json["regions"]  # small countries too
    assert billing.get("/clients/regions/AQ").json["regions"] == []  # no subdivisions
    assert billing.get("/clients/regions/nope").status_code == 404
    # ISO data, not client data: whoever may view client records (Support has can_show, not can_add) reads it
    support = make_browser("support")
    assert support.get("/clients/regions/PL").json == data
    assert make_browser().get("/clients/regions/PL").status_code == 302


def test_create_form_uses_the_shared_region_script(app, db, staff, browser, eur):
    browser.login("admin")
    page = browser.get("/clients/add").text
    country = re.search(r'<select[^>]*name="country"[^>]*>', page).group(0)
    region = re.search(r'<select[^>]*name="region"[^>]*>', page).group(0)
    assert "puq-country" in country and 'data-regions-url="/clients/regions/XX"' in country
    assert "puq-region" in region
    assert '<script src="/static/puqpanel/regions.js"' in page
    script = browser.get("/static/puqpanel/regions.js")
    assert script.status_code == 200 and "select.puq-country[data-regions-url]" in script.text
