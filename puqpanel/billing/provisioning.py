"""Provisioning modules: what creates the thing a service stands for (a VPS, a mailbox, …).

A product names its module (`Product.module`); `services.activate` calls the module's `create(service)`
before anything is charged. A module signals failure by raising `ProvisioningError(message)`: the service
stays pending with provision_status "error" and the message as its last error note; nothing is charged.

Shipped modules:
- "none": nothing to provision, completes at once.
- "test": for tests and demos. It fails when the service's staff label (admin_label) contains "fail"
  (case-insensitive), or whenever the app config flag PUQPANEL_TEST_MODULE_FAIL is true; otherwise it
  completes at once.

Other packages add modules with `register("name", module)`. In this issue only `create` is called: the
suspend / unsuspend / terminate transitions change the panel's state only (module hooks for them belong
to the provisioning issue).
"""
from __future__ import annotations

from flask import current_app, has_app_context
from flask_babel import lazy_gettext as _l


class ProvisioningError(Exception):
    """The module could not provision the service; str(exc) is the note shown to staff."""


class Module:
    """Base class of a provisioning module."""

    label = _l("No provisioning")

    def create(self, service) -> None:  # pragma: no cover - the base does nothing
        """Provision `service` (raise ProvisioningError on failure)."""


class NoneModule(Module):
    label = _l("None (nothing to provision)")


class TestModule(Module):
    label = _l("Test module (fails when the staff label contains \"fail\")")

    def create(self, service) -> None:
        forced = has_app_context() and bool(current_app.config.get("PUQPANEL_TEST_MODULE_FAIL"))
        if forced or "fail" in (service.admin_label or "").lower():
            raise ProvisioningError(str(_l("Test module: provisioning failed on purpose.")))


_MODULES: dict[str, Module] = {"none": NoneModule(), "test": TestModule()}


def register(name: str, module: Module) -> None:
    """Make a module available to products (name ≤ 50 characters, Product.module's length)."""
    if not name or len(name) > 50:
        raise ValueError("module name must have 1 to 50 characters")
    _MODULES[name] = module


def names() -> list[str]:
    return list(_MODULES)


def choices() -> list[tuple[str, str]]:
    """(name, label) of every registered module, for the product form."""
    return [(name, str(module.label)) for name, module in _MODULES.items()]


def get_module(name: str | None) -> Module:
    """The module of that name; an unknown name is a ProvisioningError (the product names a module that
    is not installed here)."""
    module = _MODULES.get(name or "none")
    if module is None:
        raise ProvisioningError(str(_l("Unknown provisioning module: %(name)s", name=name)))
    return module


def provision(service) -> None:
    """Run the create step of the service's product module (ProvisioningError on failure)."""
    product = service.product
    get_module(product.module if product is not None else "none").create(service)
