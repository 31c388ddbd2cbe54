"""From valid rows to conversation starts: deduplicate, then the engine; with the audit counts that
prove nothing was lost or counted twice (rows read = accepted + duplicates + quarantined)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs import engine
from billing_jobs.contract import FAILED
from billing_jobs.dedupe import deduplicate
from billing_jobs.landing import Batch


@dataclass
class Reconciliation:
    messages: pa.Table  # accepted messages, one per message_id (failed ones included)
    starts: pa.Table
    anomalies: pa.Table
    quarantined: pa.Table  # contract breaks and conflicting duplicates
    rows_read: int
    duplicates: int

    @property
    def accepted(self) -> int:
        return self.messages.num_rows

    @property
    def failed(self) -> int:
        return pc.sum(pc.equal(self.messages.column("status"), FAILED)).as_py() or 0

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


def reconcile(batch: Batch) -> Reconciliation:
    deduped = deduplicate(batch.valid)
    starts, anomalies = engine.conversation_starts(deduped.messages)
    result = Reconciliation(
        messages=deduped.messages,
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
