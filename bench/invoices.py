"""Benchmark (not a test): issue N invoices through the real domain path, then render M PDFs.

    .venv/bin/python bench/invoices.py                            # 2000 invoices, 50 PDFs, temp SQLite
    .venv/bin/python bench/invoices.py --invoices 2000 --pdfs 50
    PUQPANEL_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/puq_bench .venv/bin/python bench/invoices.py

The database is PUQPANEL_DATABASE_URL (or --database-url); without one, a SQLite file in a temporary folder
that is removed afterwards. Use a throwaway database: the script migrates it to head, syncs the roles and
adds its own currency (when there is no default one), home company (default, when none is), tax rule and
clients, and leaves them there.

One invoice = what a real top-up does: an add-funds proforma is created and published (numbered, taxed by
the client's tax rule), then a bank-transfer payment of its total is recorded, which credits the balance
through the ledger, turns the proforma into a paid invoice with the next number and marks it invoiced —
each step its own DB transaction, under the client row lock. The rate printed is paid invoices per second
(wall clock over all of them; --threads and --processes run several issuers at once, like several web or
Celery workers, each with its own session and its own share of the clients). Also printed per invoice: SQL
statements, commits, time inside SQL execution and CPU time of the issuing process(es). Then M of those
invoices are rendered to PDF with wkhtmltopdf and the p50 / p95 / mean milliseconds printed.
Aims (issue 3): >= 200 invoices/s on PostgreSQL, PDF p50 <= 300 ms.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=2000, help="paid invoices to issue (2000)")
    parser.add_argument("--pdfs", type=int, default=50, help="PDFs to render (50)")
    parser.add_argument("--clients", type=int, default=50, help="clients the invoices are spread over (50)")
    parser.add_argument("--threads", type=int, default=1, help="concurrent issuers per process (1)")
    parser.add_argument("--processes", type=int, default=1,
                        help="issuing processes, forked (1; for PostgreSQL: SQLite serialises writers)")
    parser.add_argument("--amount", default="50.00", help="net amount of each top-up (50.00)")
    parser.add_argument("--logo-kb", type=int, default=20,
                        help="size of the home company's PNG logo (a data: URI), in KiB (20; 0 = none)")
    parser.add_argument("--database-url", default=os.environ.get("PUQPANEL_DATABASE_URL", ""),
                        help="database (default: PUQPANEL_DATABASE_URL, else a temporary SQLite file)")
    parser.add_argument("--profile", metavar="FILE", default="",
                        help="write a cProfile of the invoice phase to FILE (single thread)")
    return parser.parse_args(argv)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def main(argv=None) -> int:
    args = parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="puqpanel-bench-")
    os.environ["PUQPANEL_INSTANCE_PATH"] = tmp
    os.environ.setdefault("PUQPANEL_SECRET_KEY", "bench-" + uuid.uuid4().hex)
    os.environ["PUQPANEL_DATABASE_URL"] = args.database_url or f"sqlite:///{tmp}/bench.db"
    try:
        return run(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args) -> int:
    import logging

    from flask_migrate import upgrade

    from puqpanel.app import create_app
    from puqpanel.paths import MIGRATIONS_DIR
    from puqpanel.security import sync_roles

    logging.getLogger("alembic").setLevel(logging.WARNING)
    app = create_app()
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    print(f"database: {url.split('@')[-1] if '@' in url else url}")
    with app.app_context():
        upgrade(directory=MIGRATIONS_DIR)
        sync_roles()
        tag = uuid.uuid4().hex[:8]
        client_ids = setup(tag, args.clients, logo_data_uri(args.logo_kb))
    amount = Decimal(args.amount)

    # -- invoices ----------------------------------------------------------------------------------------
    processes, threads = max(1, args.processes), max(1, args.threads)
    issuers = processes * threads
    counts = [args.invoices // issuers + (1 if i < args.invoices % issuers else 0) for i in range(issuers)]
    plan = [[(i, counts[i]) for i in range(p * threads, (p + 1) * threads)] for p in range(processes)]
    print(f"issuing {args.invoices} paid invoices (add-funds proforma + payment) with {processes} process(es) × "
          f"{threads} thread(s) over {len(client_ids)} clients ...")
    started = time.perf_counter()
    if processes == 1:
        results = [issue_batch(app, client_ids, amount, tag, plan[0], issuers, args.profile)]
    else:
        results = issue_in_processes(app, client_ids, amount, tag, plan, issuers)
    elapsed = time.perf_counter() - started
    issued = [i for r in results for i in r["ids"]]
    errors = [e for r in results for e in r["errors"]]
    if errors:
        print(f"FAILED: {len(errors)} issuer(s) stopped: {errors[0]}", file=sys.stderr)
        return 1
    n = len(issued)
    print(f"invoices: {n} in {elapsed:.2f} s = {n / elapsed:.1f} invoices/s")
    if n:
        total = {key: sum(r[key] for r in results) for key in ("statements", "commits", "sql_seconds", "cpu")}
        print(f"  per invoice: {total['statements'] / n:.1f} SQL statements, {total['commits'] / n:.1f} commits, "
              f"{total['sql_seconds'] * 1000 / n:.1f} ms executing SQL, {total['cpu'] * 1000 / n:.1f} ms CPU "
              f"(of {elapsed * 1000 * issuers / n:.1f} ms per issuer)")

    with app.app_context():
        problems = check(issued)
    if problems:
        print("FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    print("check: every invoice paid and numbered, numbers unique, ledger verified")

    # -- PDFs --------------------------------------------------------------------------------------------
    if args.pdfs > 0 and issued:
        timings = render_pdfs(app, issued[: args.pdfs])
        print(f"pdfs: {len(timings)} rendered; p50 {percentile(timings, 50):.0f} ms, "
              f"p95 {percentile(timings, 95):.0f} ms, mean {statistics.mean(timings):.0f} ms")
    return 0


class SqlCounter:
    """Statements, commits and time spent executing statements (cursor execute, summed over threads)."""

    def __init__(self, app):
        from sqlalchemy import event

        from puqpanel.extensions import db

        with app.app_context():
            self.engine = db.engine
        self.statements = self.commits = 0
        self.seconds = 0.0
        self._lock = threading.Lock()
        self._local = threading.local()
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        event.listen(self.engine, "commit", self._commit)

    def _before(self, *args):
        self._local.started = time.perf_counter()

    def _after(self, *args):
        spent = time.perf_counter() - self._local.started
        with self._lock:
            self.statements += 1
            self.seconds += spent

    def _commit(self, *args):
        with self._lock:
            self.commits += 1

    def stop(self):
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)
        event.remove(self.engine, "commit", self._commit)


def issue_batch(app, client_ids: list[int], amount: Decimal, tag: str, issuers: list[tuple[int, int]],
                total_issuers: int, profile: str = "") -> dict:
    """Run `issuers` [(issuer index, invoices)] as threads of this process; each issuer tops up its own
    share of the clients. Returns the paid invoice ids, errors and this process's SQL / CPU counts."""
    issued: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def issuer(index: int, count: int) -> None:
        mine = client_ids[index::total_issuers] or client_ids
        done = []
        try:
            with app.app_context():
                for n in range(count):
                    done.append(issue_one(mine[n % len(mine)], amount, f"bench-{tag}-{index}-{n}"))
        except BaseException as exc:  # reported after the run
            errors.append(repr(exc))
        with lock:
            issued.extend(done)

    counter = SqlCounter(app)
    cpu_started = time.process_time()
    if profile and len(issuers) == 1:
        import cProfile

        profiler = cProfile.Profile()
        profiler.runcall(issuer, *issuers[0])
        profiler.dump_stats(profile)
    else:
        pool = [threading.Thread(target=issuer, args=item) for item in issuers]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    counter.stop()
    return {"ids": issued, "errors": errors, "statements": counter.statements, "commits": counter.commits,
            "sql_seconds": counter.seconds, "cpu": time.process_time() - cpu_started}


def issue_in_processes(app, client_ids, amount, tag, plan, total_issuers) -> list[dict]:
    """One forked process per entry of `plan` (like several web / Celery workers), each with its own
    connection pool."""
    import multiprocessing

    from puqpanel.extensions import db

    with app.app_context():
        db.engine.dispose()  # no connection is shared with the children
    context = multiprocessing.get_context("fork")
    queue = context.Queue()

    def child(issuers):
        with app.app_context():
            db.engine.dispose(close=False)
        try:
            queue.put(issue_batch(app, client_ids, amount, tag, issuers, total_issuers))
        except BaseException as exc:
            queue.put({"ids": [], "errors": [repr(exc)], "statements": 0, "commits": 0, "sql_seconds": 0.0,
                       "cpu": 0.0})

    children = [context.Process(target=child, args=(issuers,)) for issuers in plan]
    for proc in children:
        proc.start()
    results = [queue.get() for _ in children]
    for proc in children:
        proc.join()
    return results


def logo_data_uri(kib: int) -> str:
    """A PNG of about `kib` KiB (noise does not compress) as a data: URI, like a provider's logo."""
    if kib <= 0:
        return ""
    import base64
    import random
    import struct
    import zlib

    width = 200
    height = max(1, kib * 1024 // (width * 3))
    rng = random.Random(kib)
    raw = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def setup(tag: str, clients: int, logo: str = "") -> list[int]:
    """A default currency, a default home company (with `logo`), a 19 % VAT rule for DE, and `clients`
    clients in DE."""
    from sqlalchemy import select

    from puqpanel.domain.clients import NewClient, create_client
    from puqpanel.domain.passwords import hash_password
    from puqpanel.domain.session import transaction
    from puqpanel.models import Currency, HomeCompany, TaxRule

    with transaction() as session:
        if session.scalar(select(Currency).where(Currency.is_default.is_(True))) is None:
            session.add(Currency(code="EUR", suffix=" €", is_default=True))
        has_default = session.scalar(select(HomeCompany).where(HomeCompany.is_default.is_(True))) is not None
        company = HomeCompany(
            name=f"Bench {tag}", company_name=f"Bench Hosting {tag} GmbH", address1="Cloudweg 5", city="Hamburg",
            postcode="20095", country="DE", tax_id="DE123456789", is_default=not has_default,
            bank_details="IBAN DE89 3704 0044 0532 0130 00", pdf_footer="Bench Hosting GmbH · HRB 12345", logo=logo,
            proforma_format=f"PF{tag}-{{YEAR}}-{{NUMBER}}", invoice_format=f"IN{tag}-{{YEAR}}-{{NUMBER}}",
            credit_note_format=f"CN{tag}-{{YEAR}}-{{NUMBER}}",
        )
        session.add(company)
        session.flush()
        rule = session.scalar(select(TaxRule).where(TaxRule.category == "", TaxRule.country == "DE",
                                                    TaxRule.region == ""))
        if rule is None:
            session.add(TaxRule(category="", country="DE", region="", home_company_id=company.id,
                                tax1_name="VAT", tax1_rate=Decimal("19")))
        else:
            rule.home_company_id = company.id
    owner_hash = hash_password("Bench-pass1")  # hashed once: client creation is not what is measured
    ids = []
    for n in range(clients):
        client, _ = create_client(NewClient(
            email=f"bench-{tag}-{n}@example.com", firstname="Bench", lastname=f"Client {n}",
            company_name=f"Bench Customer {tag}-{n} GmbH" if n % 2 else "", address1="Hauptstr. 1",
            postcode="10115", city="Berlin", country="DE", region="DE-BE", password_hash=owner_hash,
        ))
        ids.append(client.id)
    return ids


def issue_one(client_id: int, amount: Decimal, external_id: str) -> int:
    """One top-up through the domain, as a request would do it: load the client, create the add-funds
    proforma, record its payment (bank transfer, the full total), close the session. Returns the paid
    invoice's id."""
    from puqpanel.billing import invoicing, payments
    from puqpanel.domain.session import get_session
    from puqpanel.models import Client

    session = get_session()
    try:
        client = session.get(Client, client_id)
        proforma = invoicing.create_add_funds_proforma(client, amount)
        result = payments.record_payment(proforma, gateway="bank_transfer", external_id=external_id,
                                         amount=proforma.total)
        return result.invoice.id
    finally:
        session.remove()


def check(invoice_ids: list[int]) -> list[str]:
    from sqlalchemy import func, select

    from puqpanel.billing import ledger
    from puqpanel.domain.session import get_session
    from puqpanel.models import Invoice

    session = get_session()
    problems = []
    rows = session.execute(
        select(func.count(), func.count(func.distinct(Invoice.number)))
        .where(Invoice.id.in_(invoice_ids), Invoice.type == "invoice", Invoice.status == "paid")
    ).one()
    if rows[0] != len(invoice_ids) or rows[1] != len(invoice_ids):
        problems.append(f"{rows[0]} of {len(invoice_ids)} invoices paid, {rows[1]} distinct numbers")
    broken = ledger.verify()
    if broken:
        problems.append(f"verify-ledger: {len(broken)} broken client(s)")
    return problems


def render_pdfs(app, invoice_ids: list[int]) -> list[float]:
    from puqpanel.billing.pdf import render_pdf
    from puqpanel.domain.session import get_session
    from puqpanel.models import Invoice

    timings = []
    with app.app_context():
        session = get_session()
        for invoice_id in invoice_ids:
            invoice = session.get(Invoice, invoice_id)
            started = time.perf_counter()
            data = render_pdf(invoice)
            timings.append((time.perf_counter() - started) * 1000)
            assert data.startswith(b"%PDF")
    return timings


if __name__ == "__main__":
    sys.exit(main())
