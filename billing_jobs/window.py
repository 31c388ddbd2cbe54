"""The input window of a billing date: a run for D reads partitions D-2, D-1 and D
(billing-rules.md, Days). What a run read is recorded as each partition's fingerprint, which is
what restatement compares later."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from billing_jobs import landing
from billing_jobs.errors import RunError

LOOK_BACK_DAYS = 2


def partitions_read(day: dt.date) -> list[dt.date]:
    return [day - dt.timedelta(days=k) for k in range(LOOK_BACK_DAYS, -1, -1)]


_BLOCK = 1 << 20  # bytes hashed at a time


def fingerprint(files: list[Path]) -> str:
    """Content hash of a partition's files (names and bytes): the SHA-256 of each name, a NUL
    and the file's bytes, one file after the other in name order."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def fingerprint_and_digests(files: list[Path]) -> tuple[str, dict[Path, str]]:
    """The partition's fingerprint and, read in the same pass, each file's own content hash
    (what a file's prepared pieces are kept under: shards.py). The two hashes of a block run
    side by side (hashlib lets go of the GIL): the plan of a 10M-message day hashes its
    window's 0.5 GB twice."""
    digest, digests = hashlib.sha256(), {}
    with ThreadPoolExecutor(1) as helper:
        for path in sorted(files, key=lambda p: p.name):
            digest.update(path.name.encode() + b"\0")
            own = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(_BLOCK), b""):
                    beside = helper.submit(own.update, block)
                    digest.update(block)
                    beside.result()
            digests[path] = own.hexdigest()
    return digest.hexdigest(), digests


def require_partition(source: str, day: dt.date) -> Path:
    """The landing zone, once D's partition is known to exist: a missing partition is refused,
    never published as an empty day."""
    root = landing.location(source)
    folder = root / "messages" / f"date={day}"
    if not folder.is_dir():
        raise RunError(f"no partition for {day}: {folder} does not exist (nothing published; "
                       f"a day that really had no messages needs an empty partition folder)")
    return root


def listing(source: Path, day: dt.date) -> list[Path]:
    """The files of partitions D-2..D."""
    return [f for part in partitions_read(day) for f in landing.partition_files(source, part)]


def files_and_fingerprints(source: Path, day: dt.date
                           ) -> tuple[list[Path], dict[str, str | None], list[str]]:
    """The files of partitions D-2..D, each partition's fingerprint (None: no files) and each
    file's content hash, in the files' order."""
    files, partitions, digests = [], {}, {}
    for part in partitions_read(day):
        found = landing.partition_files(source, part)
        files += found
        partitions[part.isoformat()], own = fingerprint_and_digests(found) if found else (None, {})
        digests.update(own)
    return files, partitions, [digests[f] for f in files]


def shards_for(rows: int, rows_per_shard: float) -> int:
    """One shard per `rows_per_shard` rows of the window (landing.estimated_rows): what a shard
    holds in memory is its share of the whole window, not of D alone (a steady 100M-message day
    reads 300M rows)."""
    return max(1, math.ceil(rows / rows_per_shard))
