"""puqpanel added to an existing FAB application (tests/host_app) in a few lines.

The host app runs in subprocesses: FAB keeps module-level state and this test process already has the bundled
app. The host gets only its own settings (no PUQPANEL_* variables), a SQLite file of its own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90
    )


def test_existing_fab_app_adds_puqpanel(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUQPANEL_")}
    env.update(HOST_DATABASE_URL=f"sqlite:///{tmp_path / 'host.db'}", HOST_SECRET_KEY="host-app-test-key")

    # The plugin registers `flask puqpanel ...` on the host's CLI; init builds the schema and the roles.
    init = _run(["-m", "flask", "--app", "tests.host_app.app", "puqpanel", "init"], env)
    assert init.returncode == 0, init.stdout + init.stderr
    assert "roles synced: Admin, Support, Billing, Manager, Client" in init.stdout

    check = _run(["-m", "tests.host_app.check"], env)
    assert check.returncode == 0, check.stdout + check.stderr
    result = json.loads(check.stdout.strip().splitlines()[-1])

    assert result["roles"] == ["Admin", "Support", "Billing", "Manager", "Client"]
    # puqpanel's views sit next to the host's own view and FAB's security views
    assert {"ClientDirectoryView", "ClientRecordView", "ClientGroupView", "TagView", "CustomFieldView",
            "DepartmentView", "UserDBModelView"} <= set(result["views"])
    client_perms = {"can_list", "can_show", "can_add", "can_edit", "can_export", "can_write_note",
                    "can_manage_addresses", "can_manage_users", "can_access_all"}
    assert set(result["client_permissions"]) == client_perms
    assert set(result["admin_client_permissions"]) == client_perms
    assert {"init", "create-admin", "demo"} <= set(result["cli_commands"])
    assert result["extensions"] == ["csrf", "migrate", "puqpanel", "sqlalchemy"]
    assert result["demo"] == 3

    # real login with the token from the form; CSRF stays on in the host
    assert result["anonymous_clients_status"] == 302
    assert result["login_without_token_status"] == 400
    assert result["login_status"] == 302
    assert result["clients_status"] == 200 and result["clients_listed"]
    assert result["client_record_status"] == 200
    assert result["clients_page_has_csrf_form"]
    assert result["departments_status"] == 200 and result["departments_lists_sales"]
    assert result["menu_has_clients"] and result["menu_has_departments"]

    # init again on the populated database: idempotent
    again = _run(["-m", "flask", "--app", "tests.host_app.app", "puqpanel", "init"], env)
    assert again.returncode == 0, again.stdout + again.stderr
