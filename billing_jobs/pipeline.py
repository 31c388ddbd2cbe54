"""The daily job for one billing date, in three steps that Airflow runs as three tasks and
`billing-jobs run` runs in a row (write-audit-publish):

1. `write`   read partitions D-2..D, reconcile, price, build invoice lines, and stage the results
             as files in a run folder (nothing in the warehouse changes);
2. `audit`   run the Great Expectations suites on the staged files;
3. `publish` replace the date's rows in the warehouse in one transaction, only after a passed audit.

A failure at any step publishes nothing, keeps the previous version of the day, and is recorded in
`billing_runs` with its reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from billing_jobs import invoicing, landing, warehouse
from billing_jobs.config import Settings
from billing_jobs.contract import RULES_VERSION
from billing_jobs.pricing import invoice_lines, price_starts
from billing_jobs.reconcile import reconcile
from billing_jobs.reference_data import load_reference
from billing_jobs.tables import release_memory

AUDIT_CHUNK_ROWS = 1_000_000  # rows of starts GX validates at once (memory)
LOOK_BACK_DAYS = 2  # billing-rules.md, Days: a run for D reads D-2, D-1 and D


class RunError(Exception):
    """A run that cannot go on; the message says why in one line."""


def code_version() -> str:
    from importlib.metadata import version

    return version("billing-jobs")


def partitions_read(day: dt.date) -> list[dt.date]:
    return [day - dt.timedelta(days=k) for k in range(LOOK_BACK_DAYS, -1, -1)]


def fingerprint(files: list[Path]) -> str:
    """Content hash of a partition's files (names and bytes): what restatement compares."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def contact_keys(contacts: pa.ChunkedArray | pa.Array, secret: str) -> pa.Array:
    """HMAC-SHA256 pseudonyms of contact ids: the warehouse never holds a phone number."""
    encoded = pc.dictionary_encode(contacts)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    key = secret.encode()
    keys = [hmac.digest(key, c.encode(), "sha256").hex() for c in encoded.dictionary.to_pylist()]
    return pc.take(pa.array(keys, pa.string()), encoded.indices)


def pseudonymised_records(records: pa.ChunkedArray, secret: str) -> pa.Array:
    """Quarantined rows as JSON, with `contact_id` replaced by its `contact_key`: the record keeps
    everything needed to see what was wrong, but no phone number reaches the warehouse."""
    key = secret.encode()
    out = []
    for text in records.to_pylist():
        row = json.loads(text)
        if row.get("contact_id") is not None:
            row["contact_key"] = hmac.digest(key, str(row.pop("contact_id")).encode(),
                                             "sha256").hex()
        out.append(json.dumps(row, sort_keys=True, default=str))
    return pa.array(out, pa.string())


def write(settings: Settings, day: dt.date, run_id: str | None = None) -> Path:
    """Compute the day and stage it under `<staging>/<day>/<run_id>/`; returns that folder."""
    started = dt.datetime.now(dt.timezone.utc)
    run_id = run_id or f"{day:%Y%m%d}-{started:%H%M%S}-{uuid.uuid4().hex[:8]}"
    reference = load_reference(settings.reference)
    source = _require_partition(settings, day)
    clock = _Clock()
    files, partitions = window_files(source, day)
    batch = landing.read_files(files, lines=reference.line_owners)
    clock.lap("extract")
    tables, counts = compute(settings, reference, day, batch, clock)
    folder = Path(settings.staging) / day.isoformat() / run_id
    stage_run(folder, tables, counts, {
        "run_id": run_id, "billing_date": day.isoformat(), "started_at": started.isoformat(),
        "source": str(source), "reference": str(settings.reference),
        "reference_hash": reference.content_hash, "partitions": partitions,
    })
    clock.lap("stage")
    _add_seconds(folder, clock.laps)
    return folder


def shards_needed(settings: Settings, day: dt.date) -> int:
    """One shard per `rows_per_shard` rows of the D-2..D window: what a shard holds in memory is
    its share of the whole window, not of D alone (a steady 100M-message day reads 300M rows)."""
    return _shards_for(settings, window_listing(_require_partition(settings, day), day))


def _shards_for(settings: Settings, files: list[Path]) -> int:
    return max(1, math.ceil(landing.estimated_rows(files) / settings.rows_per_shard))


def plan_sharded(settings: Settings, day: dt.date, shards: int | None = 1,
                 run_id: str | None = None) -> Path:
    """The run folder of a sharded run, with what every shard and the combine step share
    (`plan.json`: the run, the files every shard reads and their partitions' fingerprints, the
    number of shards). Shards read the plan's files, not the landing zone's current listing: a
    late file that lands while the shards run is left to the next run (restatement sees it)."""
    started = dt.datetime.now(dt.timezone.utc)
    run_id = run_id or f"{day:%Y%m%d}-{started:%H%M%S}-{uuid.uuid4().hex[:8]}"
    source = _require_partition(settings, day)
    files, partitions = window_files(source, day)
    if shards is None:
        shards = _shards_for(settings, files)
    folder = Path(settings.staging) / day.isoformat() / run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(json.dumps({
        "run_id": run_id, "billing_date": day.isoformat(), "started_at": started.isoformat(),
        "source": str(source), "reference": str(settings.reference), "partitions": partitions,
        "files": [str(f) for f in files], "shards": shards}))
    return folder


def write_sharded(settings: Settings, day: dt.date, shards: int, run_id: str | None = None) -> Path:
    """write() in `shards` pieces (one after the other here; Airflow maps them over workers)."""
    from billing_jobs import shards as sharding

    folder = plan_sharded(settings, day, shards, run_id)
    for k in range(shards):
        sharding.split(folder, k)
    for k in range(shards):
        sharding.write_shard(settings, day, folder, k, shards)
    folder = combine_shards(settings, folder)
    release_memory()
    return folder


def combine_shards(settings: Settings, folder: Path) -> Path:
    from billing_jobs import shards as sharding

    plan = json.loads((folder / "plan.json").read_text())
    plan.pop("files")  # run.json names the partitions and their fingerprints, as unsharded
    return sharding.combine(settings, dt.date.fromisoformat(plan["billing_date"]), folder,
                            plan.pop("shards"), plan)


def _require_partition(settings: Settings, day: dt.date) -> Path:
    """The landing zone, once D's partition is known to exist: a missing partition is refused,
    never published as an empty day."""
    source = landing.location(settings.source)
    if not (source / "messages" / f"date={day}").is_dir():
        raise RunError(f"no partition for {day} under {source / 'messages'}: refusing to publish "
                       f"an empty day (create the folder if the day really had no messages)")
    return source


def window_listing(source: Path, day: dt.date) -> list[Path]:
    """The files of partitions D-2..D."""
    return [f for part in partitions_read(day) for f in landing.partition_files(source, part)]


def window_files(source: Path, day: dt.date) -> tuple[list[Path], dict[str, str | None]]:
    """The files of partitions D-2..D and each partition's fingerprint (content hash)."""
    files, partitions = [], {}
    for part in partitions_read(day):
        found = landing.partition_files(source, part)
        files += found
        partitions[part.isoformat()] = fingerprint(found) if found else None
    return files, partitions


def compute(settings: Settings, reference, day: dt.date, batch: landing.Batch,
            clock: _Clock | None = None) -> tuple[dict[str, pa.Table], dict]:
    """Reconcile, price and pseudonymise what `batch` holds: the day's tables as staged (before
    the run id is added) and the run's counts."""
    clock = clock or _Clock()
    result = reconcile(batch)
    clock.lap("reconcile")
    starts = result.starts
    priced = price_starts(starts.filter(_on(starts.column("started_at"), day)), reference)
    priced = priced.append_column("contact_key", contact_keys(priced.column("contact_id"),
                                                              settings.contact_key_secret))
    clock.lap("price")
    anomalies = result.anomalies.filter(_on(result.anomalies.column("sent_at"), day))
    quarantined = result.quarantined.select(
        ["message_id", "reason", "record", "source_file", "source_row"])
    quarantined = quarantined.set_column(2, "record", pseudonymised_records(
        quarantined.column("record"), settings.contact_key_secret))
    tables = {
        "conversation_starts": priced.select(STARTS_COLUMNS),
        "session_anomalies": pa.table({
            "message_id": anomalies.column("message_id"),
            "customer_id": anomalies.column("customer_id"),
            "line_id": anomalies.column("line_id"),
            "contact_key": contact_keys(anomalies.column("contact_id"),
                                        settings.contact_key_secret),
            "sent_at": anomalies.column("sent_at"),
            "kind": anomalies.column("kind"),
        }),
        "quarantined_messages": quarantined,
        "accepted_messages": _accepted_profile(result),
    }
    counts = {**result.counts(), "starts_on_day": priced.num_rows,
              "anomalies_on_day": anomalies.num_rows}
    return tables, counts


STARTS_COLUMNS = ["message_id", "billing_date", "customer_id", "line_id", "contact_key", "country",
                  "conversation_type", "started_at", "unit_price", "currency", "rate_row"]


def _on(instants: pa.ChunkedArray, day: dt.date) -> pa.ChunkedArray:
    return pc.equal(pc.cast(pc.cast(instants, pa.timestamp("ns")), pa.date32()),
                    pa.scalar(day, pa.date32()))


def stage_run(folder: Path, tables: dict[str, pa.Table], counts: dict, meta: dict) -> None:
    """Write a run's tables (invoice lines built here from the starts) and its run.json."""
    folder.mkdir(parents=True, exist_ok=True)
    run_id, day = meta["run_id"], dt.date.fromisoformat(meta["billing_date"])
    tag = {"run_id": run_id, "billing_date": day}
    _stage(folder, "conversation_starts", _with(tables["conversation_starts"], run_id=run_id))
    _stage(folder, "invoice_lines", _with(invoice_lines(tables["conversation_starts"]),
                                          run_id=run_id))
    _stage(folder, "session_anomalies", _with(tables["session_anomalies"], **tag))
    _stage(folder, "quarantined_messages", _with(tables["quarantined_messages"], **tag))
    _stage(folder, "accepted_messages", tables["accepted_messages"])
    partitions = meta["partitions"]
    meta = {
        **meta,
        "input_fingerprint": hashlib.sha256(json.dumps(partitions, sort_keys=True).encode())
        .hexdigest(),
        "counts": counts, "rules_version": RULES_VERSION, "code_version": code_version(),
    }
    (folder / "run.json").write_text(json.dumps(meta, indent=1))


def _add_seconds(folder: Path, laps: dict) -> None:
    meta = json.loads((folder / "run.json").read_text())
    meta["seconds"] = {**meta.get("seconds", {}), **laps}
    (folder / "run.json").write_text(json.dumps(meta, indent=1))


class _Clock:
    """Wall time per stage, kept in run.json (and shown by the benchmark)."""

    def __init__(self) -> None:
        import time

        self._now = time.perf_counter
        self._last = self._now()
        self.laps: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = self._now()
        self.laps[stage] = round(self.laps.get(stage, 0.0) + now - self._last, 3)
        self._last = now


def _with(table: pa.Table, **constants) -> pa.Table:
    for name, value in constants.items():
        kind = pa.date32() if isinstance(value, dt.date) else pa.string()
        table = table.append_column(name, pa.array([value] * table.num_rows, kind))
    return table


def _stage(folder: Path, name: str, table: pa.Table) -> None:
    pq.write_table(table, folder / f"{name}.parquet")


def _accepted_profile(result) -> pa.Table:
    """What the audit checks about accepted messages, independently of the deduplication: rows
    per (direction, type, status), how many distinct message ids, how many missing values."""
    import duckdb

    table = result.deduplicated.table
    kept = np.zeros(table.num_rows, dtype=bool)
    kept[result.deduplicated.rows] = True
    accepted = table.select(["message_id", "customer_id", "line_id", "contact_id", "direction",
                             "message_type", "sent_at", "status"]).append_column(
        "kept", pa.array(kept))
    with duckdb.connect() as con:
        con.register("accepted", accepted)
        profile = con.sql("""
            select
                cast(direction as varchar) as direction,
                cast(message_type as varchar) as message_type,
                cast(status as varchar) as status,
                count(*) as messages
            from accepted where kept group by all order by all
        """).to_arrow_table() if kept.any() else None
        totals = con.sql("""
            select count(*) as rows, count(distinct message_id) as distinct_message_ids,
                count(*) filter (where message_id is null or customer_id is null
                    or line_id is null or contact_id is null or direction is null
                    or message_type is null or sent_at is null or status is null)
                    as missing_required_values
            from accepted where kept
        """).fetchall()[0]
    if profile is None:
        profile = pa.table({"direction": pa.array([], pa.string()),
                            "message_type": pa.array([], pa.string()),
                            "status": pa.array([], pa.string()),
                            "messages": pa.array([], pa.int64())})
    n = max(profile.num_rows, 1)
    if profile.num_rows == 0:  # keep one row so the totals are still checked
        profile = pa.table({"direction": ["inbound"], "message_type": ["session"],
                            "status": ["sent"], "messages": pa.array([0], pa.int64())})
    for name, value in zip(("rows", "distinct_message_ids", "missing_required_values"), totals):
        profile = profile.append_column(name, pa.array(np.full(n, value or 0), pa.int64()))
    return profile


def read_staged(folder: Path, columns: dict[str, list[str] | None]
                ) -> tuple[dict, dict[str, pa.Table]]:
    """run.json and the staged tables named in `columns`, each with only the columns listed
    (None: all of them)."""
    meta = json.loads((folder / "run.json").read_text())
    return meta, {name: pq.read_table(folder / f"{name}.parquet", columns=wanted)
                  for name, wanted in columns.items()}


def gx_project(folder: Path) -> Path:
    """The GX project of a staging area (`<staging>/gx`): results of every audit, Data Docs."""
    return folder.parent.parent / "gx"


def audit(folder: Path) -> None:
    """Great Expectations on the staged run; writes `audit.json` beside it and keeps the results
    in the staging area's GX project; raises on failure."""
    from billing_jobs.audit import audit as run_suites

    # only the tables and columns the suites read: a 100M-message day has ~10M starts
    meta, tables = read_staged(folder, {
        "conversation_starts": ["message_id", "contact_key", "conversation_type", "started_at",
                                "billing_date", "unit_price"],
        "invoice_lines": None, "accepted_messages": None})
    staged = tables["conversation_starts"]
    day = dt.date.fromisoformat(meta["billing_date"])
    starts_view = pa.table({
        "message_id": staged.column("message_id"),
        "contact_key": staged.column("contact_key"),
        "conversation_type": staged.column("conversation_type"),
        "started_at": staged.column("started_at"),
        "billing_date": staged.column("billing_date"),
        # checked for presence only; as text, so pandas holds no Decimal object per row
        "unit_price": pc.cast(staged.column("unit_price"), pa.string()),
        "run_billing_date": pa.array(np.full(staged.num_rows, day), pa.date32()),
    })

    def starts_chunks():  # GX on pandas in slices: a 100M-message day has ~10M starts
        for offset in range(0, max(starts_view.num_rows, 1), AUDIT_CHUNK_ROWS):
            yield starts_view.slice(offset, AUDIT_CHUNK_ROWS).to_pandas()

    lines = tables["invoice_lines"].to_pandas()
    lines["quantity_times_unit_price"] = [q * p for q, p in zip(lines["quantity"],
                                                                lines["unit_price"])]
    c = meta["counts"]
    import pandas as pd

    totals = pd.DataFrame([{
        "messages_read": c["rows_read"],
        "accepted_plus_duplicates_plus_quarantined": c["accepted"] + c["duplicates"]
        + c["quarantined"],
        "starts": staged.num_rows,
        "distinct_start_ids": len(pc.unique(staged.column("message_id"))),
        "priced_starts": staged.num_rows - staged.column("unit_price").null_count,
        "invoice_quantity": int(lines["quantity"].sum()),
        "invoice_amount": sum(lines["amount"], start=_zero()),
        "starts_amount": pc.sum(staged.column("unit_price")).as_py()
        or _zero(),
    }])
    run_suites({
        "conversation_starts": starts_chunks(),
        "invoice_lines": lines,
        "accepted_messages": tables["accepted_messages"].to_pandas(),
        "run_totals": totals,
    }, folder / "audit.json", run_name=meta["run_id"], project_root=gx_project(folder))


def _zero():
    from decimal import Decimal

    return Decimal(0)


def audited(folder: Path) -> bool:
    path = folder / "audit.json"
    return path.exists() and json.loads(path.read_text()).get("success") is True


def publish(settings: Settings, folder: Path) -> dict:
    """Replace the date's rows with the staged run, in one transaction, after a passed audit."""
    if not audited(folder):
        raise RunError(f"{folder}: not audited, or the audit failed: nothing published")
    meta = json.loads((folder / "run.json").read_text())
    day = dt.date.fromisoformat(meta["billing_date"])
    reference = load_reference(meta["reference"])
    if reference.content_hash != meta["reference_hash"]:
        raise RunError(f"reference data in {meta['reference']} changed since the run was written; "
                       f"write the day again")
    # the day's starts (~10M rows on a 100M-message day) are loaded from their file, not held here
    starts_path = folder / "conversation_starts.parquet"
    amount = pc.sum(pq.read_table(starts_path, columns=["unit_price"]).column("unit_price")
                    ).as_py() or _zero()  # exact decimal sum
    tables = {name: pq.read_table(folder / f"{name}.parquet")
              for name in warehouse.DAY_TABLES if name != "conversation_starts"}
    tables["conversation_starts"] = starts_path
    engine = warehouse.create_engine(settings.warehouse_url)
    with warehouse.connect(engine, settings.lock_wait_s) as conn:
        with conn.begin():
            warehouse.ensure_schema(conn, settings.schema)
        with conn.begin():
            warehouse.lock_billing_date(conn, day, settings.lock_wait_s)
            warehouse.store_reference(conn, settings.schema, reference)
            invoicing.book_adjustments(conn, settings.schema, day,
                                       lambda: pq.read_table(starts_path), meta["run_id"],
                                       f"{day} published again (run {meta['run_id']}, inputs "
                                       f"{meta['input_fingerprint'][:12]})")
            warehouse.replace_day(conn, settings.schema, day, {
                name: tables[name] for name in warehouse.DAY_TABLES})
            warehouse.record_run(conn, settings.schema, _run_row(meta, "published", amount))
    engine.dispose()
    return {**meta["counts"], "amount": amount, "run_id": meta["run_id"]}


def _run_row(meta: dict, status: str, amount=None, error: str | None = None) -> dict:
    c = meta.get("counts", {})
    return {
        "run_id": meta["run_id"], "billing_date": dt.date.fromisoformat(meta["billing_date"]),
        "status": status, "started_at": dt.datetime.fromisoformat(meta["started_at"]),
        "finished_at": dt.datetime.now(dt.timezone.utc),
        "messages_read": c.get("rows_read"), "accepted": c.get("accepted"),
        "duplicates": c.get("duplicates"), "quarantined": c.get("quarantined"),
        "failed_sends": c.get("failed"), "starts": c.get("starts_on_day", c.get("starts")),
        "anomalies": c.get("anomalies_on_day"), "amount": amount,
        "input_fingerprint": meta.get("input_fingerprint"),
        "partitions": json.dumps(meta.get("partitions")), "reference_hash": meta.get(
            "reference_hash"), "rules_version": RULES_VERSION, "code_version": code_version(),
        "error": error,
    }


def record_failure(settings: Settings, day: dt.date, run_id: str, started: dt.datetime,
                   error: str, folder: Path | None = None) -> None:
    """Leave a `failed` row in billing_runs; never touches the day's published rows."""
    meta = {"run_id": run_id, "billing_date": day.isoformat(), "started_at": started.isoformat()}
    if folder is not None and (folder / "run.json").exists():
        meta = json.loads((folder / "run.json").read_text())
    try:
        engine = warehouse.create_engine(settings.warehouse_url)
        with warehouse.connect(engine, settings.lock_wait_s) as conn, conn.begin():
            warehouse.ensure_schema(conn, settings.schema)
            warehouse.record_run(conn, settings.schema, _run_row(meta, "failed", error=error))
        engine.dispose()
    except warehouse.WarehouseError:
        pass  # the warehouse itself is the problem; the caller reports the original error


def run_day(settings: Settings, day: dt.date, dry_run: bool = False,
            shards: int | None = None) -> dict:
    """write (in `shards` pieces if more than one; None: as many as the window's rows need),
    audit, publish (or only write and audit with `dry_run`)."""
    started = dt.datetime.now(dt.timezone.utc)
    run_id = f"{day:%Y%m%d}-{started:%H%M%S}-{uuid.uuid4().hex[:8]}"
    folder = None
    clock = _Clock()
    try:
        if shards is None:
            shards = shards_needed(settings, day)
        if shards > 1:
            folder = write_sharded(settings, day, shards, run_id)
        else:
            folder = write(settings, day, run_id)
        clock.lap("write")
        audit(folder)
        clock.lap("audit")
        release_memory()
        meta = json.loads((folder / "run.json").read_text())
        seconds = meta.get("seconds") or {"write": clock.laps["write"]}
        if dry_run:
            return {**meta["counts"], "run_id": run_id, "published": False,
                    "seconds": {**seconds, "audit": clock.laps["audit"]}}
        done = publish(settings, folder)
        clock.lap("publish")
        seconds = {**seconds, "audit": clock.laps["audit"], "publish": clock.laps["publish"]}
        return {**done, "published": True, "seconds": seconds}
    except Exception as exc:
        record_failure(settings, day, run_id, started, f"{type(exc).__name__}: {exc}", folder)
        raise
