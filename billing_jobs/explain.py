"""One stream's timeline with the decision and the reason for every message: what support reads
when a customer disputes a charge. Built on the reference rules, which say *why*; priced with the
reference data the runs use; with a warehouse, each charge names the invoice it is on.

Given the landing zone and a date (or range), it reads D-2..D itself, as a run does, and warns
when that history is missing; given files, it reads only those and says so."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import textwrap

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from billing_jobs import reference, warehouse, window
from billing_jobs.errors import UsageError
from billing_jobs.landing import Batch
from billing_jobs.pseudonym import contact_key
from billing_jobs.reference_data import Reference

WIDTH = 120
FIELDS = ("sent_at", "direction", "message_type", "status", "message_id", "decision",
          "billing_date", "unit_price", "currency", "invoice_number", "invoice_item", "reason")


def contact_spellings(text: str) -> set[str]:
    """What a support agent may type for a number (`+49 151-234 56`, `0049…`), as the canonical
    forms it can stand for: the digits, without a leading `+` or international `00`."""
    digits = re.sub(r"[\s().\-/]", "", text)
    digits = digits[1:] if digits.startswith("+") else digits
    if not digits.isdigit():
        raise UsageError("--contact: not a phone number (digits, optionally with +, spaces, "
                         "dashes, dots or brackets)")
    return {digits, digits[2:]} if digits.startswith("00") and len(digits) > 2 else {digits}


def missing_history(source: str, first: dt.date) -> list[dt.date]:
    """Partitions of the look-back before `first` that the landing zone does not have."""
    root = window.require_partition(source, first)
    return [d for d in window.partitions_read(first)[:-1]
            if not (root / "messages" / f"date={d}").is_dir()]


def timeline(batch: Batch, line_id: str, contact: str, ref: Reference | None
             ) -> tuple[str, list[dict], dict]:
    """The stream's rows (FIELDS) and a summary; the canonical contact is the spelling found."""
    valid = batch.valid
    on_line = valid.filter(pc.equal(valid.column("line_id"), line_id))
    found = [c for c in contact_spellings(contact)
             if pc.any(pc.equal(on_line.column("contact_id"), c)).as_py()]
    canonical = found[0] if found else sorted(contact_spellings(contact))[0]
    in_stream = pc.equal(on_line.column("contact_id"), canonical)
    ids = pc.unique(on_line.filter(in_stream).column("message_id"))
    # all copies of those ids, wherever they are, so a conflicting copy elsewhere is seen too
    rows = reference.messages_from_table(valid.filter(pc.is_in(valid.column("message_id"), ids)))
    result = reference.reconcile(rows)
    decisions = [d for d in result.decisions
                 if (d.message.line_id, d.message.contact_id) == (line_id, canonical)]
    out = []
    for d in decisions:
        m = d.message
        row = {"sent_at": m.sent_at, "direction": m.direction, "message_type": m.message_type,
               "status": m.status, "message_id": m.message_id, "decision": d.outcome,
               "billing_date": None, "unit_price": None, "currency": None,
               "invoice_number": None, "invoice_item": None, "reason": d.reason}
        if d.charged:
            row["billing_date"] = m.sent_at.astimezone(dt.timezone.utc).date()
            rate = _rate(ref, line_id, d.outcome, m.sent_at) if ref else None
            if rate is not None:
                row["unit_price"], row["currency"] = rate.unit_price, rate.currency
        out.append(row)
    summary = {"messages": len(decisions), "starts": sum(d.charged for d in decisions),
               "duplicates": result.duplicates, "conflicts": result.conflicts,
               "quarantined": _quarantined_in_stream(batch.quarantined, line_id, canonical)}
    return canonical, out, summary


def _rate(ref: Reference, line_id: str, kind: str, at: dt.datetime):
    owner = ref.lines.get(line_id)
    if owner is None:
        return None
    return next((r for r in ref.rates if r.country == owner[1] and r.conversation_type == kind
                 and r.applies_at(at)), None)


def add_invoices(rows: list[dict], url: str, schema: str, wait_s: float) -> None:
    """Each charge's issued invoice and item, read from the warehouse (read only)."""
    billed = _invoices_of(url, schema, wait_s, [r["message_id"] for r in rows if r["billing_date"]])
    for row in rows:
        row["invoice_number"], row["invoice_item"] = billed.get(row["message_id"], (None, None))


def _invoices_of(url: str, schema: str, wait_s: float, ids: list[str]) -> dict[str, tuple]:
    """(invoice number, item) of every id billed on an issued invoice."""
    if not ids:
        return {}
    engine = warehouse.create_engine(url, read_only=True)
    try:
        with warehouse.connect(engine, wait_s) as conn:
            if not warehouse.has_table(conn, schema, "invoice_item_starts"):
                return {}
            sql = sa.text(warehouse.sql_file(warehouse.STATEMENTS / "invoices_of_starts.sql",
                                             schema)).bindparams(
                sa.bindparam("ids", expanding=True))
            return {r.message_id: (r.invoice_number, r.item_no)
                    for r in conn.execute(sql, {"ids": ids}).all()}
    finally:
        engine.dispose()


def render_text(line_id: str, key: str, rows: list[dict], summary: dict,
                warnings: list[str]) -> str:
    charged = [r for r in rows if r["billing_date"]]
    out = [f"line {line_id} / contact key {key}: {summary['messages']} messages, "
           f"{len(charged)} conversation starts "
           f"({sum(r['decision'] == 'user_initiated' for r in charged)} user-initiated, "
           f"{sum(r['decision'] == 'business_initiated' for r in charged)} business-initiated)"]
    out += [f"warning: {w}" for w in warnings]
    out += ["", _cells("sent_at (UTC)", "dir", "type", "status", "message_id", "decision",
                       "billed on", "price", "invoice"), "-" * (WIDTH - 1)]
    for r in rows:
        price = f"{r['unit_price'].normalize():f} {r['currency']}" if r["unit_price"] else ""
        invoice = f"{r['invoice_number']}/{r['invoice_item']}" if r["invoice_number"] else ""
        out.append(_cells(f"{r['sent_at']:%Y-%m-%d %H:%M:%S}", r["direction"][:3],
                          r["message_type"], r["status"], r["message_id"], r["decision"],
                          str(r["billing_date"] or ""), price, invoice))
        out += textwrap.wrap(r["reason"], WIDTH - 1, initial_indent="    why: ",
                             subsequent_indent="         ")
    if summary["duplicates"]:
        out.append(f"\n{summary['duplicates']} duplicate copies were folded into their messages.")
    for m in summary["conflicts"]:
        out.append(f"conflicting_duplicate (quarantined, not billed): {m.message_id} "
                   f"{m.direction} {m.message_type} {m.sent_at:%Y-%m-%d %H:%M:%S}")
    for rec in summary["quarantined"]:
        out.append(f"quarantined ({rec['reason']}): {rec['source_file']} row {rec['source_row']}")
    return "\n".join(line[:WIDTH].rstrip() for line in "\n".join(out).splitlines())


def render_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _plain(v) for k, v in r.items()} for r in rows)
    return buffer.getvalue().rstrip("\n")


def render_json(line_id: str, key: str, rows: list[dict], summary: dict,
                warnings: list[str]) -> str:
    return json.dumps({"line_id": line_id, "contact_key": key, "warnings": warnings,
                       "messages": [{k: _plain(v) for k, v in r.items()} for r in rows],
                       "duplicates": summary["duplicates"],
                       "quarantined": [{k: _plain(v) for k, v in q.items() if k != "record"}
                                       for q in summary["quarantined"]]}, indent=2)


def _plain(value):
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat()
    return value if isinstance(value, (int, str)) else str(value)


def _cells(sent, direction, kind, status, message_id, decision, billed, price, invoice) -> str:
    if len(message_id) > 18:
        message_id = message_id[:17] + "…"
    return (f"{sent:<19}  {direction:<3}  {kind:<8}  {status:<9}  {message_id:<18}  "
            f"{decision:<18}  {billed:<10}  {price:<12}  {invoice}")


def _quarantined_in_stream(quarantined: pa.Table, line_id: str, contact_id: str) -> list[dict]:
    hits = []
    for rec in quarantined.to_pylist():
        raw = json.loads(rec["record"])
        if raw.get("line_id") == line_id and reference.canonical_contact(
                str(raw.get("contact_id"))) == contact_id:
            hits.append(rec)
    return hits


def stream_key(contact: str, secret: str) -> str:
    return contact_key(contact, secret)[:12]
