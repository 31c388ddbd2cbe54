"""Pricing (billing-rules.md, Pricing): every conversation start gets the rate-card price for its
line's country and its conversation type in force at its instant, and invoice lines add them up.

Money is exact: Arrow decimal128 with 10 decimal places from the CSV's decimal strings to the
warehouse's NUMERIC, never a float. A start with no rate, or with two, stops the load."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs.contract import CONVERSATION_TYPES
from billing_jobs.errors import PricingError
from billing_jobs.reference_data import PRICE_SCALE, Reference

PRICE = pa.decimal128(20, PRICE_SCALE)
AMOUNT = pa.decimal128(38, PRICE_SCALE)
INVOICE_KEY = ("billing_date", "customer_id", "country", "conversation_type", "currency",
               "unit_price")


def price_starts(starts: pa.Table, reference: Reference) -> pa.Table:
    """Starts with `billing_date`, `country`, `unit_price`, `currency` and `rate_row` (the
    rate_card.csv row applied, for lineage)."""
    n = starts.num_rows
    line_codes = pc.dictionary_encode(starts.column("line_id")).combine_chunks()
    lines = line_codes.dictionary.to_pylist()
    unknown = sorted(line for line in lines if line not in reference.lines)
    if unknown:
        raise PricingError(f"starts on lines missing from lines.csv: {', '.join(unknown[:5])}")
    # integer codes for countries and conversation types: the loop below compares integers
    countries = sorted({reference.lines[line][1] for line in lines}
                       | {r.country for r in reference.rates})
    country_code = np.array([countries.index(reference.lines[line][1]) for line in lines],
                            dtype=np.int64)[line_codes.indices.to_numpy(zero_copy_only=False)]
    country = np.array(countries, dtype=object)[country_code]
    kind = pc.index_in(starts.column("conversation_type"),
                       value_set=pa.array(CONVERSATION_TYPES)).to_numpy(zero_copy_only=False)
    at = pc.cast(starts.column("started_at"), pa.int64()).to_numpy()

    matches = np.zeros(n, dtype=np.int64)
    chosen = np.zeros(n, dtype=np.int64)
    for k, rate in enumerate(reference.rates):  # a rate card has tens of rows, a day ~1M starts
        begin = int(rate.valid_from.timestamp()) * 10**9
        end = int(rate.valid_to.timestamp()) * 10**9 if rate.valid_to else np.iinfo(np.int64).max
        hit = ((country_code == countries.index(rate.country))
               & (kind == CONVERSATION_TYPES.index(rate.conversation_type))
               & (at >= begin) & (at < end))
        matches += hit
        chosen[hit] = k
    _refuse(starts, country, matches)

    rates = reference.rates
    pick = pa.array(chosen)
    day = pc.cast(pc.cast(starts.column("started_at"), pa.timestamp("ns")), pa.date32())
    return (starts.append_column("billing_date", day)
            .append_column("country", pa.array(country, pa.string()))
            .append_column("unit_price", pc.take(pa.array([r.unit_price for r in rates], PRICE), pick))
            .append_column("currency", pc.take(pa.array([r.currency for r in rates]), pick))
            .append_column("rate_row", pc.take(pa.array([r.row for r in rates], pa.int32()), pick)))


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
