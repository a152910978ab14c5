"""Client area: Invoices — the list (tabs Unpaid / Paid / Refunded / All, search by number, sort, pages), a
document's page (items, taxes, totals, payments, Pay now), its PDF, and the test gateway's hosted pay page.

Every route needs the client permission manage_invoices and looks the document up together with the current
client (billing.invoicing.get_client_invoice): another client's document and a draft are 404. Paying with the
test gateway does what the staff hosted page does (views/gateways.py): build the callback the gateway would
send, sign it and hand it to the gateway's handler — for a document of the current client only.
"""
from __future__ import annotations

import io
import logging
import re
import secrets

from flask import abort, flash, redirect, request, send_file, url_for
from flask_appbuilder import expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ...billing import invoicing
from ...billing.gateways import GatewayError, all_gateways, available_gateways, get_gateway
from ...billing.money import INVOICE_PLACES
from ...billing.payments import find_payment
from ...domain import DomainError, NotFound
from ...domain.directory import parse_page
from ...models import Invoice
from ..client_record import ID
from ..invoices import INVOICE_STATUS_CLASSES, _plain
from . import ClientAreaView, client_page

log = logging.getLogger(__name__)

PAGE_SIZE = 25
DOCUMENT = f"/<{ID}:invoice_id>"
# The hosted page's form carries a random token; the gateway transaction id is made of it, so submitting the
# same form twice (a double click, a reload) is the same callback again and records one payment.
_PAY_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
TAB_LABELS = {"all": _l("All"), "unpaid": _l("Unpaid"), "paid": _l("Paid"), "refunded": _l("Refunded")}


def _transaction_id(document: Invoice, token: str) -> str:
    return f"test-c{document.id}-{token}"


class ClientAreaInvoicesView(ClientAreaView):
    route_base = "/client/invoices"
    default_view = "invoices"

    # -- helpers -------------------------------------------------------------------------------------
    @staticmethod
    def _document(link, invoice_id: int) -> Invoice:
        try:
            return invoicing.get_client_invoice(link.client, invoice_id)
        except NotFound:
            abort(404)

    @staticmethod
    def _test_gateway():
        """The test gateway if it is offered, else 404."""
        try:
            return get_gateway("test")
        except DomainError:
            abort(404)

    @staticmethod
    def _common() -> dict:
        return dict(
            type_labels=invoicing.TYPE_LABELS,
            status_labels=invoicing.STATUS_LABELS,
            status_classes=INVOICE_STATUS_CLASSES,
            plain=_plain,
        )

    def _to_document(self, document_id: int, anchor: str | None = None):
        return redirect(url_for("ClientAreaInvoicesView.invoice", invoice_id=document_id, _anchor=anchor))

    # -- list ----------------------------------------------------------------------------------------
    @expose("/")
    @client_page("manage_invoices")
    def invoices(self, link):
        args = invoicing.ClientListArgs.parse(request.args.get("tab"), request.args.get("q"),
                                              request.args.get("sort"), request.args.get("dir"))
        result = invoicing.client_invoices(link.client, args, page=parse_page(request.args.get("page")),
                                           page_size=PAGE_SIZE)
        return self.render_area(
            "invoices.html", link, "invoices",
            result=result, args=args, tabs=invoicing.CLIENT_TABS, tab_labels=TAB_LABELS,
            sorts=invoicing.CLIENT_SORTS, payable=invoicing.payable, **self._common(),
        )

    # -- one document --------------------------------------------------------------------------------
    @expose(DOCUMENT)
    @client_page("manage_invoices")
    def invoice(self, link, invoice_id: int):
        try:
            detail = invoicing.client_invoice_detail(link.client, invoice_id)
        except NotFound:
            abort(404)
        document = detail.invoice
        pay_options = []
        if invoicing.payable(document):
            pay_options = [(gateway, gateway.instructions(document)) for gateway in available_gateways()]
        return self.render_area(
            "invoice.html", link, "invoices",
            detail=detail, invoice=document, pay_options=pay_options,
            gateway_labels={g.name: g.label for g in all_gateways()}, **self._common(),
        )

    @expose(f"{DOCUMENT}/pdf")
    @client_page("manage_invoices")
    def pdf(self, link, invoice_id: int):
        document = self._document(link, invoice_id)
        from ...billing import pdf as pdf_module

        try:
            data = pdf_module.render_pdf(document)
        except DomainError as exc:  # renderer missing, failed or timed out (billing.pdf.PdfError)
            flash(" ".join(exc.errors.values()), "danger")
            return self._to_document(document.id)
        except Exception:  # noqa: BLE001 - anything else must not become a 500 either
            log.exception("PDF of invoice %s failed", document.id)
            flash(_("The PDF could not be rendered. Please try again later."), "danger")
            return self._to_document(document.id)
        return send_file(io.BytesIO(data), mimetype="application/pdf", as_attachment=True,
                         download_name=pdf_module.pdf_filename(document))

    # -- the test gateway's hosted page ----------------------------------------------------------------
    def _pay_page(self, link, document: Invoice, amount: str, token: str, error: str = "", status: int = 200):
        return (
            self.render_area(
                "pay_test.html", link, "invoices", invoice=document, amount=amount, token=token, error=error,
                can_pay=invoicing.payable(document), **self._common(),
            ),
            status,
        )

    @expose(f"{DOCUMENT}/pay/test")
    @client_page("manage_invoices")
    def pay_test(self, link, invoice_id: int):
        self._test_gateway()
        document = self._document(link, invoice_id)
        return self._pay_page(link, document, format(document.outstanding.quantize(INVOICE_PLACES), "f"),
                              secrets.token_urlsafe(24))

    @expose(f"{DOCUMENT}/pay/test/confirm", methods=["POST"])
    @client_page("manage_invoices")
    def pay_test_confirm(self, link, invoice_id: int):
        gateway = self._test_gateway()
        document = self._document(link, invoice_id)
        raw = request.form.get("amount", "")
        token = request.form.get("token", "")
        if not _PAY_TOKEN.fullmatch(token):
            token = secrets.token_urlsafe(24)
        transaction_id = _transaction_id(document, token)
        done = self._already_paid(link, transaction_id)
        if done is not None:
            return done
        if not invoicing.payable(document):
            return self._pay_page(link, document, raw, token, _("Nothing to pay on this document."), 400)
        try:
            amount = invoicing.parse_money(raw, "amount", places=INVOICE_PLACES)
        except DomainError as exc:
            return self._pay_page(link, document, raw, token, " ".join(exc.errors.values()), 400)
        body = gateway.build_payload(document, amount, transaction_id)
        try:
            result = gateway.handle_callback(body, gateway.sign(body))
        except GatewayError as exc:
            done = self._already_paid(link, transaction_id)  # the same form, submitted concurrently
            if done is not None:
                return done
            return self._pay_page(link, document, raw, token, exc.message, 400)
        if result.invoice.id != document.id:
            flash(_("Paid: invoice %(number)s issued.", number=result.invoice.number), "success")
        else:
            flash(_("Payment recorded."), "success")
        return self._to_document(result.invoice.id)

    def _already_paid(self, link, transaction_id: str):
        """The redirect to the paid document when this form's payment is already recorded, else None."""
        payment = find_payment("test", transaction_id)
        if payment is None:
            return None
        if payment.client_id != link.client.id:  # never for a form of this client's document; refuse, name nothing
            abort(404)
        flash(_("This payment was already recorded."), "info")
        return self._to_document(payment.invoice_id)


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientAreaInvoicesView())
