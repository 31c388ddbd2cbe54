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
import pyarrow.compute as pc

from billing_jobs.contract import STATUS_RANK
from billing_jobs.landing import CONFLICTING_DUPLICATE, quarantine_rows
from billing_jobs.tables import (
    PARALLEL_FROM,
    THREADS,
    dictionary_codes,
    distinct_sorted,
    in_memory_duckdb,
    side_by_side,
    take_column,
    take_rows,
)

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
    if len(ids) == 0:
        return np.zeros(0, dtype=np.uint64)
    with in_memory_duckdb() as con:
        con.register("ids", pa.table({"id": ids}))
        hashes = con.sql("select hash(id) as h from ids").to_arrow_table().column("h")
    return hashes.to_numpy()


def _maybe_repeated(hashes: np.ndarray, halves: bool | None = None) -> np.ndarray:
    """Rows whose message_id *may* occur more than once: equal 64-bit hashes. A superset of the
    true repeats (a hash collision only adds a row to the exact comparison below), found without
    building a hash table of every id string. `halves`: sort the hashes below and above 2**63
    on two threads (equal hashes are in one half); by default when there are cores for it."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=bool)
    if halves is None:
        halves = THREADS > 1 and len(hashes) >= PARALLEL_FROM
    if halves:
        high = hashes >= np.uint64(2**63)
        halves_of = (hashes[~high], hashes[high])  # copies (a mask selects): sorted in place
        twice = np.concatenate(side_by_side(_sorted_repeats, halves_of, 2))
    else:
        twice = _sorted_repeats(hashes.copy())  # the caller's hashes keep their row order
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


def _sorted_repeats(hashes: np.ndarray) -> np.ndarray:
    """The values that occur more than once, sorted, each once. Sorts `hashes` in place: a
    private copy, so that no second array as large is made (fresh pages cost here)."""
    hashes.sort()
    return distinct_sorted(hashes[1:][hashes[1:] == hashes[:-1]])


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
    copies = take_rows(valid, dup_idx, ["message_id", *IDENTITY, "status"])
    ids, _ = dictionary_codes(copies.column("message_id"))
    statuses, names = dictionary_codes(copies.column("status"))
    # (a dictionary may still hold values of rows validation took out: they index no row here)
    rank = np.array([STATUS_RANK.get(s, -1) for s in names.to_pylist()], dtype=np.int8)[statuses]
    order = np.lexsort((dup_idx, rank, ids))  # copies of one id together, by rank, then row
    ids = ids[order]
    same_id = ids[1:] == ids[:-1]
    differs = np.zeros(len(order) - 1, dtype=bool)
    for c in IDENTITY:
        values = _identity_values(copies.column(c))[order]
        differs |= values[1:] != values[:-1]
    group = np.concatenate([[0], np.cumsum(~same_id)])
    conflicting = np.zeros(group[-1] + 1, dtype=bool)
    conflicting[group[1:][same_id & differs]] = True  # an id whose copies disagree somewhere
    rows_in_order = dup_idx[order]
    bad = conflicting[group] | forced[rows_in_order]

    # of each id's agreeing copies, the last in (rank, row) order: the most advanced status
    agreeing = np.flatnonzero(~bad)
    last = np.ones(len(agreeing), dtype=bool)
    last[:-1] = ids[agreeing[1:]] != ids[agreeing[:-1]]
    kept = rows_in_order[agreeing[last]]
    bad_rows = np.sort(rows_in_order[bad])
    conflicts = quarantine_rows(
        take_rows(valid, bad_rows, list(valid.column_names[:8])),
        take_column(valid.column("source_file"), bad_rows).to_pylist(),
        take_column(valid.column("source_row"), bad_rows).to_pylist(),
        [CONFLICTING_DUPLICATE] * len(bad_rows),
    )
    keep = ~repeated
    keep[kept] = True
    rows = np.flatnonzero(keep)
    return Deduplicated(valid, rows, len(agreeing) - len(kept), conflicts, hashes)


def _identity_values(column: pa.ChunkedArray) -> np.ndarray:
    """A column of the copies as numbers that are equal exactly when the values are: dictionary
    codes of text (one dictionary for all rows), int64 of instants."""
    if pa.types.is_timestamp(column.type):
        return pc.cast(column, pa.int64()).to_numpy()
    return dictionary_codes(column)[0]
