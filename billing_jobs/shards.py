"""Shards: a day is computed in N pieces by a stable hash of `line_id`. Each file of the window is
prepared once (read, validated, contacts keyed, valid rows split by shard) and kept for the next
nights that read it (prepared.py); each shard then reads only its rows, is reconciled and priced
on its own, and the shards are combined into one staged run that is audited and published. An
unsharded day is a plan with one shard, prepared the same way (a steady night of
`billing-jobs run` then reads D-1 and D-2 from their pieces too). Streams never cross shards (a
stream is one line and one contact), so the rules give the same result for every N.

One thing does cross lines: copies of one `message_id` on two lines are a conflicting duplicate
(billing-rules.md), which no single shard can see when the lines fall in different shards. Each
shard therefore keeps the 64-bit hashes of its valid message ids, and combining is two-phase:
the hashes two shards share are conflicting messages, and every shard holding one is computed
again with those ids quarantined as `conflicting_duplicate`, exactly as one unsharded run does.
Equal 64-bit hashes of different ids (about one chance in 10^7 on a 100M-message day) would
quarantine two innocent messages: never a start billed twice, at worst two starts withheld.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs import dedupe, identity, landing, prepared
from billing_jobs.day import PROFILE_GROUPS, Clock, compute, profile_table
from billing_jobs.errors import RunError
from billing_jobs.pseudonym import keyed_contacts, pseudonymised_records
from billing_jobs.reference_data import Reference, load_reference
from billing_jobs.run_folder import Plan, RunFolder, StagedRun
from billing_jobs.tables import (
    THREADS,
    distinct_sorted,
    release_memory,
    side_by_side,
    used_dictionary,
)
from billing_jobs.window import partitions_read as window_of

SHARD_TABLES = ("conversation_starts", "session_anomalies", "quarantined_messages",
                "accepted_messages")


def shard_of(line_id: str | None, shards: int) -> int:
    """Stable across processes, machines and Python versions (unlike hash()); a missing line
    goes to shard 0, where it is quarantined."""
    return 0 if line_id is None else zlib.crc32(line_id.encode()) % shards


# A split task prepares about this many shards' worth of rows: preparing a row costs a fraction
# of computing it, so fewer split tasks than shards pay fewer process starts (~2 s each).
SPLIT_SHARDS_PER_TASK = 2
# A split task prepares its files side by side when none has more rows than this; otherwise one at
# a time (preparing a 4M-row file takes ~1.5 GiB, and a task stays under 4 GiB).
SIDE_BY_SIDE_ROWS = 2_000_000


def split_tasks(rows: list[int], todo: list[int], shards: int, rows_per_shard: float
                ) -> tuple[list[list[int]], bool]:
    """The files each split task prepares (file numbers), for files of `rows` estimated rows of
    which those in `todo` are not prepared yet: one task per SPLIT_SHARDS_PER_TASK shards' rows
    of those, never more tasks than such files or shards; and whether a task may prepare its
    files side by side (none over SIDE_BY_SIDE_ROWS)."""
    if not todo:  # every file prepared before
        return [], False
    wanted = math.ceil(sum(rows[i] for i in todo) / (SPLIT_SHARDS_PER_TASK * rows_per_shard))
    dealt = deal([rows[i] for i in todo], max(1, min(wanted, shards, len(todo))))
    return ([[todo[j] for j in part] for part in dealt],
            max(rows[i] for i in todo) <= SIDE_BY_SIDE_ROWS)


def split(folder: RunFolder, part: int, secret: str) -> list[int]:
    """Split task `part`: prepares each of its files of the plan (`plan.split_parts`: the files
    not prepared yet, dealt out by size so the tasks take about as long) once, whole: read,
    validated, contacts keyed, valid rows split by shard (prepared.py). Each shard then reads
    only its own rows, so the work grows with the day, not with the day times the number of
    shards. A file another run prepared meanwhile is left as it is. Returns the file numbers."""
    plan = folder.plan
    mine = plan.split_files(part)
    if not mine:  # every file prepared before
        return mine
    reference = _planned_reference(plan)
    todo = [i for i in mine if not prepared.Entry(plan.prepared[i]).ready()]

    def one(i: int) -> None:
        _prepare(landing.location(plan.files[i]), prepared.Entry(plan.prepared[i]), plan.shards,
                 reference, secret)

    # small files side by side, one per core; large ones one at a time (memory: split_tasks)
    side_by_side(one, todo, THREADS if plan.split_side_by_side else 1)
    return mine


def _planned_reference(plan: Plan) -> Reference:
    """The reference data a run's split and shard tasks use: the one the plan keyed the
    prepared pieces by (pieces validated with other data would be kept under its key)."""
    reference = load_reference(plan.reference)
    if reference.content_hash != plan.reference_hash:
        raise RunError(f"{plan.reference}: the reference data changed since this run was "
                       f"planned: run the day again")
    return reference


def deal(rows: list[int], parts: int) -> list[list[int]]:
    """File numbers dealt out to `parts` split tasks, largest file first to the least loaded task
    (rows: each file's estimated rows), each task's files in file order."""
    loads, dealt = [0] * parts, [[] for _ in range(parts)]
    for i in sorted(range(len(rows)), key=lambda i: (-rows[i], i)):
        least = min(range(parts), key=lambda k: (loads[k], k))
        loads[least] += rows[i]
        dealt[least].append(i)
    return [sorted(files) for files in dealt]


def _prepare(path, entry: prepared.Entry, shards: int, reference: Reference, secret: str) -> None:
    """One file read and validated whole, as an unsharded run reads it; contacts keyed and
    quarantine records pseudonymised; the valid rows gathered once in shard order, then sliced
    per shard (a gather per shard cost four times as much; gathered from the checked rows, not
    from a filtered copy of them)."""
    raw = landing.read_raw(path)
    rows, valid, quarantined = landing.checked(raw, str(path), landing.partition_date_of(path),
                                               reference.line_owners)
    del raw
    record = quarantined.schema.get_field_index("record")
    quarantined = quarantined.set_column(record, "record", pseudonymised_records(
        quarantined.column(record), secret)).combine_chunks()  # an IPC file has one dictionary
    if shards == 1:  # already in order: no gather
        ordered = rows if valid is None else rows.filter(pa.array(valid))
        ordered, sizes, starts = ordered.combine_chunks(), [ordered.num_rows], [0]
    else:  # the valid rows gathered straight into shard order: one copy of the text, not two
        at = np.arange(rows.num_rows) if valid is None else np.flatnonzero(valid)
        assigned = _shards_of(rows, shards)[at]
        order = at[np.argsort(assigned, kind="stable")]  # by shard, rows ascending within each
        sizes = np.bincount(assigned, minlength=shards)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        ordered = rows.combine_chunks().take(pa.array(order))
    del rows
    # keyed after the gather, which leaves the contacts' dictionary as it is: only it is keyed
    contact = ordered.schema.get_field_index("contact_id")
    ordered = ordered.set_column(contact, "contact_id",
                                 keyed_contacts(ordered.column(contact), secret))
    entry.write(str(path),
                {k: _piece(ordered.slice(starts[k], sizes[k]), contact) for k in range(shards)
                 if sizes[k]}, quarantined)


def _piece(rows: pa.Table, contact: int) -> pa.Table:
    """A shard's rows of a file, with only its own contacts' keys (64 characters each, a
    million per large file) in the contact column's dictionary."""
    return rows.set_column(contact, "contact_id",
                           used_dictionary(rows.column(contact).combine_chunks()))


def _shards_of(valid: pa.Table, shards: int) -> np.ndarray:
    """Each valid row's shard, computed once per distinct line."""
    lines = pc.dictionary_encode(valid.column("line_id").cast(pa.string())).combine_chunks()
    per_value = np.array([shard_of(v, shards) for v in lines.dictionary.to_pylist()] + [0],
                         dtype=np.int32)
    codes = pc.fill_null(lines.indices, len(per_value) - 1).to_numpy(zero_copy_only=False)
    return per_value[codes]


def read_prepared(plan: Plan, shard: int) -> landing.Batch:
    """Shard `shard`'s rows of the plan's files from their prepared pieces, and (shard 0) the
    files' quarantine records: every row read is in exactly one shard's batch."""
    valid, quarantined = [], []
    for file, where in zip(plan.files, plan.prepared, strict=True):
        rows, bad = prepared.Entry(where).read(shard, file)
        if rows is not None:
            valid.append(rows)
        if bad is not None:
            quarantined.append(bad)
    return landing.batch_of(valid, quarantined, plan.files)


# (message ids, (first, last) day of the window) -> {id: billing date of its start} for the ids
# billed outside the window; a start billed inside it decides nothing (identity.Known.decide)
BilledLookup = Callable[[pa.ChunkedArray, tuple[dt.date, dt.date]], dict]


def write_shard(folder: RunFolder, shard: int, billed: BilledLookup | None = None,
                shared: np.ndarray | None = None) -> str:
    """Compute shard `shard` of the day into `shards/<k>/`, from its pieces of the plan's files
    (prepared.py; a one-shard plan's pieces are whole files). `billed` says which of its ids are
    billed outside the run's window, and when (identity.py); `shared`: id hashes other shards
    hold too (combine's second phase)."""
    plan = folder.plan
    clock = Clock()
    if len(plan.prepared) != len(plan.files):
        raise RunError(f"{folder}: planned by an earlier version (no prepared pieces): run the "
                       f"day again")
    reference = _planned_reference(plan)
    batch = read_prepared(plan, shard)
    clock.lap("extract")
    ids = np.zeros(0, dtype=np.uint64)  # sorted unique id hashes, for combine
    if plan.shards > 1:  # hashed once: deduplication and the audit's profile use them too
        batch.hashes = dedupe.id_hashes(batch.valid.column("message_id"))
        ids = distinct_sorted(np.sort(batch.hashes))
    partitions = window_of(plan.billing_date)
    window = (partitions[0], partitions[-1])
    known = identity.Known(
        window=window,
        # every id as read, copies too: the answer is a dict (a unique() of 3M ids took 1.2 s)
        billed=billed(batch.valid.column("message_id"), window) if billed else {},
        conflicts={m: {dt.date.fromisoformat(d) for d in days}
                   for m, days in plan.conflicts.items()})
    tables, counts = compute(reference, plan.billing_date, batch, clock, known, shared)
    out = folder.shard_dir(shard)
    for name in SHARD_TABLES:
        folder.write_table(out / f"{name}.parquet", tables[name])
    folder.save_array(out / "ids.npy", ids)
    clock.lap("stage")
    (out / "shard.json").write_text(json.dumps({"shard": shard, "shards": plan.shards,
                                                "reference_hash": reference.content_hash,
                                                "counts": counts, "seconds": clock.laps}))
    del batch, tables
    release_memory()
    return str(out)


def combine(folder: RunFolder, billed: BilledLookup | None = None) -> StagedRun:
    """Merge the shards into one staged run in `folder` (plan.json + run.json + tables); shards
    that share message ids are computed again first, with those ids as conflicting."""
    plan = folder.plan
    parts = [folder.shard_dir(k) for k in range(plan.shards)]
    missing = [str(p) for p in parts if not (p / "shard.json").exists()]
    if missing:
        raise RunError(f"shards not written: {', '.join(missing)}")
    infos = [json.loads((p / "shard.json").read_text()) for p in parts]
    if len({i["reference_hash"] for i in infos}) != 1:
        raise RunError("the shards were computed with different reference data; write them again")
    with folder.local_copies([p / "ids.npy" for p in parts]) as ids:
        shared = shared_ids(ids)
        rewrite = [k for k, mine in enumerate(ids)
                   if len(shared) and np.isin(shared, np.load(mine, mmap_mode="r")).any()]
    for k in rewrite:
        write_shard(folder, k, billed, shared)
    if rewrite:
        infos = [json.loads((p / "shard.json").read_text()) for p in parts]
    tables = {name: pa.concat_tables([folder.read_table(p / f"{name}.parquet") for p in parts])
              for name in SHARD_TABLES}
    tables["accepted_messages"] = _merged_profile(folder, parts)
    counts: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for info in infos:
        for key, value in info["counts"].items():
            counts[key] = counts.get(key, 0) + value
        for key, value in info.get("seconds", {}).items():
            seconds[key] = round(seconds.get(key, 0.0) + value, 3)
    run = folder.stage(tables, counts, infos[0]["reference_hash"])
    folder.add_seconds(seconds)
    return run


def shared_ids(paths: list[Path]) -> np.ndarray:
    """The id hashes found in more than one shard, sorted. Each shard's hashes are sorted and
    unique, so the shards are compared one range of hash values at a time, memory-mapped: a
    100M-message day never holds all its 800 MB of hashes at once."""
    arrays = [np.load(p, mmap_mode="r") for p in paths]
    edges = [np.uint64(b << 58) for b in range(64)] + [None]  # 64 ranges of the top 6 bits
    shared = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        pieces = []
        for a in arrays:
            start = np.searchsorted(a, lo)
            end = len(a) if hi is None else np.searchsorted(a, hi)
            pieces.append(np.asarray(a[start:end]))
        merged = np.sort(np.concatenate(pieces)) if pieces else np.zeros(0, np.uint64)
        shared.append(distinct_sorted(merged[1:][merged[1:] == merged[:-1]]))
    return np.concatenate(shared) if shared else np.zeros(0, np.uint64)


def _merged_profile(folder: RunFolder, parts: list) -> pa.Table:
    """The accepted-messages profile of the whole day from the shards' profiles: counts add up,
    and so do distinct ids, since no id is in two shards (checked before). A few rows each,
    summed in Python and laid out by the same `profile_table` as a shard's."""
    counts: dict[tuple, int] = {}
    totals = dict.fromkeys(("rows", "distinct_message_ids", "missing_required_values"), 0)
    for part in parts:
        rows = folder.read_table(part / "accepted_messages.parquet").to_pylist()
        for row in rows:
            group = tuple(row[name] for name in PROFILE_GROUPS)
            counts[group] = counts.get(group, 0) + row["messages"]
        for name in totals:
            totals[name] += rows[0][name]
    return profile_table(counts, totals)
