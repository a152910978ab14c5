"""PuqPanel: registers puqpanel on any FAB AppBuilder.

    with app.app_context():
        appbuilder = AppBuilder(app, db.session)
        PuqPanel(appbuilder)
"""
from __future__ import annotations

from flask import Blueprint, abort, current_app, request
from sqlalchemy import event
from sqlalchemy.engine import Engine

from .paths import TRANSLATIONS_DIR


class PuqPanel:
    def __init__(self, appbuilder=None):
        self.appbuilder = None
        if appbuilder is not None:
            self.init_appbuilder(appbuilder)

    def init_appbuilder(self, appbuilder) -> None:
        app = current_app._get_current_object()
        if "puqpanel" in app.extensions:
            raise RuntimeError("PuqPanel is already registered on this app")
        self.appbuilder = appbuilder
        app.extensions["puqpanel"] = self
        self._add_translations(app)
        # Templates (puqpanel/...) and static files (/static/puqpanel/...).
        app.register_blueprint(
            Blueprint(
                "puqpanel_assets",
                __name__,
                template_folder="templates",
                static_folder="static",
                static_url_path="/static/puqpanel",
            )
        )
        from . import models  # noqa: F401  (tables on the metadata before anything queries)
        from .cli import puqpanel_group
        from .views import register_views
        from .views.formatting import register_template_helpers

        register_template_helpers(app)
        app.before_request(refuse_nul_bytes)
        app.before_request(refuse_unknown_actions)
        from .views.auth import session_guard

        # A signed-in cookie must name a live server-side session; impersonations end after their time.
        app.before_request(session_guard)
        # Every page on puqpanel's base layout (the impersonation banner), unless the host chose its own.
        if appbuilder.base_template == "appbuilder/baselayout.html":
            appbuilder.base_template = "puqpanel/baselayout.html"

        register_views(appbuilder)
        from .views import automation  # Billing → Automation (the billing engine's status page)
        automation.register(appbuilder)
        app.cli.add_command(puqpanel_group)

    @staticmethod
    def _add_translations(app) -> None:
        babel_config = app.extensions.get("babel")
        if babel_config is not None and TRANSLATIONS_DIR not in babel_config.translation_directories:
            babel_config.translation_directories = list(babel_config.translation_directories) + [TRANSLATIONS_DIR]
        dirs = app.config.get("BABEL_TRANSLATION_DIRECTORIES", "")
        if TRANSLATIONS_DIR not in dirs:
            app.config["BABEL_TRANSLATION_DIRECTORIES"] = f"{dirs};{TRANSLATIONS_DIR}" if dirs else TRANSLATIONS_DIR


def _json_strings(value):
    """Every string (keys included) inside a parsed JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_strings(item)


def refuse_nul_bytes():
    """400 for a NUL byte anywhere in the query, form or JSON body: no database stores it in text (PostgreSQL
    errors)."""
    # every value of a repeated key (MultiDict.values() gives only the first: description=ok&description=…)
    values = [request.path, *(v for _key, vs in request.args.lists() for v in vs)]
    if request.method in ("POST", "PUT", "PATCH"):
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            values.extend(v for _key, vs in request.form.lists() for v in vs)
        elif request.is_json:
            values.extend(_json_strings(request.get_json(silent=True)))
    if any("\x00" in value for value in values):
        abort(400)


def refuse_unknown_actions():
    """404 for a FAB model-view action that does not exist: FAB 5.3 looks the name up before any permission
    check and answers an unknown one with a 500 (`/users/action/<name>/<pk>`, `action_post`)."""
    endpoint = request.endpoint or ""
    if not endpoint.endswith((".action", ".action_post")):
        return
    view = getattr(current_app.view_functions.get(endpoint), "__self__", None)
    actions = getattr(view, "actions", None)
    if actions is None:
        return
    name = (request.view_args or {}).get("name") if endpoint.endswith(".action") else request.form.get("action")
    if name not in actions:
        abort(404)


@event.listens_for(Engine, "connect")
def _sqlite_foreign_keys(dbapi_connection, connection_record):
    """SQLite enforces FOREIGN KEY (and ON DELETE) only when asked, per connection."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
