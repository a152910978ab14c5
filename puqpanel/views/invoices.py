"""Staff Invoices tab of a client record: list, detail, add-funds proforma, New Invoice, drafts, payments,
refunds and the PDF.

Every route loads the client through domain.clients.get_client (404 outside the caller's scope) and the
document together with that client id (404 for another client's document). State changes are POST routes
calling billing.invoicing / billing.payments; a refused input re-renders the page with the message (400).
"""
from __future__ import annotations

import datetime as dt
import io
import logging
from decimal import Decimal
from itertools import zip_longest

from flask import abort, flash, redirect, request, send_file, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import gettext as _

from ..billing import clock, invoicing, payments
from ..billing.gateways import all_gateways, available_gateways, get_gateway
from ..domain import DomainError, NotFound
from ..domain.directory import parse_page
from ..models import INVOICE_STATUSES, INVOICE_TYPES, Client, Invoice
from ..security import BILLING, BILLING_PERMS
from .client_record import ID, RECORD, client_or_404, render_record
from .ledger import TYPE_LABELS as LEDGER_TYPE_LABELS

log = logging.getLogger(__name__)

PAGE_SIZE = 25
# Blank item rows offered by the New Invoice / Edit Draft forms (more can be added in the browser).
ITEM_ROWS = 3
INVOICE_STATUS_CLASSES = {
    "draft": "label-default",
    "unpaid": "label-warning",
    "paid": "label-success",
    "invoiced": "label-info",
    "refunded": "label-danger",
    "canceled": "label-default",
}
INVOICE = f"{RECORD}/invoices/<{ID}:invoice_id>"


def _items_from_form() -> list[dict]:
    return [
        {"description": d or "", "quantity": q or "", "unit_price": p or ""}
        for d, q, p in zip_longest(
            request.form.getlist("description"), request.form.getlist("quantity"), request.form.getlist("unit_price")
        )
    ][: invoicing.MAX_ITEMS + 1]


def _item_values(document: Invoice) -> list[dict]:
    return [
        {"description": item.description, "quantity": _plain(item.quantity, 0), "unit_price": _plain(item.unit_price)}
        for item in document.items
    ]


def _plain(value, min_places: int = 2) -> str:
    """A Decimal without needless trailing zeros, keeping at least `min_places`: 12.5000 → 12.50,
    0.0125 → 0.0125; with min_places=0: 1.0000 → 1, 23.0000 → 23."""
    text = format(value.normalize(), "f")
    places = len(text.split(".")[1]) if "." in text else 0
    if places < min_places:
        text = format(value.quantize(Decimal(1).scaleb(-min_places)), "f")
    return text


def _cents(value) -> str:
    return format(invoicing.round_invoice(value), "f")


class ClientInvoicesView(BaseView):
    route_base = "/clients"
    default_view = "invoices"
    class_permission_name = BILLING
    base_permissions = list(BILLING_PERMS)
    method_permission_name = {
        "invoices": "show",
        "invoice": "show",
        "pdf": "show",
        "add_funds": "manage_invoices",
        "create": "manage_invoices",
        "update": "manage_invoices",
        "publish": "manage_invoices",
        "cancel": "manage_invoices",
        "delete": "manage_invoices",
        "record_payment": "record_payment",
        "refund": "refund",
    }

    # -- helpers -------------------------------------------------------------------------------------
    @staticmethod
    def _client(client_id: int) -> Client:
        return client_or_404(client_id)

    @staticmethod
    def _document(client: Client, invoice_id: int) -> Invoice:
        try:
            return invoicing.get_invoice(client, invoice_id)
        except NotFound:
            abort(404)

    def _common(self) -> dict:
        return dict(
            type_labels=invoicing.TYPE_LABELS,
            invoice_status_labels=invoicing.STATUS_LABELS,
            invoice_status_classes=INVOICE_STATUS_CLASSES,
            gateways=available_gateways(),
            gateway_labels={g.name: g.label for g in all_gateways()},
            ledger_type_labels=LEDGER_TYPE_LABELS,
            item_rows=ITEM_ROWS,
            plain=_plain,
            cents=_cents,
        )

    def _render_list(self, client: Client, modal: dict | None = None, status: int = 200):
        page = invoicing.list_invoices(
            client,
            type=request.args.get("type") or None,
            status=request.args.get("status") or None,
            page=parse_page(request.args.get("page")),
            page_size=PAGE_SIZE,
        )
        return render_record(
            self, "puqpanel/record/invoices.html", client, "invoices", status,
            result=page,
            invoice_types=INVOICE_TYPES,
            invoice_statuses=INVOICE_STATUSES,
            limits=invoicing.add_funds_limits(client),
            modal=modal,
            **self._common(),
        )

    def _render_detail(self, client: Client, invoice_id: int, modal: dict | None = None, error: str = "",
                       status: int = 200):
        try:
            detail = invoicing.invoice_detail(client, invoice_id)
        except NotFound:
            abort(404)
        document = detail.invoice
        instructions = []
        if document.type == "proforma" and document.status == "unpaid":
            instructions = [(gateway, gateway.instructions(document)) for gateway in available_gateways()]
        return render_record(
            self, "puqpanel/invoices/detail.html", client, "invoices", status,
            detail=detail,
            invoice=document,
            draft_items=_item_values(document) if document.status == "draft" else [],
            instructions=instructions,
            modal=modal,
            error=error,
            today=clock.today(),
            **self._common(),
        )

    def _to_detail(self, client: Client, document: Invoice):
        return redirect(url_for("ClientInvoicesView.invoice", client_id=client.id, invoice_id=document.id))

    # -- reading -------------------------------------------------------------------------------------
    @expose(f"{RECORD}/invoices")
    @has_access
    def invoices(self, client_id: int):
        return self._render_list(self._client(client_id))

    @expose(INVOICE)
    @has_access
    def invoice(self, client_id: int, invoice_id: int):
        return self._render_detail(self._client(client_id), invoice_id)

    @expose(f"{INVOICE}/pdf")
    @has_access
    def pdf(self, client_id: int, invoice_id: int):
        client = self._client(client_id)
        document = self._document(client, invoice_id)
        if document.status == "draft":  # no number yet: nothing to print
            abort(404)
        from ..billing import pdf as pdf_module

        try:
            data = pdf_module.render_pdf(document)
        except DomainError as exc:  # renderer missing, failed or timed out (billing.pdf.PdfError)
            flash(" ".join(exc.errors.values()), "danger")
            return self._to_detail(client, document)
        except Exception:  # noqa: BLE001 - anything else must not become a 500 either
            log.exception("PDF of invoice %s failed", document.id)
            flash(_("The PDF could not be rendered. Please try again later."), "danger")
            return self._to_detail(client, document)
        return send_file(io.BytesIO(data), mimetype="application/pdf", as_attachment=True,
                         download_name=pdf_module.pdf_filename(document))

    # -- creating ------------------------------------------------------------------------------------
    @expose(f"{RECORD}/invoices/add-funds", methods=["POST"])
    @has_access
    def add_funds(self, client_id: int):
        client = self._client(client_id)
        values = {"amount": request.form.get("amount", "")}
        try:
            document = invoicing.create_add_funds_proforma(client, values["amount"])
        except DomainError as exc:
            return self._render_list(client, {"id": "add-funds", "values": values, "errors": exc.errors}, 400)
        flash(_("Proforma %(number)s created.", number=document.number), "success")
        return self._to_detail(client, document)

    @expose(f"{RECORD}/invoices/new", methods=["POST"])
    @has_access
    def create(self, client_id: int):
        client = self._client(client_id)
        values = {"items": _items_from_form(), "notes": request.form.get("notes", ""),
                  "due_date": request.form.get("due_date", "")}
        try:
            document = invoicing.new_invoice(client, values["items"], values["notes"], values["due_date"])
        except DomainError as exc:
            return self._render_list(client, {"id": "new-invoice", "values": values, "errors": exc.errors}, 400)
        flash(_("Draft invoice saved."), "success")
        return self._to_detail(client, document)

    # -- drafts and proformas ------------------------------------------------------------------------
    @expose(f"{INVOICE}/update", methods=["POST"])
    @has_access
    def update(self, client_id: int, invoice_id: int):
        client = self._client(client_id)
        document = self._document(client, invoice_id)
        values = {"items": _items_from_form(), "notes": request.form.get("notes", ""),
                  "due_date": request.form.get("due_date", "")}
        try:
            invoicing.update_draft(document, values["items"], values["notes"], values["due_date"])
        except NotFound:
            abort(404)
        except DomainError as exc:
            return self._render_detail(client, invoice_id, {"id": "edit", "values": values, "errors": exc.errors},
                                       status=400)
        flash(_("Draft saved."), "success")
        return self._to_detail(client, document)

    def _one_click(self, client_id: int, invoice_id: int, action, success, done=None):
        """A confirm-button action on a document: refused → the detail page with the reason (400), else a
        flash and a redirect (to the document, or `done(client)`)."""
        client = self._client(client_id)
        document = self._document(client, invoice_id)
        try:
            action(document)
        except NotFound:
            abort(404)
        except DomainError as exc:
            return self._render_detail(client, invoice_id, error=" ".join(exc.errors.values()), status=400)
        flash(success(document), "success")
        return done(client) if done else self._to_detail(client, document)

    @expose(f"{INVOICE}/publish", methods=["POST"])
    @has_access
    def publish(self, client_id: int, invoice_id: int):
        return self._one_click(client_id, invoice_id, invoicing.publish,
                               lambda d: _("Proforma %(number)s published.", number=d.number))

    @expose(f"{INVOICE}/cancel", methods=["POST"])
    @has_access
    def cancel(self, client_id: int, invoice_id: int):
        return self._one_click(client_id, invoice_id, invoicing.cancel,
                               lambda d: _("Proforma %(number)s canceled.", number=d.number))

    @expose(f"{INVOICE}/delete", methods=["POST"])
    @has_access
    def delete(self, client_id: int, invoice_id: int):
        return self._one_click(
            client_id, invoice_id, invoicing.delete_draft, lambda d: _("Draft deleted."),
            done=lambda client: redirect(url_for("ClientInvoicesView.invoices", client_id=client.id)),
        )

    # -- money ---------------------------------------------------------------------------------------
    @expose(f"{INVOICE}/payments", methods=["POST"])
    @has_access
    def record_payment(self, client_id: int, invoice_id: int):
        client = self._client(client_id)
        document = self._document(client, invoice_id)
        values = {k: request.form.get(k, "") for k in ("gateway", "external_id", "amount", "fee", "paid_date")}
        errors: dict[str, str] = {}
        paid_at = None
        try:
            gateway = get_gateway(values["gateway"])
        except DomainError as exc:
            errors.update(exc.errors)
            gateway = None
        try:
            day = invoicing.parse_date(values["paid_date"], "paid_date")
            now = clock.now()
            if day is not None and day > now.date():
                raise DomainError({"paid_date": _("The payment date may not be in the future.")})
            paid_at = now if day is None or day == now.date() else dt.datetime.combine(day, dt.time())
        except DomainError as exc:
            errors.update(exc.errors)
        try:
            if errors:
                raise DomainError(errors)
            result = payments.record_payment(document, gateway=gateway.name, external_id=values["external_id"],
                                             amount=values["amount"], fee=values["fee"] or "0", paid_at=paid_at)
        except NotFound:
            abort(404)
        except DomainError as exc:
            errors = dict(errors, **exc.errors)
            if "paid_at" in errors:
                errors["paid_date"] = errors.pop("paid_at")
            return self._render_detail(client, invoice_id, {"id": "payment", "values": values, "errors": errors},
                                       status=400)
        if not result.created:
            if result.invoice.client_id == client.id:
                message = _("This transaction id is already recorded (document %(number)s).",
                            number=result.invoice.number or result.invoice.id)
            else:  # another client's document: not named (it may be outside the caller's scope)
                message = _("This transaction id is already recorded for another client.")
            errors = {"external_id": message}
            return self._render_detail(client, invoice_id, {"id": "payment", "values": values, "errors": errors},
                                       status=400)
        if result.invoice.id != document.id:
            flash(_("Payment recorded: the proforma is paid, invoice %(number)s issued.",
                    number=result.invoice.number), "success")
        else:
            flash(_("Payment recorded."), "success")
        return self._to_detail(client, result.invoice)

    @expose(f"{INVOICE}/refund", methods=["POST"])
    @has_access
    def refund(self, client_id: int, invoice_id: int):
        client = self._client(client_id)
        document = self._document(client, invoice_id)
        values = {k: request.form.get(k, "") for k in ("amount", "reason")}
        try:
            note = payments.refund(document, values["amount"], values["reason"])
        except NotFound:
            abort(404)
        except DomainError as exc:
            return self._render_detail(client, invoice_id, {"id": "refund", "values": values, "errors": exc.errors},
                                       status=400)
        flash(_("Refund booked: credit note %(number)s.", number=note.number), "success")
        return self._to_detail(client, document)


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientInvoicesView())
