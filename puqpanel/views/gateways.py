"""Payment gateway endpoints: the test gateway's signed callback and its hosted "pay" page.

The callback is called by the gateway, not by a browser: no login, no CSRF token (exempted below), JSON in
and JSON out (4xx with {"error": …} when refused). The hosted page stands in for the gateway's payment page:
a staff user with BILLING can_record_payment "pays" a proforma of a client in scope; the page builds the
callback the gateway would send, signs it and hands it to the same handler.
"""
from __future__ import annotations

from flask import abort, flash, jsonify, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import gettext as _

from ..billing import invoicing
from ..billing.gateways import GatewayError, get_gateway
from ..billing.gateways.test_gateway import MAX_BODY, SIGNATURE_HEADER
from ..billing.money import INVOICE_PLACES
from ..domain import DomainError, NotFound
from ..domain.clients import get_client
from ..domain.session import get_session
from ..extensions import csrf
from ..models import Invoice
from ..security import BILLING, BILLING_PERMS
from .client_record import ID


class TestGatewayView(BaseView):
    __test__ = False
    route_base = "/billing/gateways"
    default_view = "test_pay_page"
    class_permission_name = BILLING
    base_permissions = list(BILLING_PERMS)
    method_permission_name = {"test_pay_page": "record_payment", "test_pay": "record_payment"}

    @expose("/test/callback", methods=["POST"])
    def test_callback(self):
        try:
            gateway = get_gateway("test")
        except DomainError:
            return jsonify(error=_("The test gateway is not enabled.")), 404
        if (request.content_length or 0) > MAX_BODY:
            return jsonify(error=_("The callback is too large.")), 413
        body = request.get_data(cache=False)
        try:
            result = gateway.handle_callback(body, request.headers.get(SIGNATURE_HEADER))
        except GatewayError as exc:
            return jsonify(error=exc.message, errors=exc.errors), exc.status
        return jsonify(
            status="recorded",
            payment_id=result.payment.id,
            invoice_id=result.invoice.id,
            invoice_type=result.invoice.type,
            invoice_status=result.invoice.status,
            invoice_number=result.invoice.number,
        )

    # -- hosted page ---------------------------------------------------------------------------------
    @staticmethod
    def _proforma(invoice_id: int) -> Invoice:
        """The proforma if its client is within the caller's scope, else 404."""
        document = get_session().get(Invoice, invoice_id)
        if document is None or document.type != "proforma":
            abort(404)
        try:
            get_client(document.client_id)
        except NotFound:
            abort(404)
        return document

    def _page(self, document: Invoice, amount: str = "", error: str = "", status: int = 200):
        return (
            self.render_template(
                "puqpanel/invoices/test_gateway.html", invoice=document, amount=amount, error=error,
                status_labels=invoicing.STATUS_LABELS,
            ),
            status,
        )

    @expose(f"/test/pay/<{ID}:invoice_id>")
    @has_access
    def test_pay_page(self, invoice_id: int):
        try:
            get_gateway("test")
        except DomainError:
            abort(404)
        document = self._proforma(invoice_id)
        return self._page(document, format(document.outstanding.quantize(INVOICE_PLACES), "f"))

    @expose(f"/test/pay/<{ID}:invoice_id>/confirm", methods=["POST"])
    @has_access
    def test_pay(self, invoice_id: int):
        try:
            gateway = get_gateway("test")
        except DomainError:
            abort(404)
        document = self._proforma(invoice_id)
        raw = request.form.get("amount", "")
        try:
            amount = invoicing.parse_money(raw, "amount", places=INVOICE_PLACES)
        except DomainError as exc:
            return self._page(document, raw, " ".join(exc.errors.values()), 400)
        body = gateway.build_payload(document, amount)
        try:
            result = gateway.handle_callback(body, gateway.sign(body))
        except GatewayError as exc:
            return self._page(document, raw, exc.message, 400 if exc.status >= 500 else exc.status)
        if result.invoice.id != document.id:
            flash(_("Paid: invoice %(number)s issued.", number=result.invoice.number), "success")
        else:
            flash(_("Payment recorded."), "success")
        return redirect(url_for("ClientInvoicesView.invoice", client_id=document.client_id,
                                invoice_id=result.invoice.id))


csrf.exempt(f"{__name__}.test_callback")


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(TestGatewayView())
