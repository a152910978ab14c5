"""Billing settings: app config keys with defaults (a host app sets only what it changes)."""
from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from flask import current_app

DEFAULTS: dict[str, Any] = {
    # Add funds: net amount limits and the highest resulting balance, in the DEFAULT currency (scaled by
    # the client's currency exchange rate).
    "PUQPANEL_ADD_FUNDS_MIN": Decimal("10"),
    "PUQPANEL_ADD_FUNDS_MAX": Decimal("10000"),
    "PUQPANEL_MAX_BALANCE": Decimal("100000"),
    "PUQPANEL_INVOICE_DUE_DAYS": 7,
    # VIES REST API base (GET {base}/ms/{CC}/vat/{number}) and its timeout in seconds.
    "PUQPANEL_VIES_URL": os.environ.get(
        "PUQPANEL_VIES_URL", "https://ec.europa.eu/taxation_customs/vies/rest-api"
    ),
    "PUQPANEL_VIES_TIMEOUT": 10,
    # Payment gateways offered (names registered in puqpanel.billing.gateways).
    "PUQPANEL_GATEWAYS": ("bank_transfer", "test"),
    # Secret that signs the test gateway's callbacks (unset: derived from SECRET_KEY).
    "PUQPANEL_TEST_GATEWAY_SECRET": os.environ.get("PUQPANEL_TEST_GATEWAY_SECRET", ""),
    # wkhtmltopdf binary for invoice PDFs.
    "PUQPANEL_WKHTMLTOPDF": os.environ.get("PUQPANEL_WKHTMLTOPDF", "/usr/bin/wkhtmltopdf"),
}


def setting(name: str) -> Any:
    value = current_app.config.get(name, DEFAULTS[name])
    if isinstance(DEFAULTS[name], Decimal):
        return Decimal(str(value))
    return value
