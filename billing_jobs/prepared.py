"""Prepared pieces: a landing file of a sharded day read, validated and pseudonymised once, its
valid rows split by shard (shards.py), and kept in the staging area under a key of everything
that decides them: the file's place and bytes, the reference data, the contact-key secret, the
number of shards and the code that prepares them. A night at steady traffic therefore prepares
only D's files; D-1's and D-2's were prepared by the two nights before. A file that changes, a
new reference or another shard count is a new key, prepared again.

Nothing here holds a phone number: contact ids are replaced by their `contact_key` and
quarantine records are pseudonymised, as the warehouse keeps them, before anything is written.
An entry that no plan has used for `staging_keep_days` is pruned with the staged runs.

    <staging>/prepared/<key>/
        entry.json          the file, when written and last used; written last: the pieces are whole
        <k>.arrow           shard k's valid rows of the file (`contact_id` holds the contact_key)
        quarantined.arrow   the file's quarantine records (shard 0 reads them)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from functools import cache
from importlib import resources
from pathlib import Path

import pyarrow as pa

from billing_jobs.errors import RunError
from billing_jobs.run_folder import place, read_arrow, write_arrow, write_whole

FOLDER = "prepared"
# the modules whose code decides a prepared piece: a change to any of them is a new key
DECIDING = ("contract.py", "landing.py", "pseudonym.py", "prepared.py", "shards.py")


@cache
def code_hash() -> str:
    digest = hashlib.sha256()
    for name in DECIDING:
        digest.update(resources.files("billing_jobs").joinpath(name).read_bytes())
    return digest.hexdigest()


def entry_place(staging: str, file: str, digest: str, reference_hash: str, secret: str,
                shards: int) -> str:
    """Where the prepared pieces of `file` (content hash `digest`) are kept. The secret enters
    as an HMAC of a fixed text, never itself."""
    key_id = hmac.new(secret.encode(), b"billing-jobs prepared pieces", "sha256").hexdigest()
    key = hashlib.sha256(json.dumps([file, digest, reference_hash, key_id, shards, code_hash()])
                         .encode()).hexdigest()[:40]
    return str(place(staging) / FOLDER / key)


class Entry:
    """The prepared pieces of one file."""

    def __init__(self, where: str) -> None:
        self.path = place(where)

    def _info(self) -> dict | None:
        try:
            return json.loads((self.path / "entry.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _write_info(self, info: dict) -> None:
        write_whole(self.path / "entry.json", lambda sink: sink.write(json.dumps(info).encode()))

    def ready(self) -> bool:
        return self._info() is not None

    def use(self, now: dt.datetime) -> bool:
        """True if the pieces are ready, and then marked as used `now` (pruning counts from
        there); False if they must be prepared."""
        info = self._info()
        if info is None:
            return False
        self._write_info({**info, "used_at": now.isoformat()})
        return True

    def write(self, file: str, pieces: dict[int, pa.Table], quarantined: pa.Table) -> None:
        """Every piece, then entry.json: a task that dies half-way leaves an entry that is not
        ready, prepared again by the next run that needs it. Two runs preparing one file at once
        (a backfill's days share files) write the same bytes, each file replaced whole, and an
        entry once ready never stops being so: a shard of either run reads whole pieces."""
        self.path.mkdir(parents=True, exist_ok=True)
        for k, table in pieces.items():
            write_arrow(self.path / f"{k}.arrow", table)
        write_arrow(self.path / "quarantined.arrow", quarantined)
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        self._write_info({"file": file, "created_at": now, "used_at": now,
                          "rows": {str(k): t.num_rows for k, t in pieces.items()},
                          "quarantined": quarantined.num_rows})

    def read(self, shard: int, file: str) -> tuple[pa.Table | None, pa.Table | None]:
        """Shard `shard`'s valid rows of the file (None: it has none) and, for shard 0, the file's
        quarantine records."""
        gone = RunError(f"{file}: not prepared (its split task has not run, or its pieces were "
                        f"pruned since the plan): run the split tasks again")
        info = self._info()
        if info is None:
            raise gone
        try:
            valid = (read_arrow(self.path / f"{shard}.arrow")
                     if info["rows"].get(str(shard)) else None)
            quarantined = read_arrow(self.path / "quarantined.arrow") if shard == 0 else None
        except FileNotFoundError:
            raise gone from None
        return valid, quarantined

    def last_used(self) -> dt.datetime | None:
        """When a plan last used the entry (or it was written); for one without entry.json
        (a task died before writing it) the folder's time on local disk, else None."""
        info = self._info() or {}
        when = info.get("used_at") or info.get("created_at")
        if when:
            return dt.datetime.fromisoformat(when)
        if isinstance(self.path, Path):
            return dt.datetime.fromtimestamp(self.path.stat().st_mtime, dt.timezone.utc)
        return None


def stale(staging: str, keep_days: float, now: dt.datetime) -> list[Entry]:
    """The entries no plan has used for `keep_days`, and, on local disk, those a task left
    half-written that are as old (on an object store such pieces stay until a run of their file
    prepares it again)."""
    root = place(staging) / FOLDER
    if not root.is_dir():
        return []
    old = []
    for path in sorted((p for p in root.iterdir() if p.is_dir()), key=str):
        entry = Entry(str(path))
        used = entry.last_used()  # None: being written now, or left half-written on a store
        if used is not None and used < now - dt.timedelta(days=keep_days):
            old.append(entry)
    return old
