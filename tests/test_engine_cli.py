"""`puqpanel billing run` from the command line: the dry run (per-client lines and totals, nothing written,
the same numbers as the real run), the real run (summary, exit status), bad input, and one run in a
separate process."""
from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from decimal import Decimal

from sqlalchemy import func, select

from conftest import TEST_DB_URL
from puqpanel.billing import clock
from puqpanel.billing import services as svc
from puqpanel.billing.ledger import verify
from puqpanel.billing_cli import billing_group
from puqpanel.models import ActivityLog, AutomationChunk, AutomationRun, Client, Service, Transaction
from test_engine_charge import fresh, fund, make_price, order, period_rows, started

D = Decimal
T0 = dt.datetime(2026, 9, 1, 6, 0)
AT = dt.datetime(2026, 9, 3, 6, 30)
LINE = re.compile(r"^\s*(\d+)\s{2}(.+?)\s+(\d+)\s+(-?\d+\.\d{4})\s+([A-Z]{3})\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$")


def world(db, eur, new_client) -> dict:
    """Clients whose cycle at AT charges, suspends, unsuspends, terminates and cancels something."""
    payer = new_client(company_name="Payer GmbH")
    fund(payer, "100")
    hourly = started(payer, make_price(db, eur, "monthly", "72", hourly=True), T0)  # 0.1 an hour in September
    daily = started(payer, make_price(db, eur, "daily", "1.5"), T0)

    short = new_client(company_name="Short Ltd")
    fund(short, "3")
    cheap = started(short, make_price(db, eur, "daily", "1"), T0)
    dear = started(short, make_price(db, eur, "daily", "2", termination_delay_hours=24), T0)  # balance 0

    leaving = new_client(company_name="Leaving AG")
    fund(leaving, "10")
    ending = started(leaving, make_price(db, eur, "daily", "5"), T0)
    db.execute(Service.__table__.update().where(Service.id == ending.id)
               .values(termination_requested_at=T0 + dt.timedelta(hours=1)))
    db.commit()

    back = new_client(company_name="Back Again")
    fund(back, "2")
    returning = started(back, make_price(db, eur, "daily", "2", termination_delay_hours=1000), T0)
    with clock.frozen_at(T0 + dt.timedelta(hours=1)):
        svc.suspend(fresh(db, returning), "unpaid", kind="non_payment")
    fund(back, "10")

    idle = new_client(company_name="Idle Orders")
    stale = order(idle, make_price(db, eur, "monthly", "10", cancellation_delay_hours=24), T0)
    return {"payer": payer, "short": short, "leaving": leaving, "idle": idle, "back": back, "returning": returning, "hourly": hourly, "daily": daily,
            "cheap": cheap, "dear": dear, "ending": ending, "stale": stale}


def snapshot(db) -> dict:
    db.expire_all()
    return {
        "ledger": db.scalar(select(func.count()).select_from(Transaction)),
        "activity": db.scalar(select(func.count()).select_from(ActivityLog)),
        "runs": db.scalar(select(func.count()).select_from(AutomationRun)),
        "chunks": db.scalar(select(func.count()).select_from(AutomationChunk)),
        "services": db.execute(select(Service.id, Service.status, Service.paid_until, Service.status_reason,
                                      Service.suspended_at).order_by(Service.id)).all(),
        "balances": db.execute(select(Client.id, Client.balance).order_by(Client.id)).all(),
    }


def test_dry_run_shows_per_client_lines_and_totals_and_writes_nothing(app, db, eur, new_client):
    w = world(db, eur, new_client)
    before = snapshot(db)
    runner = app.test_cli_runner()
    result = runner.invoke(billing_group, ["run", "--dry-run", "--at", AT.isoformat()])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "DRY RUN" in out
    assert snapshot(db) == before
    lines = {int(m.group(1)): m.groups() for m in map(LINE.match, out.splitlines()) if m}
    payer, short, leaving, idle = (w[k].id for k in ("payer", "short", "leaving", "idle"))
    # payer: hours 07:00 Sep 1 … 06:00 Sep 3 (48 × 0.1) and the daily periods from Sep 2 and Sep 3 (2 × 1.5)
    assert lines[payer][1].startswith("Payer GmbH")
    assert lines[payer][2:] == ("50", "7.8000", "EUR", "0", "0", "0", "0")
    # short: balance 0 → both daily services suspended, the one with a 24-hour delay not yet terminated
    assert lines[short][2:] == ("0", "0.0000", "EUR", "2", "0", "0", "0")
    assert lines[leaving][2:] == ("0", "0.0000", "EUR", "0", "0", "1", "0")
    assert lines[idle][2:] == ("0", "0.0000", "EUR", "0", "0", "0", "1")
    # back: the suspension is lifted (it came before the paid day ended: billing resumes at AT)
    assert lines[w["back"].id][2:] == ("1", "2.0000", "EUR", "0", "1", "0", "0")
    assert "total charged 9.8000 EUR" in out
    assert re.search(r"^charge\s+.*charges 51", out, re.M) and re.search(r"^suspend\s+suspended 2", out, re.M)

    # the real run at the same moment does what the dry run said
    real = runner.invoke(billing_group, ["run", "--inline", "--at", AT.isoformat()])
    assert real.exit_code == 0, real.output
    assert re.search(r"run \d+ cycle\s+succeeded", real.output)
    assert re.search(r"charge\s+succeeded .*charges 51.*9\.8000 EUR", real.output)
    assert fresh(db, w["payer"]).balance == D("100") - D("0.1") - D("1.5") - D("7.8")
    assert len(period_rows(db, w["hourly"])) == 49 and len(period_rows(db, w["daily"])) == 3
    assert {fresh(db, w[k]).status for k in ("cheap", "dear")} == {"suspended"}
    assert fresh(db, w["ending"]).status == "terminated" and fresh(db, w["stale"]).status == "cancelled"
    charged = dict(db.execute(select(ActivityLog.client_id, func.count()).where(
        ActivityLog.action == "automation.charge").group_by(ActivityLog.client_id)).all())
    assert set(charged) == {payer, w["back"].id}
    assert fresh(db, w["returning"]).status == "active" and fresh(db, w["back"]).balance == D("8")
    # a dry run after the real one: nothing left to do at that moment
    again = runner.invoke(billing_group, ["run", "--dry-run", "--at", AT.isoformat()])
    assert again.exit_code == 0 and "total charged" not in again.output
    assert verify() == []


def test_dry_run_counts_the_orders_the_create_job_would_activate(app, db, eur, new_client):
    rich, poor = new_client(), new_client()
    fund(rich, "50")
    price = make_price(db, eur, "monthly", "20", setup="5")
    order(rich, price, T0)
    order(poor, price, T0)
    before = snapshot(db)
    result = app.test_cli_runner().invoke(billing_group, ["run", "--dry-run", "--at", (T0 + dt.timedelta(hours=1)).isoformat()])
    assert result.exit_code == 0, result.output
    assert re.search(r"^create\s+insufficient_funds 1, to_create 1$", result.output, re.M), result.output
    assert snapshot(db) == before
    assert verify() == []


def test_single_job_command_status_and_bad_input(app, db, eur, new_client):
    client = new_client()
    fund(client, "10")
    service = started(client, make_price(db, eur, "daily", "1"), T0)
    runner = app.test_cli_runner()
    result = runner.invoke(billing_group, ["charge", "--at", (T0 + dt.timedelta(days=2)).isoformat()])
    assert result.exit_code == 0, result.output
    assert re.search(r"run \d+ charge\s+succeeded .*charges 2", result.output)
    assert len(period_rows(db, service)) == 3
    status = runner.invoke(billing_group, ["status"])
    assert status.exit_code == 0 and re.search(r"charge\s+cli\s+succeeded", status.output)
    # a bad --at is a usage error and starts nothing
    for bad in ("yesterday", "2026-13-01", "2026-02-30T10:00"):
        result = runner.invoke(billing_group, ["run", "--at", bad])
        assert result.exit_code == 2 and "ISO timestamp" in result.output, result.output
    assert db.scalar(select(func.count()).select_from(AutomationRun)) == 1
    # a failed run: exit status 1, the chunk's error on stderr
    db.execute(Service.__table__.update().where(Service.id == service.id).values(paid_until=T0))
    db.commit()
    failed = runner.invoke(billing_group, ["charge", "--at", (T0 + dt.timedelta(days=2)).isoformat()])
    assert failed.exit_code == 1
    assert re.search(r"charge\s+failed", failed.stdout) and "ChargeConflict" in failed.stderr
    assert len(period_rows(db, service)) == 3
    assert verify() == []


def test_billing_run_in_a_separate_process(app, db, eur, new_client, tmp_path):
    client = new_client()
    fund(client, "10")
    service = started(client, make_price(db, eur, "hourly", "0.25"), T0)
    db.commit()
    env = dict(os.environ, PUQPANEL_DATABASE_URL=TEST_DB_URL, PUQPANEL_INSTANCE_PATH=str(tmp_path))
    env.pop("PUQPANEL_BROKER_URL", None)
    result = subprocess.run([sys.executable, "-m", "puqpanel.cli", "billing", "run", "--at", "2026-09-01T09:00:00Z"],
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"charge\s+succeeded .*charges 3", result.stdout), result.stdout
    assert [s for _a, s, _e in period_rows(db, service)] == [T0 + dt.timedelta(hours=i) for i in range(4)]
    assert fresh(db, client).balance == D("9")
    assert verify() == []
