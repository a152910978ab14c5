"""Entry point for `celery -A puqpanel.tasks.worker worker|beat`."""
from ..app import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
