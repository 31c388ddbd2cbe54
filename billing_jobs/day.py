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
from billing_jobs.pseudonym import contact_keys, pseudonymised_records
from billing_jobs.reconcile import reconcile
from billing_jobs.reference_data import Reference

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


def compute(reference: Reference, day: dt.date, batch: landing.Batch, secret: str,
            clock: Clock | None = None, known: identity.Known | None = None,
            shared: np.ndarray | None = None) -> tuple[dict[str, pa.Table], dict]:
    """The day's tables as staged (before the run id is added) and the run's counts. `known`:
    what other runs know of this batch's ids; `shared`: id hashes other shards also hold."""
    clock = clock or Clock()
    batch, conflicting = identity.settle(batch, known, shared)
    result = reconcile(batch, conflicting)
    clock.lap("reconcile")
    starts = result.starts
    priced = price_starts(starts.filter(on_day(starts.column("started_at"), day)), reference)
    priced = priced.append_column("contact_key", contact_keys(priced.column("contact_id"), secret))
    clock.lap("price")
    anomalies = result.anomalies.filter(on_day(result.anomalies.column("sent_at"), day))
    quarantined = result.quarantined.select(QUARANTINE_COLUMNS)
    quarantined = quarantined.set_column(2, "record", pseudonymised_records(
        quarantined.column("record"), secret))
    tables = {
        "conversation_starts": priced.select(STARTS_COLUMNS),
        "session_anomalies": pa.table({
            "message_id": anomalies.column("message_id"),
            "customer_id": anomalies.column("customer_id"),
            "line_id": anomalies.column("line_id"),
            "contact_key": contact_keys(anomalies.column("contact_id"), secret),
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


def accepted_profile(result) -> pa.Table:
    """What the audit checks about accepted messages, independently of the deduplication: rows
    per (direction, type, status), how many distinct message ids, how many missing values."""
    import duckdb

    table = result.deduplicated.table
    kept = np.zeros(table.num_rows, dtype=bool)
    kept[result.deduplicated.rows] = True
    accepted = table.select(["message_id", "customer_id", "line_id", "contact_id", "direction",
                             "message_type", "sent_at", "status"]).append_column(
        "kept", pa.array(kept))
    with duckdb.connect() as con:
        con.register("accepted", accepted)
        profile = con.sql("""
            select
                cast(direction as varchar) as direction,
                cast(message_type as varchar) as message_type,
                cast(status as varchar) as status,
                count(*) as messages
            from accepted where kept group by all order by all
        """).to_arrow_table() if kept.any() else PROFILE_SCHEMA.empty_table()
        totals = con.sql("""
            select count(*) as rows, count(distinct message_id) as distinct_message_ids,
                count(*) filter (where message_id is null or customer_id is null
                    or line_id is null or contact_id is null or direction is null
                    or message_type is null or sent_at is null or status is null)
                    as missing_required_values
            from accepted where kept
        """).fetchall()[0]
    if profile.num_rows == 0:  # keep one row so the totals are still checked
        profile = pa.table({"direction": ["inbound"], "message_type": ["session"],
                            "status": ["sent"], "messages": pa.array([0], pa.int64())})
    n = profile.num_rows
    for name, value in zip(("rows", "distinct_message_ids", "missing_required_values"), totals):
        profile = profile.append_column(name, pa.array(np.full(n, value or 0), pa.int64()))
    return profile
