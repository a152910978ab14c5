#!/usr/bin/env bash
# Run puqpanel with demo data on SQLite, from a fresh clone. Safe to run again.
#
#   ./scripts/demo.sh
#
# Environment (all optional):
#   HOST, PORT               where the web server listens (127.0.0.1, 5000)
#   PUQPANEL_INSTANCE_PATH   instance folder: SQLite database, secret key (./instance)
#   PUQPANEL_DATABASE_URL    another database instead of the SQLite file
#   ADMIN_USERNAME           the staff admin's login (admin)
#   ADMIN_PASSWORD           the admin's password; set it to choose one, or to reset a forgotten one.
#                            Unset: a password is generated on the first run, kept in the instance
#                            folder (demo-admin-password, mode 600) and printed on every run.
#   DEMO_CLIENTS             how many demo clients (200)
set -euo pipefail

source "$(dirname "$0")/_setup.sh"

# --- Python environment ----------------------------------------------------------------------------
ensure_venv base
export PATH="$ROOT/.venv/bin:$PATH"

# --- wkhtmltopdf for invoice PDFs -----------------------------------------------------------------
ensure_pdf_tools base

# --- Translations (the .mo files are build output, not committed) ---------------------------------
scripts/translations.sh compile

# --- Database, roles, admin, demo data --------------------------------------------------------------
export PUQPANEL_INSTANCE_PATH="${PUQPANEL_INSTANCE_PATH:-$ROOT/instance}"
mkdir -p "$PUQPANEL_INSTANCE_PATH"
export PUQPANEL_INSTANCE_PATH="$(cd "$PUQPANEL_INSTANCE_PATH" && pwd)"
echo "==> instance folder: $PUQPANEL_INSTANCE_PATH"

echo "==> puqpanel init"
puqpanel init

admin_user="${ADMIN_USERNAME:-admin}"
pw_file="$PUQPANEL_INSTANCE_PATH/demo-admin-password"
if [ -n "${ADMIN_PASSWORD:-}" ]; then
    password=$ADMIN_PASSWORD
elif [ -s "$pw_file" ]; then
    password=$(cat "$pw_file")
else
    password=$(python -c 'from puqpanel.domain.passwords import generate_password; print(generate_password())')
fi
echo "==> puqpanel create-admin"
out=$(puqpanel create-admin --username "$admin_user" --password "$password")
echo "$out"
if echo "$out" | grep -q "already exists"; then
    if [ -n "${ADMIN_PASSWORD:-}" ]; then
        puqpanel fab reset-password --username "$admin_user" --password "$password" >/dev/null
        echo "Password of $admin_user reset to ADMIN_PASSWORD."
    elif [ ! -s "$pw_file" ] || ! python - "$admin_user" "$password" 2>/dev/null <<'PY'
import sys

from werkzeug.security import check_password_hash

from puqpanel.app import create_app

app = create_app()
with app.app_context():
    user = app.appbuilder.sm.find_user(username=sys.argv[1])
    sys.exit(0 if user is not None and check_password_hash(user.password, sys.argv[2]) else 1)
PY
    then
        password=""  # set elsewhere (FAB's screens, ADMIN_PASSWORD, create-admin): not ours to print
    fi
fi
if [ -n "${ADMIN_PASSWORD:-}" ] || [ -z "$password" ]; then
    rm -f "$pw_file"  # only a password this script generated is kept
else
    (umask 077 && printf '%s\n' "$password" >"$pw_file")
fi

echo "==> puqpanel demo (idempotent)"
puqpanel demo --clients "${DEMO_CLIENTS:-200}"

# --- Serve -----------------------------------------------------------------------------------------
host="${HOST:-127.0.0.1}"
port="${PORT:-5000}"
# Links in e-mails (password reset, invitations, reminders) point at this server unless set otherwise.
export PUQPANEL_PUBLIC_URL="${PUQPANEL_PUBLIC_URL:-http://$host:$port}"
cat <<EOF

============================================================
 puqpanel is starting:  http://$host:$port/
 staff admin login:     $admin_user
 password:              ${password:-(the one you set; ADMIN_PASSWORD=... ./scripts/demo.sh resets it)}
 client area login:     client0001@puqpanel-demo.example.com  (every demo client owner: Demo-client1)
 (Ctrl+C stops the server; running ./scripts/demo.sh again keeps the data)
============================================================

EOF
exec puqpanel run --host "$host" --port "$port"
