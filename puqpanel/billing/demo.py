"""Demo billing data: products of every period, services of every status, add-funds proformas (paid, partly
paid, unpaid), manual invoices, adjustments and a refund with its credit note — all through the same domain
functions the screens use, so every ledger row, number and activity entry is real. Idempotent: clients that
already have services or invoices are left alone."""
from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, union
from tqdm import tqdm

from ..domain import DomainError
from ..domain.session import get_session
from ..models import Client, Invoice, Product, ProductPrice, Service, Transaction
from . import catalog, invoicing, ledger, payments, services
from .catalog import default_currency

# name, settings, {period: (setup, base, idle)} in the default currency.
PRODUCTS: list[tuple[str, dict[str, Any], dict[str, tuple[str, str, str]]]] = [
    ("Cloud VPS S", {"hourly_billing": True, "description": "1 vCPU, 2 GB RAM, 40 GB NVMe"},
     {"monthly": ("0", "5.00", "1.00")}),
    ("Cloud VPS M", {"hourly_billing": True, "description": "2 vCPU, 4 GB RAM, 80 GB NVMe"},
     {"monthly": ("5.00", "12.00", "2.00")}),
    ("Dedicated Server", {"description": "8 cores, 64 GB RAM, 2 × 1 TB NVMe", "termination_delay_hours": 168},
     {"monthly": ("49.00", "89.00", "0"), "quarterly": ("49.00", "255.00", "0"),
      "semiannually": ("0", "499.00", "0"), "annually": ("0", "950.00", "0"),
      "biennially": ("0", "1800.00", "0"), "triennially": ("0", "2600.00", "0")}),
    ("Backup Storage 100 GB", {"description": "Off-site backup space"},
     {"hourly": ("0", "0.0070", "0"), "daily": ("0", "0.15", "0"), "weekly": ("0", "1.00", "0"),
      "biweekly": ("0", "1.90", "0")}),
    ("Domain .com", {"description": "Registration / renewal"}, {"annually": ("0", "12.99", "0")}),
    ("Server Migration", {"description": "One-time migration by our engineers"}, {"one_time": ("0", "49.00", "0")}),
    ("Lab VM (test module)", {"module": "test", "description": "Provisioned by the test module"},
     {"monthly": ("0", "3.00", "0")}),
]


def _ensure_products() -> dict[str, dict[str, ProductPrice]]:
    """Products and their prices (converted into every currency); returns {product: {period: [prices]}}."""
    session = get_session()
    default = default_currency()
    for name, settings, prices in PRODUCTS:
        product = session.scalar(select(Product).where(Product.name == name))
        if product is None:
            product = Product(name=name, convert_prices=True, **settings)
            session.add(product)
            session.commit()
            for period, (setup, base, idle) in prices.items():
                catalog.add_price(product, {"currency_id": default.id, "period": period,
                                            "setup": setup, "base": base, "idle": idle})
            catalog.convert_product_prices(product)
    table: dict[str, dict[tuple[int, str], int]] = {}
    for price in session.scalars(select(ProductPrice).join(Product).where(Product.name.in_([p[0] for p in PRODUCTS]))):
        table.setdefault(price.product.name, {})[(price.currency_id, price.period)] = price.id
    return table


def _order(client: Client, prices, product: str, period: str, **labels) -> Service:
    return services.add_service(client, prices[product][(client.currency_id, period)], **labels)


def _local(client: Client, amount: str) -> str:
    """A default-currency amount in the client's currency (2 places)."""
    return str((Decimal(amount) * client.currency.exchange_rate).quantize(Decimal("0.01")))


def _top_up(client: Client, amount: str, rng: random.Random, partial: bool = False) -> Invoice:
    proforma = invoicing.create_add_funds_proforma(client, _local(client, amount))
    if partial:
        first = (proforma.total / 2).quantize(Decimal("0.01"))
        payments.record_payment(proforma, gateway="bank_transfer", external_id=f"DEMO-{proforma.id}-1", amount=first)
        payments.record_payment(proforma, gateway="bank_transfer", external_id=f"DEMO-{proforma.id}-2",
                                amount=proforma.total - first)
    else:
        fee = Decimal(rng.choice(["0", "0.25", "1.20"]))
        payments.record_payment(proforma, gateway=rng.choice(["bank_transfer", "test"]),
                                external_id=f"DEMO-{proforma.id}", amount=proforma.total, fee=fee)
    get_session().refresh(proforma)
    return proforma


def _scenario(index: int, client: Client, prices, rng: random.Random) -> None:
    kind = index % 8
    if kind == 0:  # a happy customer: two active services
        _top_up(client, rng.choice(["100", "250", "500"]), rng)
        services.activate(_order(client, prices, "Cloud VPS S", "monthly", client_label="web-1"))
        services.activate(_order(client, prices, "Domain .com", "annually", client_label="example.com"))
    elif kind == 1:  # one active, one suspended by staff
        _top_up(client, "300", rng)
        services.activate(_order(client, prices, "Cloud VPS M", "monthly", client_label="db-1"))
        suspended = services.activate(_order(client, prices, "Backup Storage 100 GB", rng.choice(["daily", "weekly"])))
        services.suspend(suspended, "Abuse report #4711 under review")
    elif kind == 2:  # an unpaid add-funds proforma waiting for payment
        invoicing.create_add_funds_proforma(client, _local(client, rng.choice(["50", "75", "150"])))
    elif kind == 3:  # a terminated dedicated server
        _top_up(client, "2000", rng)
        server = services.activate(_order(client, prices, "Dedicated Server", rng.choice(["monthly", "quarterly"])))
        services.terminate(server, "Customer moved to a larger plan")
        services.activate(_order(client, prices, "Dedicated Server", rng.choice(["annually", "semiannually"])))
    elif kind == 4:  # no funds: pending, cancelled and fraud orders
        _order(client, prices, "Cloud VPS S", "monthly", client_label="waiting for funds")
        services.cancel(_order(client, prices, "Server Migration", "one_time"), "Ordered by mistake")
        if index % 16 == 4:
            fraud = _order(client, prices, "Cloud VPS M", "monthly", admin_label="flagged by fraud check")
            fraud.status = "fraud"  # a fraud-check result, set by staff outside the billing flow
            fraud.status_reason = "Stolen card reported"
            get_session().commit()
    elif kind == 5:  # a refund with its credit note
        proforma = _top_up(client, "200", rng)
        paid = get_session().scalar(select(Invoice).where(Invoice.proforma_id == proforma.id))
        services.activate(_order(client, prices, "Backup Storage 100 GB", "biweekly"))
        if paid is not None:
            payments.refund(paid, _local(client, "40"), "Goodwill refund for downtime")
    elif kind == 6:  # manual invoices and adjustments
        ledger.adjust(client, _local(client, "25"), "Welcome credit", external_id=f"PROMO-{client.id}")
        ledger.adjust(client, _local(client, "-5"), "Correction of the welcome credit")
        draft = invoicing.new_invoice(client, [
            {"description": "Custom firewall setup", "quantity": "2", "unit_price": _local(client, "45")},
            {"description": "Rack space (1U), November", "quantity": "1", "unit_price": _local(client, "30")},
        ], notes="Work order WO-2026-118")
        invoicing.publish(draft)
        invoicing.new_invoice(client, [{"description": "Consulting (draft)", "quantity": "1.5", "unit_price": _local(client, "80")}])
        services.activate(_order(client, prices, "Server Migration", "one_time"), force=True)
    else:  # paid in two parts; a provisioning error; long periods
        _top_up(client, "3000", rng, partial=True)
        _order(client, prices, "Lab VM (test module)", "monthly", admin_label="fail-demo")
        try:
            services.activate(get_session().scalar(
                select(Service).where(Service.client_id == client.id, Service.status == "pending")))
        except DomainError:
            pass  # the test module failed on purpose: the service shows the provisioning error
        services.activate(_order(client, prices, "Dedicated Server", rng.choice(["biennially", "triennially"])))


def load_billing_demo(progress: bool = True) -> dict[str, int]:
    session = get_session()
    if default_currency() is None:
        return {}
    prices = _ensure_products()
    busy = union(select(Service.client_id), select(Invoice.client_id)).subquery()
    todo = list(session.scalars(
        select(Client).where(Client.id.not_in(select(busy.c[0]))).where(Client.status.in_(("active", "new")))
        .order_by(Client.id)
    ))
    rng = random.Random(20261123)
    for index, client in enumerate(tqdm(todo, desc="Demo billing", unit="client", disable=not progress)):
        _scenario(index, client, prices, rng)
    return {
        "products": session.scalar(select(func.count()).select_from(Product)),
        "services": session.scalar(select(func.count()).select_from(Service)),
        "invoices": session.scalar(select(func.count()).select_from(Invoice)),
        "ledger rows": session.scalar(select(func.count()).select_from(Transaction)),
    }
