"""EU VAT numbers checked with VIES, over its REST API (`GET {PUQPANEL_VIES_URL}/ms/{CC}/vat/{number}`).

`query(cc, number)` is the small HTTP client (urllib, timeout PUQPANEL_VIES_TIMEOUT) and classifies the
answer: valid (isValid true), invalid (isValid false with userError INVALID), or unavailable with a code
(MS_UNAVAILABLE, SERVICE_UNAVAILABLE, TIMEOUT, MS_MAX_CONCURRENT_REQ, GLOBAL_MAX_CONCURRENT_REQ, any other
error code, HTTP_<status>, CONNECTION_ERROR, BAD_RESPONSE, BAD_CONFIGURATION for a non-http(s) base URL).
Anything not conclusive is "unavailable": only a conclusive answer may change a client's stored result.

`check_client_vat(client_id)` checks a client's tax id: nothing to check outside the EU or without a tax id;
a number python-stdnum refuses is invalid without a call; otherwise VIES decides. valid → vies_status valid,
vies_name, vies_checked_at; invalid → vies_status invalid (reverse charge is revoked for documents issued from
then on, see tax.reverse_charge_applies); unavailable → only vies_error is set, the stored status stays. A
status change writes an activity log row. The HTTP call runs outside any row lock; the answer is written only
if the client's tax id and billing country are still the ones that were checked.

`identity_changed(client)` resets a client whose tax id or billing country changed to "unchecked" (inside the
caller's transaction); `schedule_check(client_id)` runs the Celery task after the caller's commit (eager by
default, so the check happens at once; with a broker a worker does it).
"""
from __future__ import annotations

import json
import logging
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError as StdnumError

from ..domain import activity
from ..domain.session import get_session, transaction
from ..models import Client
from . import clock
from .settings import setting
from .tax import EU_COUNTRIES, client_location, vies_country_code

log = logging.getLogger(__name__)

VIES_STATUSES = ("unchecked", "valid", "invalid")
UNAVAILABLE_ERRORS = (
    "MS_UNAVAILABLE", "SERVICE_UNAVAILABLE", "TIMEOUT", "MS_MAX_CONCURRENT_REQ", "GLOBAL_MAX_CONCURRENT_REQ",
)
MAX_RESPONSE_BYTES = 64 * 1024
TASK_NAME = "puqpanel.vies.check_vat"


@dataclass
class ViesResult:
    status: str  # valid | invalid | unavailable
    error: str = ""  # userError code / HTTP_<status> / CONNECTION_ERROR / BAD_RESPONSE when unavailable
    name: str = ""
    address: str = ""
    request_date: str = ""

    @property
    def conclusive(self) -> bool:
        return self.status in ("valid", "invalid")


def split_vat(tax_id: str, country: str) -> tuple[str, str]:
    """(VIES country code, number without prefix) of a VAT number of a client in `country`."""
    compact = re.sub(r"[\s.\-/:]", "", tax_id or "").upper()
    if len(compact) > 2 and compact[:2].isalpha():
        return compact[:2].upper(), compact[2:]
    return vies_country_code(country), compact


def query(cc: str, number: str, *, base_url: str | None = None, timeout: float | None = None) -> ViesResult:
    """One VIES REST request. Never raises for network or server trouble: that is "unavailable"."""
    base = (base_url or setting("PUQPANEL_VIES_URL")).rstrip("/")
    if not base.lower().startswith(("http://", "https://")):  # never file:// or ftp:// from urllib
        return ViesResult("unavailable", error="BAD_CONFIGURATION")
    url = f"{base}/ms/{urllib.parse.quote(cc, safe='')}/vat/{urllib.parse.quote(number, safe='')}"
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "puqpanel"})
    try:
        with urllib.request.urlopen(request, timeout=timeout or setting("PUQPANEL_VIES_TIMEOUT")) as response:
            body = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        # VIES answers some errors with a 4xx/5xx and an error body: keep its code when it has one.
        code = _error_code(_json(exc.read(MAX_RESPONSE_BYTES)) or {}) if exc.fp is not None else ""
        return ViesResult("unavailable", error=code or f"HTTP_{exc.code}")
    except (socket.timeout, TimeoutError):
        return ViesResult("unavailable", error="TIMEOUT")
    except urllib.error.URLError as exc:
        reason = getattr(exc, "reason", None)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return ViesResult("unavailable", error="TIMEOUT")
        return ViesResult("unavailable", error="CONNECTION_ERROR")
    except (OSError, ValueError):  # connection reset, malformed URL, ...
        return ViesResult("unavailable", error="CONNECTION_ERROR")
    if len(body) > MAX_RESPONSE_BYTES:
        return ViesResult("unavailable", error="BAD_RESPONSE")
    return classify(_json(body))


def classify(data) -> ViesResult:
    """A VIES JSON answer → ViesResult (see the module docstring)."""
    if not isinstance(data, dict):
        return ViesResult("unavailable", error="BAD_RESPONSE")
    code = _error_code(data)
    valid = data.get("isValid", data.get("valid"))
    name = _text(data.get("name"))
    address = _text(data.get("address"))
    date = _text(data.get("requestDate"))
    if valid is True and code in ("", "VALID"):
        return ViesResult("valid", name=name, address=address, request_date=date)
    if valid is False and code == "INVALID":
        return ViesResult("invalid", request_date=date)
    return ViesResult("unavailable", error=code or "BAD_RESPONSE")


def _json(body: bytes):
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _error_code(data: dict) -> str:
    code = data.get("userError")
    if not code and isinstance(data.get("errorWrappers"), list) and data["errorWrappers"]:
        first = data["errorWrappers"][0]
        code = first.get("error") if isinstance(first, dict) else None
    return str(code or "").strip().upper()[:60]


def _text(value) -> str:
    text = str(value or "").strip()
    return "" if text in ("---", "N/A") else text


def syntax_ok(tax_id: str, country: str) -> bool:
    """python-stdnum's verdict on the number (format and check digits) in its member state."""
    cc, number = split_vat(tax_id, country)
    try:
        eu_vat.validate(cc + number)
    except StdnumError:
        return False
    return True


def needs_check(client: Client) -> bool:
    """An EU client (billing country in the EU) with a tax id."""
    country, _region = client_location(client)
    return bool(client.tax_id) and country in EU_COUNTRIES


def check_client_vat(client_id: int) -> ViesResult | None:
    """Check the client's VAT id and store the outcome (see the module docstring). None when there is
    nothing to check (unknown client, no tax id, billing country outside the EU)."""
    session = get_session()
    client = session.get(Client, client_id)
    if client is None or not needs_check(client):
        return None
    country, _region = client_location(client)
    tax_id = client.tax_id
    cc, number = split_vat(tax_id, country)
    if not syntax_ok(tax_id, country):
        result = ViesResult("invalid")
    else:
        result = query(cc, number)

    with transaction():
        client = session.scalars(
            select(Client).where(Client.id == client_id).with_for_update(of=Client)
            .execution_options(populate_existing=True)
        ).one_or_none()
        if client is None or client.tax_id != tax_id or client_location(client)[0] != country:
            return result  # changed while we asked: the check of the new values decides
        before = client.vies_status
        if result.conclusive:
            client.vies_status = result.status
            client.vies_name = result.name[:255] if result.status == "valid" else ""
            client.vies_checked_at = clock.now()
            client.vies_error = ""
        else:
            client.vies_error = result.error[:60]
        if client.vies_status != before:
            activity.record(
                "client.vies",
                client_id=client.id,
                object_type="client",
                object_id=client.id,
                changes={"vies_status": [before, client.vies_status]},
                description=f"VAT id {tax_id} checked in VIES: {client.vies_status}",
            )
    return result


def identity_changed(client: Client) -> None:
    """The client's tax id or billing country changed: forget the last VIES result (the caller commits,
    then calls schedule_check)."""
    client.vies_status = "unchecked"
    client.vies_name = ""
    client.vies_error = ""
    client.vies_checked_at = None


def schedule_check(client_id: int) -> None:
    """Run the check task for a client after the caller committed (eager: now; with a broker: a worker).
    Never raises: a failed check must not undo or fail the save that asked for it."""
    try:
        celery_app = current_app.extensions.get("celery")
        if celery_app is None:  # a host app without puqpanel's Celery app: check inline
            check_client_vat(client_id)
            return
        from ..tasks import vies as _tasks  # noqa: F401  (registers the task on the app)

        celery_app.tasks[TASK_NAME].delay(client_id)
    except Exception:  # noqa: BLE001
        log.exception("VIES check of client %s could not run", client_id)
        get_session().rollback()
