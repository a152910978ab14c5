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
# (Playwright drives /usr/bin/chromium; no browser is downloaded).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "need root for: $*" >&2; return 1
    fi
}
apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# --- Python environment ----------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        echo "==> installing python3-venv (Debian)"
        pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        apt_install python3-venv "python${pyver}-venv" || apt_install python3-venv
    fi
    echo "==> creating .venv"
    rm -rf .venv
    python3 -m venv .venv
fi
stamp=.venv/.puqpanel-install
want="$(sha256sum pyproject.toml | cut -d' ' -f1) test"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing puqpanel[test] into .venv"
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" >"$stamp"
fi

# --- Browser for the Playwright test ----------------------------------------------------------------
if [ ! -x /usr/bin/chromium ]; then
    echo "==> installing Debian's chromium"
    apt_install chromium fonts-liberation
fi

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
