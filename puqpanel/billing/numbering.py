"""Gapless document numbers per home company × document type × reset period.

A number is taken inside the transaction that gives a document its numbered state: the counter row is
updated (row lock until commit, so concurrent issuers queue) and a rollback returns the number. Documents
with a number are never deleted, so a series has no gap unless someone deletes rows behind our back —
`series_report` finds that.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..domain import DomainError
from ..domain.session import get_session
from ..models import NUMBER_RESETS, DocumentCounter, HomeCompany, Invoice

TOKENS = ("{YEAR}", "{MONTH}", "{DAY}", "{NUMBER}")
_TOKEN_RE = re.compile(r"\{[A-Z]+\}")
MAX_PADDING = 12


def check_format(fmt: str, padding: int, reset: str) -> None:
    """DomainError unless the format holds {NUMBER} once, only known tokens, and the reset period's date
    tokens (a monthly reset needs {YEAR} and {MONTH}, a yearly one {YEAR}) so numbers stay unique."""
    errors = {}
    unknown = [t for t in _TOKEN_RE.findall(fmt) if t not in TOKENS]
    if unknown:
        errors["format"] = str(_l("Unknown token %(token)s.", token=unknown[0]))
    elif fmt.count("{NUMBER}") != 1:
        errors["format"] = str(_l("The format must contain {NUMBER} exactly once."))
    elif reset == "yearly" and "{YEAR}" not in fmt:
        errors["format"] = str(_l("A yearly reset needs {YEAR} in the format."))
    elif reset == "monthly" and not ("{YEAR}" in fmt and "{MONTH}" in fmt):
        errors["format"] = str(_l("A monthly reset needs {YEAR} and {MONTH} in the format."))
    if reset not in NUMBER_RESETS:
        errors["reset"] = str(_l("Choose never, monthly or yearly."))
    if not 0 <= padding <= MAX_PADDING:
        errors["padding"] = str(_l("Padding must be between 0 and %(n)s.", n=MAX_PADDING))
    if errors:
        raise DomainError(errors)


def period_key(reset: str, day: dt.date) -> str:
    if reset == "yearly":
        return f"{day.year:04d}"
    if reset == "monthly":
        return f"{day.year:04d}-{day.month:02d}"
    return ""


def format_number(fmt: str, padding: int, seq: int, day: dt.date) -> str:
    return (
        fmt.replace("{YEAR}", f"{day.year:04d}")
        .replace("{MONTH}", f"{day.month:02d}")
        .replace("{DAY}", f"{day.day:02d}")
        .replace("{NUMBER}", str(seq).zfill(padding))
    )


def series_settings(company: HomeCompany, doc_type: str) -> tuple[str, int, str]:
    """(format, padding, reset) of a home company for proforma | invoice | credit_note."""
    return (
        getattr(company, f"{doc_type}_format"),
        getattr(company, f"{doc_type}_padding"),
        getattr(company, f"{doc_type}_reset"),
    )


@dataclass
class IssuedNumber:
    number: str
    period_key: str
    seq: int


def take_number(company: HomeCompany, doc_type: str, day: dt.date) -> IssuedNumber:
    """The next number of the series, reserved in the current transaction (commit keeps it)."""
    session = get_session()
    fmt, padding, reset = series_settings(company, doc_type)
    key = period_key(reset, day)
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    # One statement: the first number of a period inserts the row, later ones increment it (the row lock
    # taken here is held until commit).
    statement = insert(DocumentCounter).values(
        home_company_id=company.id, doc_type=doc_type, period_key=key, last_number=1
    )
    seq = session.execute(
        statement.on_conflict_do_update(
            index_elements=["home_company_id", "doc_type", "period_key"],
            set_={"last_number": DocumentCounter.last_number + 1},
        ).returning(DocumentCounter.last_number)
    ).scalar_one()
    number = format_number(fmt, padding, seq, day)
    # A series restarted by a settings change (e.g. reset yearly → never, monthly → yearly with the same
    # format) can produce a number issued before: refuse (the caller's rollback returns the counter) rather
    # than fail on the unique key uq_invoice_number.
    taken = session.scalar(
        select(Invoice.id)
        .where(Invoice.home_company_id == company.id, Invoice.type == doc_type, Invoice.number == number)
        .limit(1)
    )
    if taken is not None:
        raise DomainError(str(_l(
            "The number %(number)s was already issued by %(company)s (its numbering settings changed since): "
            "change the number format of this document type so new numbers differ.",
            number=number, company=company.name,
        )))
    return IssuedNumber(number, key, seq)


def assign_number(document: Invoice, day: dt.date) -> None:
    """Give `document` (with home_company set) the next number of its series."""
    issued = take_number(document.home_company, document.type, day)
    document.number = issued.number
    document.number_period = issued.period_key
    document.number_seq = issued.seq


@dataclass
class Series:
    home_company_id: int
    home_company: str
    doc_type: str
    period_key: str
    last_number: int
    issued: int
    gaps: list[tuple[int, int]] = field(default_factory=list)  # missing ranges, inclusive


def series_report() -> list[Series]:
    """Every series with its last number, how many documents carry a number of it, and missing ranges.
    Set-based: gaps come from LAG over the numbered documents, not from a loop over them."""
    session = get_session()
    counts = (
        select(
            Invoice.home_company_id, Invoice.type, Invoice.number_period,
            func.count(Invoice.id).label("issued"), func.max(Invoice.number_seq).label("top"),
        )
        .where(Invoice.number_seq.is_not(None))
        .group_by(Invoice.home_company_id, Invoice.type, Invoice.number_period)
        .subquery()
    )
    rows = session.execute(
        select(
            DocumentCounter.home_company_id, HomeCompany.name, DocumentCounter.doc_type,
            DocumentCounter.period_key, DocumentCounter.last_number, func.coalesce(counts.c.issued, 0),
            func.coalesce(counts.c.top, 0),
        )
        .join(HomeCompany, HomeCompany.id == DocumentCounter.home_company_id)
        .outerjoin(
            counts,
            and_(
                counts.c.home_company_id == DocumentCounter.home_company_id,
                counts.c.type == DocumentCounter.doc_type,
                counts.c.number_period == DocumentCounter.period_key,
            ),
        )
        .order_by(HomeCompany.name, DocumentCounter.doc_type, DocumentCounter.period_key)
    ).all()
    series = {(r[0], r[2], r[3]): Series(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows}
    highest = {(r[0], r[2], r[3]): r[6] for r in rows}
    previous = func.lag(Invoice.number_seq, 1, 0).over(
        partition_by=(Invoice.home_company_id, Invoice.type, Invoice.number_period), order_by=Invoice.number_seq
    )
    seqs = (
        select(
            Invoice.home_company_id, Invoice.type, Invoice.number_period, Invoice.number_seq,
            previous.label("previous"),
        )
        .where(Invoice.number_seq.is_not(None))
        .subquery()
    )
    for hc_id, doc_type, key, seq, prev in session.execute(
        select(seqs.c.home_company_id, seqs.c.type, seqs.c.number_period, seqs.c.number_seq, seqs.c.previous)
        .where(seqs.c.number_seq - seqs.c.previous > 1)
        .order_by(seqs.c.home_company_id, seqs.c.type, seqs.c.number_period, seqs.c.number_seq)
    ):
        if (hc_id, doc_type, key) in series:
            series[(hc_id, doc_type, key)].gaps.append((prev + 1, seq - 1))
    for key, s in series.items():
        if s.last_number > highest[key]:  # numbers handed out after the highest existing document
            s.gaps.append((highest[key] + 1, s.last_number))
    return list(series.values())
