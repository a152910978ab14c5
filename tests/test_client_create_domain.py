"""create_client: validation with the field libraries, one transaction, nothing written on error."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from puqpanel.domain import DomainError
from puqpanel.domain.clients import NewClient, create_client
from puqpanel.models import ActivityLog, Client, ClientAddress, ClientUser, User


def _new(**kw) -> NewClient:
    base = dict(email="Anna@Example.com", firstname="Anna", lastname="Schmidt", address1="Hauptstr. 1",
                city="Berlin", country="DE", region="DE-BE", phone="030 1234567", tax_id="DE136695976",
                company_name="Schmidt GmbH")
    base.update(kw)
    return NewClient(**base)


def test_create_client_writes_client_owner_billing_address_and_log(app, db, eur):
    client, password = create_client(_new())
    assert len(password) >= 12
    assert client.phone == "+49301234567"
    assert client.tax_id == "DE136695976"
    assert client.currency.code == "EUR"
    assert [a.type for a in client.addresses] == ["billing"]
    owner = client.users[0]
    assert owner.is_owner and owner.user.email == "anna@example.com" and owner.user.roles[0].name == "Client"
    log = db.scalar(select(ActivityLog).where(ActivityLog.client_id == client.id))
    assert log.action == "client.create"


@pytest.mark.parametrize(
    "override, field",
    [
        ({"tax_id": "DE123"}, "tax_id"),
        ({"phone": "12"}, "phone"),
        ({"email": "not-an-email"}, "email"),
        ({"country": "XX"}, "country"),
        ({"region": "FR-75"}, "region"),
        ({"firstname": ""}, "firstname"),
        ({"status": "bogus"}, "status"),
        ({"password": "abc"}, "password"),
    ],
)
def test_invalid_input_writes_nothing(app, db, eur, override, field):
    with pytest.raises(DomainError) as exc:
        create_client(_new(**override))
    assert field in exc.value.errors
    assert db.scalar(select(func.count()).select_from(Client)) == 0
    assert db.scalar(select(func.count()).select_from(ClientAddress)) == 0
    assert db.scalar(select(func.count()).select_from(User)) == 0


def test_tax_id_unique_and_email_unique(app, db, eur):
    create_client(_new())
    with pytest.raises(DomainError) as exc:
        create_client(_new(email="other@example.com"))
    assert "tax_id" in exc.value.errors
    with pytest.raises(DomainError) as exc:
        create_client(_new(tax_id="", email="anna@example.com"))
    assert "email" in exc.value.errors
    assert db.scalar(select(func.count()).select_from(ClientUser)) == 1


def test_vat_without_prefix_and_foreign_tax_ids(app, db, eur):
    client, _ = create_client(_new(tax_id="136695976"))
    assert client.tax_id == "DE136695976"
    ca, _ = create_client(_new(email="ca@example.com", country="CA", region="CA-QC", phone="+1 514 555 0100",
                               tax_id="123456782"))
    assert ca.tax_id == "123456782"


def test_names_longer_than_the_login_columns_are_field_errors(app, db, eur):
    with pytest.raises(DomainError) as exc:
        create_client(_new(firstname="A" * 65, email=("x" * 120) + "@example.com"))
    assert set(exc.value.errors) >= {"firstname", "email"}
    assert db.scalar(select(func.count()).select_from(User)) == 0


def test_owner_email_equal_to_a_staff_username_is_refused(app, db, eur):
    from conftest import make_user

    make_user("ops@example.com", "Support", email="ops-mail@staff.example.com")
    with pytest.raises(DomainError) as exc:
        create_client(_new(email="OPS@example.com"))
    assert "email" in exc.value.errors
    assert db.scalar(select(func.count()).select_from(Client)) == 0


def test_unknown_tag_and_oversized_ids_are_field_errors(app, db, eur):
    for override, field in [({"tag_ids": [999]}, "tag_ids"), ({"tag_ids": [2**40]}, "tag_ids"),
                            ({"group_id": 2**40}, "group_id")]:
        with pytest.raises(DomainError) as exc:
            create_client(_new(**override))
        assert field in exc.value.errors
