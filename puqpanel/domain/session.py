"""The SQLAlchemy session of whichever AppBuilder puqpanel is registered on."""
from flask import current_app


def get_session():
    return current_app.appbuilder.session
