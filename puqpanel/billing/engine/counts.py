"""What a job (or one chunk of it) did: named counters plus amounts per currency."""
from __future__ import annotations

from decimal import Decimal


class Counts:
    def __init__(self, values: dict | None = None):
        self.values: dict[str, int] = {}
        self.amounts: dict[str, Decimal] = {}  # currency code (or id before naming) → amount
        for key, value in (values or {}).items():
            if key == "amounts":
                for code, amount in value.items():
                    self.add_amount(code, Decimal(amount))
            else:
                self.add(key, int(value))

    def add(self, key: str, value: int) -> None:
        if value:
            self.values[key] = self.values.get(key, 0) + int(value)

    def add_amount(self, currency, amount: Decimal) -> None:
        if amount:
            self.amounts[currency] = self.amounts.get(currency, Decimal(0)) + Decimal(amount)

    def merge(self, other: "Counts") -> "Counts":
        for key, value in other.values.items():
            self.add(key, value)
        for currency, amount in other.amounts.items():
            self.add_amount(currency, amount)
        return self

    def __getitem__(self, key: str) -> int:
        return self.values.get(key, 0)

    def as_json(self, currency_codes: dict[int, str] | None = None) -> dict:
        """JSON-ready: counters, and "amounts" {code: "12.3400"} (currency ids named by `currency_codes`)."""
        data: dict = dict(sorted(self.values.items()))
        if self.amounts:
            named: dict[str, Decimal] = {}
            for currency, amount in self.amounts.items():
                code = (currency_codes or {}).get(currency, str(currency)) if isinstance(currency, int) else currency
                named[code] = named.get(code, Decimal(0)) + amount
            data["amounts"] = {code: f"{amount:.4f}" for code, amount in sorted(named.items())}
        return data
