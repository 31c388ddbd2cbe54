"""Pricing (billing-rules.md, Pricing): every conversation start gets the rate-card price for its
line's country and its conversation type in force at its instant, and invoice lines add them up.

Money is exact: Arrow decimal128 with 10 decimal places from the CSV's decimal strings to the
warehouse's NUMERIC, never a float. A start with no rate, or with two, stops the load."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs.reference_data import PRICE_SCALE, Reference

PRICE = pa.decimal128(20, PRICE_SCALE)
AMOUNT = pa.decimal128(38, PRICE_SCALE)
INVOICE_KEY = ("billing_date", "customer_id", "country", "conversation_type", "currency",
               "unit_price")


class PricingError(Exception):
    """Starts that cannot be priced exactly once; the message lists examples."""


def price_starts(starts: pa.Table, reference: Reference) -> pa.Table:
    """Starts with `billing_date`, `country`, `unit_price`, `currency` and `rate_row` (the
    rate_card.csv row applied, for lineage)."""
    n = starts.num_rows
    line_ids = starts.column("line_id").to_pylist()
    unknown = sorted({line for line in set(line_ids) if line not in reference.lines})
    if unknown:
        raise PricingError(f"starts on lines missing from lines.csv: {', '.join(unknown[:5])}")
    country = np.array([reference.lines[line][1] for line in line_ids], dtype=object)
    kind = np.asarray(starts.column("conversation_type").to_numpy(zero_copy_only=False), dtype=object)
    at = pc.cast(starts.column("started_at"), pa.int64()).to_numpy()

    matches = np.zeros(n, dtype=np.int64)
    chosen = np.full(n, -1, dtype=np.int64)
    for k, rate in enumerate(reference.rates):
        begin = int(rate.valid_from.timestamp()) * 10**9
        end = int(rate.valid_to.timestamp()) * 10**9 if rate.valid_to else np.iinfo(np.int64).max
        hit = (country == rate.country) & (kind == rate.conversation_type) & (at >= begin) & (at < end)
        matches += hit
        chosen[hit] = k
    _refuse(starts, country, matches)

    rates = reference.rates
    unit_price = pa.array([rates[k].unit_price for k in chosen], PRICE) if n else pa.array([], PRICE)
    return starts.append_column("billing_date", pc.cast(
        pc.cast(starts.column("started_at"), pa.timestamp("ns")), pa.date32())
    ).append_column("country", pa.array(country.tolist(), pa.string())
    ).append_column("unit_price", unit_price
    ).append_column("currency", pa.array([rates[k].currency for k in chosen], pa.string())
    ).append_column("rate_row", pa.array([rates[k].row for k in chosen], pa.int32()))


def _refuse(starts: pa.Table, country: np.ndarray, matches: np.ndarray) -> None:
    for count, what in ((0, "no rate"), (2, "more than one rate")):
        bad = np.flatnonzero(matches == 0) if count == 0 else np.flatnonzero(matches >= 2)
        if len(bad):
            examples = "; ".join(
                f"{country[i]} {starts.column('conversation_type')[i]} at "
                f"{starts.column('started_at')[i].as_py():%Y-%m-%dT%H:%M:%SZ} "
                f"(message {starts.column('message_id')[i]})" for i in bad[:3]
            )
            raise PricingError(f"{len(bad)} conversation start(s) have {what} in rate_card.csv, "
                               f"e.g. {examples}")


def invoice_lines(priced: pa.Table) -> pa.Table:
    """One line per (billing date, customer, country, type, currency, unit price):
    quantity and amount = quantity x unit_price, exactly."""
    grouped = priced.group_by(list(INVOICE_KEY)).aggregate([("message_id", "count")])
    quantity = pc.cast(grouped.column("message_id_count"), pa.int64())
    # a few hundred lines a day: Python's Decimal makes the exactness obvious
    amount = [q * p for q, p in zip(quantity.to_pylist(), grouped.column("unit_price").to_pylist())]
    lines = grouped.drop_columns(["message_id_count"]).append_column("quantity", quantity)
    lines = lines.append_column("amount", pa.array(amount, AMOUNT))
    return lines.sort_by([(c, "ascending") for c in INVOICE_KEY])
