"""The run folder: everything one run of one billing date stages between its steps, as one typed
object. Every step reads and writes it through `RunFolder`; nothing else knows its layout.

The staging area is a local folder or any fsspec URL (`s3://…`, `gs://…`, `file://…`), like the
landing zone: a local one is read and written by pyarrow and the OS directly, as before; a URL
through its filesystem, so workers that share only an object store can hand a run on. What must
be local (the GX project; DuckDB's read of the starts at publish; the memory-mapped id hashes of
combine) gets a local path or a local copy from here.

    <staging>/<day>/<run_id>/
        plan.json                  Plan: the run, the files it reads, their fingerprints, shards,
                                   where each file's prepared pieces are (prepared.py)
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
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from billing_jobs.contract import RULES_VERSION
from billing_jobs.errors import RunError
from billing_jobs.landing import arrow_source, location
from billing_jobs.pricing import invoice_lines
from billing_jobs.tables import constant, read_parquet

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
    # where each file's prepared pieces are kept (prepared.py), and the reference data's hash
    # they are kept under
    prepared: list[str] = field(default_factory=list)
    reference_hash: str = ""
    # the file numbers each split task prepares, dealt out by size: only the files whose pieces
    # were not prepared already (shards.split_tasks), and whether a task may prepare its files
    # side by side (none is large; False in a plan of an earlier version: one at a time)
    split_parts: list[list[int]] = field(default_factory=list)
    split_side_by_side: bool = False

    @property
    def split_tasks(self) -> int:
        """How many split tasks this plan maps (one that does nothing when nothing is split)."""
        return max(1, len(self.split_parts))

    def split_files(self, part: int) -> list[int]:
        """The numbers of the files split task `part` prepares."""
        return self.split_parts[part] if part < len(self.split_parts) else []

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
        self.path = place(path)  # a Path on local disk, else a UPath over the URL's filesystem

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    @classmethod
    def create(cls, staging: str | Path, plan: Plan) -> RunFolder:
        folder = cls(place(staging) / plan.billing_date.isoformat() / plan.run_id)
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

    # files ----------------------------------------------------------------------------------

    def write_table(self, path, table: pa.Table) -> None:
        """A parquet file of this folder that no reader sees half-written."""
        write_whole(path, lambda sink: pq.write_table(table, sink))

    def read_table(self, path, columns: list[str] | None = None) -> pa.Table:
        where = arrow_source(path)
        return read_parquet(where["source"], columns=columns, filesystem=where.get("filesystem"))

    def save_array(self, path, array: np.ndarray) -> None:
        if isinstance(path, Path):
            np.save(path, array)
        else:
            with path.open("wb") as f:
                np.save(f, array)

    @contextmanager
    def local_copies(self, paths: list) -> Iterator[list[Path]]:
        """Local paths of these files for the readers that need one (DuckDB's read of a staged
        table, memory-mapped arrays): the files themselves on local disk, else copies in a
        temporary folder that is removed afterwards."""
        if all(isinstance(p, Path) for p in paths):
            yield list(paths)
            return
        with tempfile.TemporaryDirectory(prefix="billing-staged-") as scratch:
            copies = []
            for n, path in enumerate(paths):
                copy = Path(scratch) / f"{n}-{path.name}"
                path.fs.get_file(path.path, str(copy))
                copies.append(copy)
            yield copies

    # shards ---------------------------------------------------------------------------------

    def shard_dir(self, shard: int):
        return self.path / "shards" / str(shard)

    # the combined run -----------------------------------------------------------------------

    def table(self, name: str):
        return self.path / f"{name}.parquet"

    def read(self, columns: dict[str, list[str] | None]) -> dict[str, pa.Table]:
        """The staged tables named in `columns`, each with only the columns listed (None: all)."""
        return {name: self.read_table(self.table(name), wanted)
                for name, wanted in columns.items()}

    def stage(self, tables: dict[str, pa.Table], counts: dict[str, int],
              reference_hash: str) -> StagedRun:
        """Write the combined run's tables (invoice lines built here from the starts) and its
        run.json."""
        plan = self.plan
        tag = {"run_id": plan.run_id, "billing_date": plan.billing_date}
        starts = tables["conversation_starts"]
        self.write_table(self.table("conversation_starts"), _with(starts, run_id=plan.run_id))
        self.write_table(self.table("invoice_lines"),
                         _with(invoice_lines(starts), run_id=plan.run_id))
        self.write_table(self.table("session_anomalies"),
                         _with(tables["session_anomalies"], **tag))
        self.write_table(self.table("quarantined_messages"),
                         _with(tables["quarantined_messages"], **tag))
        self.write_table(self.table("accepted_messages"), tables["accepted_messages"])
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
    def audit_path(self):
        return self.path / "audit.json"

    def audited(self) -> bool:
        return (self.audit_path.exists()
                and json.loads(self.audit_path.read_text()).get("success") is True)


def write_arrow(path, table: pa.Table) -> None:
    """Arrow IPC with LZ4 (prepared pieces, prepared.py): several times faster to write and read
    back than parquet."""
    def write(sink) -> None:
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        with pa.ipc.new_file(sink, table.schema, options=options) as writer:
            writer.write_table(table)

    write_whole(path, write)


def read_arrow(path) -> pa.Table:
    with (pa.OSFile(str(path)) if isinstance(path, Path) else path.open("rb")) as source:
        return pa.ipc.open_file(source).read_all()


def remove(path) -> None:
    """A folder and everything in it, local or on an object store; gone already is fine."""
    if isinstance(path, Path):
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        path.fs.rm(path.path, recursive=True)
    except FileNotFoundError:
        pass


def write_whole(path, write: Callable) -> None:
    """`write(sink)` into the file at `path` so that no reader sees it half-written: on local
    disk into a file aside, then renamed (a retried task never leaves half a file); an object
    store shows an object only once it is whole."""
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # one per writer
        with pa.OSFile(str(aside), "wb") as sink:
            write(sink)
        aside.rename(path)
    else:
        with path.open("wb") as sink:
            write(sink)


def place(path: str | Path):
    """A local path for local disk (a `file://` URL too), else a UPath over the URL's
    filesystem (landing.location)."""
    place = location(path)
    if not isinstance(place, Path) and place.protocol in ("file", "local"):
        return Path(place.path)
    return place


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
