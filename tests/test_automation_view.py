"""Staff Automation status page (Billing → Automation): jobs with last / next run and failures, the run history,
a run's details with its chunks, "Run now" (eager without a broker), permissions and hostile input."""
from __future__ import annotations

import datetime as dt
import os
import re
from contextlib import contextmanager
from decimal import Decimal

import pytest
from markupsafe import escape
from sqlalchemy import event, select

from conftest import csrf_token, make_user
from puqpanel.billing import clock, ledger
from puqpanel.billing import services as svc
from puqpanel.billing.engine import runs
from puqpanel.models import AutomationChunk, AutomationRun, Product, ProductPrice, Service, Transaction

D = Decimal
T0 = dt.datetime(2026, 1, 31, 10, 0, 0)
NOW = dt.datetime(2026, 3, 2, 10, 2, 0)  # after the first paid month of a service activated at T0
URL = "/automation/"


# -- helpers -------------------------------------------------------------------------------------------------
@pytest.fixture()
def due_service(db, eur, new_client):
    """An active monthly service (10.00 EUR, activated at T0) of a funded client, due again at NOW."""
    product = Product(name="VPS S")
    db.add(product)
    db.flush()
    price = ProductPrice(product_id=product.id, currency_id=eur.id, period="monthly", base=D("10"))
    db.add(price)
    db.commit()
    client = new_client()
    from puqpanel.domain.session import transaction

    with transaction():
        ledger.post(ledger.lock_client(client.id), "adjustment", D("100"), description="test funds")
    service = svc.add_service(client, price.id)
    with clock.frozen_at(T0):
        svc.activate(service, force=True)
    db.expire_all()
    assert db.get(Service, service.id).paid_until < NOW
    return service


@contextmanager
def config(app, **values):
    saved = {key: app.config.get(key) for key in values}
    app.config.update(values)
    try:
        yield
    finally:
        app.config.update(saved)


def row(html: str, job: str) -> str:
    """The jobs-table row of `job`."""
    match = re.search(rf'<tr class="puq-job[^"]*" data-job="{job}">(.*?)(?=<tr class="puq-job|</tbody>)', html, re.S)
    assert match, f"no row for {job}"
    return match.group(1)


def cell(html: str, css: str) -> str:
    match = re.search(rf'<td class="[^"]*{css}[^"]*"[^>]*>(.*?)</td>', html, re.S)
    assert match, f"no cell {css}"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())  # its text


def add_run(db, job="charge", status="succeeded", started=NOW, **kw) -> AutomationRun:
    run = AutomationRun(job=job, trigger=kw.pop("trigger", "beat"), status=status, at=kw.pop("at", started),
                        started_at=started, finished_at=kw.pop("finished_at", started + dt.timedelta(seconds=3)),
                        counts=kw.pop("counts", {}), errors=kw.pop("errors", ""), **kw)
    db.add(run)
    db.commit()
    return run


@contextmanager
def count_statements(app):
    from puqpanel.extensions import db as fsa

    statements: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = fsa.engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


# -- the status page -----------------------------------------------------------------------------------------
def test_page_lists_every_job_with_last_run_and_next_run(app, db, staff, due_service, make_browser):
    with clock.frozen_at(NOW):
        cycle_id = runs.run_inline("cycle", None, "cli")
    admin = make_browser("admin")

    # Without a broker nothing is scheduled: no next run, and the page says why.
    with clock.frozen_at(NOW + dt.timedelta(minutes=1)):
        page = admin.get(URL)
    assert page.status_code == 200
    html = page.text
    assert "puq-no-broker" in html and "beat" in html
    for job in runs.JOBS:
        assert runs.job_label(job) in row(html, job)
        assert str(escape(str(runs.JOBS[job].description))) in row(html, job)
        assert cell(row(html, job), "puq-next-run") == "—"
    cycle = row(html, "cycle")
    assert f"#{cycle_id}" in cycle and 'data-status="succeeded"' in cycle
    assert "2026-03-02 10:02:00" in cycle  # billing moment / started
    assert "Command line" in cycle
    charge = row(html, "charge")
    assert 'data-status="succeeded"' in charge and "Charges <strong>1</strong>" in charge
    assert "€10.00" in charge  # the amounts dict in the currency's money format
    assert "never ran" in row(html, "convert_prices")

    # With a broker, beat's schedule gives the next runs (UTC), from each job's last run (or now).
    minutes = int(os.environ.get("PUQPANEL_CYCLE_MINUTES") or 5)
    first_slot = (10 * 60 + 2) // minutes * minutes + minutes  # the first */minutes slot after 10:02
    with config(app, PUQPANEL_BROKER_URL="redis://127.0.0.1:6379/9"), clock.frozen_at(NOW + dt.timedelta(minutes=1)):
        html = admin.get(URL).text
    assert "puq-no-broker" not in html
    expected = dt.datetime(2026, 3, 2) + dt.timedelta(minutes=first_slot)
    assert cell(row(html, "cycle"), "puq-next-run").startswith(f"{expected:%Y-%m-%d %H:%M:%S}")
    charge_next = cell(row(html, "charge"), "puq-next-run")
    assert charge_next.startswith(f"{expected:%Y-%m-%d %H:%M:%S}") and "with the billing cycle" in charge_next
    assert cell(row(html, "convert_prices"), "puq-next-run").startswith("2026-03-03 02:10:00")
    assert cell(row(html, "revalidate_vat"), "puq-next-run").startswith("2026-03-03 03:20:00")
    assert cell(row(html, "reminders"), "puq-next-run").startswith("2026-03-03 08:00:00")
    assert cell(row(html, "send_email"), "puq-next-run").startswith("2026-03-02 10:04:00")

    # A cycle that should have run long ago (beat or workers down) is flagged as missed.
    with config(app, PUQPANEL_BROKER_URL="redis://127.0.0.1:6379/9"), clock.frozen_at(NOW + dt.timedelta(hours=2)):
        html = admin.get(URL).text
    assert "puq-missed" in row(html, "cycle")
    assert ledger.verify() == []


def test_failed_run_shows_its_error_and_failures_of_the_last_day(app, db, staff, make_browser):
    add_run(db, "charge", "failed", NOW - dt.timedelta(hours=30), errors="chunk 0 (ids 1–10): old failure",
            error_count=1)
    add_run(db, "charge", "failed", NOW - dt.timedelta(hours=2),
            errors="chunk 3 (ids 31–40): OperationalError: deadlock detected", error_count=1)
    add_run(db, "charge", "interrupted", NOW - dt.timedelta(hours=1), finished_at=NOW - dt.timedelta(minutes=1))
    add_run(db, "charge", "succeeded", NOW - dt.timedelta(minutes=30), counts={"charges": 3, "periods": 3})
    add_run(db, "send_email", "failed", NOW - dt.timedelta(minutes=5), errors="chunk 0: SMTPConnectError: refused",
            error_count=1)
    with clock.frozen_at(NOW):
        html = make_browser("admin").get(URL).text
    charge = row(html, "charge")
    assert 'data-status="succeeded"' in charge  # the last run
    assert cell(charge, "puq-failures").startswith("2")  # failed + interrupted within 24 h, not the 30 h old one
    assert "interrupted: no worker finished it" in charge  # the newest failure has no error text
    send = row(html, "send_email")
    assert 'data-status="failed"' in send and cell(send, "puq-failures").startswith("1")
    assert "SMTPConnectError: refused" in send
    assert cell(row(html, "cycle"), "puq-failures") == "0"

    failed = db.scalar(select(AutomationRun).where(AutomationRun.errors.like("%deadlock%")))
    detail = make_browser("admin").get(f"/automation/run/{failed.id}")
    assert detail.status_code == 200
    assert "OperationalError: deadlock detected" in detail.text and 'data-status="failed"' in detail.text


def test_run_detail_shows_chunks_and_a_cycle_its_job_runs(app, db, staff, due_service, make_browser):
    from puqpanel.models import Client

    price = db.scalar(select(ProductPrice))
    client = db.get(Client, due_service.client_id)
    for _ in range(2):
        extra = svc.add_service(client, price.id)
        with clock.frozen_at(T0):
            svc.activate(extra, force=True)
    with config(app, PUQPANEL_BILLING_CHUNK_SIZE=1), clock.frozen_at(NOW):
        cycle_id = runs.run_inline("cycle", None, "cli")
    charge = db.scalar(select(AutomationRun).where(AutomationRun.cycle_id == cycle_id, AutomationRun.job == "charge"))
    assert charge.chunks_total == 3
    admin = make_browser("admin")

    html = admin.get(f"/automation/run/{charge.id}").text
    chunks = re.findall(r'<tr class="puq-chunk" data-seq="(\d+)" data-status="(\w+)">(.*?)</tr>', html, re.S)
    assert [(seq, status) for seq, status, _ in chunks] == [("0", "done"), ("1", "done"), ("2", "done")]
    ids = sorted(s.id for s in db.scalars(select(Service)))
    assert f"{ids[0]}–{ids[0]}" in chunks[0][2]
    # one client: the chunk of its lowest service id decides all three of its services
    assert "Charges <strong>3</strong>" in chunks[0][2] and "Charges" not in chunks[1][2] + chunks[2][2]
    assert f'href="/automation/run/{cycle_id}"' in html  # back to its cycle

    html = admin.get(f"/automation/run/{cycle_id}").text
    assert re.findall(r'<tr class="puq-job-run" data-job="(\w+)">', html) == list(runs.CYCLE)
    assert "Charges <strong>3</strong>" in html and "€30.00" in html

    # Hundreds of chunks are paginated.
    big = add_run(db, "charge", "failed", NOW, chunks_total=230, chunks_done=230, error_count=1)
    db.add_all(AutomationChunk(run_id=big.id, seq=seq, lo=seq * 10 + 1, hi=seq * 10 + 10,
                               status="failed" if seq == 205 else "done", attempts=2 if seq == 205 else 1,
                               counts={}, error="IntegrityError: boom" if seq == 205 else "")
               for seq in range(230))
    db.commit()
    first = admin.get(f"/automation/run/{big.id}").text
    assert len(re.findall(r'class="puq-chunk"', first)) == 100 and "Page 1 of 3" in first
    third = admin.get(f"/automation/run/{big.id}?page=3").text
    seqs = re.findall(r'class="puq-chunk" data-seq="(\d+)"', third)
    assert seqs[0] == "200" and len(seqs) == 30
    assert "IntegrityError: boom" in third and "2051–2060" in third
    for bad in ("abc", "-4", "0", "99999999999999"):
        assert admin.get(f"/automation/run/{big.id}?page={bad}").status_code == 200
    assert ledger.verify() == []


# -- run now -------------------------------------------------------------------------------------------------
def test_run_now_as_billing_runs_the_cycle_eagerly_and_records_the_author(app, db, staff, due_service, make_browser):
    billing = make_browser("billing")
    page = billing.get(URL)
    assert page.status_code == 200 and 'action="/automation/run-now/cycle"' in page.text
    with clock.frozen_at(NOW):
        resp = billing.client.post("/automation/run-now/cycle", data={"csrf_token": csrf_token(page.text)})
    assert resp.status_code == 302
    db.expire_all()
    cycle = db.scalar(select(AutomationRun).where(AutomationRun.job == "cycle"))
    assert resp.headers["Location"].endswith(f"/automation/run/{cycle.id}")
    assert (cycle.trigger, cycle.status, cycle.author_id, cycle.at) == ("staff", "succeeded", staff["billing"].id, NOW)
    job_runs = list(db.scalars(select(AutomationRun).where(AutomationRun.cycle_id == cycle.id)))
    assert [r.job for r in job_runs] == list(runs.CYCLE)
    assert all(r.author_id == staff["billing"].id for r in job_runs)
    charges = list(db.scalars(select(Transaction).where(Transaction.service_id == due_service.id,
                                                        Transaction.type == "charge")))
    assert len(charges) == 2  # the first month at activation, the second by this run

    detail = billing.get(resp.headers["Location"])
    assert "Billing cycle ran (run #%d): Succeeded." % cycle.id in detail.text
    assert '<span class="puq-author">billing</span>' in detail.text
    html = billing.get(URL).text
    assert cell(row(html, "cycle"), "puq-last-run").endswith("Succeeded Staff · billing")

    # A single job, by name.
    with clock.frozen_at(NOW + dt.timedelta(minutes=1)):
        resp = billing.post("/automation/run-now/charge")
    assert resp.status_code == 302
    db.expire_all()
    charge = db.scalar(select(AutomationRun).where(AutomationRun.job == "charge", AutomationRun.cycle_id.is_(None)))
    assert (charge.trigger, charge.status, charge.author_id) == ("staff", "succeeded", staff["billing"].id)
    assert ledger.verify() == []


def test_run_now_refuses_while_the_job_is_running(app, db, staff, make_browser):
    running = add_run(db, "cycle", "running", NOW - dt.timedelta(minutes=2), finished_at=None)
    billing = make_browser("billing")
    with clock.frozen_at(NOW):
        resp = billing.post("/automation/run-now/cycle", follow_redirects=True)
    assert resp.status_code == 200
    assert f"already running (run #{running.id})" in resp.text
    assert db.scalar(select(AutomationRun.id).where(AutomationRun.id != running.id)) is None


def test_run_now_needs_csrf_post_and_a_known_job(app, db, staff, make_browser):
    billing = make_browser("billing")
    assert billing.client.post("/automation/run-now/cycle", data={}).status_code == 400
    assert billing.get("/automation/run-now/cycle").status_code == 405
    assert billing.post("/automation/run-now/no_such_job").status_code == 404
    assert billing.post("/automation/run-now/..%2Fcycle").status_code == 404
    assert db.scalar(select(AutomationRun.id)) is None


# -- permissions ---------------------------------------------------------------------------------------------
def test_client_role_gets_403_everywhere(app, db, staff, make_browser):
    run = add_run(db)
    make_user("someclient", "Client")
    client_user = make_browser("someclient")
    assert client_user.get(URL).status_code == 403
    assert client_user.get(f"/automation/run/{run.id}").status_code == 403
    assert client_user.post("/automation/run-now/cycle").status_code == 403
    assert db.scalar(select(AutomationRun.id).where(AutomationRun.id != run.id)) is None


def test_support_sees_the_page_but_cannot_run(app, db, staff, make_browser):
    run = add_run(db)
    support = make_browser("support")
    html = support.get(URL).text
    assert 'data-job="cycle"' in html and "/automation/run-now/" not in html
    assert support.get(f"/automation/run/{run.id}").status_code == 200
    assert support.post("/automation/run-now/cycle").status_code == 403
    assert db.scalar(select(AutomationRun.id).where(AutomationRun.id != run.id)) is None
    # Managers reach only their own clients: the provider-wide automation page is not theirs.
    assert make_browser("manager1").get(URL).status_code == 403


def test_menu_entry_for_roles_that_may_see_it(app, db, staff, make_browser):
    assert 'href="/automation/"' in make_browser("billing").get("/clients/").text
    assert 'href="/automation/"' in make_browser("support").get("/clients/").text
    assert 'href="/automation/"' not in make_browser("manager1").get("/clients/").text


# -- input and scale -----------------------------------------------------------------------------------------
def test_bad_query_arguments_are_ignored(app, db, staff, make_browser):
    add_run(db, "charge", "failed", errors="x")
    admin = make_browser("admin")
    for query in ("job=nope", "status=exploded", "page=abc", "page=-3", "page=0", "page=99999999999999",
                  "job=cycle&status=running&page=2", "job[]=x&status=", "job=%27%3B--", "job=charge&job=x"):
        resp = admin.get(f"{URL}?{query}")
        assert resp.status_code == 200, query
    assert 'data-run-id' in admin.get(f"{URL}?job=nope&status=exploded").text  # ignored, not "no runs"
    for path in ("/automation/run/99999999999", "/automation/run/abc", "/automation/run/0", "/automation/run/-1"):
        assert admin.get(path).status_code == 404, path


def test_run_history_filters_and_pages(app, db, staff, make_browser):
    oldest = add_run(db, "charge", "failed", NOW - dt.timedelta(hours=3), errors="boom")
    for i in range(60):
        add_run(db, "send_email", "succeeded", NOW - dt.timedelta(minutes=60 - i))
    admin = make_browser("admin")
    first = admin.get(URL).text
    listed = re.findall(r'<tr class="puq-run" data-run-id="(\d+)" data-job="(\w+)">', first)
    assert len(listed) == 50 and all(job == "send_email" for _, job in listed)
    assert [int(i) for i, _ in listed] == list(range(oldest.id + 60, oldest.id + 10, -1))  # newest first
    second = re.findall(r'<tr class="puq-run" data-run-id="\d+" data-job="(\w+)">', admin.get(f"{URL}?page=2").text)
    assert len(second) == 11 and second[-1] == "charge"
    only = re.findall(r'<tr class="puq-run" data-run-id="\d+" data-job="(\w+)">',
                      admin.get(f"{URL}?job=charge&status=failed").text)
    assert only == ["charge"]
    assert "No runs match." in admin.get(f"{URL}?job=cycle").text


def test_status_page_queries_do_not_grow_with_runs(app, db, staff, make_browser):
    admin = make_browser("admin")
    admin.get(URL)  # warm up (FAB loads the user's permissions once per request anyway)
    add_run(db, "cycle")
    with count_statements(app) as few:
        assert admin.get(URL).status_code == 200
    for job in runs.JOBS:
        for i in range(5):
            add_run(db, job, "failed" if i % 2 else "succeeded", NOW - dt.timedelta(minutes=i), errors="e")
    with count_statements(app) as many:
        assert admin.get(URL).status_code == 200
    assert len(many) == len(few)
