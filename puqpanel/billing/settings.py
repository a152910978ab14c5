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
    # Overdue reminders (engine job "reminders"): days before the due date the "before" reminder goes out,
    # days after it the "after" reminder goes out; the panel's address named in e-mails.
    "PUQPANEL_REMINDER_DAYS_BEFORE": 3,
    "PUQPANEL_REMINDER_DAYS_AFTER": 3,
    "PUQPANEL_PUBLIC_URL": os.environ.get("PUQPANEL_PUBLIC_URL", "http://localhost:8080"),
    # E-mail outbox (engine job "send_email"): SMTP server, sender, retries (a failed attempt waits
    # PUQPANEL_MAIL_RETRY_MINUTES × 2^(attempts - 1); after PUQPANEL_MAIL_MAX_ATTEMPTS the row is "failed"),
    # rows claimed per transaction.
    "PUQPANEL_SMTP_HOST": os.environ.get("PUQPANEL_SMTP_HOST", "localhost"),
    "PUQPANEL_SMTP_PORT": int(os.environ.get("PUQPANEL_SMTP_PORT") or 25),
    "PUQPANEL_SMTP_USER": os.environ.get("PUQPANEL_SMTP_USER", ""),
    "PUQPANEL_SMTP_PASSWORD": os.environ.get("PUQPANEL_SMTP_PASSWORD", ""),
    "PUQPANEL_SMTP_STARTTLS": os.environ.get("PUQPANEL_SMTP_STARTTLS", "").lower() in ("1", "true", "yes", "on"),
    "PUQPANEL_SMTP_SSL": os.environ.get("PUQPANEL_SMTP_SSL", "").lower() in ("1", "true", "yes", "on"),
    "PUQPANEL_SMTP_TIMEOUT": 10,
    "PUQPANEL_MAIL_FROM": os.environ.get("PUQPANEL_MAIL_FROM", "billing@localhost"),
    "PUQPANEL_MAIL_MAX_ATTEMPTS": 8,
    "PUQPANEL_MAIL_RETRY_MINUTES": 5,
    "PUQPANEL_MAIL_BATCH_SIZE": 50,
}


def setting(name: str) -> Any:
    value = current_app.config.get(name, DEFAULTS[name])
    if isinstance(DEFAULTS[name], Decimal):
        return Decimal(str(value))
    return value
