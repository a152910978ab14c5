"""Staff client record: the Transactions tab (the client's ledger) and manual adjustments.

Ledger rows are immutable: there is no edit or delete route here (or anywhere); a correction is a new
adjustment. The client is loaded through domain.clients.get_client (404 outside the caller's scope).
"""
from __future__ import annotations

from flask import current_app, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.routing import BuildError

from ..billing import ledger as ledger_domain
from ..billing.gateways import all_gateways
from ..domain import DomainError
from ..domain.directory import parse_page
from ..models import TRANSACTION_TYPES, Client
from ..security import BILLING, BILLING_PERMS
from .client_record import RECORD, client_or_404, render_record
from .formatting import money

PAGE_SIZE = 50
INVOICE_ENDPOINT = "ClientInvoicesView.invoice"

TYPE_LABELS = {
    "charge": _l("Charge"),
    "payment": _l("Payment"),
    "refund": _l("Refund"),
    "adjustment": _l("Adjustment"),
}
TYPE_CLASSES = {"charge": "label-warning", "payment": "label-success", "refund": "label-info", "adjustment": "label-default"}
DOCUMENT_LABELS = {"proforma": _l("Proforma"), "invoice": _l("Invoice"), "credit_note": _l("Credit note")}
# (sort key, column label) of the sortable columns.
SORT_COLUMNS = (
    ("date", _l("Date")),
    ("type", _l("Type")),
    ("gross", _l("Gross")),
    ("net", _l("Net")),
    ("balance", _l("Balance")),
)
ADJUST_FIELDS = ("amount", "external_id", "description")


def _invoice_url(client: Client, invoice_id: int | None) -> str | None:
    """Link to the invoice detail page when that view is registered (Invoices tab), else None."""
    if not invoice_id or INVOICE_ENDPOINT not in current_app.view_functions:
        return None
    try:
        return url_for(INVOICE_ENDPOINT, client_id=client.id, invoice_id=invoice_id)
    except BuildError:
        return None


def ledger_page(client_id: int, page_size: int, endpoint: str, /, **url_values):
    """The client's ledger page for this request's arguments (search, type, date range, sort, page), shared by
    the staff Transactions tab and the client area. Returns (LedgerPage, args for the filter form, link(**changes)
    building `endpoint`'s URL with the current arguments changed (defaults left out), filter errors)."""
    filters, filter_errors = ledger_domain.parse_filters(request.args)
    sort, direction = ledger_domain.parse_sort(request.args.get("sort"), request.args.get("dir"))
    page = ledger_domain.client_transactions(
        client_id,
        search=filters.search,
        type=filters.type,
        date_from=filters.date_from,
        date_to=filters.date_to,
        sort=sort,
        direction=direction,
        page=parse_page(request.args.get("page")),
        page_size=page_size,
    )
    args = {
        "q": filters.search,
        "type": filters.type or "",
        "date_from": filters.date_from.isoformat() if filters.date_from else "",
        "date_to": filters.date_to.isoformat() if filters.date_to else "",
        "sort": page.sort,
        "dir": page.direction,
    }

    def link(**changes) -> str:
        wanted = {k: v for k, v in {**args, **changes}.items() if v not in ("", None)}
        if (wanted.get("sort"), wanted.get("dir")) == ledger_domain.DEFAULT_SORT:
            wanted.pop("sort")
            wanted.pop("dir")
        if wanted.get("page") == 1:
            wanted.pop("page")
        return url_for(endpoint, **url_values, **wanted)

    return page, args, link, filter_errors


class ClientLedgerView(BaseView):
    route_base = "/clients"
    default_view = "transactions"
    class_permission_name = BILLING
    base_permissions = list(BILLING_PERMS)
    method_permission_name = {"transactions": "show", "adjust": "adjust"}

    @staticmethod
    def _client(client_id: int) -> Client:
        return client_or_404(client_id)

    def _render(self, client: Client, modal: dict | None = None, status: int = 200):
        page, args, link, filter_errors = ledger_page(
            client.id, PAGE_SIZE, "ClientLedgerView.transactions", client_id=client.id
        )

        return render_record(
            self,
            "puqpanel/record/transactions.html",
            client,
            "transactions",
            status,
            ledger=page,
            args=args,
            link=link,
            filter_errors=filter_errors,
            modal=modal,
            types=TRANSACTION_TYPES,
            type_labels=TYPE_LABELS,
            type_classes=TYPE_CLASSES,
            document_labels=DOCUMENT_LABELS,
            gateway_labels={g.name: g.label for g in all_gateways()},
            sort_columns=SORT_COLUMNS,
            invoice_url=lambda invoice_id: _invoice_url(client, invoice_id),
        )

    @expose(f"{RECORD}/transactions")
    @has_access
    def transactions(self, client_id: int):
        return self._render(self._client(client_id))

    @expose(f"{RECORD}/transactions/adjust", methods=["POST"])
    @has_access
    def adjust(self, client_id: int):
        client = self._client(client_id)
        data = {name: request.form.get(name, "") for name in ADJUST_FIELDS}
        try:
            row = ledger_domain.adjust(client, data["amount"], data["description"], data["external_id"])
        except DomainError as exc:
            return self._render(client, modal={"values": data, "errors": exc.errors}, status=400)
        flash(
            _("Adjustment of %(amount)s recorded; new balance %(balance)s.",
              amount=money(row.net, client.currency), balance=money(row.balance_after, client.currency)),
            "success",
        )
        return redirect(url_for("ClientLedgerView.transactions", client_id=client.id))


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientLedgerView())
