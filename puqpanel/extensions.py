"""Singletons shared by the bundled app; a host app may bring its own (see PuqPanel)."""
from flask_appbuilder import AppBuilder, Model
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

# Flask-SQLAlchemy bound to FAB's declarative metadata, so Alembic sees FAB's ab_* tables and ours.
db = SQLAlchemy(metadata=Model.metadata)
csrf = CSRFProtect()
migrate = Migrate()
# Permissions are synced by `puqpanel init`, never at app start (several workers would race).
appbuilder = AppBuilder(update_perms=False)
