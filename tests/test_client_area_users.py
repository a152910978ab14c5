"""Client area: Users (manage_users): list, invite, permissions, removal, and the refusals each must get."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select
from conftest import PASSWORD, csrf_token, make_user
from test_client_area_profile import link_login

from puqpanel.models import ActivityLog, ClientUser, EmailOutbox, User, UserSecurity

USERS = "/client/users/"
INVITE = "/client/users/invite"
ANSWER = "If the address can be invited, an invitation has been sent."


def perms_url(link_id: int) -> str:
    return f"/client/users/{link_id}/permissions"


def remove_url(link_id: int) -> str:
    return f"/client/users/{link_id}/remove"


def links_of(db, client) -> dict[str, ClientUser]:
    db.expire_all()
    rows = db.scalars(select(ClientUser).where(ClientUser.client_id == client.id)).unique()
    return {row.user.email: row for row in rows}


def outbox(db) -> list[EmailOutbox]:
    db.expire_all()
    return list(db.scalars(select(EmailOutbox).order_by(EmailOutbox.id)))


def actions(db, client) -> list[str]:
    db.expire_all()
    return list(db.scalars(select(ActivityLog.action).where(ActivityLog.client_id == client.id)
                           .order_by(ActivityLog.id)))


def flashed(browser) -> str:
    return browser.get(USERS).text


@pytest.fixture()
def owner(new_client, make_browser):
    client = new_client(company_name="Schmidt GmbH", password=PASSWORD)
    return client, make_browser("owner1@example.com")


def test_list_shows_linked_logins_with_owner_permissions_and_2fa(db, owner):
    client, browser = owner
    link = link_login(client, "helper@example.com", ["manage_services", "manage_invoices"])
    db.scalar(select(UserSecurity).where(UserSecurity.user_id == link.user_id)).two_factor_enabled = True
    db.commit()
    page = browser.get(USERS)
    assert page.status_code == 200
    text = page.text
    assert "owner1@example.com" in text and "helper@example.com" in text
    assert "Owner" in text and "All permissions" in text
    assert "Manage Services, Manage Invoices" in text
    helper_row = text[text.index('data-link-id="%d"' % link.id):]
    assert ">On<" in helper_row[:helper_row.index("</tr>")]
    owner_row = text[text.index("owner1@example.com"):]
    assert ">Off<" in owner_row[:owner_row.index("</tr>")]
    # Owner's row has no actions; the helper's has Remove and its permission form.
    assert f'action="{remove_url(link.id)}"' in text and f'action="{perms_url(link.id)}"' in text
    owner_link = links_of(db, client)["owner1@example.com"]
    assert remove_url(owner_link.id) not in text and perms_url(owner_link.id) not in text


def test_invite_a_new_email_creates_a_client_login_links_it_and_mails_it(app, db, owner):
    client, browser = owner
    resp = browser.post_form(INVITE, {"email": "New.Person@Example.com", "firstname": "Nina", "lastname": "Neu",
                                      "permissions": ["manage_services", "manage_invoices"]}, form_url=USERS)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(USERS)
    assert ANSWER in flashed(browser)
    link = links_of(db, client)["new.person@example.com"]
    assert (link.is_owner, link.permissions) == (False, ["manage_services", "manage_invoices"])
    user = link.user
    assert (user.username, user.first_name, user.last_name) == ("new.person@example.com", "Nina", "Neu")
    assert [r.name for r in user.roles] == ["Client"]
    assert db.scalar(select(UserSecurity.is_client_login).where(UserSecurity.user_id == user.id)) is True
    [message] = outbox(db)
    assert (message.to_address, message.kind, message.client_id) == ("new.person@example.com", "user_invite", client.id)
    expected = "http://localhost:8080/account/forgot"  # PUQPANEL_PUBLIC_URL (billing.settings) + the reset page
    assert expected in message.body and "Schmidt GmbH" in message.body
    assert "client_user.invite" in actions(db, client)


def test_invitation_links_use_the_configured_address_never_the_request_host(app, db, owner, new_client,
                                                                           make_browser, monkeypatch):
    new_client()  # owner2@example.com
    monkeypatch.setitem(app.config, "PUQPANEL_PUBLIC_URL", "https://panel.example.com")
    forged, evil = make_browser().client, "http://evil.example"  # every request with a forged Host
    page = forged.get("/login/", base_url=evil)
    forged.post("/login/", base_url=evil, data={"username": "owner1@example.com", "password": PASSWORD,
                                                "csrf_token": csrf_token(page.text)})
    for email in ("fresh@example.com", "owner2@example.com"):
        page = forged.get(USERS, base_url=evil)
        resp = forged.post(INVITE, base_url=evil, data={"email": email, "csrf_token": csrf_token(page.text)})
        assert resp.status_code == 302
    mails = outbox(db)
    assert len(mails) == 2
    for mail in mails:
        assert "evil.example" not in mail.body and "https://panel.example.com/" in mail.body, mail.body


def test_invite_an_existing_client_login_links_it_and_tells_it(db, owner, new_client):
    client, browser = owner
    other = new_client(company_name="Other AG")  # its owner: owner2@example.com
    resp = browser.post_form(INVITE, {"email": "OWNER2@example.com", "permissions": ["manage_services"]},
                             form_url=USERS)
    assert resp.status_code == 302 and ANSWER in flashed(browser)
    link = links_of(db, client)["owner2@example.com"]
    assert link.permissions == ["manage_services"] and not link.is_owner
    assert links_of(db, other)["owner2@example.com"].is_owner  # its own client is untouched
    [message] = outbox(db)
    assert message.to_address == "owner2@example.com" and "/login/" in message.body
    assert "Schmidt GmbH" in message.body
    assert db.scalar(select(func.count(User.id)).where(User.username == "owner2@example.com")) == 1
    assert actions(db, client)[-1] == "client_user.link"


def test_invite_a_staff_email_does_nothing_and_answers_the_same(db, owner):
    client, browser = owner
    make_user("carol", "Admin", email="carol@example.com")
    users_before = db.scalar(select(func.count(User.id)))
    resp = browser.post_form(INVITE, {"email": "Carol@Example.com", "permissions": ["manage_users"]}, form_url=USERS)
    assert resp.status_code == 302 and ANSWER in flashed(browser)
    assert set(links_of(db, client)) == {"owner1@example.com"}
    assert outbox(db) == [] and db.scalar(select(func.count(User.id))) == users_before
    assert not any(a.startswith("client_user") for a in actions(db, client))


def test_the_answer_is_the_same_for_unknown_client_and_staff_emails(db, owner, new_client):
    client, browser = owner
    new_client()  # owner2@example.com
    make_user("dave", "Support", email="dave@example.com")
    answers = []
    for email in ("nobody@example.com", "owner2@example.com", "dave@example.com"):
        resp = browser.post_form(INVITE, {"email": email, "permissions": []}, form_url=USERS)
        answers.append((resp.status_code, resp.headers.get("Location"), resp.data))
        page = browser.get(USERS).text
        answers[-1] += (page.count(ANSWER), "alert-info" in page)
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == 302 and answers[0][3] == 1


def test_inviting_a_login_already_linked_is_a_clear_error(db, owner):
    client, browser = owner
    link_login(client, "helper@example.com", [])
    for email in ("helper@example.com", "owner1@example.com"):
        resp = browser.post_form(INVITE, {"email": email, "permissions": ["manage_services"]}, form_url=USERS)
        assert resp.status_code == 400 and "already linked" in resp.text
    assert links_of(db, client)["helper@example.com"].permissions == []
    assert outbox(db) == []


@pytest.mark.parametrize("data, message", [
    ({"email": "not-an-email", "permissions": []}, "valid email"),
    ({"email": "x@example.com", "permissions": ["is_admin"]}, "Unknown permission"),
    ({"email": "x@example.com", "firstname": "n" * 65, "permissions": []}, "At most 64"),
])
def test_invalid_invitations_are_400_and_write_nothing(db, owner, data, message):
    client, browser = owner
    users_before = db.scalar(select(func.count(User.id)))
    resp = browser.post_form(INVITE, data, form_url=USERS)
    assert resp.status_code == 400 and message in resp.text
    assert db.scalar(select(func.count(User.id))) == users_before and outbox(db) == []
    assert set(links_of(db, client)) == {"owner1@example.com"}


def test_set_permissions_of_a_non_owner_and_remove_it(db, owner):
    client, browser = owner
    link = link_login(client, "helper@example.com", ["manage_services"])
    resp = browser.post_form(perms_url(link.id), {"permissions": ["manage_invoices", "support_tickets"]},
                             form_url=USERS)
    assert resp.status_code == 302 and "Permissions saved." in flashed(browser)
    assert links_of(db, client)["helper@example.com"].permissions == ["manage_invoices", "support_tickets"]
    entry = db.scalars(select(ActivityLog).where(ActivityLog.action == "client_user.update")).one()
    assert entry.changes == {"permissions": [["manage_services"], ["manage_invoices", "support_tickets"]]}
    resp = browser.post_form(remove_url(link.id), {}, form_url=USERS)
    assert resp.status_code == 302 and "User removed." in flashed(browser)
    assert set(links_of(db, client)) == {"owner1@example.com"}
    assert db.scalar(select(User).where(User.username == "helper@example.com")) is not None  # the login stays
    assert actions(db, client)[-1] == "client_user.unlink"


def test_unknown_keys_are_refused_on_set_permissions(db, owner):
    client, browser = owner
    link = link_login(client, "helper@example.com", ["manage_services"])
    resp = browser.post_form(perms_url(link.id), {"permissions": ["manage_services", "superuser"]}, form_url=USERS)
    assert resp.status_code == 400 and "Unknown permission" in resp.text
    assert links_of(db, client)["helper@example.com"].permissions == ["manage_services"]


def test_the_owner_is_never_changed_nor_removed(db, owner, make_browser):
    client, browser = owner
    owner_link = links_of(db, client)["owner1@example.com"]
    manager = link_login(client, "manager@example.com", ["manage_users"])
    other = make_browser("manager@example.com")
    for b in (browser, other):
        resp = b.post(remove_url(owner_link.id))
        assert resp.status_code == 400
        resp = b.post(perms_url(owner_link.id), {"permissions": []})
        assert resp.status_code == 400
    owner_link = links_of(db, client)["owner1@example.com"]
    assert owner_link.is_owner and manager.id in {link.id for link in links_of(db, client).values()}


def test_a_user_manager_cannot_change_or_remove_its_own_link(db, owner, make_browser):
    client, _browser = owner
    manager = link_login(client, "manager@example.com", ["manage_users", "manage_services"])
    browser = make_browser("manager@example.com")
    page = browser.get(USERS).text
    assert perms_url(manager.id) not in page and remove_url(manager.id) not in page
    resp = browser.post(perms_url(manager.id), {"permissions": ["manage_users", "manage_services"]})
    assert resp.status_code == 400 and "your own access" in resp.text
    resp = browser.post(remove_url(manager.id))
    assert resp.status_code == 400
    link = links_of(db, client)["manager@example.com"]
    assert link.permissions == ["manage_users", "manage_services"]


def test_a_non_owner_grants_only_keys_it_holds_but_may_take_any_away(db, owner, make_browser):
    client, _browser = owner
    link_login(client, "manager@example.com", ["manage_users", "manage_services"])
    target = link_login(client, "helper@example.com", ["manage_invoices"])
    browser = make_browser("manager@example.com")
    # Granting manage_invoices (which the manager lacks) to someone new is refused; so is inviting with it.
    resp = browser.post(perms_url(target.id), {"permissions": ["manage_invoices", "manage_services",
                                                                "modify_profile"]})
    assert resp.status_code == 400 and "permissions you hold yourself" in resp.text
    assert links_of(db, client)["helper@example.com"].permissions == ["manage_invoices"]
    resp = browser.post(INVITE, {"email": "sock@example.com", "permissions": ["manage_invoices"]})
    assert resp.status_code == 400 and "permissions you hold yourself" in resp.text
    assert "sock@example.com" not in links_of(db, client) and outbox(db) == []
    # Keeping a key it lacks, and adding one it holds, is fine (the form posts kept keys as hidden inputs).
    page = browser.get(USERS).text
    assert '<input type="hidden" name="permissions" value="manage_invoices">' in page
    resp = browser.post(perms_url(target.id), {"permissions": ["manage_invoices", "manage_services"]})
    assert resp.status_code == 302
    assert links_of(db, client)["helper@example.com"].permissions == ["manage_services", "manage_invoices"]
    # Taking away a key it lacks is allowed (less access, never more).
    resp = browser.post(perms_url(target.id), {"permissions": ["manage_services"]})
    assert resp.status_code == 302
    assert links_of(db, client)["helper@example.com"].permissions == ["manage_services"]


def test_another_clients_link_is_404_and_unchanged(db, owner, new_client):
    client, browser = owner
    other = new_client(company_name="Other AG")
    foreign = link_login(other, "foreign@example.com", ["manage_services"])
    other_owner = links_of(db, other)["owner2@example.com"]
    for link_id in (foreign.id, other_owner.id, 2**31 - 1):
        assert browser.post(perms_url(link_id), {"permissions": ["manage_invoices"]}).status_code == 404
        assert browser.post(remove_url(link_id)).status_code == 404
    assert browser.post(perms_url(2**31)).status_code == 404  # beyond any id: the route refuses it
    links = links_of(db, other)
    assert links["foreign@example.com"].permissions == ["manage_services"] and links["owner2@example.com"].is_owner
    assert not any(a.startswith("client_user.") and a != "client_user.create" for a in actions(db, other))


def test_without_manage_users_every_users_route_is_403_and_the_nav_hides_it(db, owner, make_browser):
    client, _browser = owner
    target = link_login(client, "helper@example.com", ["manage_services"])
    link_login(client, "editor@example.com", ["modify_profile", "manage_services"])
    browser = make_browser("editor@example.com")
    assert browser.get(USERS).status_code == 403
    assert browser.post(INVITE, {"email": "x@example.com", "permissions": []}).status_code == 403
    assert browser.post(perms_url(target.id), {"permissions": ["manage_users"]}).status_code == 403
    assert browser.post(remove_url(target.id)).status_code == 403
    assert links_of(db, client)["helper@example.com"].permissions == ["manage_services"]
    assert "x@example.com" not in links_of(db, client) and outbox(db) == []
    profile = browser.get("/client/profile/")
    assert profile.status_code == 200 and USERS not in profile.text and "/client/profile/" in profile.text


def test_posts_without_csrf_are_400_and_gets_are_405(db, owner):
    client, browser = owner
    target = link_login(client, "helper@example.com", ["manage_services"])
    raw = browser.client
    assert raw.post(INVITE, data={"email": "x@example.com"}).status_code == 400
    assert raw.post(perms_url(target.id), data={"permissions": "manage_users"}).status_code == 400
    assert raw.post(remove_url(target.id)).status_code == 400
    for url in (INVITE, perms_url(target.id), remove_url(target.id)):
        assert browser.get(url).status_code == 405
    assert set(links_of(db, client)) == {"owner1@example.com", "helper@example.com"}
    assert links_of(db, client)["helper@example.com"].permissions == ["manage_services"]


def test_injection_in_invited_names_is_stored_verbatim_and_escaped(db, owner):
    client, browser = owner
    evil = "<img src=x onerror=alert(1)>{{7*7}}"
    resp = browser.post_form(INVITE, {"email": "evil@example.com", "firstname": evil[:64], "permissions": []},
                             form_url=USERS)
    assert resp.status_code == 302
    user = links_of(db, client)["evil@example.com"].user
    assert user.first_name == evil
    page = browser.get(USERS).text
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;{{7*7}}" in page


def test_a_removed_user_loses_the_client_at_once(db, owner, make_browser):
    client, browser = owner
    link = link_login(client, "helper@example.com", ["manage_services"])
    helper = make_browser("helper@example.com")
    assert helper.get("/client/profile/").status_code == 403  # linked, without the key
    browser.post_form(remove_url(link.id), {}, form_url=USERS)
    assert helper.get("/client/profile/").status_code == 404  # no link left: no client area
    assert helper.get(USERS).status_code == 404


def test_staff_cannot_use_the_client_users_routes(db, owner, make_browser, staff):
    client, _browser = owner
    target = link_login(client, "helper@example.com", ["manage_services"])
    for name in ("admin", "support"):
        browser = make_browser(name)
        assert browser.get(USERS).status_code in (403, 404)
        assert browser.post(remove_url(target.id)).status_code in (403, 404)
    assert "helper@example.com" in links_of(db, client)


def test_users_page_queries_do_not_grow_with_linked_logins(db, owner):
    from sqlalchemy import event

    client, browser = owner

    def statements() -> int:
        seen = []
        listener = lambda *a: seen.append(a[2])  # noqa: E731
        event.listen(db.get_bind(), "before_cursor_execute", listener)
        try:
            assert browser.get(USERS).status_code == 200
        finally:
            event.remove(db.get_bind(), "before_cursor_execute", listener)
        return len(seen)

    link_login(client, "first@example.com", ["manage_services"])
    few = statements()
    for i in range(6):
        link = link_login(client, f"more{i}@example.com", ["manage_services", "manage_invoices"])
        db.scalar(select(UserSecurity).where(UserSecurity.user_id == link.user_id)).two_factor_enabled = i % 2 == 0
    db.commit()
    assert statements() == few
