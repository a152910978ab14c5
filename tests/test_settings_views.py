"""Client groups, tags and custom field definitions in their own FAB screens."""
from __future__ import annotations

from sqlalchemy import select

from puqpanel.models import ClientGroup, CustomField, Tag


def test_admin_manages_groups_and_tags_with_colour_badges(browser, staff, db):
    browser.login("admin")
    resp = browser.post_form("/clientgroupview/add", {"name": "Enterprise", "color": "#1a2b3c", "description": "Big"})
    assert resp.status_code == 302
    resp = browser.post_form("/tagview/add", {"name": "VIP", "color": "#ff0000"})
    assert resp.status_code == 302
    assert db.scalar(select(ClientGroup.color).where(ClientGroup.name == "Enterprise")) == "#1a2b3c"
    assert db.scalar(select(Tag.name)) == "VIP"
    page = browser.get("/clientgroupview/list/").text
    assert 'style="background-color:#1a2b3c"' in page and "Enterprise" in page


def test_bad_colour_and_bad_regex_are_form_errors(browser, staff, db):
    browser.login("admin")
    resp = browser.post_form("/clientgroupview/add", {"name": "X", "color": "red;}"})
    assert resp.status_code == 200 and "#1a2b3c" in resp.text  # the message shows the expected format
    resp = browser.post_form("/customfieldview/add", {"name": "Code", "field_type": "text", "regex": "([a-z"})
    assert resp.status_code == 200 and "Not a valid regular expression" in resp.text
    resp = browser.post_form("/customfieldview/add", {"name": "Plan", "field_type": "select", "options": ""})
    assert resp.status_code == 200 and "at least one option" in resp.text
    assert db.scalar(select(ClientGroup.id)) is None and db.scalar(select(CustomField.id)) is None


def test_support_reads_groups_but_cannot_change_them(make_browser, staff):
    support = make_browser("support")
    assert support.get("/clientgroupview/list/").status_code == 200
    assert support.get("/clientgroupview/add").status_code == 403
    assert support.get("/customfieldview/list/").status_code == 403


def test_optional_custom_field_with_unticked_boxes_can_be_created(browser, staff, db):
    browser.login("admin")
    resp = browser.post_form("/customfieldview/add", {"name": "Notes for NOC", "field_type": "text",
                                                      "sort_order": "3"})
    assert resp.status_code == 302, resp.text[-2000:]
    field = db.scalar(select(CustomField))
    assert (field.required, field.client_visible, field.regex, field.description) == (False, False, "", "")
    resp = browser.post_form("/customfieldview/add", {"name": "Plan", "field_type": "select",
                                                      "options": "Basic\nPro", "required": "y", "sort_order": "1"})
    assert resp.status_code == 302
    assert db.scalar(select(CustomField).where(CustomField.name == "Plan")).option_list == ["Basic", "Pro"]


def test_fab_raw_arguments_are_checked(db, staff, browser):
    """FAB passes raw path ids and page arguments to the database: out-of-range ids are 404, bad page
    arguments 400 — never a 500 (PostgreSQL refused them)."""
    browser.login(staff["admin"])
    for view in ("clientgroupview", "tagview", "customfieldview"):
        assert browser.get(f"/{view}/show/99999999999").status_code == 404
        assert browser.get(f"/{view}/edit/abc").status_code == 404
        assert browser.get(f"/{view}/list/?page_{view.replace('view', '')}=abc").status_code in (200, 400)
        assert browser.get(f"/{view}/list/?psize_x=-5&page_x=abc").status_code == 400
