"""Payment gateways: a small registry of pluggable gateways.

A gateway has a `name` (stored on payments and ledger rows), a translated `label`, and `instructions(invoice)`
— what the payer is told on the proforma (label, value pairs). `manual` gateways are recorded by staff
("Record Payment"); others report payments through a signed callback. PUQPANEL_GATEWAYS names the gateways
offered; `register` adds another one (a host app's own gateway).
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l

from ...domain import DomainError
from ..settings import setting
from .base import Gateway, GatewayError
from .bank_transfer import BankTransferGateway
from .test_gateway import TestGateway

_REGISTRY: dict[str, Gateway] = {}


def register(gateway: Gateway) -> Gateway:
    _REGISTRY[gateway.name] = gateway
    return gateway


register(BankTransferGateway())
register(TestGateway())


def get_gateway(name: str) -> Gateway:
    """The registered gateway called `name` (DomainError({"gateway": …}) when unknown or not offered)."""
    if name in setting("PUQPANEL_GATEWAYS") and name in _REGISTRY:
        return _REGISTRY[name]
    raise DomainError({"gateway": str(_l("Choose a payment gateway."))})


def all_gateways() -> list[Gateway]:
    """Every registered gateway, offered or not (labels of payments recorded earlier)."""
    return list(_REGISTRY.values())


def available_gateways() -> list[Gateway]:
    """The gateways offered (PUQPANEL_GATEWAYS order), registered ones only."""
    return [_REGISTRY[name] for name in setting("PUQPANEL_GATEWAYS") if name in _REGISTRY]


__all__ = ["Gateway", "GatewayError", "BankTransferGateway", "TestGateway", "register", "get_gateway",
           "available_gateways", "all_gateways"]
