"""One billing date of provider reconciliation: WhatsApp's conversations against our published
conversation starts (billing-rules.md, "Provider reconciliation"), every difference explained from
the message log, audited by Great Expectations and published in one transaction that replaces the
date. It never changes what we bill.

Which items take part, for date D: our published starts of D-1, D and D+1 and WhatsApp's
conversations opened D-1..D+1, so that a conversation opened just after midnight can pair with a
start just before it (and one just before midnight with a start just after). What is reported
for D: the pairs and `ours_only` of D's starts, and the `provider_only` conversations opened on D.

How: everything stays columnar. The starts arrive as Arrow, the pairing works on arrays
(provider_pairing.py), and the day's pairs, differences and reconciliation rows are three SQL
statements (statements/provider_*.sql) run by an in-process DuckDB over those Arrow tables.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from billing_jobs import audit, auditor, landing, migrate, provider_records, warehouse
from billing_jobs.config import Settings
from billing_jobs.errors import RunError, one_line, redact
from billing_jobs.identity import partition_of
from billing_jobs.provider_explain import explanations, unreported_contacts
from billing_jobs.provider_pairing import MATCHED, MINUTE, TYPE_MISMATCH, pair_indices, pair_kinds
from billing_jobs.pseudonym import contact_keys, pseudonymised_records
from billing_jobs.reference_data import load_reference
from billing_jobs.tables import constant, in_memory_duckdb

log = logging.getLogger(__name__)
DAY_TABLES = ("provider_conversations", "provider_pairs", "provider_differences",
              "provider_reconciliation", "provider_quarantined")


def reconcile_day(settings: Settings, day: dt.date, tolerance_minutes: int = 10) -> dict:
    """Reconcile, audit and publish `day`; returns its counts. Raises RunError when the day is
    not published yet (its starts are what is compared)."""
    started = dt.datetime.now(dt.timezone.utc)
    run_id = f"provider-{day:%Y%m%d}-{started:%H%M%S}-{uuid.uuid4().hex[:8]}"
    try:
        result = compute_day(settings, day, run_id, tolerance_minutes)
        # Great Expectations checks while the day is written into the open transaction, which
        # commits only once the audit has passed: a failed audit rolls everything back
        with ThreadPoolExecutor(max_workers=1) as pool:
            audit_passed = pool.submit(check, result, settings).result
            publish(settings, day, result, run_row(run_id, day, started, "published", result,
                                                   tolerance_minutes), before_commit=audit_passed)
        return {**result["counts"], "run_id": run_id}
    except Exception as exc:
        record_failure(settings, run_row(run_id, day, started, "failed", None, tolerance_minutes,
                                         one_line(exc)))
        raise


def compute_day(settings: Settings, day: dt.date, run_id: str, tolerance_minutes: int) -> dict:
    reference = load_reference(settings.reference)
    days = [day - dt.timedelta(days=1), day, day + dt.timedelta(days=1)]
    if not is_published(settings, day):
        raise RunError(f"billing date {day} is not published: provider reconciliation compares "
                       f"published starts (run `billing-jobs run --date {day}` first)")
    with ThreadPoolExecutor(max_workers=1) as pool:  # the warehouse answers while files are read
        pending = pool.submit(_published_starts, settings, days)
        batch = provider_records.read(settings.source, days, set(reference.lines))
        starts = pending.result()
    convs = _owned(batch.valid, reference.lines, settings.contact_key_secret)
    files = [f for d in days for f in landing.partition_files(landing.location(settings.source), d)]
    of_day = pc.equal(starts.column("billing_date"), pa.scalar(day, pa.date32()))
    with ThreadPoolExecutor(max_workers=1) as pool:  # the log answers while the pairing runs
        logged = pool.submit(unreported_contacts, starts.filter(of_day), convs, files)
        eligible = convs.filter(convs.column("eligible"))
        s_idx, e_idx = pair_indices(starts, eligible, tolerance_minutes * MINUTE)
        pairs = pa.table({"s": pa.array(s_idx, pa.int64()),
                          "c": eligible.column("c").take(pa.array(e_idx, pa.int64())),
                          "matched": pa.array(pair_kinds(starts, eligible, s_idx, e_idx),
                                              pa.bool_())})
        starts = starts.append_column("s", pa.array(np.arange(starts.num_rows)))
        tables = _day_tables(day, starts, convs, pairs)
        logged = logged.result()
    differences = tables["differences"]
    differences = differences.drop_columns(["contact"]).append_column(
        "explanation", explanations(differences, convs, files, settings.contact_key_secret,
                                    logged))
    accepted_day = convs.filter(pc.equal(convs.column("billing_date"), pa.scalar(day, pa.date32())))
    quarantined_day = _of_partition(batch.quarantined, day)
    rows_read = batch.rows_read[day]
    kinds = tables["pairs"].column("kind")
    counts = {
        "rows_read": rows_read, "accepted": accepted_day.num_rows,
        "quarantined": quarantined_day.num_rows,
        "duplicates": rows_read - accepted_day.num_rows - quarantined_day.num_rows,
        "our_starts": _count(starts.column("billing_date"), pa.scalar(day, pa.date32())),
        "matched": _count(kinds, MATCHED),
        "type_mismatch": _count(kinds, TYPE_MISMATCH),
        "ours_only": _count(differences.column("kind"), "ours_only"),
        "provider_only": _count(differences.column("kind"), "provider_only"),
    }
    return {
        "day": day, "run_id": run_id, "counts": counts,
        "provider_conversations": _conversation_rows(accepted_day, run_id),
        "provider_pairs": _stamped(tables["pairs"], day, run_id),
        "provider_differences": _stamped(differences, day, run_id),
        "provider_reconciliation": [{"billing_date": day, **r, "run_id": run_id}
                                    for r in tables["reconciliation"].to_pylist()],
        "provider_quarantined": _quarantine_rows(quarantined_day, day, run_id,
                                                 settings.contact_key_secret),
    }


def _count(column, value) -> int:
    return int(pc.sum(pc.equal(column, value)).as_py() or 0)


def _owned(valid: pa.Table, lines: dict[str, tuple[str, str]], secret: str) -> pa.Table:
    """WhatsApp's accepted conversations with what the comparison needs: row number `c`,
    `contact_key`, `billing_date` (the opening's date), the line's customer and country, and
    whether they take part in the pairing (`eligible`: billable, of a type we charge). The
    canonical `contact_id` stays for the explanations and is never published."""
    line_ids = pa.array(sorted(lines), pa.string())
    at = pc.index_in(valid.column("line_id"), value_set=line_ids)
    owner = pa.array([lines[line][0] for line in line_ids.to_pylist()], pa.string())
    country = pa.array([lines[line][1] for line in line_ids.to_pylist()], pa.string())
    eligible = pc.and_(valid.column("billable"), pc.is_in(
        valid.column("conversation_type"), value_set=pa.array(provider_records.MATCHED_TYPES)))
    return valid.append_column("c", pa.array(np.arange(valid.num_rows))) \
        .append_column("contact_key", contact_keys(valid.column("contact_id"), secret)) \
        .append_column("billing_date", pc.cast(pc.cast(valid.column("opened_at"),
                                                       pa.timestamp("ns")), pa.date32())) \
        .append_column("customer_id", pc.take(owner, at)) \
        .append_column("country", pc.take(country, at)) \
        .append_column("eligible", eligible)


def _day_tables(day: dt.date, starts: pa.Table, convs: pa.Table, pairs: pa.Table
                ) -> dict[str, pa.Table]:
    """The day's pairs, differences and reconciliation rows, by the in-process DuckDB statements
    provider_day_pairs.sql, provider_differences.sql and provider_reconciliation.sql."""
    with in_memory_duckdb() as con:
        for name, table in (("starts", starts), ("convs", convs), ("pairs", pairs)):
            con.register(name, table)
        return {name: con.sql((warehouse.STATEMENTS / f"provider_{statement}.sql").read_text(),
                              params={"day": day}).to_arrow_table()
                for name, statement in (("pairs", "day_pairs"), ("differences", "differences"),
                                        ("reconciliation", "reconciliation"))}


def _stamped(table: pa.Table, day: dt.date, run_id: str) -> pa.Table:
    n = table.num_rows
    return table.append_column("billing_date", constant(day, n, pa.date32())) \
        .append_column("run_id", constant(run_id, n, pa.string()))


STARTS = pa.schema([
    ("message_id", pa.string()), ("billing_date", pa.date32()), ("customer_id", pa.string()),
    ("line_id", pa.string()), ("contact_key", pa.string()), ("country", pa.string()),
    ("conversation_type", pa.string()), ("started_at", pa.timestamp("us", "UTC")),
    ("unit_price", pa.decimal128(20, 10)), ("currency", pa.string()),
])


def _published_starts(settings: Settings, days: list[dt.date]) -> pa.Table:
    return warehouse.read_job_arrow(settings.warehouse_url, settings.schema, settings.lock_wait_s,
                                    "provider_starts", "conversation_starts", STARTS,
                                    first_day=days[0], last_day=days[-1])


def is_published(settings: Settings, day: dt.date) -> bool:
    rows = warehouse.read_job_query(settings.warehouse_url, settings.schema, settings.lock_wait_s,
                                    "day_is_published", "billing_runs", billing_date=day)
    return bool(rows) and rows[0]["status"] == "published"


def _conversation_rows(accepted: pa.Table, run_id: str) -> pa.Table:
    columns = ["conversation_id", "billing_date", "customer_id", "line_id", "country",
               "contact_key", "conversation_type", "opened_at", "message_id", "billable", "cost",
               "currency", "source_file", "source_row"]
    table = accepted.select(columns)
    return table.append_column("run_id", constant(run_id, table.num_rows, pa.string()))


def _of_partition(quarantined: pa.Table, day: dt.date) -> pa.Table:
    keep = [partition_of(str(f)) == day for f in quarantined.column("source_file").to_pylist()]
    return quarantined.filter(pa.array(keep, pa.bool_()))


def _quarantine_rows(quarantined: pa.Table, day: dt.date, run_id: str, secret: str) -> pa.Table:
    n = quarantined.num_rows
    return pa.table({
        "run_id": constant(run_id, n, pa.string()),
        "billing_date": constant(day, n, pa.date32()),
        "conversation_id": quarantined.column("conversation_id"),
        "reason": quarantined.column("reason"),
        "record": pseudonymised_records(quarantined.column("record"), secret),
        "source_file": quarantined.column("source_file"),
        "source_row": quarantined.column("source_row"),
    })


def check(result: dict, settings: Settings) -> None:
    """Great Expectations on what is about to be published: the closing identities of every
    reconciliation row, one pairing per item, and the partition's counts adding up. Run in GX's
    warm process when the command started one (auditor.py): only Arrow and numbers cross."""
    auditor.run(_check, result["provider_reconciliation"],
                result["provider_pairs"].select(["message_id", "conversation_id", "kind"]),
                result["provider_differences"].select(
                    ["message_id", "conversation_id", "kind", "explanation"]),
                result["counts"],
                # one row per conversation id (the table has no key index: migration 0004)
                pc.count_distinct(result["provider_conversations"].column("conversation_id"))
                .as_py(), settings.suites)


def _check(reconciliation: list[dict], pairs: pa.Table, differences: pa.Table, counts: dict,
           distinct_conversation_ids: int, suites: Path) -> None:
    rec = pd.DataFrame(reconciliation)
    if rec.empty:
        rec = pd.DataFrame({name: pd.Series(dtype="int64") for name in (
            "our_starts", "provider_conversations", "matched", "ours_only", "provider_only",
            "type_mismatch")})
    rec = rec.assign(
        matched_plus_ours_only_plus_type_mismatch=rec["matched"] + rec["ours_only"]
        + rec["type_mismatch"],
        matched_plus_provider_only_plus_type_mismatch=rec["matched"] + rec["provider_only"]
        + rec["type_mismatch"])
    pairs = pairs.to_pandas()
    diffs = differences.to_pandas()
    unpaired = diffs[diffs["kind"] != "type_mismatch"]  # a type mismatch is one of the pairs
    items = pd.concat([pairs[["message_id", "conversation_id"]],
                       unpaired[["message_id", "conversation_id"]]], ignore_index=True)
    totals = pd.DataFrame([{
        "rows_read": counts["rows_read"],
        "accepted_plus_duplicates_plus_quarantined": counts["accepted"] + counts["duplicates"]
        + counts["quarantined"],
        "our_starts": counts["our_starts"],
        "matched_plus_ours_only_plus_type_mismatch": counts["matched"] + counts["ours_only"]
        + counts["type_mismatch"],
        "duplicates": counts["duplicates"],
        "accepted": counts["accepted"],
        "distinct_conversation_ids": distinct_conversation_ids}])
    audit.audit_frames({"provider_reconciliation": rec, "provider_items": items,
                        "provider_differences": diffs, "provider_totals": totals}, suites)


def publish(settings: Settings, day: dt.date, result: dict, run: dict,
            before_commit: Callable[[], object] | None = None) -> None:
    """Replace the day in every provider table, and record the run, in one transaction, which
    `before_commit` (the audit) can still roll back by raising."""
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
        if before_commit is not None:
            before_commit()


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
