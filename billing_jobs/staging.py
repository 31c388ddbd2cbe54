"""How long staged runs are kept. Every run writes `<staging>/<day>/<run_id>/` (its tables, its
shards, run.json, audit.json) before publishing; nothing reads a run folder once it is published
or has failed, but an operator may want to look at a failed one. Without pruning, a sharded run
leaves about 250 MB behind per 10M messages (2.5 GB for a 100M-message day) and backfills fill
the disk.

Runs older than `staging_keep_days` are removed; the GX project (`<staging>/gx`: every audit's
results and the Data Docs) and anything that is not a run folder are left alone."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

DAY_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class StagedRun:
    folder: Path
    started_at: dt.datetime
    bytes: int


def staged_runs(staging: str | Path) -> list[StagedRun]:
    """Every run folder under `staging`, oldest first. A run's age is the `started_at` of its
    run.json or plan.json, else the folder's modification time."""
    runs = []
    root = Path(staging)
    if not root.is_dir():
        return []
    for day in sorted(p for p in root.iterdir() if p.is_dir() and DAY_FOLDER.match(p.name)):
        for folder in sorted(p for p in day.iterdir() if p.is_dir()):
            runs.append(StagedRun(folder, _started_at(folder), _size(folder)))
    return sorted(runs, key=lambda r: (r.started_at, str(r.folder)))


def prune(staging: str | Path, keep_days: float, now: dt.datetime | None = None,
          dry_run: bool = False) -> list[StagedRun]:
    """Remove the runs that started more than `keep_days` ago (at least one day: a run in progress
    is never that old); returns them."""
    if keep_days < 1:
        raise ValueError(f"keep_days must be at least 1, got {keep_days}")
    now = now or dt.datetime.now(dt.timezone.utc)
    old = [r for r in staged_runs(staging) if r.started_at < now - dt.timedelta(days=keep_days)]
    if not dry_run:
        for run in old:
            shutil.rmtree(run.folder)
            if not any(run.folder.parent.iterdir()):
                run.folder.parent.rmdir()
    return old


def _started_at(folder: Path) -> dt.datetime:
    for name in ("run.json", "plan.json"):
        try:
            started = json.loads((folder / name).read_text())["started_at"]
            return dt.datetime.fromisoformat(started).astimezone(dt.timezone.utc)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.timezone.utc)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
