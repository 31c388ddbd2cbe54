"""Deduplication of valid message rows by `message_id` (billing-rules.md, "Order within a stream").

Copies that agree on every contract column but `status` are one message with the most advanced
status (sent < failed < delivered < read); copies that disagree on anything else are all
quarantined as `conflicting_duplicate`. Only rows whose id occurs more than once are compared, so a
day without duplicates costs one hash pass, and the result is a selection of rows, not a copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from billing_jobs.contract import STATUS_RANK
from billing_jobs.landing import CONFLICTING_DUPLICATE, quarantine_rows
from billing_jobs.tables import distinct_sorted, take_rows

IDENTITY = ("customer_id", "line_id", "contact_id", "direction", "message_type", "sent_at")
TABLE_SIZE = 1 << 22  # _maybe_repeated's filter: 4 MiB, few false candidates below ~1M repeats


@dataclass
class Deduplicated:
    table: pa.Table  # the valid rows as read
    rows: np.ndarray  # indices into `table`: one row per message_id, status resolved
    duplicates: int  # rows folded into another copy of the same message
    conflicts: pa.Table  # quarantine records of conflicting copies
    hashes: np.ndarray  # id_hashes of `table`'s message ids, row by row (the audit's profile)

    @property
    def messages(self) -> pa.Table:
        return take_rows(self.table, self.rows)


def id_hashes(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A 64-bit hash of every message id, row by row. DuckDB's hash() is used as a fast
    vectorised kernel, multi-threaded and zero-copy over Arrow; no rule is evaluated there."""
    import duckdb

    if len(ids) == 0:
        return np.zeros(0, dtype=np.uint64)
    with duckdb.connect() as con:
        con.register("ids", pa.table({"id": ids}))
        hashes = con.sql("select hash(id) as h from ids").to_arrow_table().column("h")
    return hashes.to_numpy()


def _maybe_repeated(hashes: np.ndarray) -> np.ndarray:
    """Rows whose message_id *may* occur more than once: equal 64-bit hashes. A superset of the
    true repeats (a hash collision only adds a row to the exact comparison below), found without
    building a hash table of every id string."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=bool)
    ordered = np.sort(hashes)
    twice = distinct_sorted(ordered[1:][ordered[1:] == ordered[:-1]])
    out = np.zeros(len(hashes), dtype=bool)
    if not len(twice):
        return out
    # a table of the repeated hashes' low bits rules out most rows in one pass; only the few
    # left are looked up exactly (a binary search of every row took twice as long)
    low = np.uint64(TABLE_SIZE - 1)
    table = np.zeros(TABLE_SIZE, dtype=bool)
    table[(twice & low).astype(np.intp)] = True
    maybe = np.flatnonzero(table[(hashes & low).astype(np.intp)])
    candidates = hashes[maybe]
    pos = np.minimum(np.searchsorted(twice, candidates), len(twice) - 1)
    out[maybe] = twice[pos] == candidates
    return out


def deduplicate(valid: pa.Table, conflicting: np.ndarray | None = None,
                hashes: np.ndarray | None = None) -> Deduplicated:
    """`conflicting`: a mask of the rows known to have a conflicting copy this table cannot see
    (on a line of another shard, or in a partition outside the window: identity.py); each is
    quarantined as `conflicting_duplicate`, as if the other copy were here too. `hashes`: the
    rows' id_hashes if computed already."""
    n = valid.num_rows
    forced = conflicting if conflicting is not None else np.zeros(n, dtype=bool)
    if hashes is None:
        hashes = id_hashes(valid.column("message_id"))
    repeated = _maybe_repeated(hashes) | forced
    if not repeated.any():
        return Deduplicated(valid, np.arange(n), 0, quarantine_rows(valid.slice(0, 0), [], [], []),
                            hashes)

    dup_idx = np.flatnonzero(repeated)
    copies = take_rows(valid, dup_idx).to_pandas()
    copies["_row"] = dup_idx
    copies["_rank"] = copies["status"].astype(str).map(STATUS_RANK)
    identity = copies[["message_id", *IDENTITY]].astype({c: str for c in IDENTITY[:-1]})
    variants = identity.groupby("message_id")[list(IDENTITY)].nunique().max(axis=1)
    conflicting = (copies["message_id"].map(variants) > 1).to_numpy() | forced[dup_idx]

    agreeing = copies[~conflicting].sort_values(["message_id", "_rank", "_row"])
    kept = agreeing.drop_duplicates("message_id", keep="last")["_row"].to_numpy()
    bad = copies[conflicting].sort_values("_row")
    conflicts = quarantine_rows(
        take_rows(valid, bad["_row"].to_numpy(), list(valid.column_names[:8])),
        bad["source_file"].astype(str).tolist(),
        bad["source_row"].tolist(),
        [CONFLICTING_DUPLICATE] * len(bad),
    )
    rows = np.sort(np.concatenate([np.flatnonzero(~repeated), kept]))
    return Deduplicated(valid, rows, len(agreeing) - len(kept), conflicts, hashes)
