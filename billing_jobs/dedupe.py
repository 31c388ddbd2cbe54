"""Deduplication of valid message rows by `message_id` (billing-rules.md, "Order within a stream").

Copies that agree on every contract column but `status` are one message with the most advanced
status (sent < failed < delivered < read); copies that disagree on anything else are all
quarantined as `conflicting_duplicate`. Only rows whose id occurs more than once are compared, so a
day without duplicates costs one hash pass."""

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
    messages: pa.Table  # one row per message_id, status resolved
    duplicates: int  # rows folded into another copy of the same message
    conflicts: pa.Table  # quarantine records of conflicting copies


def deduplicate(valid: pa.Table) -> Deduplicated:
    n = valid.num_rows
    codes = pc.dictionary_encode(valid.column("message_id")).combine_chunks().indices
    codes = codes.to_numpy(zero_copy_only=False)
    counts = np.bincount(codes, minlength=1) if n else np.zeros(0, dtype=np.int64)
    repeated = counts[codes] > 1 if n else np.zeros(0, dtype=bool)
    if not repeated.any():
        return Deduplicated(valid, 0, quarantine_rows(valid.slice(0, 0), [], [], []))

    dup_idx = np.flatnonzero(repeated)
    copies = valid.take(dup_idx).to_pandas(types_mapper=None)
    copies["_row"] = dup_idx
    copies["_code"] = codes[dup_idx]
    copies["_rank"] = copies["status"].map(STATUS_RANK)
    variants = copies.groupby("_code")[list(IDENTITY)].nunique(dropna=False).max(axis=1)
    conflicting = copies["_code"].map(variants) > 1

    agreeing = copies[~conflicting].sort_values(["_code", "_rank", "_row"])
    keep_rows = agreeing.drop_duplicates("_code", keep="last")
    resolved = valid.take(keep_rows["_row"].to_numpy())

    bad = copies[conflicting].sort_values("_row")
    conflicts = quarantine_rows(
        valid.take(bad["_row"].to_numpy()).drop_columns(["source_file", "source_row"]),
        bad["source_file"].tolist(),
        bad["source_row"].tolist(),
        [CONFLICTING_DUPLICATE] * len(bad),
    )
    singles = valid.filter(pa.array(~repeated))
    messages = pa.concat_tables([singles, resolved])
    return Deduplicated(messages, len(agreeing) - len(keep_rows), conflicts)
