"""The billing cycle on real Celery workers (Redis broker, PostgreSQL): two workers on one run, the same run
enqueued twice at once, and a worker killed in the middle of the charge job.

Workers are `celery -A puqpanel.tasks.worker worker --pool=solo` subprocesses with chunks of 200 service
ids (~16 chunk tasks per job) and a 5 s visibility timeout, so that the message a killed worker held comes
back. The test process only enqueues `puqpanel.engine.start` and watches the AutomationRun rows. Each
test's data is tests/engine_data.py's mix (~3 000 services); its expected result is computed independently
(engine_data.simulate_cycle) and compared row by row.

Needs PUQPANEL_TEST_BROKER_URL (Redis; the db is flushed) and PUQPANEL_TEST_DATABASE_URL (PostgreSQL).
"""
from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select

from conftest import IS_POSTGRES
from engine_data import assert_outcome, build_mix, simulate_again, simulate_cycle
from puqpanel.models import AutomationChunk, AutomationRun, Client, Service, Transaction

BROKER = os.environ.get("PUQPANEL_TEST_BROKER_URL")
pytestmark = [
    pytest.mark.skipif(not BROKER, reason="PUQPANEL_TEST_BROKER_URL is not set: real-worker engine tests need Redis"),
    pytest.mark.skipif(not IS_POSTGRES, reason="two workers on one database need PostgreSQL "
                                               "(PUQPANEL_TEST_DATABASE_URL); SQLite serialises all writers"),
]

AT = dt.datetime(2026, 3, 1, 5, 0, 0)
CHUNK = 200
VISIBILITY = 5
N = 3000
TIMEOUT = 120
TASK_LINE = re.compile(r"Task (puqpanel\.engine\.\w+)\[([0-9a-f-]+)\] (received|succeeded|failed|raised)")


class Worker:
    """A celery worker subprocess whose output is collected by a thread."""

    def __init__(self, name: str, env: dict):
        self.name = name
        self.killed = False
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "puqpanel.tasks.worker", "worker", "--pool=solo",
             "--concurrency=1", "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO",
             "-n", f"{name}@%h"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def ready(self) -> bool:
        return any(line.rstrip().endswith(" ready.") for line in list(self.lines))

    def tasks(self, state: str, name: str = "puqpanel.engine.chunk") -> list[str]:
        """Ids of the tasks this worker logged in `state` (received / succeeded / failed)."""
        found = []
        for line in list(self.lines):
            match = TASK_LINE.search(line)
            if match and match.group(1) == name and match.group(3) == state:
                found.append(match.group(2))
        return found

    def in_flight(self) -> list[str]:
        done = set(self.tasks("succeeded")) | set(self.tasks("failed")) | set(self.tasks("raised"))
        return [task for task in self.tasks("received") if task not in done]

    def kill(self) -> None:
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.reader.join(timeout=5)

    def output(self, last: int = 60) -> str:
        return f"--- worker {self.name} (exit {self.proc.poll()}) ---\n" + "".join(self.lines[-last:])


class Cluster:
    """The test's workers and a Celery client to enqueue with."""

    def __init__(self, tmp_path):
        from celery import Celery

        self.env = dict(os.environ, PUQPANEL_BROKER_URL=BROKER, PUQPANEL_RESULT_BACKEND=BROKER,
                        PUQPANEL_DATABASE_URL=os.environ["PUQPANEL_DATABASE_URL"],
                        PUQPANEL_BILLING_CHUNK_SIZE=str(CHUNK), PUQPANEL_VISIBILITY_TIMEOUT=str(VISIBILITY),
                        PUQPANEL_INSTANCE_PATH=str(tmp_path))
        self.workers: list[Worker] = []
        self.client = Celery("puqpanel-engine-test", broker=BROKER, backend=BROKER, set_as_current=False)
        self.client.conf.broker_connection_retry_on_startup = True

    def start(self, *names: str) -> list[Worker]:
        started = [Worker(name, self.env) for name in names]
        self.workers += started
        self.wait(lambda: all(w.ready for w in started), 60, f"workers {names} ready")
        return started

    def enqueue_cycle(self, at: dt.datetime = AT) -> None:
        self.client.send_task("puqpanel.engine.start", args=("cycle", at.isoformat(), "cli", None))

    def outputs(self) -> str:
        return "\n".join(w.output() for w in self.workers)

    def wait(self, condition, timeout: float, what: str, fail: bool = True) -> bool:
        """Poll `condition` until true (True) or `timeout` (fail, or False with fail=False); a worker that
        exited on its own fails at once, with every worker's output."""
        deadline = time.monotonic() + timeout
        while not condition():
            for worker in self.workers:
                if not worker.killed and worker.proc.poll() is not None:
                    pytest.fail(f"worker {worker.name} exited while waiting for {what}\n{self.outputs()}")
            if time.monotonic() > deadline:
                if not fail:
                    return False
                pytest.fail(f"{what}: not within {timeout} s\n{self.outputs()}")
            time.sleep(0.02)
        return True

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.client.close()


@pytest.fixture()
def cluster(app, db, tmp_path):
    """Workers are stopped (killed if need be) at teardown, also when the test failed — before `db` wipes
    the tables."""
    import redis

    redis.Redis.from_url(BROKER).flushdb()
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def cycles(db) -> list[AutomationRun]:
    db.rollback()
    return list(db.scalars(select(AutomationRun).where(AutomationRun.job == "cycle").order_by(AutomationRun.id)))


def finished(db, count: int):
    """Condition: `count` cycles exist and none of them is running."""
    def condition() -> bool:
        found = cycles(db)
        return len(found) >= count and all(run.status != "running" for run in found)
    return condition


def assert_cycles_succeeded(db, ids: list[int] | None = None) -> None:
    for run in cycles(db):
        if ids is None or run.id in ids:
            assert run.status == "succeeded", (run.id, run.status, run.errors)
            jobs = db.scalars(select(AutomationRun).where(AutomationRun.cycle_id == run.id)).all()
            assert len(jobs) == 6 and all(job.status == "succeeded" for job in jobs), [
                (job.job, job.status, job.errors) for job in jobs]


def snapshot(db) -> tuple:
    db.rollback()
    return (db.scalar(select(func.count()).select_from(Transaction)),
            tuple(db.execute(select(Client.id, Client.balance).order_by(Client.id)).all()),
            tuple(db.execute(select(Service.id, Service.status, Service.paid_until, Service.suspended_at)
                             .order_by(Service.id)).all()))


def make_data(db, seed: int):
    """The mix (fixpoint variant: a second cycle at the same moment has nothing to do, so however two
    concurrent or repeated cycles interleave, the result must be one cycle's) and its expected outcome."""
    data = build_mix(db, n_services=N, at=AT, block=CHUNK, seed=seed, fixpoint=True)
    expected = simulate_cycle(data, CHUNK)
    assert expected.straddling == [], "test data: a partially covered client spans two chunks"
    again = simulate_again(data, expected, CHUNK)
    assert not (again.rows or again.unsuspended or again.created or again.suspended or again.terminated), \
        "test data: a second cycle would still change something"
    assert len(expected.rows) > 5000 and expected.suspended and expected.unsuspended and expected.terminated
    return data, expected


def test_two_workers_share_one_run(cluster, db):
    data, expected = make_data(db, seed=11)
    w1, w2 = cluster.start("w1", "w2")
    cluster.enqueue_cycle()
    cluster.wait(finished(db, 1), TIMEOUT, "the billing cycle")
    assert_cycles_succeeded(db)
    charge = db.scalar(select(AutomationRun).where(AutomationRun.job == "charge"))
    assert charge.chunks_total >= 10
    # Both workers took chunk tasks.
    assert len(w1.tasks("succeeded")) >= 3 and len(w2.tasks("succeeded")) >= 3, cluster.outputs()
    executed = len(w1.tasks("succeeded")) + len(w2.tasks("succeeded"))
    chunks = db.scalar(select(func.count()).select_from(AutomationChunk))
    assert executed >= chunks
    assert_outcome(db, data, expected)


def test_the_same_run_enqueued_twice_at_once(cluster, db):
    data, expected = make_data(db, seed=12)
    cluster.start("w1", "w2")
    cluster.enqueue_cycle()
    cluster.enqueue_cycle()
    cluster.wait(finished(db, 2), TIMEOUT, "both billing cycles")
    assert_cycles_succeeded(db)
    assert_outcome(db, data, expected)
    # Between them, the two cycles' charge jobs wrote each expected row once (activation rows aside).
    charges = [run.counts.get("charges", 0) for run in db.scalars(
        select(AutomationRun).where(AutomationRun.job == "charge"))]
    assert len(charges) == 2
    assert sum(charges) == sum(1 for (sid, _start) in expected.rows if sid not in expected.created), charges


def test_worker_killed_during_the_charge_job(cluster, db, capsys):
    data, expected = make_data(db, seed=13)
    w1, w2 = cluster.start("w1", "w2")
    cluster.enqueue_cycle()

    def charge_half_done() -> bool:
        db.rollback()
        run = db.scalar(select(AutomationRun).where(AutomationRun.job == "charge"))
        if run is not None and run.status != "running":
            pytest.fail(f"the charge job ended before w1 was caught in one of its chunks\n{cluster.outputs()}")
        return run is not None and 2 <= run.chunks_done <= run.chunks_total - 3 and bool(w1.in_flight())

    cluster.wait(charge_half_done, TIMEOUT, "w1 executing a chunk of the charge job")
    lost = w1.in_flight()
    w1.kill()
    killed_at = time.monotonic()
    db.rollback()
    charge = db.scalar(select(AutomationRun).where(AutomationRun.job == "charge"))
    done_at_kill = (charge.chunks_done, charge.chunks_total)

    # w2 goes on with the other chunks; the killed one's message is invisible until the visibility timeout
    # has passed. A worker restores such messages when it starts (and on a slow timer later): start w3 then.
    cluster.wait(lambda: time.monotonic() - killed_at > VISIBILITY + 1, VISIBILITY + 5, "the visibility timeout")
    (w3,) = cluster.start("w3")
    redelivered = cluster.wait(finished(db, 1), 60, "the cycle after the kill", fail=False)
    if redelivered:
        assert_cycles_succeeded(db)
        retaken = [task for task in lost if task in w2.tasks("received") + w3.tasks("received")]
        assert retaken == lost
        # Started again at the same moment, the finished cycle changes nothing.
        before = snapshot(db)
        cluster.enqueue_cycle()
        cluster.wait(finished(db, 2), TIMEOUT, "the re-run")
        assert snapshot(db) == before
    else:  # the lost chunk never came back: the run is redone by starting it again
        cluster.enqueue_cycle()
        cluster.wait(lambda: len(cycles(db)) >= 2 and cycles(db)[-1].status != "running", TIMEOUT, "the re-run")
        assert_cycles_succeeded(db, [cycles(db)[-1].id])
    assert_outcome(db, data, expected)
    if redelivered:
        taker = "w3" if set(lost) & set(w3.tasks("received")) else "w2"
        how = f"redelivered after the visibility timeout, executed by {taker}"
    else:
        how = "not redelivered: redone by starting the run again"
    # Attempts count executions that committed (the chunk lock and the work are one transaction): 1
    # everywhere — the killed execution was rolled back and redone; one 2 — it had committed just before
    # the kill and the redelivered message found the chunk done.
    attempts = db.scalars(select(AutomationChunk.attempts).join(AutomationRun).where(
        AutomationRun.job == "charge", AutomationRun.cycle_id == cycles(db)[0].id)).all()
    with capsys.disabled():
        print(f"\nworker w1 killed in the charge job at {done_at_kill[0]}/{done_at_kill[1]} chunks done, "
              f"chunk task in flight {lost}: {how}; charge chunk attempts {sorted(attempts)}")
