"""Run in a subprocess by tests/test_plugin_host.py: build the host app, bring its schema to head, sync the
roles, create an admin, log in through the real form and open puqpanel's screens. Prints one JSON line.

    HOST_DATABASE_URL=sqlite:////tmp/host.db python -m tests.host_app.check
"""
from __future__ import annotations

import json
import re
import sys

from flask_migrate import upgrade
from sqlalchemy import select

import puqpanel.paths
from puqpanel.security import sync_roles

from .app import Department, create_app, db

PASSWORD = "Host-admin-pass1"
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


def _token(html: str) -> str:
    match = _CSRF.search(html)
    return (match.group(1) or match.group(2)) if match else ""


def main() -> dict:
    app = create_app()
    result: dict = {}
    with app.app_context():
        upgrade(directory=puqpanel.paths.MIGRATIONS_DIR)
        Department.__table__.create(db.engine, checkfirst=True)  # the host's own table, its own business
        result["roles"] = sync_roles()
        sm = app.appbuilder.sm
        if sm.find_user(username="hostadmin") is None:
            sm.add_user("hostadmin", "Host", "Admin", "hostadmin@host.example.com", sm.find_role("Admin"), PASSWORD)
        if db.session.scalar(select(Department.id).where(Department.name == "Sales")) is None:
            db.session.add(Department(name="Sales"))
            db.session.commit()
        from puqpanel.domain.demo import load_demo

        result["demo"] = load_demo(client_count=3, progress=False)["clients"]
        from puqpanel.models import Client

        first_client_id = db.session.scalar(select(Client.id).order_by(Client.id))
        result["views"] = sorted(type(v).__name__ for v in app.appbuilder.baseviews)
        pvm = sm.permissionview_model
        client_pvs = db.session.scalars(
            select(pvm).join(sm.viewmenu_model).where(sm.viewmenu_model.name == "Client")
        ).all()
        result["client_permissions"] = sorted(pv.permission.name for pv in client_pvs)
        admin = sm.find_role("Admin")
        result["admin_client_permissions"] = sorted(
            pv.permission.name for pv in admin.permissions if pv.view_menu.name == "Client"
        )
        result["cli_commands"] = sorted(app.cli.commands["puqpanel"].commands)
        result["extensions"] = sorted(k for k in app.extensions if k in ("puqpanel", "migrate", "csrf", "sqlalchemy"))

    client = app.test_client()
    result["anonymous_clients_status"] = client.get("/clients/").status_code
    login_page = client.get("/login/")
    result["login_without_token_status"] = client.post(
        "/login/", data={"username": "hostadmin", "password": PASSWORD}
    ).status_code
    resp = client.post(
        "/login/", data={"username": "hostadmin", "password": PASSWORD, "csrf_token": _token(login_page.text)}
    )
    result["login_status"] = resp.status_code
    clients_page = client.get("/clients/")
    result["clients_status"] = clients_page.status_code
    result["clients_listed"] = clients_page.text.count(f'href="/clients/{first_client_id}"') > 0
    result["client_record_status"] = client.get(f"/clients/{first_client_id}").status_code
    result["clients_page_has_csrf_form"] = bool(_token(client.get("/clients/add").text))
    departments = client.get("/departmentview/list/")
    result["departments_status"] = departments.status_code
    result["departments_lists_sales"] = "Sales" in departments.text
    index = client.get("/")
    result["menu_has_clients"] = "/clients/" in index.text
    result["menu_has_departments"] = "/departmentview/list/" in index.text
    return result


if __name__ == "__main__":
    sys.stdout.write(json.dumps(main()) + "\n")
