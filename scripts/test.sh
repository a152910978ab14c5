#!/usr/bin/env bash
# Run puqpanel's tests, from a fresh clone. Arguments go to pytest:
#
#   ./scripts/test.sh                  # everything
#   ./scripts/test.sh -q -k directory  # a selection
#
# SQLite by default. PostgreSQL when PUQPANEL_TEST_DATABASE_URL is set, e.g.
#   PUQPANEL_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test ./scripts/test.sh
# (that database is wiped by the test run). PUQPANEL_TEST_BROKER_URL=redis://... adds the tests that
# run a real Celery worker against Redis.
# Installs what is missing: .venv with puqpanel[test], and Debian's chromium for the browser test
# (Playwright drives /usr/bin/chromium; no browser is downloaded), wkhtmltopdf and poppler-utils for the
# invoice PDF tests.
set -euo pipefail

source "$(dirname "$0")/_setup.sh"

# --- Python environment ----------------------------------------------------------------------------
ensure_venv test

# --- Browser for the Playwright test ----------------------------------------------------------------
if [ ! -x /usr/bin/chromium ]; then
    echo "==> installing Debian's chromium"
    apt_install chromium fonts-liberation
fi

# --- wkhtmltopdf for invoice PDFs, pdftotext to read them back -------------------------------------
ensure_pdf_tools test

# --- Translations ----------------------------------------------------------------------------------
scripts/translations.sh compile

if [ -n "${PUQPANEL_TEST_DATABASE_URL:-}" ]; then
    echo "==> database: PostgreSQL ${PUQPANEL_TEST_DATABASE_URL%%\?*} (wiped by the test run)"
else
    echo "==> database: SQLite (a temporary file); set PUQPANEL_TEST_DATABASE_URL for PostgreSQL"
fi
if [ -n "${PUQPANEL_TEST_BROKER_URL:-}" ]; then
    echo "==> Celery broker for the worker tests: $PUQPANEL_TEST_BROKER_URL"
fi
exec "$ROOT/.venv/bin/python" -m pytest "$@"
