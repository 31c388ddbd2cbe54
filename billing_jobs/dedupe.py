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

IDENTITY = ("customer_id", "line_id", "contact_id", "direction", "message_type", "sent_at")


@dataclass
class Deduplicated:
    table: pa.Table  # the valid rows as read
    rows: np.ndarray  # indices into `table`: one row per message_id, status resolved
    duplicates: int  # rows folded into another copy of the same message
    conflicts: pa.Table  # quarantine records of conflicting copies

    @property
    def messages(self) -> pa.Table:
        return self.table.take(pa.array(self.rows))


def deduplicate(valid: pa.Table) -> Deduplicated:
    n = valid.num_rows
    codes = pc.dictionary_encode(valid.column("message_id")).combine_chunks().indices
    codes = codes.to_numpy(zero_copy_only=False)
    repeated = np.bincount(codes)[codes] > 1 if n else np.zeros(0, dtype=bool)
    del codes
    if not repeated.any():
        return Deduplicated(valid, np.arange(n), 0, quarantine_rows(valid.slice(0, 0), [], [], []))

    dup_idx = np.flatnonzero(repeated)
    copies = valid.take(pa.array(dup_idx)).to_pandas()
    copies["_row"] = dup_idx
    copies["_rank"] = copies["status"].astype(str).map(STATUS_RANK)
    identity = copies[["message_id", *IDENTITY]].astype({c: str for c in IDENTITY[:-1]})
    variants = identity.groupby("message_id")[list(IDENTITY)].nunique().max(axis=1)
    conflicting = (copies["message_id"].map(variants) > 1).to_numpy()

    agreeing = copies[~conflicting].sort_values(["message_id", "_rank", "_row"])
    kept = agreeing.drop_duplicates("message_id", keep="last")["_row"].to_numpy()
    bad = copies[conflicting].sort_values("_row")
    conflicts = quarantine_rows(
        valid.take(pa.array(bad["_row"].to_numpy())).drop_columns(["source_file", "source_row"]),
        bad["source_file"].astype(str).tolist(),
        bad["source_row"].tolist(),
        [CONFLICTING_DUPLICATE] * len(bad),
    )
    rows = np.sort(np.concatenate([np.flatnonzero(~repeated), kept]))
    return Deduplicated(valid, rows, len(agreeing) - len(kept), conflicts)
