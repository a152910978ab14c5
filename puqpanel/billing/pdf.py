"""Invoice PDFs: an HTML template rendered by wkhtmltopdf through pdfkit.

Template lookup (first found wins), so a provider restyles the documents of one home company and/or one
document type by dropping a template into its own app's templates folder (which Flask searches before
puqpanel's):

    puqpanel/pdf/company_{home_company_id}_{type}.html
    puqpanel/pdf/company_{home_company_id}.html
    puqpanel/pdf/{type}.html                     (type: proforma | invoice | credit_note)
    puqpanel/pdf/document.html                   (shipped)

Everything legal printed comes from the document's own snapshots (invoice.client_snapshot,
invoice.company_snapshot), never from the live client: editing a client changes no issued document.
wkhtmltopdf runs headless (QT_QPA_PLATFORM=offscreen) with local file access disabled and its network
pointed at a closed port, so a document can only show what its HTML carries inline (the logo is a data:
URI). Debian's wkhtmltopdf has no header/footer options: the footer is part of the HTML body.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
from decimal import ROUND_HALF_UP, Decimal

import pdfkit
import pycountry
from flask import current_app
from flask_babel import force_locale, format_date, get_locale, gettext
from flask_babel import lazy_gettext as _l
from markupsafe import Markup, escape

from ..domain import DomainError
from ..domain.session import get_session
from ..models import Client
from .settings import setting
from .tax import REVERSE_CHARGE_NOTE

log = logging.getLogger(__name__)

TITLES = {
    "proforma": _l("Proforma"),
    "invoice": _l("Invoice"),
    "credit_note": _l("Credit Note"),
}
STATUS_LABELS = {
    "draft": _l("Draft"),
    "unpaid": _l("Unpaid"),
    "paid": _l("Paid"),
    "invoiced": _l("Invoiced"),
    "refunded": _l("Refunded"),
    "canceled": _l("Canceled"),
}
# wkhtmltopdf command line. "proxy" points every network request at the closed discard port (no fetch
# leaves the machine, nothing reaches a local service); local files are refused; no JavaScript runs.
OPTIONS = {
    "encoding": "UTF-8",  # pdfkit adds --quiet itself
    "page-size": "A4",
    "margin-top": "15mm",
    "margin-bottom": "15mm",
    "margin-left": "15mm",
    "margin-right": "15mm",
    "disable-local-file-access": "",
    "disable-javascript": "",
    "disable-external-links": "",
    "proxy": "127.0.0.1:9",
    "print-media-type": "",
}
# Seconds one render may take before it is killed (PUQPANEL_PDF_TIMEOUT overrides).
TIMEOUT = 60
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|jpg|gif|svg\+xml|webp);base64,[A-Za-z0-9+/=\s]+$")


class PdfError(DomainError):
    """The PDF could not be produced (renderer missing, failed or timed out)."""


def template_names(invoice) -> list[str]:
    """The templates tried for this document, most specific first."""
    company, doc_type = invoice.home_company_id, invoice.type
    return [
        f"puqpanel/pdf/company_{company}_{doc_type}.html",
        f"puqpanel/pdf/company_{company}.html",
        f"puqpanel/pdf/{doc_type}.html",
        "puqpanel/pdf/document.html",
    ]


def render_html(invoice) -> str:
    """The document's HTML (what render_pdf prints), in the client's language (document_language)."""
    template = current_app.jinja_env.select_template(template_names(invoice))
    language = document_language(invoice)
    if language:
        with force_locale(language):
            return template.render(lang=language, **_context(invoice))
    return template.render(lang=str(get_locale() or "en"), **_context(invoice))


def document_language(invoice) -> str:
    """The language the document is printed in: the snapshot's, else the client's current language (labels
    only: every legal detail comes from the snapshots); "" when neither is offered by the app."""
    language = (invoice.client_snapshot or {}).get("language") or ""
    if not language:
        client = get_session().get(Client, invoice.client_id)
        language = client.language if client is not None else ""
    offered = current_app.config.get("LANGUAGES") or {}
    return language if language and (not offered or language in offered) else ""


def render_pdf(invoice) -> bytes:
    """The document as PDF bytes. Raises PdfError (a DomainError: views flash it) when wkhtmltopdf is
    missing, fails or takes longer than PUQPANEL_PDF_TIMEOUT seconds."""
    html = render_html(invoice)
    binary = setting("PUQPANEL_WKHTMLTOPDF")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    try:
        configuration = pdfkit.configuration(wkhtmltopdf=binary, environ=env)
    except OSError:
        log.error("wkhtmltopdf not found at %r (PUQPANEL_WKHTMLTOPDF)", binary)
        raise PdfError(str(_l("PDF rendering is unavailable: wkhtmltopdf is not installed "
                              "(Debian package wkhtmltopdf, or set PUQPANEL_WKHTMLTOPDF)."))) from None
    kit = pdfkit.PDFKit(html, "string", options=OPTIONS, configuration=configuration)
    # pdfkit builds the command line; it is run here so that a hung renderer is killed after a timeout
    # (pdfkit's own to_pdf waits forever).
    timeout = current_app.config.get("PUQPANEL_PDF_TIMEOUT", TIMEOUT)
    try:
        result = subprocess.run(kit.command(), input=html.encode("utf-8"), capture_output=True,
                                env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        log.error("wkhtmltopdf took longer than %ss for invoice %s", timeout, invoice.id)
        raise PdfError(str(_l("The PDF could not be rendered in time. Try again later."))) from None
    except OSError as exc:
        log.error("wkhtmltopdf could not start (%s): %s", binary, exc)
        raise PdfError(str(_l("PDF rendering is unavailable: wkhtmltopdf could not be started."))) from None
    stderr = result.stderr.decode("utf-8", "replace")[-2000:]
    complete = result.stdout.startswith(b"%PDF") and b"%%EOF" in result.stdout[-1024:]
    if result.returncode == 1 and complete:
        # Exit 1 with a whole document: a resource the HTML refers to was refused (local file / network
        # are off); the document is printed without it.
        log.warning("wkhtmltopdf left out a resource of invoice %s: %s", invoice.id, stderr)
    elif result.returncode != 0 or not complete:
        log.error("wkhtmltopdf failed for invoice %s (exit %s): %s", invoice.id, result.returncode, stderr)
        raise PdfError(str(_l("The PDF could not be rendered.")))
    return result.stdout


def pdf_filename(invoice) -> str:
    """`{type}-{number}.pdf` with the number reduced to letters, digits, '.', '_' and '-' (a document
    without a number yet: `{type}-draft-{id}.pdf`)."""
    number = _UNSAFE_FILENAME.sub("-", invoice.number or "").strip(".-")
    if not number:
        number = f"draft-{invoice.id}"
    return f"{invoice.type}-{number}.pdf"


# -- template context ------------------------------------------------------------------------------------
# Snapshot keys (billing.invoicing.snapshot_client / snapshot_company): legal_name, company_name, name,
# firstname, lastname, contact_name, tax_id, email, phone, address1, address2, postcode, city, region,
# region_name, country, country_name, address_lines; the client's also client_id and tax_note (the
# reverse-charge sentence at issue time); the company's also bank_details, website, logo, pdf_footer.
def _context(invoice) -> dict:
    client = dict(invoice.client_snapshot or {})
    company = dict(invoice.company_snapshot or {})
    home = invoice.home_company
    # Branding and payment instructions fall back to the live home company when the snapshot lacks them.
    for key in ("logo", "pdf_footer", "bank_details"):
        if not company.get(key) and home is not None:
            company[key] = getattr(home, key, "") or ""
    if not (company.get("legal_name") or company.get("company_name")) and home is not None:
        company["legal_name"] = home.company_name
    logo = (company.get("logo") or "").strip()
    # The legal note (EU reverse charge) is printed on its own; notes may already carry its text.
    note = (client.get("tax_note") or "").strip()
    if not note and invoice.reverse_charge:
        note = REVERSE_CHARGE_NOTE
    notes = (invoice.notes or "").replace(note, "").strip() if note else (invoice.notes or "").strip()
    currency = invoice.currency
    money = current_app.jinja_env.globals.get("puq_money")
    return {
        "invoice": invoice,
        "title": TITLES.get(invoice.type, invoice.type),
        "status_label": STATUS_LABELS.get(invoice.status, invoice.status),
        "client": client,
        "company": company,
        "client_name_lines": _client_name_lines(client),
        "client_address_lines": _address_lines(_address(client)),
        "client_number": client.get("client_id") or client.get("id") or invoice.client_id,
        "company_name_lines": _dedupe([company.get("legal_name"), company.get("company_name")])[:1],
        "company_address_lines": _address_lines(_address(company)),
        "logo": logo if _DATA_IMAGE.match(logo) else "",
        "items": list(invoice.items),
        "tax_lines": invoice.tax_lines,
        "reverse_charge_note": gettext(note) if note else "",
        "notes": notes,
        "show_bank_details": invoice.type == "proforma" and invoice.status == "unpaid"
        and bool(company.get("bank_details")),
        "currency_code": getattr(currency, "code", ""),
        "money": (lambda amount: money(amount, currency)) if money else (
            lambda amount: _plain_money(amount, currency)),
        "plain": _plain,
        "date": _date,
        "lines": _lines,
    }


def _dedupe(values) -> list[str]:
    lines: list[str] = []
    for value in values:
        value = (value or "").strip()
        if value and value not in lines:
            lines.append(value)
    return lines


def _address(snapshot: dict) -> dict:
    """The address part of a snapshot: a nested billing_address / address dict, or the snapshot itself."""
    for key in ("billing_address", "address"):
        if isinstance(snapshot.get(key), dict):
            return snapshot[key]
    return snapshot


def _client_name_lines(snapshot: dict) -> list[str]:
    """The legal name (company, else the person), then the person or contact when that differs."""
    person = " ".join(p for p in (snapshot.get("firstname") or "", snapshot.get("lastname") or "") if p)
    return _dedupe([snapshot.get("legal_name"), snapshot.get("company_name"), snapshot.get("name") or person,
                    snapshot.get("contact_name")])


def _address_lines(address: dict) -> list[str]:
    """The snapshot's frozen address lines (else built from its parts); a line repeating the one before
    (a region named like its city: Berlin, Berlin) is left out."""
    lines = address.get("address_lines")
    if not isinstance(lines, list):
        city = (address.get("city") or "").strip()
        lines = [address.get("address1") or "", address.get("address2") or "",
                 " ".join(p for p in (address.get("postcode") or "", city) if p),
                 address.get("region_name") or _region_name(address.get("region") or address.get("state") or ""),
                 address.get("country_name") or _country_name((address.get("country") or "").upper())]
    result: list[str] = []
    for line in lines:
        line = str(line or "").strip()
        if line and (not result or result[-1] != line):
            result.append(line)
    return result


def _country_name(code: str) -> str:
    if not code:
        return ""
    locale = get_locale()
    name = locale.territories.get(code) if locale is not None else None
    if not name:
        found = pycountry.countries.get(alpha_2=code)
        name = found.name if found else code
    return name


def _region_name(code: str) -> str:
    if not code:
        return ""
    found = pycountry.subdivisions.get(code=code) if "-" in code else None
    return found.name if found else code


def _plain(value) -> str:
    """A quantity or rate without trailing zeros: 1, 1.5, 19, 7.25."""
    return f"{Decimal(value or 0).normalize():f}"


def _date(value) -> str:
    return format_date(value, "medium") if value else ""


def _lines(text: str | None) -> Markup:
    """Multi-line text (bank details, footer) with its line breaks kept, escaped."""
    return Markup("<br>").join(escape(line) for line in (text or "").splitlines())


def _plain_money(amount, currency) -> str:
    places = Decimal(1).scaleb(-int(getattr(currency, "minor_units", 2) or 0))
    return f"{Decimal(amount or 0).quantize(places, rounding=ROUND_HALF_UP):,} {getattr(currency, 'code', '')}".strip()
