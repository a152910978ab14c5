"""A minimal, pre-existing Flask-AppBuilder application that adds puqpanel in a few lines.

It has its own Flask app, SQLAlchemy, CSRF protection, AppBuilder, model and view; puqpanel only adds its
views, menus, permissions and the `flask puqpanel ...` commands. The database URL comes from
HOST_DATABASE_URL (a SQLite file in the tests). Used by tests/test_plugin_host.py:

    flask --app tests.host_app.app puqpanel init
"""
from __future__ import annotations

import os

from flask import Flask
from flask_appbuilder import AppBuilder, Model, ModelView
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

import puqpanel.paths
from puqpanel import PuqPanel

db = SQLAlchemy(metadata=Model.metadata)  # FAB's metadata: Alembic sees FAB's tables and puqpanel's
csrf = CSRFProtect()
migrate = Migrate()


class Department(Model):
    """The host application's own model (its table is the host's business, not puqpanel's)."""

    __tablename__ = "host_department"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)


class DepartmentView(ModelView):
    datamodel = SQLAInterface(Department)
    list_columns = ["name"]


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("HOST_SECRET_KEY") or os.urandom(32).hex(),
        SQLALCHEMY_DATABASE_URI=os.environ["HOST_DATABASE_URL"],
        SQLALCHEMY_TRACK_MODIFICATIONS=False,
        FAB_CREATE_DB=False,  # Alembic (puqpanel's migrations) owns the schema
        AUTH_TYPE=1,  # AUTH_DB
        AUTH_ROLE_ADMIN="Admin",
        WTF_CSRF_ENABLED=True,
    )
    db.init_app(app)
    csrf.init_app(app)
    migrate.init_app(app, db, directory=puqpanel.paths.MIGRATIONS_DIR)
    with app.app_context():
        appbuilder = AppBuilder(app, db.session, update_perms=False)
        appbuilder.add_view(DepartmentView, "Departments", category="Company")
        PuqPanel(appbuilder)
    return app
