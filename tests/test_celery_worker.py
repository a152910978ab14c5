"""A real Celery worker (Redis broker) runs puqpanel's tasks against the test database."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

BROKER = os.environ.get("PUQPANEL_TEST_BROKER_URL")


@pytest.fixture()
def worker(app, tmp_path):
    if not BROKER:
        pytest.skip("PUQPANEL_TEST_BROKER_URL is not set: no Redis broker configured for a real worker")
    env = dict(os.environ, PUQPANEL_BROKER_URL=BROKER, PUQPANEL_INSTANCE_PATH=str(tmp_path))
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


def test_worker_runs_a_task_on_the_app_database(worker):
    from celery import Celery

    client = Celery("puqpanel-test-client", broker=BROKER, backend=BROKER, set_as_current=False)
    client.conf.broker_connection_retry_on_startup = True
    deadline = time.monotonic() + 60
    result = client.send_task("puqpanel.ping")
    while not result.ready():
        assert worker.poll() is None, worker.stdout.read()
        assert time.monotonic() < deadline, "the worker did not answer within 60 s"
        time.sleep(0.2)
    assert result.get(timeout=5) == "1"
