"""One billing date of provider reconciliation: WhatsApp's conversations against our published
conversation starts (billing-rules.md, "Provider reconciliation"), every difference explained from
the message log, audited by Great Expectations and published in one transaction that replaces the
date. It never changes what we bill.

Which items take part, for date D: our published starts of D-1, D and D+1 and WhatsApp's
conversations opened D-1..D+1, so that a conversation opened just after midnight can pair with a
start just before it (and one just before midnight with a start just after). What is reported
for D: the pairs and `ours_only` of D's starts, and the `provider_only` conversations opened on D.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from billing_jobs import audit, landing, migrate, provider_records, warehouse
from billing_jobs.config import Settings
from billing_jobs.contract import BUSINESS_INITIATED
from billing_jobs.errors import RunError, one_line, redact
from billing_jobs.identity import partition_of
from billing_jobs.provider_pairing import MATCHED, MINUTE, TYPE_MISMATCH, pair
from billing_jobs.pseudonym import contact_keys, pseudonymised_records
from billing_jobs.reference_data import load_reference

log = logging.getLogger(__name__)
DAY_TABLES = ("provider_conversations", "provider_pairs", "provider_differences",
              "provider_reconciliation", "provider_quarantined")
KEY = ("customer_id", "country", "conversation_type")


def reconcile_day(settings: Settings, day: dt.date, tolerance_minutes: int = 10) -> dict:
    """Reconcile, audit and publish `day`; returns its counts. Raises RunError when the day is
    not published yet (its starts are what is compared)."""
    started = dt.datetime.now(dt.timezone.utc)
    run_id = f"provider-{day:%Y%m%d}-{started:%H%M%S}-{uuid.uuid4().hex[:8]}"
    try:
        result = compute_day(settings, day, run_id, tolerance_minutes)
        check(result, settings)
        publish(settings, day, result, run_row(run_id, day, started, "published", result,
                                               tolerance_minutes))
        return {**result["counts"], "run_id": run_id}
    except Exception as exc:
        record_failure(settings, run_row(run_id, day, started, "failed", None, tolerance_minutes,
                                         one_line(exc)))
        raise


def compute_day(settings: Settings, day: dt.date, run_id: str, tolerance_minutes: int) -> dict:
    reference = load_reference(settings.reference)
    lines = reference.lines
    days = [day - dt.timedelta(days=1), day, day + dt.timedelta(days=1)]
    if not is_published(settings, day):
        raise RunError(f"billing date {day} is not published: provider reconciliation compares "
                       f"published starts (run `billing-jobs run --date {day}` first)")
    starts = _published_starts(settings, days)
    batch = provider_records.read(settings.source, days, set(lines))
    convs = batch.valid
    convs = convs.append_column("contact_key", contact_keys(convs.column("contact_id"),
                                                            settings.contact_key_secret))
    convs = convs.drop_columns(["contact_id"])
    convs = convs.append_column("billing_date", pc.cast(
        pc.cast(convs.column("opened_at"), pa.timestamp("ns")), pa.date32()))
    owners = [lines[line] for line in convs.column("line_id").to_pylist()]
    convs = convs.append_column("customer_id", pa.array([o[0] for o in owners], pa.string()))
    convs = convs.append_column("country", pa.array([o[1] for o in owners], pa.string()))
    eligible_mask = pc.and_(convs.column("billable"), pc.is_in(
        convs.column("conversation_type"), value_set=pa.array(provider_records.MATCHED_TYPES)))
    eligible = convs.filter(eligible_mask)

    pairs = pair(starts, eligible, tolerance_minutes * MINUTE)
    start_day = dict(zip(starts.column("message_id").to_pylist(),
                         starts.column("billing_date").to_pylist()))
    paired_starts = {m for m, _, _ in pairs}
    paired_convs = {c for _, c, _ in pairs}
    day_pairs = [(m, c, k) for m, c, k in pairs if start_day[m] == day]

    on_day = pc.equal(starts.column("billing_date"), pa.scalar(day, pa.date32()))
    ours = starts.filter(on_day)
    ours_only = ours.filter(pc.invert(pc.is_in(ours.column("message_id"),
                                               value_set=pa.array(sorted(paired_starts),
                                                                  pa.string()))))
    theirs_day = eligible.filter(pc.equal(eligible.column("billing_date"),
                                          pa.scalar(day, pa.date32())))
    provider_only = theirs_day.filter(pc.invert(pc.is_in(
        theirs_day.column("conversation_id"),
        value_set=pa.array(sorted(paired_convs), pa.string()))))

    conv_rows = {r["conversation_id"]: r for r in eligible.to_pylist()}
    start_rows = {r["message_id"]: r for r in ours.to_pylist()}
    mismatches = [(start_rows[m], conv_rows[c]) for m, c, k in day_pairs if k == TYPE_MISMATCH]
    differences = _differences(ours_only.to_pylist(), provider_only.to_pylist(), mismatches)
    explain(differences, settings, days, convs)
    accepted_day = convs.filter(pc.equal(convs.column("billing_date"), pa.scalar(day, pa.date32())))
    reconciliation = _reconciliation(day, ours.to_pylist(), day_pairs, conv_rows,
                                     ours_only.to_pylist(), provider_only.to_pylist(),
                                     accepted_day.to_pylist())
    quarantined_day = _of_partition(batch.quarantined, day)
    rows_read = batch.rows_read[day]
    counts = {
        "rows_read": rows_read, "accepted": accepted_day.num_rows,
        "quarantined": quarantined_day.num_rows,
        "duplicates": rows_read - accepted_day.num_rows - quarantined_day.num_rows,
        "our_starts": ours.num_rows,
        "matched": sum(k == MATCHED for _, _, k in day_pairs),
        "type_mismatch": sum(k == TYPE_MISMATCH for _, _, k in day_pairs),
        "ours_only": ours_only.num_rows, "provider_only": provider_only.num_rows,
    }
    return {
        "day": day, "run_id": run_id, "counts": counts,
        "provider_conversations": _conversation_rows(accepted_day, run_id),
        "provider_pairs": [{"billing_date": day, "message_id": m, "conversation_id": c,
                            "kind": k, "run_id": run_id} for m, c, k in day_pairs],
        "provider_differences": [{**d, "billing_date": day, "run_id": run_id}
                                 for d in differences],
        "provider_reconciliation": [{**r, "run_id": run_id} for r in reconciliation],
        "provider_quarantined": _quarantine_rows(quarantined_day, day, run_id,
                                                 settings.contact_key_secret),
    }


def _published_starts(settings: Settings, days: list[dt.date]) -> pa.Table:
    rows = warehouse.read_job_query(settings.warehouse_url, settings.schema, settings.lock_wait_s,
                                    "provider_starts", "conversation_starts",
                                    first_day=days[0], last_day=days[-1])
    ts = pa.timestamp("ns", "UTC")
    return pa.table({
        "message_id": pa.array([r["message_id"] for r in rows], pa.string()),
        "billing_date": pa.array([_date(r["billing_date"]) for r in rows], pa.date32()),
        "customer_id": pa.array([r["customer_id"] for r in rows], pa.string()),
        "line_id": pa.array([r["line_id"] for r in rows], pa.string()),
        "contact_key": pa.array([r["contact_key"] for r in rows], pa.string()),
        "country": pa.array([r["country"] for r in rows], pa.string()),
        "conversation_type": pa.array([r["conversation_type"] for r in rows], pa.string()),
        "started_at": pa.array([_utc(r["started_at"]) for r in rows], ts),
        "unit_price": pa.array([Decimal(r["unit_price"]) for r in rows], pa.decimal128(20, 10)),
        "currency": pa.array([r["currency"] for r in rows], pa.string()),
    })


def is_published(settings: Settings, day: dt.date) -> bool:
    rows = warehouse.read_job_query(settings.warehouse_url, settings.schema, settings.lock_wait_s,
                                    "day_is_published", "billing_runs", billing_date=day)
    return bool(rows) and rows[0]["status"] == "published"


def _date(value) -> dt.date:
    return value if isinstance(value, dt.date) and not isinstance(value, dt.datetime) \
        else dt.date.fromisoformat(str(value)[:10])


def _utc(value) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _differences(ours_only: list[dict], provider_only: list[dict],
                 mismatches: list[tuple[dict, dict]]) -> list[dict]:
    out = []
    for s in ours_only:
        out.append(_difference("ours_only", s, None))
    for c in provider_only:
        out.append(_difference("provider_only", None, c))
    for s, c in mismatches:
        out.append(_difference("type_mismatch", s, c))
    return out


def _difference(kind: str, s: dict | None, c: dict | None) -> dict:
    side = s or c
    return {"kind": kind, "customer_id": side["customer_id"], "line_id": side["line_id"],
            "country": side["country"], "contact_key": side["contact_key"],
            "message_id": s["message_id"] if s else None,
            "conversation_type": s["conversation_type"] if s else None,
            "started_at": s["started_at"] if s else None,
            "conversation_id": c["conversation_id"] if c else None,
            "provider_conversation_type": c["conversation_type"] if c else None,
            "opened_at": c["opened_at"] if c else None, "explanation": ""}


def explain(differences: list[dict], settings: Settings, days: list[dt.date],
            convs: pa.Table) -> None:
    """Fill each difference's `explanation` from the message log of D-1..D+1 and WhatsApp's
    conversations: one in-process DuckDB query over Arrow tables
    (statements/provider_explanations.sql) finds, per difference, what the wording needs."""
    if not differences:
        return
    import duckdb

    ts = pa.timestamp("us", "UTC")
    diffs = pa.table({
        "idx": pa.array(range(len(differences)), pa.int64()),
        **{c: pa.array([d[c] for d in differences], pa.string())
           for c in ("kind", "line_id", "contact_key", "message_id", "conversation_type")},
        **{c: pa.array([d[c] for d in differences], ts) for c in ("started_at", "opened_at")},
    })
    msgs = _log_messages(settings, days)
    convs = convs.select(["conversation_id", "line_id", "contact_key", "opened_at"])
    con = duckdb.connect()
    try:
        for name, table in (("diffs", diffs), ("msgs", msgs), ("convs", convs)):
            con.register(name, table)
        sql = (warehouse.STATEMENTS / "provider_explanations.sql").read_text()
        facts = con.execute(sql).to_arrow_table().to_pylist()
    finally:
        con.close()
    for d, f in zip(differences, facts):
        d["explanation"] = _wording(d, f)


def _wording(d: dict, f: dict) -> str:
    """The plain words of billing-rules.md's cases, from the facts the query found."""
    if d["kind"] == "type_mismatch":
        return (f"WhatsApp reports a {d['provider_conversation_type']} conversation where the "
                f"rules charged a {d['conversation_type']} start")
    if d["kind"] == "ours_only" and d["conversation_type"] == BUSINESS_INITIATED:
        if f["status_rank"] == 1:
            return ("the template never reached delivered or read (status sent): WhatsApp "
                    "opens a conversation only on delivery")
        if f["holder_id"] is not None:
            return (f"sent while WhatsApp already had conversation {f['holder_id']} of this "
                    f"stream open (opened {f['holder_opened_at']:%Y-%m-%d %H:%M:%S} UTC): the "
                    f"rules charge every template attempt outside a session, WhatsApp one "
                    f"conversation per 24 h")
        return "WhatsApp reported no conversation of this stream around the template"
    if d["kind"] == "ours_only":
        if f["answer_id"] is None:
            return ("the business sent no delivered message in the 24 h after it: WhatsApp "
                    "charges a user-initiated conversation only once the business answers")
        return (f"the business answered ({f['answer_id']} delivered "
                f"{f['answer_sent_at']:%Y-%m-%d %H:%M:%S} UTC) but WhatsApp reported no "
                f"conversation of this stream")
    if not f["near_messages"]:
        return ("our log has no message of this stream within 24 h of the opening: a message "
                "missing from our log")
    if f["inbound_id"] is not None:
        return (f"the contact's session was already open in our log (inbound {f['inbound_id']} at "
                f"{f['inbound_sent_at']:%Y-%m-%d %H:%M:%S} UTC): the rules charge a session once "
                f"however long it runs, WhatsApp a new conversation every 24 h")
    return (f"our log has {f['near_messages']} message(s) of this stream within 24 h of the "
            f"opening but the rules charged no start that pairs with it")


def _log_messages(settings: Settings, days: list[dt.date]) -> pa.Table:
    """The message log of `days` (valid rows), with contact keys instead of contacts."""
    root = landing.location(settings.source)
    files = [f for d in days for f in landing.partition_files(root, d)]
    valid = landing.read_files(files).valid if files else landing.FILE_SCHEMA.empty_table()
    keys = contact_keys(pc.cast(valid.column("contact_id"), pa.string()),
                        settings.contact_key_secret)
    return pa.table({
        "message_id": valid.column("message_id"),
        "line_id": pc.cast(valid.column("line_id"), pa.string()),
        "contact_key": keys,
        "direction": pc.cast(valid.column("direction"), pa.string()),
        "status": pc.cast(valid.column("status"), pa.string()),
        "sent_at": pc.cast(valid.column("sent_at"), pa.timestamp("us", "UTC")),
    })


def _reconciliation(day, ours, day_pairs, conv_rows, ours_only, provider_only, accepted_day):
    rows: dict[tuple, dict] = {}

    def row(key):
        return rows.setdefault(key, {
            "billing_date": day, "customer_id": key[0], "country": key[1],
            "conversation_type": key[2], "our_starts": 0, "provider_conversations": 0,
            "matched": 0, "ours_only": 0, "provider_only": 0, "type_mismatch": 0,
            "provider_not_billable": 0, "our_amount": Decimal(0), "provider_cost": None,
            "currency": None})

    def cost(r, c):
        if c.get("cost") is not None:
            r["provider_cost"] = (r["provider_cost"] or Decimal(0)) + c["cost"]

    start_by_id = {s["message_id"]: s for s in ours}
    for s in ours:
        r = row(tuple(s[k] for k in KEY))
        r["our_starts"] += 1
        r["our_amount"] += s["unit_price"]
        r["currency"] = s["currency"]
    for m, c, kind in day_pairs:
        s = start_by_id[m]
        r = row(tuple(s[k] for k in KEY))
        r["matched" if kind == MATCHED else "type_mismatch"] += 1
        r["provider_conversations"] += 1
        cost(r, conv_rows[c])
    for s in ours_only:
        row(tuple(s[k] for k in KEY))["ours_only"] += 1
    for c in provider_only:
        r = row(tuple(c[k] for k in KEY))
        r["provider_only"] += 1
        r["provider_conversations"] += 1
        r["currency"] = r["currency"] or c.get("currency")
        cost(r, c)
    for c in accepted_day:
        if not c["billable"]:
            row(tuple(c[k] for k in KEY))["provider_not_billable"] += 1
    return sorted(rows.values(), key=lambda r: tuple(r[k] for k in KEY))


def _conversation_rows(accepted: pa.Table, run_id: str) -> pa.Table:
    columns = ["conversation_id", "billing_date", "customer_id", "line_id", "country",
               "contact_key", "conversation_type", "opened_at", "message_id", "billable", "cost",
               "currency", "source_file", "source_row"]
    table = accepted.select(columns)
    return table.append_column("run_id", pa.array([run_id] * table.num_rows, pa.string()))


def _of_partition(quarantined: pa.Table, day: dt.date) -> pa.Table:
    keep = [partition_of(str(f)) == day for f in quarantined.column("source_file").to_pylist()]
    return quarantined.filter(pa.array(keep, pa.bool_()))


def _quarantine_rows(quarantined: pa.Table, day: dt.date, run_id: str, secret: str) -> pa.Table:
    n = quarantined.num_rows
    return pa.table({
        "run_id": pa.array([run_id] * n, pa.string()),
        "billing_date": pa.array([day] * n, pa.date32()),
        "conversation_id": quarantined.column("conversation_id"),
        "reason": quarantined.column("reason"),
        "record": pseudonymised_records(quarantined.column("record"), secret),
        "source_file": quarantined.column("source_file"),
        "source_row": quarantined.column("source_row"),
    })


def check(result: dict, settings: Settings) -> None:
    """Great Expectations on what is about to be published: the closing identities of every
    reconciliation row, one pairing per item, and the partition's counts adding up."""
    rec = pd.DataFrame(result["provider_reconciliation"])
    if rec.empty:
        rec = pd.DataFrame({c: pd.Series(dtype="int64") for c in (
            "our_starts", "provider_conversations", "matched", "ours_only", "provider_only",
            "type_mismatch")})
    rec = rec.assign(
        matched_plus_ours_only_plus_type_mismatch=rec["matched"] + rec["ours_only"]
        + rec["type_mismatch"],
        matched_plus_provider_only_plus_type_mismatch=rec["matched"] + rec["provider_only"]
        + rec["type_mismatch"])
    pairs = pd.DataFrame(result["provider_pairs"], columns=["message_id", "conversation_id",
                                                            "kind"])
    diffs = pd.DataFrame(result["provider_differences"],
                         columns=["message_id", "conversation_id", "kind", "explanation"])
    unpaired = diffs[diffs["kind"] != "type_mismatch"]  # a type mismatch is one of the pairs
    items = pd.concat([pairs[["message_id", "conversation_id"]],
                       unpaired[["message_id", "conversation_id"]]], ignore_index=True)
    c = result["counts"]
    totals = pd.DataFrame([{
        "rows_read": c["rows_read"],
        "accepted_plus_duplicates_plus_quarantined": c["accepted"] + c["duplicates"]
        + c["quarantined"],
        "our_starts": c["our_starts"],
        "matched_plus_ours_only_plus_type_mismatch": c["matched"] + c["ours_only"]
        + c["type_mismatch"],
        "duplicates": c["duplicates"]}])
    audit.audit_frames({"provider_reconciliation": rec, "provider_items": items,
                        "provider_differences": diffs, "provider_totals": totals},
                       settings.suites)


def publish(settings: Settings, day: dt.date, result: dict, run: dict) -> None:
    """Replace the day in every provider table, and record the run, in one transaction."""
    schema = settings.schema
    with migrate.writing(settings, f"billing date {day}: provider publish") as conn:
        warehouse.hold(conn, schema, f"provider:{day}")
        for name in DAY_TABLES:
            conn.execute(sa.text(f"delete from {schema}.{name} where billing_date = :d"),
                         {"d": day})
        for name in DAY_TABLES:
            data = result[name]
            warehouse.insert_arrow(conn, schema, name,
                                   data if isinstance(data, pa.Table) else _table(data))
        _record(conn, schema, run)


def _table(rows: list[dict]) -> pa.Table:
    if not rows:
        return pa.table({})
    return pa.Table.from_pylist(rows)


def run_row(run_id: str, day: dt.date, started: dt.datetime, status: str, result: dict | None,
            tolerance_minutes: int, error: str | None = None) -> dict:
    from billing_jobs.run_folder import code_version

    c = (result or {}).get("counts", {})
    return {"run_id": run_id, "billing_date": day, "status": status, "started_at": started,
            "finished_at": dt.datetime.now(dt.timezone.utc),
            **{k: c.get(k) for k in ("rows_read", "accepted", "duplicates", "quarantined",
                                      "our_starts", "matched", "ours_only", "provider_only",
                                      "type_mismatch")},
            "tolerance_minutes": tolerance_minutes, "code_version": code_version(),
            "error": redact(error)[:500] if error else None}


def _record(conn, schema: str, run: dict) -> None:
    warehouse.insert_row(conn, schema, "provider_runs", run)


def record_failure(settings: Settings, run: dict) -> None:
    """A failed provider run, recorded when the warehouse answers; never hides the cause."""
    try:
        with migrate.writing(settings, f"billing date {run['billing_date']}: recording the "
                                       f"provider failure", min(settings.lock_wait_s, 30)) as conn:
            _record(conn, settings.schema, run)
    except Exception as exc:  # noqa: BLE001 - the caller reports the original error
        log.warning("could not record the failed provider run of %s: %s", run["billing_date"],
                    redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
