"""Reference data (data-contracts.md §2): customers, lines and the rate card, read from CSV and
checked as a whole before any use, with errors that name the file, the row and the value:
identifiers of 1-64 letters, digits, `.`, `_` and `-`; ISO 3166-1 countries; ISO 4217
currencies; rate-card periods that are well formed and do not overlap. Reference data is never
half-used. Prices are exact decimals from the start."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from billing_jobs import iso
from billing_jobs.contract import CONVERSATION_TYPES
from billing_jobs.errors import ReferenceDataError

FILES = ("customers.csv", "lines.csv", "rate_card.csv")
PRICE_SCALE = 10  # decimal places kept for unit prices (NUMERIC(20, 10) in the warehouse)
IDENTIFIER = re.compile(r"[A-Za-z0-9._-]{1,64}")  # customer_id, line_id (data-contracts.md §2)


def _identifier(value: str, what: str, where: str) -> str:
    if not IDENTIFIER.fullmatch(value):
        raise ReferenceDataError(f"{where}: {what} must be 1-64 letters, digits, '.', '_' or '-': "
                                 f"{value!r}")
    return value


@dataclass(frozen=True)
class Rate:
    row: int  # 1-based data row in rate_card.csv
    country: str
    conversation_type: str
    unit_price: Decimal
    currency: str
    valid_from: dt.datetime
    valid_to: dt.datetime | None  # None: until further notice

    def applies_at(self, instant: dt.datetime) -> bool:
        return self.valid_from <= instant and (self.valid_to is None or instant < self.valid_to)


@dataclass(frozen=True)
class Reference:
    customers: dict[str, str]  # customer_id -> name
    lines: dict[str, tuple[str, str]]  # line_id -> (customer_id, country)
    rates: tuple[Rate, ...]
    content_hash: str  # sha256 over the three files as read

    @property
    def line_owners(self) -> dict[str, str]:
        return {line: owner for line, (owner, _) in self.lines.items()}


def _rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise ReferenceDataError(f"{path}: reference file not found")
    with path.open("r", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ReferenceDataError(f"{path}: missing column(s) {', '.join(missing)}")
        return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]


def _instant(text: str, where: str) -> dt.datetime:
    """An ISO date (midnight UTC) or a UTC timestamp."""
    try:
        if len(text) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.timezone.utc)
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReferenceDataError(f"{where}: not an ISO date or timestamp: {text!r}") from None
    if value.tzinfo is None:
        raise ReferenceDataError(f"{where}: timestamp without offset: {text!r} (give Z or +00:00)")
    return value.astimezone(dt.timezone.utc)


def load_reference(folder: str | Path) -> Reference:
    """The reference directory: a local path or an fsspec URL, like the landing zone."""
    from billing_jobs.landing import location

    folder = location(folder)
    digest = hashlib.sha256()
    for name in FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")

    customers = {}
    path = folder / "customers.csv"
    for i, row in enumerate(_rows(path, ("customer_id", "name")), start=1):
        where = f"{path} row {i}"
        customer = _identifier(row["customer_id"], "customer_id", where)
        if customer in customers:
            raise ReferenceDataError(f"{where}: customer {customer} listed twice")
        customers[customer] = row["name"]

    lines = {}
    path = folder / "lines.csv"
    for i, row in enumerate(_rows(path, ("line_id", "customer_id", "country")), start=1):
        where = f"{path} row {i}"
        _identifier(row["line_id"], "line_id", where)
        if row["line_id"] in lines:
            raise ReferenceDataError(f"{where}: line {row['line_id']} listed twice")
        if row["customer_id"] not in customers:
            raise ReferenceDataError(f"{where}: unknown customer {row['customer_id']!r}")
        if row["country"] not in iso.COUNTRIES:
            raise ReferenceDataError(f"{where}: country must be ISO 3166-1 alpha-2: {row['country']!r}")
        lines[row["line_id"]] = (row["customer_id"], row["country"])

    rates = []
    path = folder / "rate_card.csv"
    columns = ("country", "conversation_type", "unit_price", "currency", "valid_from", "valid_to")
    for i, row in enumerate(_rows(path, columns), start=1):
        where = f"{path} row {i}"
        if row["conversation_type"] not in CONVERSATION_TYPES:
            raise ReferenceDataError(f"{where}: unknown conversation_type {row['conversation_type']!r}")
        try:
            price = Decimal(row["unit_price"])
        except InvalidOperation:
            raise ReferenceDataError(f"{where}: unit_price is not a decimal: {row['unit_price']!r}") from None
        if not price.is_finite() or price < 0:
            raise ReferenceDataError(f"{where}: unit_price must be a non-negative decimal: {price}")
        if -price.as_tuple().exponent > PRICE_SCALE:
            raise ReferenceDataError(f"{where}: unit_price has more than {PRICE_SCALE} decimals: {price}")
        if row["country"] not in iso.COUNTRIES:
            raise ReferenceDataError(f"{where}: country must be ISO 3166-1 alpha-2: {row['country']!r}")
        if row["currency"] not in iso.CURRENCIES:
            raise ReferenceDataError(f"{where}: currency must be ISO 4217: {row['currency']!r}")
        valid_from = _instant(row["valid_from"], where)
        valid_to = _instant(row["valid_to"], where) if row["valid_to"] else None
        if valid_to is not None and valid_to <= valid_from:
            raise ReferenceDataError(f"{where}: valid_to {valid_to} is not after valid_from {valid_from}")
        rates.append(Rate(i, row["country"], row["conversation_type"], price, row["currency"],
                          valid_from, valid_to))
    _refuse_overlaps(path, rates)
    return Reference(customers, lines, tuple(rates), digest.hexdigest())


def _refuse_overlaps(path: Path, rates: list[Rate]) -> None:
    """Two rows for one country and type in force at the same instant would price a start twice
    (billing-rules.md, Pricing): refused before any start is priced."""
    by_key: dict[tuple[str, str], list[Rate]] = {}
    for rate in rates:
        by_key.setdefault((rate.country, rate.conversation_type), []).append(rate)
    for (country, kind), rows in by_key.items():
        rows.sort(key=lambda r: r.valid_from)
        for a, b in zip(rows, rows[1:]):
            if a.valid_to is None or a.valid_to > b.valid_from:
                raise ReferenceDataError(
                    f"{path} rows {a.row} and {b.row}: two {country} {kind} rates in force at "
                    f"{b.valid_from:%Y-%m-%dT%H:%M:%SZ}: end the first before the second starts")
