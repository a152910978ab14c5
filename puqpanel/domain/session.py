"""The SQLAlchemy session of whichever AppBuilder puqpanel is registered on, and its unit of work."""
from contextlib import contextmanager

from flask import current_app


def get_session():
    return current_app.appbuilder.session


@contextmanager
def transaction():
    """Commit what the block added (the change and its activity rows) together, or roll all of it back."""
    session = get_session()
    try:
        yield session
        session.commit()
    except Exception:
        session.rollback()
        raise
