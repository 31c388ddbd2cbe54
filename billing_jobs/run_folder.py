"""The run folder: everything one run of one billing date stages between its steps, as one typed
object. Every step reads and writes it through `RunFolder`; nothing else knows its layout.

    <staging>/<day>/<run_id>/
        plan.json                  Plan: the run, the files it reads, their fingerprints, shards
        split/<k>/<i>.parquet      shard k's rows of the plan's file i (removed by combine)
        split/done/<i>             file i is split
        shards/<k>/                shard k's tables, ids.npy (its id hashes), shard.json
        <table>.parquet            the combined run, as published
        run.json                   StagedRun: counts, fingerprints, versions, stage timings
        audit.json                 the Great Expectations results
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from billing_jobs.contract import RULES_VERSION
from billing_jobs.errors import RunError
from billing_jobs.pricing import invoice_lines
from billing_jobs.tables import constant

STAGED_TABLES = ("conversation_starts", "invoice_lines", "session_anomalies",
                 "quarantined_messages", "accepted_messages")


def new_run_id(day: dt.date, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{day:%Y%m%d}-{now:%H%M%S}-{uuid.uuid4().hex[:8]}"


def code_version() -> str:
    from importlib.metadata import version

    return version("billing-jobs")


@dataclass(frozen=True)
class Plan:
    """What every step of one run shares, fixed when the run starts."""

    run_id: str
    billing_date: dt.date
    started_at: dt.datetime
    source: str
    reference: str
    partitions: dict[str, str | None]  # partition date -> fingerprint (None: no files)
    files: list[str]  # exactly what the shards read: a late file waits for the next run
    shards: int
    # ids with a conflicting copy found by another day's run: id -> partitions (identity.py)
    conflicts: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> str:
        return _to_json(self)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return _from_json(cls, text)


@dataclass(frozen=True)
class StagedRun:
    """A combined run, ready to audit and publish (run.json)."""

    run_id: str
    billing_date: dt.date
    started_at: dt.datetime
    source: str
    reference: str
    reference_hash: str
    partitions: dict[str, str | None]
    shards: int
    counts: dict[str, int]
    input_fingerprint: str
    rules_version: str
    code_version: str
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return _to_json(self)

    @classmethod
    def from_json(cls, text: str) -> StagedRun:
        return _from_json(cls, text)


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    @classmethod
    def create(cls, staging: str | Path, plan: Plan) -> RunFolder:
        folder = cls(Path(staging) / plan.billing_date.isoformat() / plan.run_id)
        folder.path.mkdir(parents=True, exist_ok=True)
        (folder.path / "plan.json").write_text(plan.to_json())
        return folder

    @property
    def plan(self) -> Plan:
        try:
            return Plan.from_json((self.path / "plan.json").read_text())
        except FileNotFoundError:
            raise RunError(f"{self.path}: no plan.json: not a run folder, or its plan step "
                           f"did not finish") from None

    @property
    def gx_project(self) -> Path:
        """The GX project of the staging area (`<staging>/gx`): every audit's results."""
        return self.path.parent.parent / "gx"

    # split pieces ---------------------------------------------------------------------------

    def piece(self, shard: int, i: int) -> Path:
        return self.path / "split" / str(shard) / f"{i}.parquet"

    def mark_split(self, i: int) -> None:
        marker = self.path / "split" / "done" / str(i)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def unsplit(self) -> list[str]:
        plan = self.plan
        if plan.shards == 1:  # one shard reads the files themselves
            return []
        return [f for i, f in enumerate(plan.files)
                if not (self.path / "split" / "done" / str(i)).exists()]

    def remove_split(self) -> None:
        shutil.rmtree(self.path / "split", ignore_errors=True)

    # shards ---------------------------------------------------------------------------------

    def shard_dir(self, shard: int) -> Path:
        return self.path / "shards" / str(shard)

    # the combined run -----------------------------------------------------------------------

    def table(self, name: str) -> Path:
        return self.path / f"{name}.parquet"

    def read(self, columns: dict[str, list[str] | None]) -> dict[str, pa.Table]:
        """The staged tables named in `columns`, each with only the columns listed (None: all)."""
        return {name: pq.read_table(self.table(name), columns=wanted)
                for name, wanted in columns.items()}

    def stage(self, tables: dict[str, pa.Table], counts: dict[str, int],
              reference_hash: str) -> StagedRun:
        """Write the combined run's tables (invoice lines built here from the starts) and its
        run.json."""
        plan = self.plan
        tag = {"run_id": plan.run_id, "billing_date": plan.billing_date}
        starts = tables["conversation_starts"]
        _write(self.table("conversation_starts"), _with(starts, run_id=plan.run_id))
        _write(self.table("invoice_lines"), _with(invoice_lines(starts), run_id=plan.run_id))
        _write(self.table("session_anomalies"), _with(tables["session_anomalies"], **tag))
        _write(self.table("quarantined_messages"), _with(tables["quarantined_messages"], **tag))
        _write(self.table("accepted_messages"), tables["accepted_messages"])
        run = StagedRun(
            run_id=plan.run_id, billing_date=plan.billing_date, started_at=plan.started_at,
            source=plan.source, reference=plan.reference, reference_hash=reference_hash,
            partitions=plan.partitions, shards=plan.shards, counts=counts,
            input_fingerprint=hashlib.sha256(json.dumps(plan.partitions, sort_keys=True)
                                             .encode()).hexdigest(),
            rules_version=RULES_VERSION, code_version=code_version())
        (self.path / "run.json").write_text(run.to_json())
        return run

    @property
    def run(self) -> StagedRun:
        try:
            return StagedRun.from_json((self.path / "run.json").read_text())
        except FileNotFoundError:
            raise RunError(f"{self.path}: not combined yet (no run.json): run the combine "
                           f"step first") from None

    @property
    def staged(self) -> bool:
        return (self.path / "run.json").exists()

    def add_seconds(self, laps: dict[str, float]) -> None:
        run = self.run
        updated = dataclasses.replace(run, seconds={**run.seconds, **laps})
        (self.path / "run.json").write_text(updated.to_json())

    # the audit ------------------------------------------------------------------------------

    @property
    def audit_path(self) -> Path:
        return self.path / "audit.json"

    def audited(self) -> bool:
        return (self.audit_path.exists()
                and json.loads(self.audit_path.read_text()).get("success") is True)


def _to_json(record) -> str:
    """A plan or staged run as JSON: dates and instants in ISO 8601."""
    return json.dumps({**dataclasses.asdict(record),
                       "billing_date": record.billing_date.isoformat(),
                       "started_at": record.started_at.isoformat()}, indent=1)


def _from_json(cls, text: str):
    raw = json.loads(text)
    return cls(**{**raw, "billing_date": dt.date.fromisoformat(raw["billing_date"]),
                  "started_at": dt.datetime.fromisoformat(raw["started_at"])})


def _with(table: pa.Table, **constants) -> pa.Table:
    for name, value in constants.items():
        kind = pa.date32() if isinstance(value, dt.date) else pa.string()
        table = table.append_column(name, constant(value, table.num_rows, kind))
    return table


def _write(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)
