"""Identity across days (billing-rules.md, "Identity across days"): what a run for D, which reads
only D-2..D, must know about the copies of its message ids that other runs saw.

- A copy **within reach** of a copy this run cannot see (partition dates at most two days apart)
  is a conflicting copy: every copy here is quarantined as `conflicting_duplicate`, as a run over
  the complete landing zone would. Such copies are known from `identity_conflicts` (found by the
  run of another day) or from a start billed on a date outside this run's window.
- A copy **further** from the date its id is billed on is `reused_message_id`: quarantined, and
  it takes no part in the rules; the billed start stands.
- Copies on lines of other shards of this run (combine's second phase) are conflicting too.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs.dedupe import id_hashes
from billing_jobs.landing import CONFLICTING_DUPLICATE, Batch, partition_date_of, quarantine_rows
from billing_jobs.tables import take_rows

REACH_DAYS = 2
REUSED_MESSAGE_ID = "reused_message_id"


def partition_of(source_file: str) -> dt.date | None:
    """The partition date of a landing file's path or URL (as quarantine records name it)."""
    return partition_date_of(PurePosixPath(source_file))


@dataclass(frozen=True)
class Known:
    """What other runs know about ids this run reads."""

    window: tuple[dt.date, dt.date]  # the partitions the run reads, first and last
    billed: dict[str, dt.date] = field(default_factory=dict)  # id -> billing date of its start
    conflicts: dict[str, set[dt.date]] = field(default_factory=dict)  # id -> partitions

    def decide(self, message_id: str, partition: dt.date) -> str | None:
        """`conflicting_duplicate`, `reused_message_id` or None for a valid copy in `partition`."""
        near = self.conflicts.get(message_id, ())
        if any(abs((q - partition).days) <= REACH_DAYS for q in near):
            return CONFLICTING_DUPLICATE
        billed = self.billed.get(message_id)
        if billed is None or self.window[0] <= billed <= self.window[1]:
            return None  # not billed, or billed from a copy this run reads itself
        if abs((billed - partition).days) <= REACH_DAYS:
            return CONFLICTING_DUPLICATE  # a copy within reach that this run cannot see
        return REUSED_MESSAGE_ID


def settle(batch: Batch, known: Known | None = None, shared: np.ndarray | None = None
           ) -> tuple[Batch, np.ndarray | None]:
    """The batch without its reused copies (quarantined), and a mask of the valid rows that have
    a conflicting copy elsewhere (for deduplication to quarantine)."""
    valid = batch.valid
    n = valid.num_rows
    forced = np.zeros(n, dtype=bool)
    if shared is not None and len(shared):
        hashes = batch.hashes if batch.hashes is not None else id_hashes(valid.column("message_id"))
        forced |= np.isin(hashes, shared)
    reused = np.zeros(n, dtype=bool)
    candidates = set(known.billed) | set(known.conflicts) if known else set()
    if candidates and n:
        hit = pc.is_in(valid.column("message_id"), value_set=pa.array(sorted(candidates)))
        rows = np.flatnonzero(pc.fill_null(hit, False).to_numpy(zero_copy_only=False))
        ids = take_rows(valid, rows, ["message_id", "source_file"]).to_pylist()
        for row, r in zip(rows, ids):
            partition = partition_of(str(r["source_file"]))
            decision = known.decide(r["message_id"], partition) if partition else None
            forced[row] |= decision == CONFLICTING_DUPLICATE
            reused[row] = decision == REUSED_MESSAGE_ID
    if reused.any():
        idx = np.flatnonzero(reused)
        moved = take_rows(valid, idx)
        records = quarantine_rows(moved.select(list(valid.column_names[:8])),
                                  [str(f) for f in moved.column("source_file").to_pylist()],
                                  moved.column("source_row").to_pylist(),
                                  [REUSED_MESSAGE_ID] * len(idx))
        keep = ~reused
        batch = Batch(valid=valid.filter(pa.array(keep)),
                      quarantined=pa.concat_tables([batch.quarantined, records]),
                      rows_read=batch.rows_read, files=batch.files,
                      hashes=None if batch.hashes is None else batch.hashes[keep])
        forced = forced[keep]
    return batch, (forced if forced.any() else None)
