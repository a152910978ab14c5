"""Client area: Add Funds — the recommended amount, the limits, a net amount with its taxes and the balance
after the top-up (billing.invoicing.quote_add_funds, the same function the proforma is built with), and
"Top Up Now", which creates the add-funds proforma and opens it to be paid.

Everything acts on the current client only (the link's); every route needs the client permission
manage_invoices. The quote endpoint answers JSON (400 {"error": …} for a refused amount); a refused POST
re-renders the page with the message (400) and writes nothing.
"""
from __future__ import annotations

from decimal import Decimal

from flask import flash, jsonify, redirect, request, url_for
from flask_appbuilder import expose
from flask_babel import gettext as _

from ...billing import invoicing
from ...billing.dashboard import add_funds_needed, add_funds_suggestion
from ...domain import DomainError
from ..formatting import money
from . import ClientAreaView, client_page



def _amount_arg(raw) -> str:
    return str(raw or "").strip()


def _plain(value: Decimal) -> str:
    return format(value.quantize(invoicing.INVOICE_PLACES), "f")


def _rate(rate: Decimal) -> str:
    """A tax rate without needless zeros: 23.00 → 23, 20.00 → 20 (not 2E+1), 7.70 → 7.7."""
    return format(rate.normalize(), "f")


def quote_json(quote: invoicing.AddFundsQuote) -> dict:
    """A quote as the page's script reads it: plain decimals and the same amounts formatted for display."""
    currency = quote.currency
    return {
        "net": _plain(quote.net),
        "net_text": money(quote.net, currency),
        "taxes": [
            {"name": name, "rate": _rate(rate), "amount": _plain(amount),
             "amount_text": money(amount, currency)}
            for name, rate, amount in quote.tax_lines
        ],
        "total": _plain(quote.total),
        "total_text": money(quote.total, currency),
        "balance_after": format(quote.balance_after, "f"),
        "balance_after_text": money(quote.balance_after, currency),
        "currency": currency.code if currency is not None else "",
        "reverse_charge": quote.reverse_charge,
        "note": _(quote.note) if quote.note else "",
    }


class ClientAddFundsView(ClientAreaView):
    route_base = "/client/add-funds"
    default_view = "add_funds"

    def _page(self, link, amount: str, error: str = "", status: int = 200):
        client = link.client
        limits = invoicing.add_funds_limits(client)
        quote = None
        if not error and amount:
            try:
                quote = invoicing.quote_add_funds(client, amount)
            except DomainError as exc:
                error = " ".join(exc.errors.values())
        return (
            self.render_area(
                "add_funds.html", link, "add_funds",
                amount=amount, error=error, quote=quote, limits=limits, suggestion=add_funds_suggestion(client),
                needed=add_funds_needed(client),
                plain=_plain, rate_text=_rate,
            ),
            status,
        )

    @expose("/", methods=["GET", "POST"])
    @client_page("manage_invoices")
    def add_funds(self, link):
        if request.method == "POST":
            return self._top_up(link)
        amount = _amount_arg(request.args.get("amount"))
        if not amount:
            suggestion = add_funds_suggestion(link.client)
            amount = _plain(suggestion) if suggestion > 0 else ""
        return self._page(link, amount)

    def _top_up(self, link):
        amount = _amount_arg(request.form.get("amount"))
        try:
            document = invoicing.create_add_funds_proforma(link.client, amount)
        except DomainError as exc:
            return self._page(link, amount, " ".join(exc.errors.values()), 400)
        flash(_("Proforma %(number)s created: pay it to add the funds.", number=document.number), "success")
        return redirect(url_for("ClientAreaInvoicesView.invoice", invoice_id=document.id, _anchor="pay"))

    @expose("/quote")
    @client_page("manage_invoices")
    def quote(self, link):
        try:
            quote = invoicing.quote_add_funds(link.client, _amount_arg(request.args.get("amount")))
        except DomainError as exc:
            return jsonify(error=" ".join(exc.errors.values()), errors=exc.errors), 400
        return jsonify(quote_json(quote))


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientAddFundsView())
