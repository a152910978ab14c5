"""Bank transfer: the payer wires the money quoting the proforma number; staff record it by hand."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l

from .base import Gateway


class BankTransferGateway(Gateway):
    name = "bank_transfer"
    label = _l("Bank transfer")
    manual = True

    def instructions(self, invoice) -> list[tuple[str, str]]:
        """The issuing home company's bank details as printed on the document (its snapshot), the proforma
        number as the payment reference, and the amount outstanding."""
        from ..invoicing import format_amount

        company = invoice.company_snapshot or {}
        home = invoice.home_company
        return [
            (str(_l("Beneficiary")), company.get("legal_name") or (home.company_name if home else "")),
            (str(_l("Bank details")), company.get("bank_details", home.bank_details if home else "")),
            (str(_l("Reference")), invoice.number or ""),
            (str(_l("Amount")), format_amount(invoice.outstanding, invoice.currency)),
        ]
