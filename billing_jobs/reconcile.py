"""From valid rows to conversation starts: deduplicate, then the engine; with the audit counts that
prove nothing was lost or counted twice (rows read = accepted + duplicates + quarantined)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs import engine
from billing_jobs.contract import FAILED
from billing_jobs.dedupe import Deduplicated, deduplicate
from billing_jobs.landing import Batch


@dataclass
class Reconciliation:
    deduplicated: Deduplicated  # accepted messages, one per message_id (failed ones included)
    starts: pa.Table
    anomalies: pa.Table
    quarantined: pa.Table  # contract breaks and conflicting duplicates
    rows_read: int
    duplicates: int

    @property
    def messages(self) -> pa.Table:
        return self.deduplicated.messages

    @property
    def accepted(self) -> int:
        return len(self.deduplicated.rows)

    @property
    def failed(self) -> int:
        status = self.deduplicated.table.column("status").take(pa.array(self.deduplicated.rows))
        return pc.sum(pc.equal(pc.cast(status, pa.string()), FAILED)).as_py() or 0

    def counts(self) -> dict[str, int]:
        return {
            "rows_read": self.rows_read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined.num_rows,
            "failed": self.failed,
            "starts": self.starts.num_rows,
            "anomalies": self.anomalies.num_rows,
        }


def reconcile(batch: Batch, conflicting: np.ndarray | None = None) -> Reconciliation:
    """`conflicting`: a mask of the valid rows with a conflicting copy `batch` does not hold."""
    deduped = deduplicate(batch.valid, conflicting, batch.hashes)
    starts, anomalies = engine.conversation_starts(deduped.table, deduped.rows)
    result = Reconciliation(
        deduplicated=deduped,
        starts=starts,
        anomalies=anomalies,
        quarantined=pa.concat_tables([batch.quarantined, deduped.conflicts]),
        rows_read=batch.rows_read,
        duplicates=deduped.duplicates,
    )
    balance = result.accepted + result.duplicates + result.quarantined.num_rows
    if balance != result.rows_read:  # an invariant of this module, not of the input
        raise AssertionError(f"rows read {result.rows_read} != accounted for {balance}")
    return result
