"""A test gateway: a hosted page "pays" and the payment arrives through a signed JSON callback.

Callback: POST body (raw bytes, JSON) {"invoice_id": int, "amount": "12.30", "currency": "EUR",
"transaction_id": str, "timestamp": epoch seconds, "nonce": str}, header X-Puq-Signature = hex
HMAC-SHA256 of the raw body with PUQPANEL_TEST_GATEWAY_SECRET (unset: a key derived from SECRET_KEY).

Refused: no signature → 400; a wrong one → 403; not JSON / missing or bad fields → 400; a timestamp more
than 5 minutes away from now → 409 (stale); a transaction id already recorded → 409 (replay) — the
recorded (gateway, transaction id) is the stored "used id": a replayed body carries it, and a body with a
new transaction id can't be made without the secret. Nothing is written by a refused callback.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
from decimal import Decimal

from flask import current_app
from flask_babel import lazy_gettext as _l

from ...domain import DomainError
from ...domain.session import get_session
from ...models import Invoice
from .. import clock
from ..settings import setting
from .base import Gateway, GatewayError

SIGNATURE_HEADER = "X-Puq-Signature"
MAX_AGE = dt.timedelta(minutes=5)
MAX_BODY = 16 * 1024
_NONCE = re.compile(r"[A-Za-z0-9_-]{8,64}")
_HEX = re.compile(r"[0-9a-f]{64}")
_REQUIRED = ("invoice_id", "amount", "transaction_id", "timestamp", "nonce")


def _epoch(moment: dt.datetime) -> int:
    return int(moment.replace(tzinfo=dt.timezone.utc).timestamp())


class TestGateway(Gateway):
    __test__ = False  # not a pytest class
    name = "test"
    label = _l("Test gateway")
    manual = False

    # -- signing -------------------------------------------------------------------------------------
    @staticmethod
    def secret() -> bytes:
        configured = setting("PUQPANEL_TEST_GATEWAY_SECRET")
        if configured:
            return str(configured).encode()
        return hmac.new(str(current_app.secret_key).encode(), b"puqpanel-test-gateway", hashlib.sha256).digest()

    def sign(self, payload: bytes | str) -> str:
        """Hex HMAC-SHA256 of the raw body."""
        body = payload.encode() if isinstance(payload, str) else payload
        return hmac.new(self.secret(), body, hashlib.sha256).hexdigest()

    def build_payload(self, invoice: Invoice, amount: Decimal, transaction_id: str | None = None, *,
                      timestamp: int | None = None, nonce: str | None = None) -> bytes:
        """The callback body the gateway would send for a payment of `amount` on `invoice`."""
        data = {
            "invoice_id": invoice.id,
            "amount": format(Decimal(amount), "f"),
            "currency": invoice.currency.code if invoice.currency is not None else "",
            "transaction_id": transaction_id or f"test-{secrets.token_hex(8)}",
            "timestamp": timestamp if timestamp is not None else _epoch(clock.now()),
            "nonce": nonce or secrets.token_urlsafe(12),
        }
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    # -- receiving -----------------------------------------------------------------------------------
    def verify_callback(self, body: bytes, signature: str | None) -> dict:
        """The callback's data once its signature, shape and age check out; GatewayError otherwise."""
        if not signature:
            raise GatewayError(400, str(_l("The callback is not signed.")))
        if len(body) > MAX_BODY:
            raise GatewayError(400, str(_l("The callback is too large.")))
        signature = signature.strip().lower()
        if signature.startswith("sha256="):
            signature = signature[len("sha256="):]
        if not _HEX.fullmatch(signature) or not hmac.compare_digest(signature, self.sign(body)):
            raise GatewayError(403, str(_l("The callback signature is not valid.")))
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise GatewayError(400, str(_l("The callback is not valid JSON."))) from None
        if not isinstance(data, dict) or any(key not in data for key in _REQUIRED):
            raise GatewayError(400, str(_l("The callback lacks a field: %(fields)s.", fields=", ".join(_REQUIRED))))
        invoice_id, timestamp = data["invoice_id"], data["timestamp"]
        if type(invoice_id) is not int or not 0 < invoice_id < 2**31:
            raise GatewayError(400, str(_l("invoice_id must be a document id.")))
        if type(timestamp) is not int:
            raise GatewayError(400, str(_l("timestamp must be seconds since the epoch.")))
        transaction_id = data["transaction_id"]
        if not isinstance(transaction_id, str) or not 0 < len(transaction_id.strip()) <= 100:
            raise GatewayError(400, str(_l("transaction_id must be a text of at most 100 characters.")))
        if not isinstance(data["nonce"], str) or not _NONCE.fullmatch(data["nonce"]):
            raise GatewayError(400, str(_l("nonce must be 8 to 64 letters, digits, - or _.")))
        if not isinstance(data["amount"], str):
            raise GatewayError(400, str(_l("amount must be a decimal string such as \"12.30\".")))
        if abs(_epoch(clock.now()) - timestamp) > MAX_AGE.total_seconds():
            raise GatewayError(409, str(_l("The callback is stale (its timestamp is more than 5 minutes away).")))
        return data

    def handle_callback(self, body: bytes, signature: str | None):
        """Verify a callback and record its payment: PaymentResult, or GatewayError (nothing written)."""
        from ..payments import find_payment, record_payment

        data = self.verify_callback(body, signature)
        transaction_id = data["transaction_id"].strip()
        if find_payment(self.name, transaction_id) is not None:
            raise GatewayError(409, str(_l("This transaction was already recorded.")))
        invoice = get_session().get(Invoice, data["invoice_id"])
        if invoice is None or invoice.type != "proforma":
            raise GatewayError(404, str(_l("Invoice not found.")))
        currency = data.get("currency")
        if currency and invoice.currency is not None and currency != invoice.currency.code:
            raise GatewayError(400, str(_l("The currency does not match the invoice.")))
        paid_at = dt.datetime.fromtimestamp(data["timestamp"], dt.timezone.utc).replace(tzinfo=None)
        try:
            result = record_payment(invoice, gateway=self.name, external_id=transaction_id, amount=data["amount"],
                                    paid_at=min(paid_at, clock.now()))
        except DomainError as exc:
            raise GatewayError(422, " ".join(exc.errors.values()), exc.errors) from None
        if not result.created:
            raise GatewayError(409, str(_l("This transaction was already recorded.")))
        return result

    def instructions(self, invoice) -> list[tuple[str, str]]:
        return [(str(_l("Test gateway")), str(_l("Pay on the hosted test page (no real money moves).")))]
