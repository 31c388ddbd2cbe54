"""One stream's timeline with the decision and the reason for every message: what support reads
when a customer disputes a charge. Built on the reference rules, which say *why*."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs import reference
from billing_jobs.landing import Batch
from billing_jobs.pseudonym import contact_key


def explain_stream(batch: Batch, line_id: str, contact_id: str, secret: str) -> str:
    """`contact_id` in any spelling (with or without `+`): streams are keyed by the canonical
    form. The output names the contact by its `contact_key` (as the warehouse does), never by
    the number."""
    contact_id = reference.canonical_contact(contact_id)
    key = contact_key(contact_id, secret)[:12]
    valid = batch.valid
    in_stream = pc.and_(pc.equal(valid.column("line_id"), line_id),
                        pc.equal(valid.column("contact_id"), contact_id))
    ids = pc.unique(valid.filter(in_stream).column("message_id"))
    # all copies of those ids, wherever they are, so a conflicting copy elsewhere is seen too
    rows = reference.messages_from_table(valid.filter(pc.is_in(valid.column("message_id"), ids)))
    result = reference.reconcile(rows)
    decisions = [d for d in result.decisions
                 if (d.message.line_id, d.message.contact_id) == (line_id, contact_id)]
    charged = [d for d in decisions if d.charged]
    out = [
        f"stream line {line_id} / contact key {key}: {len(decisions)} messages, "
        f"{len(charged)} conversation starts "
        f"({sum(d.outcome == 'user_initiated' for d in charged)} user-initiated, "
        f"{sum(d.outcome == 'business_initiated' for d in charged)} business-initiated)",
        "",
        _row("sent_at (UTC)", "dir", "type", "status", "message_id", "decision", "why"),
    ]
    for d in decisions:
        m = d.message
        out.append(_row(f"{m.sent_at:%Y-%m-%d %H:%M:%S}", m.direction[:3], m.message_type,
                        m.status, m.message_id, d.outcome, d.reason))
    if result.duplicates:
        out.append(f"\n{result.duplicates} duplicate copies were folded into their messages.")
    for m in result.conflicts:
        out.append(f"conflicting_duplicate (quarantined, not billed): {m.message_id} "
                   f"{m.line_id} contact key {contact_key(m.contact_id, secret)[:12]} "
                   f"{m.direction} {m.message_type} {m.sent_at}")
    bad = _quarantined_in_stream(batch.quarantined, line_id, contact_id)
    for rec in bad:
        out.append(f"quarantined ({rec['reason']}): {rec['source_file']} row {rec['source_row']}")
    if not decisions and not bad:
        out.append("(no messages for this stream in the files given)")
    return "\n".join(out)


def _quarantined_in_stream(quarantined: pa.Table, line_id: str, contact_id: str) -> list[dict]:
    import json

    hits = []
    for rec in quarantined.to_pylist():
        raw = json.loads(rec["record"])
        if raw.get("line_id") == line_id and reference.canonical_contact(
                str(raw.get("contact_id"))) == contact_id:
            hits.append(rec)
    return hits


def _row(*cells: str) -> str:
    widths = (19, 3, 8, 9, 28, 18)
    head = "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))
    return f"{head}  {cells[-1]}"
