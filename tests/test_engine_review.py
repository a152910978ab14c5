"""Regressions found in the review of the billing engine (issue 4)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from puqpanel.billing.ledger import verify
from test_engine_charge import fresh, fund, make_price, period_rows, run, started
from test_engine_lifecycle import actions, set_service

D = Decimal


def test_unsuspend_counts_a_month_based_backlog_wholly(db, eur, new_client):
    """A monthly plan suspended with two months still unpaid (a run two months late, an imported
    paid-until) needs every started month to be covered before it is reactivated — the charge job charges
    it wholly or not at all. Counting one month reactivated it only for the suspend job to suspend it again
    in the same cycle, every cycle (its suspension date, and so its termination delay, restarting)."""
    client = new_client()
    start = dt.datetime(2026, 1, 1, 6)
    plan = started(client, make_price(db, eur, "monthly", "10", termination_delay_hours=100000),
                   start - dt.timedelta(days=31))  # paid to Jan 1, 06:00
    fund(client, str(-fresh(db, client).balance))  # balance 0
    suspended_at = dt.datetime(2026, 3, 15, 6)
    run("cycle", suspended_at)  # Jan, Feb, Mar started: 30 not covered
    plan = fresh(db, plan)
    assert (plan.status, plan.suspension_kind, plan.paid_until) == ("suspended", "non_payment", start)
    fund(client, "10")  # one month: the backlog (resumed Jan 2 → Jan 2, Feb 2, Mar 2) is still not covered
    at = dt.datetime(2026, 3, 16, 6)
    run("cycle", at)
    plan = fresh(db, plan)
    assert plan.status == "suspended" and plan.suspended_at == suspended_at
    assert "service.unsuspend" not in actions(db, plan)
    assert fresh(db, client).balance == D("10")
    # covered: reactivated and charged wholly (three months from the resume point, Jan 2 06:00)
    fund(client, "20")
    run("cycle", at + dt.timedelta(hours=1))
    plan = fresh(db, plan)
    assert plan.status == "active"
    assert [row[1] for row in period_rows(db, plan)][-3:] == [
        dt.datetime(2026, 1, 2, 7), dt.datetime(2026, 2, 2, 7), dt.datetime(2026, 3, 2, 7)]
    assert fresh(db, client).balance == D("0")
    assert verify() == []

