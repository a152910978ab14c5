"""Celery app bound to Flask (Flask's documented celery_init_app pattern).

Eager by default (PUQPANEL_BROKER_URL unset); a worker runs with
`celery -A puqpanel.tasks.worker worker`.
"""
from __future__ import annotations

from celery import Celery, Task
from flask import Flask, has_app_context


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            if has_app_context():  # eager task inside a request/CLI: reuse its context and DB session
                return self.run(*args, **kwargs)
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    celery_app.autodiscover_tasks(["puqpanel.tasks"], related_name="jobs", force=True)
    celery_app.autodiscover_tasks(["puqpanel.tasks"], related_name="vies", force=True)
    celery_app.autodiscover_tasks(["puqpanel.tasks"], related_name="engine", force=True)
    return celery_app
