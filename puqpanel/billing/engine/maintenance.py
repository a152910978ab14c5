"""The billing engine's maintenance jobs, both "whole" jobs (one chunk, `function(session, run_id, at)`):

- convert_prices: `catalog.convert_product_prices` for every product with conversion on, in id order. That
  function locks the product and COMMITS (one transaction per product, with its "product.convert_prices"
  activity entry), so this job does not run in one transaction: a failure half-way keeps the products already
  converted, which is harmless because conversion is idempotent (the next run finishes the rest and changes
  nothing twice). A product that cannot convert (no default-currency price, an amount beyond the money range)
  is skipped, counted and logged; it does not fail the run. Products without conversion are never touched.
  Counts: products (converted or already up to date), prices_updated (rows created or changed),
  products_skipped.

- revalidate_vat: EU VAT ids checked with VIES again, at most PUQPANEL_VIES_BATCH (200) clients per run,
  the oldest check first (one ORDER BY … LIMIT query). A client is due when it has a tax id, its billing
  country is in the EU (vies.needs_check) and
    * its last answer was conclusive (vies_error empty) and it was never checked or checked (vies_checked_at)
      more than PUQPANEL_VIES_RECHECK_DAYS (30) days ago, or
    * its last answer was "unavailable" (vies_error set) and this job's last attempt for it (the newest
      "automation.vies" activity entry, dated with the run's moment) is older than PUQPANEL_VIES_RETRY_HOURS
      (6), or there is none.
  Each client is checked by `vies.check_client_vat` (synchronously: the job already runs on a worker), which
  makes the HTTP call outside any transaction and stores the answer in its own short transaction (it
  COMMITS per client: a batch of network calls must not hold a lock, on SQLite the whole database). An
  invalid answer turns a valid status into invalid, so reverse charge stops for documents issued from then on.
  Activity: check_client_vat logs "client.vies" when the status changes; every other checked client (status
  confirmed, or VIES unavailable) gets one "automation.vies" entry from here, so each check is logged once.
  Counts: clients, valid, invalid, unavailable, skipped (tax id / billing country changed while checking,
  or nothing to check any more), revoked (valid → invalid).

Both jobs commit before their first item, which also ends the transaction in which the run framework locked
the chunk row; a second execution of the same chunk at the same time (a redelivered task) would redo
idempotent work (convert) or ask VIES again for the same clients (revalidate) — never a wrong result.
"""
from __future__ import annotations

import datetime as dt
import logging

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, case, func, or_, select

from ...domain import DomainError
from ...models import ActivityLog, Client, ClientAddress, Product
from .. import catalog, vies
from ..tax import EU_COUNTRIES, client_location
from .counts import Counts

log = logging.getLogger(__name__)

VIES_RECHECK_DAYS = 30
VIES_RETRY_HOURS = 6
VIES_BATCH = 200
VIES_ACTION = "automation.vies"


def _config_int(name: str, default: int, minimum: int) -> int:
    return max(minimum, int(current_app.config.get(name, default)))


# -- convert prices --------------------------------------------------------------------------------------------

def convert_prices(session, run_id: int | None, at: dt.datetime) -> Counts:
    """Convert the prices of every product with conversion on (see the module doc; commits per product)."""
    session.commit()
    counts = Counts()
    ids = list(session.scalars(select(Product.id).where(Product.convert_prices.is_(True)).order_by(Product.id)))
    for product_id in ids:
        product = session.get(Product, product_id)
        if product is None or not product.convert_prices:  # deleted or switched off since the list was read
            continue
        try:
            changed = catalog.convert_product_prices(product)
        except DomainError as exc:  # rolled back by convert_product_prices
            counts.add("products_skipped", 1)
            log.warning("convert prices (run %s): product %s skipped: %s", run_id, product_id, exc)
            continue
        counts.add("products", 1)
        counts.add("prices_updated", changed)
    return counts


# -- revalidate VAT ids ----------------------------------------------------------------------------------------

def due_vat_checks(session, at: dt.datetime, limit: int | None = None) -> list[tuple[int, str, str, str]]:
    """(client id, tax id, billing country, vies_status) of the clients whose VAT id is due for a check at `at`,
    oldest check first (never checked first), at most `limit` (PUQPANEL_VIES_BATCH)."""
    limit = limit or _config_int("PUQPANEL_VIES_BATCH", VIES_BATCH, 1)
    recheck_before = at - dt.timedelta(days=_config_int("PUQPANEL_VIES_RECHECK_DAYS", VIES_RECHECK_DAYS, 0))
    retry_before = at - dt.timedelta(hours=_config_int("PUQPANEL_VIES_RETRY_HOURS", VIES_RETRY_HOURS, 0))
    # The billing address is the client's first one of type "billing" (Client.billing_address).
    country = (select(ClientAddress.country)
               .where(ClientAddress.client_id == Client.id, ClientAddress.type == "billing")
               .order_by(ClientAddress.id).limit(1).correlate(Client).scalar_subquery())
    last_attempt = (select(func.max(ActivityLog.created_at))
                    .where(ActivityLog.client_id == Client.id, ActivityLog.action == VIES_ACTION)
                    .correlate(Client).scalar_subquery())
    unavailable = Client.vies_error != ""
    candidates = (
        select(Client.id.label("id"), Client.tax_id.label("tax_id"), country.label("country"),
               Client.vies_status.label("status"), unavailable.label("unavailable"),
               case((unavailable, last_attempt), else_=Client.vies_checked_at).label("last"))
        .where(Client.tax_id.is_not(None), Client.tax_id != "")
        .subquery()
    )
    c = candidates.c
    rows = session.execute(
        select(c.id, c.tax_id, c.country, c.status)
        .where(c.country.in_(sorted(EU_COUNTRIES)),
               or_(c.last.is_(None),
                   and_(c.unavailable, c.last < retry_before),
                   and_(~c.unavailable, c.last < recheck_before)))
        .order_by(c.last.is_not(None), c.last, c.id)
        .limit(limit)
    ).all()
    return [tuple(row) for row in rows]


def revalidate_vat(session, run_id: int | None, at: dt.datetime) -> Counts:
    """Check the due clients' VAT ids with VIES (see the module doc; commits per client)."""
    due = due_vat_checks(session, at)
    session.commit()
    counts = Counts()
    for client_id, tax_id, country, before in due:
        counts.add("clients", 1)
        watermark = session.scalar(select(func.coalesce(func.max(ActivityLog.id), 0)))
        result = vies.check_client_vat(client_id)  # commits
        client = session.scalars(select(Client).where(Client.id == client_id)
                                 .execution_options(populate_existing=True)).one_or_none()
        current = (client.tax_id, client_location(client)[0]) if client is not None else None
        if result is None or current != (tax_id, country):  # changed meanwhile: that change's own check decides
            counts.add("skipped", 1)
            session.commit()
            continue
        counts.add(result.status, 1)
        if before == "valid" and client.vies_status == "invalid":
            counts.add("revoked", 1)
        logged = session.scalar(select(func.count()).select_from(ActivityLog).where(
            ActivityLog.id > watermark, ActivityLog.client_id == client_id, ActivityLog.action == "client.vies"))
        if not logged:
            outcome = result.status if result.conclusive else f"{result.status} ({result.error})"
            changes = {"result": result.status, "vies_status": client.vies_status, "run": run_id}
            if not result.conclusive:
                changes["error"] = result.error
            session.add(ActivityLog(
                created_at=at, actor_id=None, impersonator_id=None, client_id=client_id, action=VIES_ACTION,
                object_type="client", object_id=client_id, changes=changes, ip="",
                description=str(_l("Billing run: VAT id %(tax_id)s checked in VIES: %(outcome)s",
                                   tax_id=tax_id, outcome=outcome))[:500]))
        session.commit()
    return counts
