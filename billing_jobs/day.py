"""Computing a billing date from what was read: reconcile, keep the starts and anomalies of D,
price them, pseudonymise contacts, and profile the accepted messages for the audit. Pure: no
files, no warehouse; the run folder and the shards decide where the tables go."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs import identity, landing
from billing_jobs.pricing import price_starts
from billing_jobs.pseudonym import pseudonymised_records
from billing_jobs.reconcile import reconcile
from billing_jobs.reference_data import Reference
from billing_jobs.tables import dictionary_codes, distinct_sorted, take_column

STARTS_COLUMNS = ["message_id", "billing_date", "customer_id", "line_id", "contact_key", "country",
                  "conversation_type", "started_at", "unit_price", "currency", "rate_row"]
QUARANTINE_COLUMNS = ["message_id", "reason", "record", "source_file", "source_row"]
# what the audit checks about accepted messages (one row per direction, type and status)
PROFILE_SCHEMA = pa.schema([("direction", pa.string()), ("message_type", pa.string()),
                            ("status", pa.string()), ("messages", pa.int64())])


class Clock:
    """Wall time per stage, kept in run.json (and shown by the benchmark)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(self.laps.get(stage, 0.0) + now - self._last, 3)
        self._last = now


def compute(reference: Reference, day: dt.date, batch: landing.Batch,
            clock: Clock | None = None, known: identity.Known | None = None,
            shared: np.ndarray | None = None) -> tuple[dict[str, pa.Table], dict]:
    """The day's tables as staged (before the run id is added) and the run's counts, from a batch
    of prepared pieces (prepared.py): its contact ids are contact keys already and its quarantine
    records pseudonymised. `known`: what other runs know of this batch's ids; `shared`: id
    hashes other shards also hold."""
    clock = clock or Clock()

    def keys(contacts: pa.ChunkedArray) -> pa.ChunkedArray:  # contact ids that are keys: as text
        return pc.cast(contacts, pa.string())

    batch, conflicting = identity.settle(batch, known, shared)
    result = reconcile(batch, conflicting)
    clock.lap("reconcile")
    starts = result.starts
    priced = price_starts(starts.filter(on_day(starts.column("started_at"), day)), reference)
    priced = priced.append_column("contact_key", keys(priced.column("contact_id")))
    clock.lap("price")
    anomalies = result.anomalies.filter(on_day(result.anomalies.column("sent_at"), day))
    quarantined = result.quarantined.select(QUARANTINE_COLUMNS)
    quarantined = quarantined.set_column(2, "record", pseudonymised_records(
        quarantined.column("record"), secret=None))
    tables = {
        "conversation_starts": priced.select(STARTS_COLUMNS),
        "session_anomalies": pa.table({
            "message_id": anomalies.column("message_id"),
            "customer_id": anomalies.column("customer_id"),
            "line_id": anomalies.column("line_id"),
            "contact_key": keys(anomalies.column("contact_id")),
            "sent_at": anomalies.column("sent_at"),
            "kind": anomalies.column("kind"),
        }),
        "quarantined_messages": quarantined,
        "accepted_messages": accepted_profile(result),
    }
    counts = {**result.counts(), "starts_on_day": priced.num_rows,
              "anomalies_on_day": anomalies.num_rows}
    return tables, counts


def on_day(instants: pa.ChunkedArray, day: dt.date) -> pa.ChunkedArray:
    return pc.equal(pc.cast(pc.cast(instants, pa.timestamp("ns")), pa.date32()),
                    pa.scalar(day, pa.date32()))


PROFILE_GROUPS = ("direction", "message_type", "status")
REQUIRED = ("message_id", "customer_id", "line_id", "contact_id", "direction", "message_type",
            "sent_at", "status")


def accepted_profile(result) -> pa.Table:
    """What the audit checks about accepted messages, independently of the deduplication: rows
    per (direction, type, status), how many distinct message ids, how many missing values.
    Counted on dictionary codes and id hashes (an SQL group-by and count(distinct) of the same,
    kept in the tests as the definition, took a tenth of a shard's time)."""
    deduped = result.deduplicated
    table, rows = deduped.table, np.asarray(deduped.rows, dtype=np.int64)
    counts: dict[tuple, int] = {}
    if len(rows):
        keys, names = np.zeros(len(rows), dtype=np.int64), []
        for column in PROFILE_GROUPS:
            codes, values = dictionary_codes(table.column(column))
            names.append([None, *values.to_pylist()])  # code -1 (null) reads slot 0
            keys = keys * len(names[-1]) + codes[rows] + 1
        tally = np.bincount(keys)
        for key in np.flatnonzero(tally):
            parts, rest = [], int(key)
            for values in reversed(names):
                rest, code = divmod(rest, len(values))
                parts.append(values[code])
            group = tuple(reversed(parts))
            counts[group] = counts.get(group, 0) + int(tally[key])
    return profile_table(counts, {
        "rows": len(rows),
        "distinct_message_ids": _distinct(table.column("message_id"), deduped.hashes, rows),
        "missing_required_values": _missing(table, rows)})


def profile_table(counts: dict[tuple, int], totals: dict[str, int]) -> pa.Table:
    """The profile as staged: a row per (direction, type, status) that has messages, in order
    (nulls last, as SQL's `order by all`), each with the day's totals; a day without any keeps
    one row of zero messages so that the totals are still checked."""
    profile = sorted(((group, n) for group, n in counts.items() if n > 0),
                     key=lambda item: [(v is None, v or "") for v in item[0]])
    if not profile:
        profile = [(("inbound", "session", "sent"), 0)]
    out = {name: [group[k] for group, _ in profile] for k, name in enumerate(PROFILE_GROUPS)}
    out["messages"] = [n for _, n in profile]
    out.update({name: [value] * len(profile) for name, value in totals.items()})
    return pa.table(out, schema=PROFILE_SCHEMA.append(pa.field("rows", pa.int64()))
                    .append(pa.field("distinct_message_ids", pa.int64()))
                    .append(pa.field("missing_required_values", pa.int64())))


def _distinct(ids: pa.ChunkedArray, all_hashes: np.ndarray, rows: np.ndarray) -> int:
    """count(distinct id) of the ids at `rows`, exactly: distinct 64-bit hashes (`all_hashes`,
    one per id, as dedupe computed them), and ids compared as text only where two rows share
    a hash."""
    if ids.null_count:
        rows = rows[~np.asarray(ids.is_null().to_numpy(zero_copy_only=False))[rows]]
    hashes = all_hashes[rows]
    ordered = np.sort(hashes)
    same = ordered[1:] == ordered[:-1]
    distinct = len(ordered) - int(np.count_nonzero(same))
    shared = distinct_sorted(ordered[1:][same])
    if len(shared):
        at = np.flatnonzero(np.isin(hashes, shared))
        pairs = set(zip(hashes[at].tolist(), take_column(ids, rows[at]).to_pylist()))
        distinct += len(pairs) - len(shared)  # each shared hash was counted once above
    return distinct


def _missing(table: pa.Table, rows: np.ndarray) -> int:
    """Rows of `rows` with a null in any required column."""
    missing = np.zeros(len(rows), dtype=bool)
    for name in REQUIRED:
        column = table.column(name)
        if column.null_count:
            missing |= np.asarray(column.is_null().to_numpy(zero_copy_only=False))[rows]
    return int(np.count_nonzero(missing))
