"""The bundled app, migrations, roles and configuration."""
from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import inspect

from conftest import TEST_DB_URL


def test_migrations_create_every_table(app, db):
    from flask_appbuilder import Model

    tables = set(inspect(db.get_bind()).get_table_names())
    assert set(Model.metadata.tables) <= tables
    assert {"ab_user", "ab_role", "puq_client", "puq_activity_log"} <= tables


def test_db_check_reports_no_drift(app):
    env = dict(os.environ, PUQPANEL_DATABASE_URL=TEST_DB_URL)
    result = subprocess.run(
        [sys.executable, "-m", "puqpanel.cli", "db", "check"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_roles_synced_and_idempotent(app, db):
    from puqpanel.security import ROLE_DEFINITIONS, sync_roles

    sm = app.appbuilder.sm
    before = {r.name: sorted(str(p) for p in r.permissions) for r in sm.get_all_roles()}
    sync_roles()
    after = {r.name: sorted(str(p) for p in r.permissions) for r in sm.get_all_roles()}
    assert before == after
    for name in ["Admin", *ROLE_DEFINITIONS]:
        assert sm.find_role(name) is not None
    support = {(p.permission.name, p.view_menu.name) for p in sm.find_role("Support").permissions}
    assert ("can_write_note", "Client") in support and ("can_edit", "Client") not in support
    manager = {(p.permission.name, p.view_menu.name) for p in sm.find_role("Manager").permissions}
    assert ("can_access_all", "Client") not in manager and ("can_edit", "Client") in manager


def test_secret_key_generated_once_in_instance_folder(tmp_path, monkeypatch):
    from puqpanel.config import build_config

    monkeypatch.delenv("PUQPANEL_SECRET_KEY", raising=False)
    first = build_config(str(tmp_path))["SECRET_KEY"]
    second = build_config(str(tmp_path))["SECRET_KEY"]
    assert first == second and len(first) >= 32
    assert (tmp_path / "secret_key").read_text() == first
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"
    assert build_config(str(tmp_path / "other"))["SECRET_KEY"] != first


def test_config_from_environment(tmp_path, monkeypatch):
    from puqpanel.config import build_config

    monkeypatch.delenv("PUQPANEL_DATABASE_URL", raising=False)
    monkeypatch.delenv("PUQPANEL_BROKER_URL", raising=False)
    cfg = build_config(str(tmp_path))
    assert cfg["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'puqpanel.db'}"
    assert cfg["CELERY"]["task_always_eager"] is True
    monkeypatch.setenv("PUQPANEL_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("PUQPANEL_BROKER_URL", "redis://127.0.0.1:6379/0")
    cfg = build_config(str(tmp_path))
    assert cfg["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@h/db"
    assert cfg["CELERY"]["task_always_eager"] is False
    assert cfg["CELERY"]["broker_url"] == "redis://127.0.0.1:6379/0"


def test_eager_celery_task_uses_app_database(app, db):
    from puqpanel.tasks.jobs import ping

    assert ping.delay().get(timeout=10) == "1"


def test_login_page_and_csrf_enforced(app, db, staff):
    with app.test_client() as client:
        resp = client.post("/login/", data={"username": "admin", "password": "Secret-pass1"})
        assert resp.status_code == 400  # no CSRF token


def test_login_and_reach_client_directory(browser, staff):
    browser.login("admin")
    assert browser.get("/clients/").status_code == 200


def test_nul_byte_in_input_is_a_400(browser, staff):
    browser.login("admin")
    assert browser.get("/clients/?q=a%00b").status_code == 400


def test_sqlite_enforces_foreign_keys(app, db):
    from sqlalchemy import text

    if db.get_bind().dialect.name != "sqlite":
        assert db.get_bind().dialect.name == "postgresql"
        return
    assert db.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_deleting_a_tag_removes_it_from_clients(app, db):
    from sqlalchemy import func, select

    from puqpanel.models import Client, Currency, Tag, client_tag

    cur = Currency(code="EUR", is_default=True)
    tag = Tag(name="VIP", color="#ff0000")
    client = Client(firstname="A", lastname="B", currency=cur, tags=[tag])
    db.add(client)
    db.commit()
    db.execute(Tag.__table__.delete().where(Tag.id == tag.id))
    db.commit()
    assert db.scalar(select(func.count()).select_from(client_tag)) == 0
    assert db.get(Client, client.id) is not None
