"""Client area: Transactions — the current client's ledger (billing.ledger.client_transactions with the staff
tab's own argument parsing: search by description / transaction id, type, date range, sort, pages).

Needs the link's manage_invoices key (403 without it). Staff-only details are not shown: a row's author is
the client's own login's name only when a client login wrote it without impersonation; staff work (and
impersonated work) reads "Staff", work of nobody (billing engine, gateways) "System"; services are named by
the client's label or the product name, never the admin label.
"""
from __future__ import annotations

from flask import current_app, url_for
from flask_appbuilder import expose
from flask_babel import format_datetime
from sqlalchemy import select
from werkzeug.routing import BuildError

from ...billing import services as service_domain
from ...billing.gateways import all_gateways
from ...domain.session import get_session
from ...models import TRANSACTION_TYPES, UserSecurity
from ..ledger import DOCUMENT_LABELS, TYPE_CLASSES, TYPE_LABELS, ledger_page
from . import ClientAreaView, client_page

PAGE_SIZE = 50
INVOICE_ENDPOINT = "ClientAreaInvoicesView.invoice"


def _client_logins(user_ids) -> set[int]:
    """Which of these users are client-area logins (UserSecurity.is_client_login), in one query."""
    ids = {i for i in user_ids if i is not None}
    if not ids:
        return set()
    return set(get_session().scalars(
        select(UserSecurity.user_id).where(UserSecurity.user_id.in_(ids), UserSecurity.is_client_login.is_(True))
    ))


def _invoice_url(invoice_id: int | None) -> str | None:
    """The client-area document page when that view is registered, else None."""
    if not invoice_id or INVOICE_ENDPOINT not in current_app.view_functions:
        return None
    try:
        return url_for(INVOICE_ENDPOINT, invoice_id=invoice_id)
    except BuildError:
        return None


class ClientAreaTransactionsView(ClientAreaView):
    route_base = "/client/transactions"
    default_view = "transactions"

    @expose("/")
    @client_page("manage_invoices")
    def transactions(self, link):
        client = link.client
        page, args, page_link, filter_errors = ledger_page(client.id, PAGE_SIZE, "ClientAreaTransactionsView.transactions")
        own = _client_logins(e.tx.author_id for e in page.entries if e.tx.impersonator_id is None)
        authors = {}
        for e in page.entries:
            tx = e.tx
            if tx.author_id is None and tx.impersonator_id is None:
                authors[tx.id] = None  # the system
            elif tx.impersonator_id is None and tx.author_id in own:
                authors[tx.id] = e.author
            else:
                authors[tx.id] = False  # staff
        service_names = service_domain.client_service_names(client, {e.tx.service_id for e in page.entries})
        return self.render_area(
            "transactions.html", link, "transactions",
            ledger=page, args=args, page_link=page_link, filter_errors=filter_errors, authors=authors,
            service_names=service_names, types=TRANSACTION_TYPES, type_labels=TYPE_LABELS,
            type_classes=TYPE_CLASSES, document_labels=DOCUMENT_LABELS,
            gateway_labels={g.name: g.label for g in all_gateways()},
            invoice_url=_invoice_url,
            fmt_datetime=lambda value: format_datetime(value, "medium") if value else "",
        )


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientAreaTransactionsView())
