"""The bundled application: `puqpanel.app:create_app()`."""
from __future__ import annotations

import logging
import os

from flask import Flask

from .config import build_config
from .extensions import appbuilder, csrf, db, migrate
from .paths import MIGRATIONS_DIR


def create_app(overrides: dict | None = None) -> Flask:
    # FAB warns about filters on its own security models at every start; nothing to act on.
    logging.getLogger("flask_appbuilder.models.filters").setLevel(logging.ERROR)
    instance_path = os.environ.get("PUQPANEL_INSTANCE_PATH") or None
    app = Flask("puqpanel", instance_path=instance_path, instance_relative_config=True)
    app.config.update(build_config(app.instance_path))
    if os.environ.get("PUQPANEL_CONFIG"):
        app.config.from_pyfile(os.path.abspath(os.environ["PUQPANEL_CONFIG"]))
    if overrides:
        app.config.update(overrides)

    from .plugin import PuqPanel
    from .security import PuqSecurityManager
    from .tasks import celery_init_app
    from .cli import commands

    with app.app_context():
        # Order matters (ENGINEERING.md): db → csrf → migrate → appbuilder → views.
        db.init_app(app)
        csrf.init_app(app)
        migrate.init_app(app, db, directory=MIGRATIONS_DIR, compare_type=True, render_as_batch=True)
        appbuilder.security_manager_class = PuqSecurityManager
        appbuilder.init_app(app, db.session)
        PuqPanel(appbuilder)
        celery_init_app(app)
    for command in commands:
        app.cli.add_command(command)
    proxies = int(app.config.get("PUQPANEL_TRUSTED_PROXIES") or 0)
    if proxies:  # behind N reverse proxies: take the client address and scheme from their headers
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    return app
