"""Payment gateways: the registry, bank-transfer instructions, and the test gateway's signed callback over
real HTTP requests to the app (no login, no CSRF token) and its hosted pay page."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from decimal import Decimal

import pytest
from sqlalchemy import select

from puqpanel.billing import clock, invoicing
from puqpanel.billing.gateways import (
    BankTransferGateway,
    GatewayError,
    TestGateway,
    available_gateways,
    get_gateway,
)
from puqpanel.billing.gateways.test_gateway import SIGNATURE_HEADER
from puqpanel.domain import DomainError
from puqpanel.models import ActivityLog, Client, Invoice, Payment, Transaction

from test_invoicing import NOW, add_funds, billing_client, count, frozen, home  # noqa: F401

D = Decimal
CALLBACK = "/billing/gateways/test/callback"
gateway = TestGateway()


def state(db):
    db.expire_all()
    return (count(db, Payment), count(db, Transaction), count(db, ActivityLog),
            sorted((i.id, i.status, i.amount_paid) for i in db.scalars(select(Invoice))))


def post(app, body: bytes, signature: str | None = "sign"):
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        signature = gateway.sign(body)
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    with app.test_client() as http:
        return http.post(CALLBACK, data=body, headers=headers)


@pytest.fixture()
def proforma(billing_client):
    return add_funds(billing_client, "100")  # total 123.00


# -- registry ----------------------------------------------------------------------------------------------
def test_registry_follows_the_setting(app, db, monkeypatch):
    assert [g.name for g in available_gateways()] == ["bank_transfer", "test"]
    assert isinstance(get_gateway("bank_transfer"), BankTransferGateway)
    assert get_gateway("test").manual is False and get_gateway("bank_transfer").manual is True
    with pytest.raises(DomainError) as exc:
        get_gateway("paypal")
    assert set(exc.value.errors) == {"gateway"}
    monkeypatch.setitem(app.config, "PUQPANEL_GATEWAYS", ("bank_transfer", "unknown"))
    assert [g.name for g in available_gateways()] == ["bank_transfer"]
    with pytest.raises(DomainError):
        get_gateway("test")


def test_bank_transfer_instructions_name_the_bank_details_and_the_proforma_number(db, proforma, home):
    lines = dict(get_gateway("bank_transfer").instructions(proforma))
    assert lines["Reference"] == "PF-2026-00001"
    assert lines["Bank details"] == home.bank_details
    assert lines["Beneficiary"] == "PUQ Cloud Sp. z o.o."
    assert lines["Amount"] == "€123.00"


# -- signing -----------------------------------------------------------------------------------------------
def test_signature_is_hmac_sha256_of_the_raw_body(app, db, monkeypatch):
    body = b'{"a":1}'
    derived = hmac.new(app.secret_key.encode(), b"puqpanel-test-gateway", hashlib.sha256).digest()
    assert gateway.sign(body) == hmac.new(derived, body, hashlib.sha256).hexdigest()
    monkeypatch.setitem(app.config, "PUQPANEL_TEST_GATEWAY_SECRET", "s3cret")
    assert gateway.sign(body) == hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert gateway.sign(body.decode()) == gateway.sign(body)


def test_payload_holds_invoice_amount_transaction_timestamp_and_nonce(db, proforma):
    data = json.loads(gateway.build_payload(proforma, D("12.30"), "T-1"))
    assert data == {"invoice_id": proforma.id, "amount": "12.30", "currency": "EUR", "transaction_id": "T-1",
                    "timestamp": int(NOW.replace(tzinfo=dt.timezone.utc).timestamp()), "nonce": data["nonce"]}
    assert len(data["nonce"]) >= 8
    assert json.loads(gateway.build_payload(proforma, D("1")))["nonce"] != data["nonce"]


# -- callback ----------------------------------------------------------------------------------------------
def test_signed_callback_for_the_full_amount_pays_the_proforma(app, db, proforma, billing_client):
    resp = post(app, gateway.build_payload(proforma, D("123.00"), "GW-1"))
    assert resp.status_code == 200, resp.text
    answer = resp.get_json()
    db.expire_all()
    invoice = db.get(Invoice, answer["invoice_id"])
    assert answer["status"] == "recorded" and answer["invoice_type"] == "invoice" and answer["invoice_status"] == "paid"
    assert invoice.proforma_id == proforma.id and invoice.number == answer["invoice_number"] == "INV-2026-00001"
    assert db.get(Invoice, proforma.id).status == "invoiced"
    payment = db.get(Payment, answer["payment_id"])
    assert (payment.gateway, payment.external_id, payment.amount, payment.net) == (
        "test", "GW-1", D("123.00"), D("100.00"))
    assert payment.paid_at == NOW
    assert db.get(Client, billing_client.id).balance == D("100.0000")


def test_partial_callback_leaves_the_proforma_unpaid(app, db, proforma):
    resp = post(app, gateway.build_payload(proforma, D("23.00"), "GW-P"))
    assert resp.status_code == 200 and resp.get_json()["invoice_status"] == "unpaid"
    db.expire_all()
    assert db.get(Invoice, proforma.id).outstanding == D("100.00")


def test_unsigned_and_badly_signed_callbacks_are_refused(app, db, proforma):
    body = gateway.build_payload(proforma, D("123.00"), "GW-1")
    before = state(db)
    for signature, status in ((None, 400), ("", 400), ("0" * 64, 403), ("nothex", 403),
                              (gateway.sign(body)[:-1], 403), ("sha256=" + "f" * 64, 403)):
        resp = post(app, body, signature)
        assert resp.status_code == status, signature
        assert resp.get_json()["error"]
    tampered = body.replace(b'"123.00"', b'"1.00"')
    assert post(app, tampered, gateway.sign(body)).status_code == 403
    other_secret = hmac.new(b"other", body, hashlib.sha256).hexdigest()
    assert post(app, body, other_secret).status_code == 403
    assert state(db) == before
    # the "sha256=" prefix form of a good signature is accepted
    assert post(app, body, "sha256=" + gateway.sign(body)).status_code == 200


def test_replayed_callback_is_409_and_changes_nothing(app, db, proforma):
    body = gateway.build_payload(proforma, D("50.00"), "GW-R")
    assert post(app, body).status_code == 200
    before = state(db)
    replay = post(app, body)
    assert replay.status_code == 409 and "already recorded" in replay.get_json()["error"]
    # a freshly signed callback reusing the transaction id (new nonce and timestamp) is a replay too
    again = gateway.build_payload(proforma, D("50.00"), "GW-R")
    assert again != body
    assert post(app, again).status_code == 409
    assert state(db) == before


def test_stale_or_future_callback_is_refused(app, db, proforma):
    before = state(db)
    now = int(NOW.replace(tzinfo=dt.timezone.utc).timestamp())
    for timestamp in (now - 301, now + 301, 0):
        resp = post(app, gateway.build_payload(proforma, D("1.00"), f"GW-{timestamp}", timestamp=timestamp))
        assert resp.status_code == 409 and "stale" in resp.get_json()["error"]
    assert state(db) == before
    assert post(app, gateway.build_payload(proforma, D("1.00"), "GW-OK", timestamp=now - 299)).status_code == 200


def test_malformed_callbacks_are_400(app, db, proforma):
    good = json.loads(gateway.build_payload(proforma, D("1.00"), "GW-M"))
    bodies = [
        b"not json",
        b"[1, 2]",
        "\xff".encode("latin-1"),
        json.dumps({k: v for k, v in good.items() if k != "nonce"}).encode(),
        json.dumps(dict(good, invoice_id="1")).encode(),
        json.dumps(dict(good, invoice_id=2**40)).encode(),
        json.dumps(dict(good, timestamp="now")).encode(),
        json.dumps(dict(good, transaction_id="")).encode(),
        json.dumps(dict(good, transaction_id="x" * 101)).encode(),
        json.dumps(dict(good, nonce="short")).encode(),
        json.dumps(dict(good, amount=1.0)).encode(),
        json.dumps(dict(good, currency="USD")).encode(),
    ]
    before = state(db)
    for body in bodies:
        resp = post(app, body)
        assert resp.status_code == 400, body
        assert resp.get_json()["error"]
    assert post(app, b"x" * 20000).status_code in (400, 413)
    assert state(db) == before


def test_refused_payments_are_422_or_404(app, db, proforma, billing_client):
    before = state(db)
    too_much = post(app, gateway.build_payload(proforma, D("123.01"), "GW-X"))
    assert too_much.status_code == 422 and "outstanding" in too_much.get_json()["error"]
    assert "amount" in too_much.get_json()["errors"]
    body = json.dumps(dict(json.loads(gateway.build_payload(proforma, D("1"), "GW-Z")), amount="1.005")).encode()
    assert post(app, body).status_code == 422
    unknown = json.loads(gateway.build_payload(proforma, D("1"), "GW-U"))
    unknown["invoice_id"] = 99999
    assert post(app, json.dumps(unknown).encode()).status_code == 404
    invoicing.cancel(proforma)
    before = state(db)
    assert post(app, gateway.build_payload(proforma, D("1"), "GW-C")).status_code == 422
    assert state(db) == before


def test_callback_is_post_only_and_needs_no_csrf_token(app, db, proforma):
    assert app.config["WTF_CSRF_ENABLED"]
    with app.test_client() as http:
        assert http.get(CALLBACK).status_code == 405
    assert post(app, gateway.build_payload(proforma, D("1.00"), "GW-CSRF")).status_code == 200


def test_callback_404_when_the_test_gateway_is_not_offered(app, db, proforma, monkeypatch):
    monkeypatch.setitem(app.config, "PUQPANEL_GATEWAYS", ("bank_transfer",))
    before = state(db)
    assert post(app, gateway.build_payload(proforma, D("1.00"), "GW-OFF")).status_code == 404
    assert state(db) == before


def test_verify_callback_raises_gateway_errors(db, proforma):
    body = gateway.build_payload(proforma, D("1.00"), "T")
    assert gateway.verify_callback(body, gateway.sign(body))["transaction_id"] == "T"
    with pytest.raises(GatewayError) as exc:
        gateway.verify_callback(body, None)
    assert exc.value.status == 400
    with clock.frozen_at(NOW + dt.timedelta(minutes=6)):
        with pytest.raises(GatewayError) as exc:
            gateway.verify_callback(body, gateway.sign(body))
    assert exc.value.status == 409


# -- hosted pay page ---------------------------------------------------------------------------------------
@pytest.fixture()
def scoped(db, staff, new_client, home, frozen):
    """A proforma of a client managed by manager1."""
    client = new_client(company_name="Managed GmbH", manager_id=staff["manager1"].id)
    return add_funds(client, "100")


def test_hosted_page_pays_through_the_signed_callback(app, db, scoped, make_browser):
    m1 = make_browser("manager1")
    page_url = f"/billing/gateways/test/pay/{scoped.id}"
    page = m1.get(page_url)
    assert page.status_code == 200 and "PF-2026-00001" in page.text and 'value="123.00"' in page.text
    resp = m1.post_form(f"{page_url}/confirm", {"amount": "123.00"}, form_url=page_url)
    assert resp.status_code == 302
    db.expire_all()
    invoice = db.scalar(select(Invoice).where(Invoice.type == "invoice"))
    assert resp.headers["Location"].endswith(f"/clients/{scoped.client_id}/invoices/{invoice.id}")
    payment = db.scalar(select(Payment))
    assert payment.gateway == "test" and payment.external_id.startswith("test-") and payment.invoice_id == invoice.id
    done = m1.get(page_url)
    assert done.status_code == 200 and "Nothing to pay" in done.text


def test_hosted_page_refuses_bad_amounts(app, db, scoped, make_browser):
    m1 = make_browser("manager1")
    page_url = f"/billing/gateways/test/pay/{scoped.id}"
    before = state(db)
    for amount, status in (("abc", 400), ("0", 400), ("1e400", 400), ("200", 422)):
        resp = m1.post_form(f"{page_url}/confirm", {"amount": amount}, form_url=page_url)
        assert resp.status_code == status, amount
        assert "puq-form-error" in resp.text
    assert state(db) == before


def test_hosted_page_scope_permissions_and_csrf(app, db, scoped, make_browser):
    page_url = f"/billing/gateways/test/pay/{scoped.id}"
    m2 = make_browser("manager2")
    before = state(db)
    assert m2.get(page_url).status_code == 404
    assert m2.post(f"{page_url}/confirm", {"amount": "123"}).status_code == 404
    support = make_browser("support")
    assert support.get(page_url).status_code == 403
    assert support.post(f"{page_url}/confirm", {"amount": "123"}).status_code == 403
    admin = make_browser("admin")
    assert admin.client.post(f"{page_url}/confirm", data={"amount": "123"}).status_code == 400  # no CSRF token
    assert admin.get(f"{page_url}/confirm").status_code == 405
    assert admin.get("/billing/gateways/test/pay/999999").status_code == 404
    assert state(db) == before
    draft = invoicing.new_invoice(db.get(Client, scoped.client_id),
                                  [{"description": "A", "quantity": "1", "unit_price": "1"}])
    invoice_page = admin.get(f"/billing/gateways/test/pay/{draft.id}")
    assert invoice_page.status_code == 200 and "Nothing to pay" in invoice_page.text
