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
    "encoding": "UTF-8",
    "quiet": "",
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
    """The document's HTML (what render_pdf prints), in the client's language when the snapshot has one."""
    template = current_app.jinja_env.select_template(template_names(invoice))
    language = (invoice.client_snapshot or {}).get("language") or ""
    if language:
        with force_locale(language):
            return template.render(**_context(invoice))
    return template.render(**_context(invoice))


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
    if result.returncode != 0 or not result.stdout.startswith(b"%PDF"):
        log.error("wkhtmltopdf failed for invoice %s (exit %s): %s", invoice.id, result.returncode,
                  result.stderr.decode("utf-8", "replace")[-2000:])
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
def _context(invoice) -> dict:
    client = dict(invoice.client_snapshot or {})
    company = dict(invoice.company_snapshot or {})
    home = invoice.home_company
    # Branding and payment instructions fall back to the live home company when the snapshot lacks them.
    for key in ("logo", "pdf_footer", "bank_details"):
        if not company.get(key) and home is not None:
            company[key] = getattr(home, key, "") or ""
    logo = (company.get("logo") or "").strip()
    # The legal note of an EU reverse charge is printed on its own; notes may already carry its text.
    notes = invoice.notes or ""
    note = ""
    if invoice.reverse_charge:
        note = gettext(REVERSE_CHARGE_NOTE)
        notes = notes.replace(REVERSE_CHARGE_NOTE, "")
    notes = notes.strip()
    currency = invoice.currency
    money = current_app.jinja_env.globals.get("puq_money")
    return {
        "invoice": invoice,
        "title": TITLES.get(invoice.type, invoice.type),
        "status_label": STATUS_LABELS.get(invoice.status, invoice.status),
        "client": client,
        "company": company,
        "client_name_lines": _name_lines(client),
        "client_address_lines": _address_lines(_address(client)),
        "company_name_lines": _name_lines(company),
        "company_address_lines": _address_lines(_address(company)),
        "logo": logo if _DATA_IMAGE.match(logo) else "",
        "items": list(invoice.items),
        "tax_lines": invoice.tax_lines,
        "reverse_charge_note": note,
        "notes": notes,
        "show_bank_details": invoice.type == "proforma" and invoice.status == "unpaid"
        and bool(company.get("bank_details")),
        "currency_code": getattr(currency, "code", ""),
        "money": (lambda amount: money(amount, currency)) if money else (lambda amount: _plain_money(amount, currency)),
        "plain": _plain,
        "date": _date,
        "lines": _lines,
    }


def _address(snapshot: dict) -> dict:
    """The address part of a snapshot: a nested billing_address / address dict, or the snapshot itself."""
    for key in ("billing_address", "address"):
        if isinstance(snapshot.get(key), dict):
            return snapshot[key]
    return snapshot


def _name_lines(snapshot: dict) -> list[str]:
    """Legal name first (company), then the person, without repeats."""
    person = snapshot.get("contact_name") or " ".join(
        p for p in (snapshot.get("firstname") or "", snapshot.get("lastname") or "") if p
    )
    lines = []
    for value in (snapshot.get("company_name"), snapshot.get("legal_name"), snapshot.get("name"), person):
        value = (value or "").strip()
        if value and value not in lines:
            lines.append(value)
    return lines


def _address_lines(address: dict) -> list[str]:
    country = (address.get("country") or "").upper()
    region = address.get("region") or address.get("state") or ""
    city_line = " ".join(p for p in (address.get("postcode") or "", address.get("city") or "") if p)
    region_name = _region_name(region)
    if region_name == (address.get("city") or ""):
        region_name = ""  # Berlin, Berlin
    lines = [address.get("address1") or "", address.get("address2") or "", city_line, region_name,
             _country_name(country)]
    return [line.strip() for line in lines if line and line.strip()]


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
