"""Alembic environment: every table (FAB's ab_* and puqpanel's) comes from FAB's Model.metadata."""
import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

config = context.config
if config.config_file_name and not logging.getLogger().handlers:
    fileConfig(config.config_file_name)


def get_engine():
    return current_app.extensions["migrate"].db.engine


def get_metadata():
    import puqpanel.models  # noqa: F401
    from flask_appbuilder import Model

    return Model.metadata


def render_item(type_, obj, autogen_context):
    """Render puqpanel's Money type as an import of itself."""
    from puqpanel.models.base import Money

    if type_ == "type" and isinstance(obj, Money):
        autogen_context.imports.add("from puqpanel.models.base import Money")
        return "Money()"
    return False


def _options():
    return dict(
        target_metadata=get_metadata(),
        compare_type=True,
        render_as_batch=True,
        render_item=render_item,
    )


def run_migrations_offline():
    context.configure(url=str(get_engine().url), literal_binds=True, **_options())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    def process_revision_directives(context_, revision, directives):
        if getattr(config.cmd_opts, "autogenerate", False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logging.getLogger("alembic").info("No changes in schema detected.")

    connectable = get_engine()
    with connectable.connect() as connection:
        if connection.dialect.name == "sqlite":
            # Batch migrations copy and drop tables; with foreign keys on, ON DELETE would fire.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        context.configure(connection=connection, process_revision_directives=process_revision_directives, **_options())
        with context.begin_transaction():
            context.run_migrations()
        if connection.dialect.name == "sqlite":  # the connection goes back to the app's pool
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
