"""SQL fragments the engine's set-based statements need, for PostgreSQL and SQLite.

Both backends compute the same periods and amounts as `billing.charging` does in Python (tests compare
them). Timestamps are naive UTC. On SQLite, SQLAlchemy stores DateTime as text "YYYY-MM-DD HH:MM:SS.ffffff"
and compares it as text, so every computed timestamp keeps that exact shape (the fraction of the input is
carried over), and Money is an integer count of 1/10000 units, so rounding is integer arithmetic.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod

from sqlalchemy import DateTime, bindparam, text

from ...models import PERIOD_HOURS, PERIOD_MONTHS

MONTH_PERIODS = tuple(PERIOD_MONTHS)
HOUR_PERIODS = tuple(p for p in PERIOD_HOURS if p not in PERIOD_MONTHS and p != "one_time")


def _case(column: str, mapping: dict[str, int]) -> str:
    whens = " ".join(f"WHEN '{key}' THEN {value}" for key, value in mapping.items())
    return f"(CASE {column} {whens} END)"


def months_case(period: str) -> str:
    """Calendar months of a month-based period (NULL for hour-based ones)."""
    return _case(period, PERIOD_MONTHS)


def hours_case(period: str) -> str:
    """Hours of an hour-based period (NULL for month-based ones)."""
    return _case(period, {p: PERIOD_HOURS[p] for p in HOUR_PERIODS})


class Dialect(ABC):
    """Fragments for one backend. Arguments are SQL expressions (column names, other fragments)."""

    name = ""

    @abstractmethod
    def add_hours(self, ts: str, hours: str) -> str:
        ...

    @abstractmethod
    def days_in_month(self, ts: str) -> str:
        ...

    @abstractmethod
    def add_months_on_day(self, ts: str, months: str, day: str) -> str:
        """ts moved by `months` calendar months onto `day` clamped to that month's length, time kept."""

    @abstractmethod
    def day_of(self, ts: str) -> str:
        ...

    @abstractmethod
    def hourly_amount(self, monthly: str, ts: str) -> str:
        """monthly ÷ (days in ts's month × 24), 4 places half-up (amounts are never negative)."""

    @abstractmethod
    def json_object(self, *pairs: str) -> str:
        ...

    @abstractmethod
    def periods_started(self, start: str, hours: str) -> str:
        """How many periods of `hours` hours beginning at `start` have started by :at (start <= :at)."""

    @abstractmethod
    def months_to_at(self, ts: str) -> str:
        """Calendar months from ts's month to :at's month (0 in the same month)."""

    @abstractmethod
    def numbers(self, count: str) -> str:
        """A join adding k.n = 0 … count-1 to each row (`count` may use the row's columns; it contains the
        marker LEAST_ for the dialect's two-argument minimum)."""

    @abstractmethod
    def money_text(self, amount: str) -> str:
        """A Money expression as decimal text with 4 places ("-12.3400")."""

    # -- shared, built from the above ----------------------------------------------------------------------
    def hourly_billed(self, price: str = "p", product: str = "pr") -> str:
        """A monthly price of a product with hourly billing: charged per started hour."""
        return f"({product}.hourly_billing AND {price}.period = 'monthly')"

    def base_amount(self, service: str = "s", price: str = "p") -> str:
        return f"(CASE WHEN {service}.idle THEN {price}.idle ELSE {price}.base END)"

    def charge_amount(self, start: str, service: str = "s", price: str = "p", product: str = "pr") -> str:
        """What the charge beginning at `start` costs (charging.charge_amount)."""
        base = self.base_amount(service, price)
        return (f"(CASE WHEN {self.hourly_billed(price, product)} THEN {self.hourly_amount(base, start)} "
                f"ELSE {base} END)")

    def anchor_day(self, start: str, service: str = "s") -> str:
        return (f"COALESCE({service}.billing_anchor_day, {self.day_of(f'{service}.activated_at')}, "
                f"{self.day_of(start)})")

    def charge_stop(self, start: str, service: str = "s", price: str = "p", product: str = "pr") -> str:
        """End of the charge beginning at `start` (charging.charge_bounds); never called for one_time."""
        months = _case(f"{price}.period", PERIOD_MONTHS)
        hours = _case(f"{price}.period", {p: PERIOD_HOURS[p] for p in HOUR_PERIODS})
        month_list = ", ".join(f"'{p}'" for p in MONTH_PERIODS)
        return (
            f"(CASE WHEN {self.hourly_billed(price, product)} THEN {self.add_hours(start, '1')} "
            f"WHEN {price}.period IN ({month_list}) "
            f"THEN {self.add_months_on_day(start, months, self.anchor_day(start, service))} "
            f"ELSE {self.add_hours(start, hours)} END)"
        )


class Postgres(Dialect):
    name = "postgresql"

    def add_hours(self, ts, hours):
        return f"({ts} + make_interval(hours => ({hours})::int))"

    def days_in_month(self, ts):
        return f"(extract(day from date_trunc('month', {ts}) + interval '1 month' - interval '1 day')::int)"

    def add_months_on_day(self, ts, months, day):
        first = f"(date_trunc('month', {ts}) + make_interval(months => ({months})::int))"
        return (f"({first} + make_interval(days => (least({day}, {self.days_in_month(first)}) - 1)::int)"
                f" + ({ts} - date_trunc('day', {ts})))")

    def day_of(self, ts):
        return f"(extract(day from {ts})::int)"

    def hourly_amount(self, monthly, ts):
        return f"round({monthly} / ({self.days_in_month(ts)} * 24), 4)"

    def json_object(self, *pairs):
        return f"json_build_object({', '.join(pairs)})"

    def periods_started(self, start, hours):
        return f"(floor(extract(epoch from (:at - {start})) / ({hours} * 3600))::int + 1)"

    def months_to_at(self, ts):
        return (f"((extract(year from :at) * 12 + extract(month from :at))"
                f" - (extract(year from {ts}) * 12 + extract(month from {ts})))::int")

    def numbers(self, count):
        return f"CROSS JOIN LATERAL generate_series(0, {count.replace('LEAST_', 'LEAST')} - 1) AS k(n)"

    def money_text(self, amount):
        return f"(({amount})::numeric(20, 4))::text"


class Sqlite(Dialect):
    name = "sqlite"

    def add_hours(self, ts, hours):
        return f"(strftime('%Y-%m-%d %H:%M:%S', {ts}, '+' || ({hours}) || ' hours') || substr({ts}, 20))"

    def days_in_month(self, ts):
        return f"CAST(strftime('%d', {ts}, 'start of month', '+1 month', '-1 day') AS INTEGER)"

    def add_months_on_day(self, ts, months, day):
        first = f"date({ts}, 'start of month', '+' || ({months}) || ' months')"
        return (f"(date({first}, '+' || (min({day}, {self.days_in_month(first)}) - 1) || ' days')"
                f" || substr({ts}, 11))")

    def day_of(self, ts):
        return f"CAST(strftime('%d', {ts}) AS INTEGER)"

    def hourly_amount(self, monthly, ts):
        hours = f"({self.days_in_month(ts)} * 24)"
        return f"((2 * ({monthly}) + {hours}) / (2 * {hours}))"

    def json_object(self, *pairs):
        return f"json_object({', '.join(pairs)})"

    def periods_started(self, start, hours):
        return (f"((CAST(strftime('%s', :at) AS INTEGER) - CAST(strftime('%s', {start}) AS INTEGER))"
                f" / ({hours} * 3600) + 1)")

    def months_to_at(self, ts):
        return (f"((CAST(strftime('%Y', :at) AS INTEGER) * 12 + CAST(strftime('%m', :at) AS INTEGER))"
                f" - (CAST(strftime('%Y', {ts}) AS INTEGER) * 12 + CAST(strftime('%m', {ts}) AS INTEGER)))")

    def numbers(self, count):
        from .charge import MAX_ROUNDS

        return (f"JOIN (WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < {MAX_ROUNDS - 1})"
                f" SELECT n FROM seq) k ON k.n < {count.replace('LEAST_', 'min')}")

    def money_text(self, amount):
        return (f"(CASE WHEN ({amount}) < 0 THEN '-' ELSE '' END"
                f" || printf('%d.%04d', abs({amount}) / 10000, abs({amount}) % 10000))")


def dialect_for(session_or_conn) -> Dialect:
    bind = session_or_conn.get_bind() if hasattr(session_or_conn, "get_bind") else session_or_conn
    return Postgres() if bind.dialect.name == "postgresql" else Sqlite()


def typed_text(sql: str, expanding: tuple[str, ...] = ()):
    """text(sql) whose :at and :hour_before parameters are bound as DateTime (SQLite compares SQLAlchemy's text format, which
    the driver's own datetime adapter doesn't produce) and whose `expanding` parameters take lists."""
    params = [bindparam(name, type_=DateTime()) for name in ("at", "hour_before")
              if re.search(rf":{name}\b", sql)]
    params += [bindparam(name, expanding=True) for name in expanding]
    return text(sql).bindparams(*params)
