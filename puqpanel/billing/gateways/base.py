"""The gateway interface."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l


class GatewayError(Exception):
    """A callback refused: `status` is the HTTP status to answer with, `message` says why."""

    def __init__(self, status: int, message: str, errors: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or {}


class Gateway:
    name: str = ""
    label = _l("Gateway")
    # Staff record its payments by hand (bank transfer); otherwise the gateway reports them itself.
    manual: bool = True

    def instructions(self, invoice) -> list[tuple[str, str]]:
        """What the payer needs to pay `invoice` (label, value pairs)."""
        return []

    def __repr__(self) -> str:
        return f"<Gateway {self.name}>"
