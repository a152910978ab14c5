"""Celery tasks. Each one calls the domain layer; the billing issues add the scheduled jobs."""
from celery import shared_task


@shared_task(name="puqpanel.ping")
def ping() -> str:
    """Round trip used by health checks and the worker integration test."""
    from ..domain.session import get_session
    from sqlalchemy import text

    return str(get_session().execute(text("SELECT 1")).scalar())
