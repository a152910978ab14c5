"""Benchmark (not a test): the billing run at a million services on PostgreSQL.

    .venv/bin/python bench/billing_run.py                                   # 1 000 000 services, 500 000 clients
    .venv/bin/python bench/billing_run.py --services 100000 --clients 50000
    .venv/bin/python bench/billing_run.py --database-url postgresql://postgres@127.0.0.1:5432/puq_bench

The database (default postgresql://postgres@127.0.0.1:5432/puq_bench, created when missing) is WIPED: the
script drops its public schema, migrates it to head and fills it with set-based INSERT … SELECT
generate_series: one currency, one product with hourly billing (monthly 10.00), N clients each with an
opening balance (a real ledger row, so verify-ledger holds) and M active services, every one due for its
next hour at the billing moment. Then, in the same run, it measures:

1. raw-SQL floor — one hand-written INSERT … SELECT of the same charge rows (amounts, periods, balance chain),
   rolled back: what PostgreSQL itself needs to write those rows;
2. the puqpanel billing run — `runs.run_inline("cycle", at)`: cancel, create, unsuspend, charge (ledger rows
   + paid-until + balances + one activity entry per client), suspend, terminate, in chunks;
3. a re-run of the finished period (nothing left to charge);
4. a per-row ORM loop (lock the client, charging.charge_period, commit — what a naive job does) over a
   sample of services for the following hour, extrapolated to services/s.

It prints seconds, services/s, peak Python memory (tracemalloc) of the run, and the ratios. Aims (issue 4)
on the 2-core machine: run <= 30 s for 1 000 000 due hourly services, <= 1.5x the raw floor, >= 50x the
per-row loop, re-run <= 5 s, memory flat in N (compare two sizes).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/puq_bench"
START = dt.datetime(2026, 11, 1)  # activation; paid for the first hour
AT = START + dt.timedelta(hours=1, minutes=1)  # every service is due for its second hour


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=500_000)
    parser.add_argument("--sample", type=int, default=5000, help="services in the per-row ORM loop (5000)")
    parser.add_argument("--chunk-size", type=int, default=0, help="services per chunk (default: the app's)")
    parser.add_argument("--database-url", default=os.environ.get("PUQPANEL_BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--workers", type=int, default=2,
                        help="Celery workers (solo pool) for a second run through the broker (2; 0 = skip)")
    parser.add_argument("--broker-url", default=os.environ.get("PUQPANEL_BENCH_BROKER_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--verify", action="store_true", help="also run verify-ledger at the end (slow at 1M)")
    return parser.parse_args(argv)


def _sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url


def reset_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(_sqlalchemy_url(url))
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}).scalar():
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    engine = create_engine(target, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _defaults_select(table, given: dict[str, str]) -> tuple[str, str]:
    """(column list, select list) for an INSERT … SELECT into `table`: `given` SQL per column, the model's
    scalar default for the other NOT NULL columns (now() for callables)."""
    from sqlalchemy.sql.elements import literal

    names, values = [], []
    for column in table.columns:
        if column.name in given:
            names.append(column.name)
            values.append(given[column.name])
        elif column.primary_key or column.nullable:
            continue
        elif column.default is not None and column.default.is_scalar:
            names.append(column.name)
            arg = column.default.arg
            values.append(str(literal(arg).compile(compile_kwargs={"literal_binds": True}))
                          if not isinstance(arg, bool) else ("true" if arg else "false"))
        else:
            names.append(column.name)
            values.append("now()")
    return ", ".join(names), ", ".join(values)


def populate(session, services: int, clients: int) -> None:
    from sqlalchemy import text

    from puqpanel.models import Client, Currency, Product, ProductPrice, Service, Transaction

    run = lambda sql, **p: session.execute(text(sql), p)  # noqa: E731
    for table, given in (
        (Currency.__table__, {"code": "'EUR'", "is_default": "true", "exchange_rate": "1"}),
        (Product.__table__, {"name": "'Cloud VM'", "hourly_billing": "true"}),
        (ProductPrice.__table__, {"product_id": "1", "currency_id": "1", "period": "'monthly'", "base": "10",
                                  "idle": "2", "setup": "0"}),
    ):
        columns, values = _defaults_select(table, given)
        run(f"INSERT INTO {table.name} ({columns}) SELECT {values}")
    columns, values = _defaults_select(Client.__table__, {
        "id": "g", "firstname": "'Client'", "lastname": "'#' || g", "email": "'c' || g || '@bench.example'",
        "currency_id": "1", "balance": "100", "status": "'active'", "language": "'en'",
    })
    run(f"INSERT INTO puq_client ({columns}) SELECT {values} FROM generate_series(1, :n) g", n=clients)
    columns, values = _defaults_select(Transaction.__table__, {
        "client_id": "g", "type": "'adjustment'", "gross": "100", "net": "100", "fees": "0",
        "balance_before": "0", "balance_after": "100", "currency_id": "1", "description": "'Opening balance'",
        "created_at": ":start",
    })
    run(f"INSERT INTO puq_transaction ({columns}) SELECT {values} FROM generate_series(1, :n) g ORDER BY g",
        n=clients, start=START)
    columns, values = _defaults_select(Service.__table__, {
        "id": "g", "client_id": "((g - 1) % :clients) + 1", "product_id": "1", "price_id": "1",
        "status": "'active'", "provision_status": "'completed'", "created_at": ":start",
        "activated_at": ":start", "paid_until": ":paid", "setup_charged": "true",
    })
    run(f"INSERT INTO puq_service ({columns}) SELECT {values} FROM generate_series(1, :n) g",
        n=services, clients=clients, start=START, paid=START + dt.timedelta(hours=1))
    run("SELECT setval(pg_get_serial_sequence('puq_client', 'id'), :n)", n=clients)
    run("SELECT setval(pg_get_serial_sequence('puq_service', 'id'), :n)", n=services)
    session.commit()
    session.execute(text("ANALYZE"))  # fresh statistics, as autovacuum would give a long-lived database
    session.commit()


def raw_floor(session) -> tuple[float, int]:
    """One INSERT … SELECT of the same charge rows (amount, period, balance chain), rolled back."""
    from sqlalchemy import text

    started = time.perf_counter()
    count = session.execute(text("""
        INSERT INTO puq_transaction (client_id, type, gross, net, fees, balance_before, balance_after,
                                     currency_id, description, service_id, period_start, period_stop,
                                     gateway, external_id, created_at)
        SELECT client_id, 'charge', -amount, -amount, 0, balance - cum + amount, balance - cum, 1,
               'Cloud VM — Monthly, billed hourly', id, paid_until, paid_until + interval '1 hour', '', '', :at
        FROM (SELECT s.id, s.client_id, s.paid_until, c.balance,
                     round(p.base / (extract(day from date_trunc('month', s.paid_until) + interval '1 month'
                                             - interval '1 day') * 24), 4) AS amount,
                     sum(round(p.base / (extract(day from date_trunc('month', s.paid_until) + interval '1 month'
                                                 - interval '1 day') * 24), 4))
                         OVER (PARTITION BY s.client_id ORDER BY s.id) AS cum
              FROM puq_service s JOIN puq_product_price p ON p.id = s.price_id JOIN puq_client c ON c.id = s.client_id
              WHERE s.status = 'active' AND s.paid_until <= :at) due
        ORDER BY client_id, id
        ON CONFLICT DO NOTHING"""), {"at": AT}).rowcount
    elapsed = time.perf_counter() - started
    session.rollback()
    return elapsed, count


def orm_loop(session, sample: int, at: dt.datetime) -> tuple[float, int]:
    """The naive job: per service, lock its client, charge the period through the ORM, commit."""
    from sqlalchemy import select

    from puqpanel.billing import clock
    from puqpanel.billing.charging import charge_period
    from puqpanel.billing.ledger import lock_client
    from puqpanel.models import Service

    ids = list(session.scalars(select(Service.id).where(Service.status == "active", Service.paid_until <= at)
                               .order_by(Service.id).limit(sample)))
    session.commit()
    started = time.perf_counter()
    with clock.frozen_at(at):
        for service_id in ids:
            service = session.get(Service, service_id)
            client = lock_client(service.client_id)
            charge_period(client, service, service.paid_until)
            session.commit()
            session.expunge_all()
    return time.perf_counter() - started, len(ids)


def start_workers(count: int, env: dict) -> list:
    import subprocess

    return [subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "puqpanel.tasks.worker", "worker", "--pool=solo", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=WARNING", "-n", f"bench{i}@%h"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(count)]


def run_on_workers(app, args, at: dt.datetime) -> float:
    """Enqueue the cycle for `args.workers` Celery workers and wait until it finished: wall seconds."""
    import redis
    from celery import Celery

    from puqpanel.domain.session import get_session
    from puqpanel.models import AutomationRun

    redis.Redis.from_url(args.broker_url).flushdb()
    env = dict(os.environ, PUQPANEL_BROKER_URL=args.broker_url, PUQPANEL_RESULT_BACKEND=args.broker_url)
    if args.chunk_size:
        env["PUQPANEL_BILLING_CHUNK_SIZE"] = str(args.chunk_size)
    workers = start_workers(args.workers, env)
    try:
        client = Celery("bench", broker=args.broker_url, backend=args.broker_url, set_as_current=False)
        for _ in range(args.workers * 2):  # every worker up (each answers pings one at a time)
            client.send_task("puqpanel.ping").get(timeout=120)
        session = get_session()
        started = time.perf_counter()
        first = client.send_task("puqpanel.engine.start", args=("cycle", at.isoformat(), "cli", None)).get(timeout=600)
        session.rollback()
        cycle_id = session.get(AutomationRun, first).cycle_id
        while True:
            session.rollback()
            if session.get(AutomationRun, cycle_id).status != "running":
                break
            time.sleep(0.05)
        return time.perf_counter() - started
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)


def main(argv=None) -> int:
    args = parse_args(argv)
    url = args.database_url
    if not url.startswith("postgresql"):
        print("this benchmark needs PostgreSQL (--database-url)", file=sys.stderr)
        return 2
    os.environ["PUQPANEL_DATABASE_URL"] = url
    os.environ.setdefault("PUQPANEL_INSTANCE_PATH", "/tmp/puqpanel-bench")
    reset_database(url)

    from flask_migrate import upgrade

    from puqpanel.app import create_app
    from puqpanel.paths import MIGRATIONS_DIR

    overrides = {"PUQPANEL_BILLING_CHUNK_SIZE": args.chunk_size} if args.chunk_size else {}
    app = create_app(overrides)
    with app.app_context():
        upgrade(directory=MIGRATIONS_DIR)
        from sqlalchemy import func, select

        from puqpanel.billing.engine.runs import chunk_size, run_inline
        from puqpanel.domain.session import get_session
        from puqpanel.models import AutomationRun, Transaction

        session = get_session()
        started = time.perf_counter()
        populate(session, args.services, args.clients)
        setup_s = time.perf_counter() - started
        print(f"setup: {args.services:,} services, {args.clients:,} clients in {setup_s:.1f} s "
              f"(chunk size {chunk_size()})", flush=True)

        floor_s, floor_rows = raw_floor(session)
        print(f"raw floor: {floor_rows:,} rows in {floor_s:.2f} s", flush=True)

        tracemalloc.start()
        started = time.perf_counter()
        run_id = run_inline("cycle", AT, "cli")
        run_s = time.perf_counter() - started
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        session.rollback()
        charges = session.scalar(select(func.count()).select_from(Transaction).where(Transaction.type == "charge"))
        status = session.get(AutomationRun, run_id).status
        print(f"billing run: {charges:,} charges in {run_s:.2f} s ({status})", flush=True)

        started = time.perf_counter()
        run_inline("cycle", AT, "cli")
        rerun_s = time.perf_counter() - started
        again = session.scalar(select(func.count()).select_from(Transaction).where(Transaction.type == "charge"))
        print(f"re-run: {again - charges:,} new charges in {rerun_s:.2f} s", flush=True)

        workers_s = None
        next_hour = AT + dt.timedelta(hours=1)
        if args.workers:
            workers_s = run_on_workers(app, args, next_hour)
            session.rollback()
            total = session.scalar(select(func.count()).select_from(Transaction).where(Transaction.type == "charge"))
            print(f"billing run on {args.workers} workers: {total - again:,} charges in {workers_s:.2f} s", flush=True)
            again = total
            next_hour += dt.timedelta(hours=1)

        loop_s, loop_n = orm_loop(session, args.sample, next_hour)
        loop_rate = loop_n / loop_s if loop_s else 0.0
        run_rate = charges / run_s if run_s else 0.0
        print(f"per-row ORM loop: {loop_n:,} services in {loop_s:.2f} s", flush=True)

        problems = None
        if args.verify:
            from puqpanel.billing.ledger import verify

            problems = verify()

        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print()
        print(f"| Measure ({args.services:,} services, {args.clients:,} clients) | Seconds | Services/s |")
        print("| --- | --- | --- |")
        print(f"| raw-SQL floor (one INSERT … SELECT, rolled back) | {floor_s:.2f} | {floor_rows / floor_s:,.0f} |")
        print(f"| puqpanel billing run (cycle, inline) | {run_s:.2f} | {run_rate:,.0f} |")
        if workers_s:
            print(f"| puqpanel billing run (cycle, {args.workers} Celery workers) | {workers_s:.2f} | "
                  f"{charges / workers_s:,.0f} |")
        print(f"| re-run of the finished period | {rerun_s:.2f} | — |")
        print(f"| per-row ORM loop ({loop_n:,} sample) | {loop_s:.2f} | {loop_rate:,.0f} |")
        print()
        best = min(run_s, workers_s or run_s)
        print(f"run / floor: inline {run_s / floor_s:.2f}x" + (f", {args.workers} workers {workers_s / floor_s:.2f}x"
                                                              if workers_s else "")
              + f"   best run vs per-row loop: {charges / best / loop_rate:,.0f}x faster")
        print(f"peak Python memory during the inline run: {peak / 2**20:.1f} MiB   process max RSS: {rss_mb:.0f} MiB")
        if problems is not None:
            print(f"verify-ledger: {'OK' if not problems else f'{len(problems)} problems'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
