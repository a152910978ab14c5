"""One app per test process (FAB keeps a module-level AppBuilder); each test starts from empty tables.

PUQPANEL_TEST_DATABASE_URL selects PostgreSQL (CI); otherwise a SQLite file in a temp folder.
CSRF stays on: helpers read the token from the form, as a browser does.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import re
import tempfile

import pytest
from sqlalchemy import text

_TMP = tempfile.mkdtemp(prefix="puqpanel-test-")
os.environ["PUQPANEL_INSTANCE_PATH"] = _TMP
os.environ["PUQPANEL_SECRET_KEY"] = "test-secret-key-only-for-the-test-run"
# VIES checks (scheduled when a client gets an EU VAT id) never leave the machine: a closed local port answers
# "unavailable" at once; tests/test_vies.py points the URL at its own local server.
os.environ["PUQPANEL_VIES_URL"] = "http://127.0.0.1:9"
os.environ.pop("PUQPANEL_CONFIG", None)
os.environ.pop("PUQPANEL_BROKER_URL", None)
TEST_DB_URL = os.environ.get("PUQPANEL_TEST_DATABASE_URL") or f"sqlite:///{_TMP}/test.db"
os.environ["PUQPANEL_DATABASE_URL"] = TEST_DB_URL
IS_POSTGRES = TEST_DB_URL.startswith("postgresql")

PASSWORD = "Secret-pass1"


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def app():
    if IS_POSTGRES:
        _reset_postgres(TEST_DB_URL)
    from flask_migrate import upgrade

    from puqpanel.app import create_app
    from puqpanel.paths import MIGRATIONS_DIR
    from puqpanel.security import sync_roles

    # Cheap password hashes in tests only (scrypt costs ~0.2 s per hash and every test creates staff users);
    # FAB checks any method's hashes the same way, production keeps FAB's scrypt default.
    app = create_app({"TESTING": True, "FAB_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000"})
    with app.app_context():
        upgrade(directory=MIGRATIONS_DIR)
        sync_roles()
    yield app


@pytest.fixture(scope="session")
def _tables(app):
    from flask_appbuilder import Model

    keep = {"ab_permission", "ab_view_menu", "ab_permission_view", "ab_role", "ab_permission_view_role",
            "alembic_version"}
    return [t.name for t in reversed(Model.metadata.sorted_tables) if t.name not in keep]


@pytest.fixture()
def db(app, _tables):
    """The app's SQLAlchemy session inside an app context; all data rows are wiped after the test."""
    from flask import g, request_started

    from puqpanel.extensions import db as fsa

    def fresh_g(sender, **extra):
        # Test-client requests reuse this pushed app context and so its `g`: clear it per request, or
        # Flask-Login's cached user and Flask-WTF's cached CSRF token leak from one browser to the next.
        g.__dict__.clear()

    ctx = app.app_context()
    ctx.push()
    request_started.connect(fresh_g, app)
    try:
        yield fsa.session
    finally:
        request_started.disconnect(fresh_g, app)
        fsa.session.rollback()
        fsa.session.remove()
        with fsa.engine.begin() as conn:
            if IS_POSTGRES:
                conn.execute(text("TRUNCATE " + ", ".join(_tables) + " RESTART IDENTITY CASCADE"))
            else:
                # The ledger's immutability triggers would refuse the wipe: lift them for it.
                triggers = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
                for name, _sql in triggers:
                    conn.execute(text(f"DROP TRIGGER {name}"))
                for name in _tables:
                    conn.execute(text(f"DELETE FROM {name}"))
                for _name, sql in triggers:
                    conn.execute(text(sql))
        ctx.pop()


def make_user(username: str, role: str = "Admin", email: str | None = None, password: str = PASSWORD):
    from flask import current_app

    sm = current_app.appbuilder.sm
    user = sm.add_user(username, username.capitalize(), "Staff", email or f"{username}@staff.test",
                       sm.find_role(role), password)
    assert user, f"could not create {username}"
    return user


@pytest.fixture()
def staff(db):
    """Staff users, one per built-in role; two managers."""
    return {
        "admin": make_user("admin", "Admin"),
        "support": make_user("support", "Support"),
        "billing": make_user("billing", "Billing"),
        "manager1": make_user("manager1", "Manager"),
        "manager2": make_user("manager2", "Manager"),
    }


@pytest.fixture()
def eur(db):
    """The default currency: EUR, shown with a " €" suffix."""
    from puqpanel.models import Currency

    currency = Currency(code="EUR", suffix=" €", is_default=True)
    db.add(currency)
    db.commit()
    return currency


@pytest.fixture()
def new_client(eur):
    """new_client(**overrides) → a Client made by create_client (owner login with password PASSWORD, billing
    address in Berlin); every call has its own owner email and last name."""
    from puqpanel.domain.clients import NewClient, create_client

    numbers = itertools.count(1)

    def factory(**overrides):
        n = next(numbers)
        data = dict(email=f"owner{n}@example.com", firstname="Anna", lastname=f"Schmidt{n}", address1="Hauptstr. 1",
                    city="Berlin", country="DE", region="DE-BE", phone="030 1234567", password=PASSWORD)
        data.update(overrides)
        client, _password = create_client(NewClient(**data))
        return client

    return factory


_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


def csrf_token(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no csrf_token in the page"
    return match.group(1) or match.group(2)


class Browser:
    """A Flask test client that logs in through the real form and posts forms with their CSRF token."""

    def __init__(self, client):
        self.client = client

    def login(self, username: str, password: str = PASSWORD):
        page = self.client.get("/login/")
        resp = self.client.post(
            "/login/",
            data={"username": username, "password": password, "csrf_token": csrf_token(page.text)},
        )
        assert resp.status_code in (302, 303), resp.text[:500]
        return resp

    def get(self, url, **kw):
        return self.client.get(url, **kw)

    def post_form(self, url: str, data: dict, form_url: str | None = None, **kw):
        """GET the page holding the form (form_url, default url) for the token, then POST."""
        page = self.client.get(form_url or url)
        payload = {"csrf_token": csrf_token(page.text)}
        payload.update(data)
        return self.client.post(url, data=payload, **kw)

    def session_csrf_token(self) -> str:
        """The token any form of this browser's session would carry (Flask-WTF's signed session token),
        for posting to a page the user may not GET (e.g. to check a 403)."""
        from itsdangerous import URLSafeTimedSerializer

        app = self.client.application
        with self.client.session_transaction() as sess:
            raw = sess.setdefault("csrf_token", hashlib.sha1(os.urandom(64)).hexdigest())
        return URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token").dumps(raw)

    def post(self, url: str, data: dict | None = None, **kw):
        payload = {"csrf_token": self.session_csrf_token()}
        payload.update(data or {})
        return self.client.post(url, data=payload, **kw)


@pytest.fixture()
def browser(app, db):
    with app.test_client() as client:
        yield Browser(client)


@pytest.fixture()
def make_browser(app, db):
    clients = []

    def factory(username: str | None = None):
        client = app.test_client()
        clients.append(client)
        b = Browser(client)
        if username:
            b.login(username)
        return b

    yield factory


THREAD_TIMEOUT = 120


def run_threads(app, count: int, work):
    """work(i) in `count` threads started together; each thread has its own app context and session.
    Returns [(result | None, exception | None)] in thread order."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from puqpanel.extensions import db as fsa

    barrier = threading.Barrier(count)

    def thread(i):
        with app.app_context():
            try:
                barrier.wait(timeout=THREAD_TIMEOUT)
                return work(i), None
            except Exception as exc:  # noqa: BLE001 - collected and asserted by the test
                fsa.session.rollback()
                return None, exc
            finally:
                fsa.session.remove()

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(thread, i) for i in range(count)]
        return [f.result(timeout=THREAD_TIMEOUT) for f in futures]
