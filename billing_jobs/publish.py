"""Publishing a staged run, and recording every run's outcome in `billing_runs`.

`publish` replaces the date's rows with the staged run in one transaction, only after a passed
audit. `record_failure` leaves a `failed` row with the step that failed and a one-line reason;
it never touches the day's published rows, so the earlier version of the day stays."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs import invoicing, migrate, warehouse
from billing_jobs.config import Settings
from billing_jobs.contract import RULES_VERSION
from billing_jobs.errors import MAX_REASON, BillingError, RunError, redact
from billing_jobs.identity import CONFLICTING_DUPLICATE, partition_of
from billing_jobs.reference_data import load_reference
from billing_jobs.run_folder import RunFolder, StagedRun, code_version
from billing_jobs.tables import constant, read_parquet

log = logging.getLogger(__name__)


def publish(settings: Settings, folder: RunFolder,
            audit: Callable[[], object] | None = None) -> dict:
    """Replace the date's rows with the staged run, in one transaction, after a passed audit.
    Returns the run's counts with its amount and run id.

    `audit`: waits for an audit still running (in GX's worker, `run_day`): the day is written
    meanwhile and committed only if it passes; its failure rolls everything back."""
    if audit is None:
        _check_audited(folder)
    run = folder.run
    day = run.billing_date
    reference = load_reference(run.reference)
    if reference.content_hash != run.reference_hash:
        raise RunError(f"reference data in {run.reference} changed since the run was written; "
                       f"write the day again")
    # the day's starts (~10M rows on a 100M-message day) are loaded from their file, not held here
    starts = folder.table("conversation_starts")
    amount = pc.sum(folder.read_table(starts, ["unit_price"]).column("unit_price")
                    ).as_py() or Decimal(0)  # exact decimal sum
    tables = {name: folder.read_table(folder.table(name))
              for name in warehouse.DAY_TABLES if name != "conversation_starts"}
    tables["quarantined_messages"] = _with_partition_dates(tables["quarantined_messages"])
    schema = settings.schema
    # DuckDB reads the starts from a local file: a staging area behind a URL lends a copy
    with folder.local_copies([starts]) as (starts_path,), \
            migrate.writing(settings, f"billing date {day}: publish") as conn:
        tables["conversation_starts"] = starts_path
        # shared with the other days of the month, exclusive against its close: a close waits
        # for this publish, or this publish sees the month closed and books the difference as
        # adjustments, in this same transaction
        warehouse.hold(conn, schema, warehouse.month_lock(day), shared=True)
        warehouse.hold(conn, schema, warehouse.billing_date_lock(day))
        warehouse.store_reference(conn, schema, reference)
        adjustments = invoicing.book_adjustments(
            conn, schema, day, lambda: read_parquet(starts_path), run.run_id,
            f"{day} published again by run {run.run_id} (inputs {run.input_fingerprint[:12]})")
        warehouse.replace_day(conn, schema, day, tables, run.run_id)
        _record_conflicts(conn, schema, run, tables["quarantined_messages"])
        warehouse.record_run(conn, schema, run_row(run, "published", amount))
        if audit is not None:  # the last thing before the commit
            audit()
            _check_audited(folder)
    return {**run.counts, "amount": amount, "run_id": run.run_id, "adjustments": adjustments}


def _check_audited(folder: RunFolder) -> None:
    if not folder.audited():
        raise RunError(f"{folder}: not audited, or the audit failed: nothing published")


def _with_partition_dates(quarantined):
    """Each bad row's own partition date, so finance counts it once (view quarantined_rows)."""
    dates = [partition_of(str(f)) for f in quarantined.column("source_file").to_pylist()]
    return quarantined.append_column("partition_date", pa.array(dates, pa.date32()))


def _record_conflicts(conn, schema: str, run: StagedRun, quarantined) -> None:
    """The conflicting copies this run found, per id and partition (identity.py): the runs of
    the other days they reach quarantine them too, and restatement re-bills those days."""
    copy = quarantined.filter(pc.equal(quarantined.column("reason"), CONFLICTING_DUPLICATE))
    copies = {(m, partition_of(str(f))) for m, f in zip(copy.column("message_id").to_pylist(),
                                                        copy.column("source_file").to_pylist())}
    pairs = sorted(c for c in copies if c[0] and c[1])
    if not pairs:
        return
    found = pa.table({
        "message_id": pa.array([m for m, _ in pairs], pa.string()),
        "partition_date": pa.array([p for _, p in pairs], pa.date32()),
        "found_for": constant(run.billing_date, len(pairs), pa.date32()),
        "found_by_run": constant(run.run_id, len(pairs), pa.string()),
        "found_at": constant(dt.datetime.now(dt.timezone.utc), len(pairs),
                             pa.timestamp("us", "UTC")),
    })
    with warehouse.scratch_table(conn, "found_conflicts", found, f"{schema}.identity_conflicts"):
        warehouse.execute(conn, "insert_identity_conflicts", schema)


def run_row(run: StagedRun, status: str, amount=None, step: str | None = None,
            error: str | None = None) -> dict:
    c = run.counts
    return {
        "run_id": run.run_id, "billing_date": run.billing_date, "status": status,
        "started_at": run.started_at, "finished_at": dt.datetime.now(dt.timezone.utc),
        "messages_read": c.get("rows_read"), "accepted": c.get("accepted"),
        "duplicates": c.get("duplicates"), "quarantined": c.get("quarantined"),
        "failed_sends": c.get("failed"), "starts": c.get("starts_on_day", c.get("starts")),
        "anomalies": c.get("anomalies_on_day"), "amount": amount,
        "input_fingerprint": run.input_fingerprint or None,
        "partitions": json.dumps(run.partitions) if run.partitions else None,
        "reference_hash": run.reference_hash or None, "rules_version": RULES_VERSION,
        "code_version": code_version(), "failed_step": step, "error": error,
    }


def record_failure(settings: Settings, day: dt.date, run_id: str, step: str, reason: str,
                   folder: RunFolder | None = None,
                   started: dt.datetime | None = None) -> bool:
    """Leave a `failed` row for `day` in billing_runs naming the step and the reason (one line,
    no password); never touches the day's published rows. Returns whether the row was written:
    when the warehouse itself is what failed, the caller's own error report is all there is."""
    reason = redact(" ".join(reason.split()))[:MAX_REASON]
    run = _what_is_known(folder, day, run_id, started)
    try:
        with migrate.writing(settings, f"billing date {day}: recording the failure",
                             min(settings.lock_wait_s, 30)) as conn:
            warehouse.record_run(conn, settings.schema,
                                 run_row(run, "failed", step=step, error=reason))
    except Exception as exc:  # noqa: BLE001 - reporting must not hide the original cause
        log.warning("could not record the failure of %s in billing_runs: %s", day,
                    redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        return False
    return True


def _what_is_known(folder: RunFolder | None, day: dt.date, run_id: str,
                   started: dt.datetime | None) -> StagedRun:
    """The run as far as it got: its staged counts, else its plan, else only its date."""
    if folder is not None:
        try:
            if folder.staged:
                return folder.run
            plan = folder.plan
            return StagedRun(plan.run_id, plan.billing_date, plan.started_at, plan.source,
                             plan.reference, "", plan.partitions, plan.shards, {}, "",
                             RULES_VERSION, code_version())
        except (BillingError, OSError, ValueError):
            pass
    return StagedRun(run_id, day, started or dt.datetime.now(dt.timezone.utc), "", "", "", {},
                     0, {}, "", RULES_VERSION, code_version())
