"""Client area: the dashboard (DESIGN.md "Core flows" 4).

Every linked user sees it; the service counters need the link's manage_services key, the money figures
(recurring cost, recommended add funds, the balance chart) its manage_invoices key — without the key the
block is not computed and not shown. The balance chart is an inline SVG drawn here (no script, no external
asset).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace

from flask_appbuilder import expose
from flask_babel import format_date

from ...billing import dashboard as numbers
from ..formatting import money
from . import ClientAreaView, client_page

CHART_DAYS = 30
CHART_WIDTH = 600
CHART_HEIGHT = 120
CHART_PAD = 6
# (counter key, the services list's status filter) of the dashboard's counters, in order.
COUNTERS = (
    ("total", "current"),
    ("active", "active"),
    ("suspended", "suspended"),
    ("termination_requested", "termination_requested"),
)


@dataclass
class BalanceChart:
    """An SVG polyline of (date, balance) points: `points` in the SVG's coordinates, with the extremes."""

    points: str
    zero_y: float | None
    minimum: Decimal
    maximum: Decimal
    first: str
    last: str
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT


def balance_chart(history: list) -> BalanceChart:
    """The polyline of a balance history: x evenly spaced by day, y scaled between the minimum (bottom) and
    the maximum (top); a flat history is drawn in the middle. `zero_y` is the zero line's y when zero lies
    within the range (a balance that crossed zero), else None."""
    values = [balance for _day, balance in history]
    low, high = min(values), max(values)
    span = high - low
    inner_w = CHART_WIDTH - 2 * CHART_PAD
    inner_h = CHART_HEIGHT - 2 * CHART_PAD
    step = inner_w / (len(values) - 1) if len(values) > 1 else 0

    def y(value: Decimal) -> float:
        if not span:
            return CHART_HEIGHT / 2
        return round(CHART_PAD + float((high - value) / span) * inner_h, 2)

    points = " ".join(f"{round(CHART_PAD + i * step, 2)},{y(v)}" for i, v in enumerate(values))
    zero_y = y(Decimal(0)) if span and low < 0 < high else None
    return BalanceChart(points=points, zero_y=zero_y, minimum=low, maximum=high,
                        first=format_date(history[0][0], "medium"), last=format_date(history[-1][0], "medium"))


def ledger_money(amount: Decimal, currency) -> str:
    """An amount with the ledger's 4 decimal places (at least; the currency's own if more), in the currency's
    format: the recurring cost figures are 4-place numbers (an hourly cost is often a fraction of a cent)."""
    places = max(4, int(getattr(currency, "minor_units", 2) or 0))
    precise = SimpleNamespace(code=currency.code, prefix=currency.prefix, suffix=currency.suffix, minor_units=places)
    return money(amount, precise)


class ClientDashboardView(ClientAreaView):
    route_base = "/client"
    default_view = "dashboard"

    @expose("/dashboard")
    @client_page()
    def dashboard(self, link):
        client = link.client
        counters = numbers.service_counters(client.id) if link.can("manage_services") else None
        money_figures = None
        if link.can("manage_invoices"):
            history = numbers.balance_history(client.id, CHART_DAYS)
            money_figures = {
                "recurring": numbers.recurring_cost(client.id),
                "recommended": numbers.recommended_add_funds(client.id),
                "chart": balance_chart(history),
            }
        return self.render_area(
            "dashboard.html", link, "dashboard",
            counters=counters, counter_filters=COUNTERS, money_figures=money_figures,
            breakdown=tuple(numbers.BREAKDOWN_HOURS), chart_days=CHART_DAYS, ledger_money=ledger_money,
        )


def register(appbuilder) -> None:
    appbuilder.add_view_no_menu(ClientDashboardView())
