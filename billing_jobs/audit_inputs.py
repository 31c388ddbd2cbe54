"""What the audit validates of a staged run: the tables and columns its suites check, shaped as
the pandas frames Great Expectations reads (the starts in slices, so a 100M-message day with ~10M
starts stays in bounded memory), and the run's totals, computed here independently of how the
run computed them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs.audit import audit
from billing_jobs.run_folder import RunFolder

AUDIT_CHUNK_ROWS = 1_000_000  # rows of starts GX validates at once (memory)
STARTS_COLUMNS = ["message_id", "contact_key", "conversation_type", "started_at", "billing_date",
                  "unit_price"]


def audit_run(folder: RunFolder, suites: Path, gx_project: Path) -> None:
    """Run the suites on the staged run; writes audit.json beside it and keeps the results in
    the GX project `gx_project` (a local folder); raises AuditFailed on failure."""
    run = folder.run
    tables = folder.read({"conversation_starts": STARTS_COLUMNS, "invoice_lines": None,
                          "accepted_messages": None})
    staged = tables["conversation_starts"]
    starts_view = pa.table({
        "message_id": staged.column("message_id"),
        "contact_key": staged.column("contact_key"),
        "conversation_type": staged.column("conversation_type"),
        "started_at": staged.column("started_at"),
        "billing_date": staged.column("billing_date"),
        # checked for presence only; as text, so pandas holds no Decimal object per row
        "unit_price": pc.cast(staged.column("unit_price"), pa.string()),
        "run_billing_date": pa.array(np.full(staged.num_rows, run.billing_date), pa.date32()),
    })

    def starts_chunks():
        for offset in range(0, max(starts_view.num_rows, 1), AUDIT_CHUNK_ROWS):
            yield starts_view.slice(offset, AUDIT_CHUNK_ROWS).to_pandas()

    lines = tables["invoice_lines"].to_pandas()
    lines["quantity_times_unit_price"] = [q * p for q, p in zip(lines["quantity"],
                                                                lines["unit_price"])]
    c = run.counts
    import pandas as pd

    totals = pd.DataFrame([{
        "messages_read": c["rows_read"],
        "accepted_plus_duplicates_plus_quarantined": c["accepted"] + c["duplicates"]
        + c["quarantined"],
        "starts": staged.num_rows,
        "distinct_start_ids": len(pc.unique(staged.column("message_id"))),
        "priced_starts": staged.num_rows - staged.column("unit_price").null_count,
        "invoice_quantity": int(lines["quantity"].sum()),
        "invoice_amount": sum(lines["amount"], start=Decimal(0)),
        "starts_amount": pc.sum(staged.column("unit_price")).as_py() or Decimal(0),
    }])
    audit({
        "conversation_starts": starts_chunks(),
        "invoice_lines": lines,
        "accepted_messages": tables["accepted_messages"].to_pandas(),
        "run_totals": totals,
    }, suites, folder.audit_path, run_name=run.run_id, project_root=gx_project)
