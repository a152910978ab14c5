"""A real Celery worker runs puqpanel's tasks against the test database.

The broker is Redis when PUQPANEL_TEST_BROKER_URL is set (CI); otherwise kombu's SQLAlchemy transport on a
SQLite file, so the test needs no server and always runs.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

REDIS = os.environ.get("PUQPANEL_TEST_BROKER_URL")


@pytest.fixture()
def broker(tmp_path):
    """(broker url, result backend url)."""
    if REDIS:
        return REDIS, REDIS
    return f"sqla+sqlite:///{tmp_path}/broker.sqlite", f"db+sqlite:///{tmp_path}/results.sqlite"


@pytest.fixture()
def worker(app, tmp_path, broker):
    broker_url, backend_url = broker
    env = dict(os.environ, PUQPANEL_BROKER_URL=broker_url, PUQPANEL_RESULT_BACKEND=backend_url,
               PUQPANEL_INSTANCE_PATH=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "puqpanel.tasks.worker", "worker", "--pool=solo",
         "--concurrency=1", "--without-gossip", "--without-mingle", "--loglevel=WARNING", "-n", "puqtest@%h"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_worker_runs_a_task_on_the_app_database(worker, broker):
    from celery import Celery

    broker_url, backend_url = broker
    client = Celery("puqpanel-test-client", broker=broker_url, backend=backend_url, set_as_current=False)
    client.conf.broker_connection_retry_on_startup = True
    deadline = time.monotonic() + 60
    result = client.send_task("puqpanel.ping")
    while not result.ready():
        assert worker.poll() is None, worker.stdout.read()
        assert time.monotonic() < deadline, "the worker did not answer within 60 s"
        time.sleep(0.2)
    assert result.get(timeout=5) == "1"
