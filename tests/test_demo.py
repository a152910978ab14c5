"""`puqpanel demo`: realistic, valid, idempotent demo data."""
from __future__ import annotations

from decimal import Decimal

import phonenumbers
import pytest
from sqlalchemy import func, select

from puqpanel.domain.demo import (
    CANADA_TAXES,
    EU_VAT_RATES,
    NAMES,
    PLACES,
    TAX_CATEGORIES,
    DemoError,
    demo_email,
    load_demo,
)
from puqpanel.domain.validation import normalize_tax_id, regions
from puqpanel.models import (
    CLIENT_PERMISSIONS,
    CLIENT_STATUSES,
    ActivityLog,
    Client,
    ClientAddress,
    ClientNote,
    ClientUser,
    Currency,
    CustomField,
    CustomFieldValue,
    HomeCompany,
    TaxRule,
    User,
)


def _counts(db) -> dict[str, int]:
    models = (Client, ClientAddress, ClientUser, ClientNote, CustomFieldValue, Currency, HomeCompany, TaxRule,
              CustomField, User, ActivityLog)
    return {m.__name__: db.scalar(select(func.count()).select_from(m)) for m in models}


def test_demo_data_is_complete_valid_and_idempotent(app, db):
    summary = load_demo(client_count=30, progress=False)
    assert summary["clients"] == 30 and summary["new clients"] == 30
    assert summary["currencies"] == 5
    assert {"manager.anna password", "manager.bob password"} <= set(summary)

    clients = db.scalars(select(Client)).unique().all()
    assert len(clients) == 30
    assert {c.status for c in clients} == set(CLIENT_STATUSES)
    assert any(c.blocked and c.blocked_reason for c in clients)
    assert all(c.blocked for c in clients if c.status == "fraud")
    assert {c.currency.code for c in clients} >= {"EUR", "CAD"}
    for client in clients:
        billing = [a for a in client.addresses if a.type == "billing"]
        assert len(billing) == 1, client
        owners = [cu for cu in client.users if cu.is_owner]
        assert len(owners) == 1 and owners[0].user.email.endswith("@puqpanel-demo.example.com")
        assert billing[0].region in {code for code, _ in regions(billing[0].country)}
        assert phonenumbers.is_valid_number(phonenumbers.parse(client.phone))
        if client.tax_id:
            assert normalize_tax_id(client.tax_id, billing[0].country) == client.tax_id
    countries = {c.billing_address.country for c in clients}
    assert "CA" in countries and len(countries & set(EU_VAT_RATES)) >= 3
    assert any(c.tax_id for c in clients)
    assert any(c.manager is not None and c.manager.username == "manager.anna" for c in clients)

    # extra addresses, additional users with a subset of the permission keys, notes, custom fields
    assert db.scalar(select(func.count()).select_from(ClientAddress).where(ClientAddress.type != "billing")) > 0
    extra = db.scalars(select(ClientUser).where(ClientUser.is_owner.is_(False))).all()
    assert extra and all(set(cu.permissions) < set(CLIENT_PERMISSIONS) for cu in extra)
    links_per_login = db.execute(select(ClientUser.user_id, func.count()).group_by(ClientUser.user_id)).all()
    assert any(n > 1 for _, n in links_per_login)  # some logins serve several clients
    assert db.scalar(select(func.count()).select_from(ClientNote).where(ClientNote.sticky.is_(True))) > 0
    fields = {f.name: f for f in db.scalars(select(CustomField))}
    assert {f.field_type for f in fields.values()} == {"text", "number", "select", "bool", "date"}
    assert fields["Account code"].required and fields["Account code"].regex
    assert any(f.client_visible for f in fields.values()) and any(not f.client_visible for f in fields.values())
    code_values = db.scalars(
        select(CustomFieldValue.value).where(CustomFieldValue.field_id == fields["Account code"].id)
    ).all()
    assert len(code_values) == 30
    # every client was created through the domain, so each has its creation in the activity log
    assert db.scalar(
        select(func.count()).select_from(ActivityLog).where(ActivityLog.action == "client.create")
    ) == 30

    # tax rules: every EU member state for every category, every Canadian province / territory
    rules = {(r.category, r.country, r.region): r for r in db.scalars(select(TaxRule))}
    assert len(EU_VAT_RATES) == 27
    for country, rate in EU_VAT_RATES.items():
        for category in TAX_CATEGORIES:
            assert rules[(category, country, "")].tax1_rate == Decimal(rate)
    assert {code for code, _ in regions("CA")} == set(CANADA_TAXES)
    for region in CANADA_TAXES:
        assert ("", "CA", region) in rules
    quebec = rules[("", "CA", "CA-QC")]
    assert (quebec.tax1_name, str(quebec.tax1_rate), quebec.tax2_name, str(quebec.tax2_rate)) == (
        "GST", "5.0000", "QST", "9.9750")
    assert rules[("", "CA", "CA-ON")].tax1_name == "HST" and str(rules[("", "CA", "CA-ON")].tax1_rate) == "13.0000"
    assert rules[("private", "DE", "")].home_company.country == "DE"
    assert rules[("", "CA", "CA-AB")].home_company.country == "CA"

    # idempotent: a second run adds nothing and prints no passwords again
    before = _counts(db)
    again = load_demo(client_count=30, progress=False)
    assert _counts(db) == before
    assert again["new clients"] == 0 and "manager.anna password" not in again

    # top-up: the first clients stay as they were, new ones are added
    first = db.scalar(select(Client).join(ClientUser).join(User).where(User.email == demo_email(1)))
    snapshot = (first.firstname, first.lastname, first.tax_id, first.phone)
    assert load_demo(client_count=33, progress=False)["new clients"] == 3
    db.expire_all()
    assert (first.firstname, first.lastname, first.tax_id, first.phone) == snapshot
    assert db.scalar(select(func.count()).select_from(Client)) == 33


def test_demo_city_table_uses_valid_regions():
    for country, place in PLACES.items():
        assert country in NAMES
        codes = {code for code, _ in regions(country)}
        for city, region, _postcode in place["cities"]:
            assert region in codes, (country, city, region)


def test_demo_requires_roles(app, db):
    role = app.appbuilder.sm.find_role("Client")
    role.name = "Client (renamed by test)"
    db.commit()
    try:
        with pytest.raises(DemoError, match="puqpanel init"):
            load_demo(client_count=1, progress=False)
        assert db.scalar(select(func.count()).select_from(Client)) == 0
    finally:
        db.rollback()
        role.name = "Client"
        db.commit()


def test_demo_cli_command(app, db):
    from puqpanel.cli import demo_command

    runner = app.test_cli_runner()
    result = runner.invoke(demo_command, ["--clients", "4"])
    assert result.exit_code == 0, result.output
    assert "Demo data ready" in result.output and "clients 4" in result.output
    assert "manager.anna password" in result.output
    assert db.scalar(select(func.count()).select_from(Client)) == 4
    again = runner.invoke(demo_command, ["--clients", "4"])
    assert again.exit_code == 0 and "new clients 0" in again.output
    assert "manager.anna password" not in again.output
