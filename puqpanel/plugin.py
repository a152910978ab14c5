"""PuqPanel: registers puqpanel on any FAB AppBuilder.

    with app.app_context():
        appbuilder = AppBuilder(app, db.session)
        PuqPanel(appbuilder)
"""
from __future__ import annotations

from flask import Blueprint, current_app

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

        register_views(appbuilder)
        app.cli.add_command(puqpanel_group)

    @staticmethod
    def _add_translations(app) -> None:
        babel_config = app.extensions.get("babel")
        if babel_config is not None and TRANSLATIONS_DIR not in babel_config.translation_directories:
            babel_config.translation_directories = list(babel_config.translation_directories) + [TRANSLATIONS_DIR]
        dirs = app.config.get("BABEL_TRANSLATION_DIRECTORIES", "")
        if TRANSLATIONS_DIR not in dirs:
            app.config["BABEL_TRANSLATION_DIRECTORIES"] = f"{dirs};{TRANSLATIONS_DIR}" if dirs else TRANSLATIONS_DIR
