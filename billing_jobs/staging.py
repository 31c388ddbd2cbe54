"""How long staged runs are kept. Every run writes `<staging>/<day>/<run_id>/` (its tables, its
shards, run.json, audit.json) before publishing; nothing reads a run folder once it is published
or has failed, but an operator may want to look at a failed one. Without pruning, a sharded run
leaves about 250 MB behind per 10M messages (2.5 GB for a 100M-message day) and backfills fill
the disk.

Runs older than `staging_keep_days` are removed, and so are the prepared pieces (prepared.py) that
no plan has used for as long; the GX project (`<staging>/gx` by default: every
audit's results and the Data Docs) and anything that is not a run folder are left alone. The
staging area may be an fsspec URL (run_folder.py); it is pruned the same way."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from billing_jobs import prepared
from billing_jobs.landing import location
from billing_jobs.run_folder import remove

DAY_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class StagedRun:
    folder: Path  # or a UPath, when the staging area is a URL
    started_at: dt.datetime  # of a prepared file's pieces: when a plan last used them
    bytes: int
    kind: str = "run"  # or "prepared"


def staged_runs(staging: str | Path) -> list[StagedRun]:
    """Every run folder under `staging` (a folder or an fsspec URL), oldest first. A run's age is
    the `started_at` of its run.json or plan.json, else, on local disk, the folder's modification
    time; an object store has no folders, so there a folder without either is not a run's."""
    runs = []
    root = location(staging)
    if not root.is_dir():
        return []
    for day in sorted((p for p in root.iterdir() if p.is_dir() and DAY_FOLDER.match(p.name)),
                      key=str):
        for folder in sorted((p for p in day.iterdir() if p.is_dir()), key=str):
            started = _started_at(folder)
            if started is not None:
                runs.append(StagedRun(folder, started, _size(folder)))
    return sorted(runs, key=lambda r: (r.started_at, str(r.folder)))


def prune(staging: str | Path, keep_days: float, now: dt.datetime | None = None,
          dry_run: bool = False) -> list[StagedRun]:
    """Remove the runs that started more than `keep_days` ago (at least one day: a run in progress
    is never that old) and the prepared pieces no plan used for as long; returns them."""
    if keep_days < 1:
        raise ValueError(f"keep_days must be at least 1, got {keep_days}")
    now = now or dt.datetime.now(dt.timezone.utc)
    old = [r for r in staged_runs(staging) if r.started_at < now - dt.timedelta(days=keep_days)]
    pieces = [StagedRun(e.path, e.last_used() or now, _size(e.path), "prepared")
              for e in prepared.stale(str(staging), keep_days, now)]
    if not dry_run:
        for entry in pieces:
            remove(entry.folder)
        for run in old:
            if isinstance(run.folder, Path):
                shutil.rmtree(run.folder)
                if not any(run.folder.parent.iterdir()):
                    run.folder.parent.rmdir()
            else:  # an object store: the day's "folder" goes with its last object
                run.folder.fs.rm(run.folder.path, recursive=True)
    return old + pieces


def _started_at(folder) -> dt.datetime | None:
    for name in ("run.json", "plan.json"):
        try:
            started = json.loads((folder / name).read_text())["started_at"]
            return dt.datetime.fromisoformat(started).astimezone(dt.timezone.utc)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if isinstance(folder, Path):
        return dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.timezone.utc)
    return None


def _size(folder) -> int:
    if isinstance(folder, Path):
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return folder.fs.du(folder.path)
