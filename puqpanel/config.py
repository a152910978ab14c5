"""Configuration read from the environment (PUQPANEL_*) with safe embedded defaults."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

LANGUAGES = {
    "en": {"flag": "gb", "name": "English"},
    "de": {"flag": "de", "name": "Deutsch"},
    "fr": {"flag": "fr", "name": "Français"},
    "pl": {"flag": "pl", "name": "Polski"},
    "uk": {"flag": "ua", "name": "Українська"},
}


def _secret_key(instance_path: Path) -> str:
    """PUQPANEL_SECRET_KEY, else a random key generated once and kept in the instance folder."""
    key = os.environ.get("PUQPANEL_SECRET_KEY")
    if key:
        return key
    key_file = instance_path / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    key = secrets.token_hex(32)
    instance_path.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def beat_schedule() -> dict:
    """When celery beat starts the engine's jobs (UTC). The cycle (cancel, create, unsuspend, charge,
    suspend, terminate) runs every PUQPANEL_CYCLE_MINUTES (default 5): hourly-billed services are charged
    at most that late into their hour. Run exactly one beat process."""
    from celery.schedules import crontab

    minutes = int(os.environ.get("PUQPANEL_CYCLE_MINUTES") or 5)
    task = "puqpanel.engine.scheduled"
    return {
        "billing-cycle": {"task": task, "schedule": crontab(minute=f"*/{minutes}"), "args": ("cycle",)},
        "convert-prices": {"task": task, "schedule": crontab(minute=10, hour=2), "args": ("convert_prices",)},
        "revalidate-vat": {"task": task, "schedule": crontab(minute=20, hour=3), "args": ("revalidate_vat",)},
        "overdue-reminders": {"task": task, "schedule": crontab(minute=0, hour=8), "args": ("reminders",)},
        "send-email": {"task": task, "schedule": crontab(minute="*"), "args": ("send_email",)},
    }


def build_config(instance_path: str) -> dict:
    instance = Path(instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    database_url = os.environ.get("PUQPANEL_DATABASE_URL") or f"sqlite:///{instance / 'puqpanel.db'}"
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]
    broker_url = os.environ.get("PUQPANEL_BROKER_URL") or ""
    engine_options: dict = {"pool_pre_ping": True}
    if database_url.startswith("postgresql"):
        # psycopg 3 would switch to server-side prepared generic plans after 5 runs (see ENGINEERING.md).
        engine_options["connect_args"] = {"prepare_threshold": None}
    return {
        "SECRET_KEY": _secret_key(instance),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options,
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "APP_NAME": "puqpanel",
        "APP_THEME": "",
        "FAB_CREATE_DB": False,
        "FAB_UPDATE_PERMS": False,
        "FAB_ADD_SECURITY_API": True,
        "FAB_INDEX_VIEW": "puqpanel.views.index.PuqIndexView",
        "AUTH_TYPE": 1,  # AUTH_DB
        "AUTH_ROLE_ADMIN": "Admin",
        "AUTH_ROLE_PUBLIC": "Public",
        "AUTH_USER_REGISTRATION": False,
        "WTF_CSRF_ENABLED": True,
        "LANGUAGES": LANGUAGES,
        "BABEL_DEFAULT_LOCALE": "en",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "PUQPANEL_BROKER_URL": broker_url,
        # Number of reverse proxies in front of the app whose X-Forwarded-* headers are trusted.
        "PUQPANEL_TRUSTED_PROXIES": int(os.environ.get("PUQPANEL_TRUSTED_PROXIES") or 0),
        "CELERY": {
            "broker_url": broker_url or "memory://",
            # Redis serves as result backend too, unless PUQPANEL_RESULT_BACKEND names another.
            "result_backend": os.environ.get("PUQPANEL_RESULT_BACKEND")
            or (broker_url if broker_url.startswith("redis") else None),
            "task_always_eager": not broker_url,
            "task_eager_propagates": True,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            # A message a dead worker held goes back to the queue after this many seconds (Redis, SQS; other
            # transports such as kombu's SQLAlchemy one refuse the option).
            "broker_transport_options": {
                "visibility_timeout": int(os.environ.get("PUQPANEL_VISIBILITY_TIMEOUT") or 3600)
            } if broker_url.startswith(("redis", "rediss", "sqs")) else {},
            "beat_schedule": beat_schedule(),
        },
        # Billing engine: services per chunk task; minutes after which a "running" run counts as lost.
        "PUQPANEL_BILLING_CHUNK_SIZE": int(os.environ.get("PUQPANEL_BILLING_CHUNK_SIZE") or 5000),
        "PUQPANEL_RUN_STALE_MINUTES": 60,
        # Staff "Login as Client": an impersonation ends itself after this many minutes.
        "PUQPANEL_IMPERSONATION_MINUTES": int(os.environ.get("PUQPANEL_IMPERSONATION_MINUTES") or 60),
        # Client directory
        "PUQPANEL_PAGE_SIZES": (25, 50, 100, 250),
        "PUQPANEL_DEFAULT_PAGE_SIZE": 25,
    }
