"""Array operations the hot path needs and pyarrow or numpy do slowly.

A day is read as many chunks (files x row groups). pyarrow's `take` on a chunked column
concatenates all chunks first, which copies every string of the day for a handful of rows; these
helpers take from each chunk instead. Dictionary codes are read straight from the chunks. And
numpy 2.4's `np.unique` hashes: ~5 s for 5M random 64-bit values, where sorting takes 0.06 s."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

T = TypeVar("T")
R = TypeVar("R")
# threads a step may run side by side: the cores this process may use, at most 4 (each thread
# holds its own share of a day in memory)
THREADS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                     else os.cpu_count() or 1))
PARALLEL_FROM = 200_000  # rows below which one thread is faster than starting several


def _buffers_from_jemalloc() -> None:
    """Arrow's buffers come from jemalloc, not the wheel's default (mimalloc), unless
    ARROW_DEFAULT_MEMORY_POOL says otherwise: mimalloc hands freed pages back and faults them in
    again: a quarter of a 1M run's CPU time was the kernel's (measured: docs/decisions.md).
    Set on the first import of the hot path's helpers, before a day is read; a buffer made
    earlier stays in its own pool."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    with contextlib.suppress(NotImplementedError):  # a pyarrow built without jemalloc
        pa.set_memory_pool(pa.jemalloc_memory_pool())


_buffers_from_jemalloc()


def side_by_side(work: Callable[[T], R], items: Iterable[T], threads: int = THREADS) -> list[R]:
    """`[work(x) for x in items]` on up to `threads` threads (Arrow's and numpy's kernels release
    the GIL): results in the order of `items`, and the first failure in that order is raised."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        return [work(x) for x in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(work, items))


def read_parquet(source, columns: list[str] | None = None,
                 read_dictionary: list[str] | None = None, filesystem=None) -> pa.Table:
    """One parquet file, whole or some of its columns. `pq.read_table` reads even one file through
    pyarrow.dataset, whose import costs every task process ~0.3 s; a file needs only
    ParquetFile."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(source, read_dictionary=read_dictionary, filesystem=filesystem) as file:
        return file.read(columns=columns)


def take_column(column: pa.ChunkedArray, indices: np.ndarray) -> pa.Array:
    """`column.take(indices)` without concatenating the chunks of `column`."""
    indices = np.asarray(indices, dtype=np.int64)
    chunks = [c for c in column.chunks if len(c)]
    if len(chunks) <= 1 or len(indices) == 0:
        source = chunks[0] if chunks else pa.array([], column.type)
        return source.take(pa.array(indices)) if len(indices) else source.slice(0, 0)
    bounds = np.cumsum([0] + [len(c) for c in chunks])
    which = np.searchsorted(bounds, indices, side="right") - 1
    by_chunk = np.argsort(which, kind="stable")
    starts = np.searchsorted(which[by_chunk], np.arange(len(chunks) + 1))
    pieces = []
    for k, chunk in enumerate(chunks):
        local = indices[by_chunk[starts[k]:starts[k + 1]]] - bounds[k]
        if len(local):
            piece = chunk.take(pa.array(local))
            if pa.types.is_dictionary(piece.type):  # don't unify whole dictionaries for a few rows
                piece = pc.cast(piece, piece.type.value_type)
            pieces.append(piece)
    grouped = pa.concat_arrays(pieces)
    if pa.types.is_dictionary(column.type):
        grouped = pc.dictionary_encode(grouped)
    back = np.empty_like(by_chunk)
    back[by_chunk] = np.arange(len(by_chunk))
    return grouped.take(pa.array(back))


def take_rows(table: pa.Table, indices: np.ndarray, columns: list[str] | None = None) -> pa.Table:
    """`table.take(indices)` (optionally of some columns) without concatenating chunks."""
    names = columns or table.column_names
    return pa.table({c: take_column(table.column(c), indices) for c in names})


def dictionary_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Integer codes of every row (not to be written to) and the dictionary they index. Chunks that
    do not already share one dictionary are unified first; plain string columns are encoded."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    chunks = [c for c in column.chunks if len(c)]
    if not chunks:
        return np.zeros(0, dtype=np.int32), pa.array([], column.type.value_type)
    if any(not c.dictionary.equals(chunks[0].dictionary) for c in chunks[1:]):
        column = pa.table({"c": column}).unify_dictionaries().column("c")
        chunks = [c for c in column.chunks if len(c)]
    codes = [pc.fill_null(c.indices, -1).to_numpy(zero_copy_only=False) for c in chunks]
    # one chunk (a day after landing._compact): its indices as they are, read-only, not a copy
    return (codes[0] if len(codes) == 1 else np.concatenate(codes)), chunks[0].dictionary


def used_dictionary(array: pa.DictionaryArray) -> pa.DictionaryArray:
    """The same values with a dictionary of only those used (a slice of a large array keeps
    all of its dictionary, which a file written from it would hold in full)."""
    codes = pc.fill_null(array.indices, -1).to_numpy(zero_copy_only=False)
    present = np.zeros(len(array.dictionary) + 1, dtype=bool)  # the last slot: null rows
    present[codes] = True  # one pass, no sort
    used = np.flatnonzero(present[:-1])
    new_code = np.cumsum(present[:-1], dtype=np.int32) - 1
    indices = pa.array(new_code[codes], mask=codes < 0)
    return pa.DictionaryArray.from_arrays(indices, array.dictionary.take(pa.array(used)))


def release_memory() -> None:
    """Hand memory Arrow's allocator keeps for reuse back to the system: without it a process
    that computes several shards in a row holds every shard's peak (seen: 2.3 GB kept per shard,
    8 GB for a 100M-message day in one process)."""
    pa.default_memory_pool().release_unused()


def repeated(values: np.ndarray) -> np.ndarray:
    """The values that occur more than once, sorted, by sorting (see the module docstring)."""
    ordered = np.sort(values)
    return distinct_sorted(ordered[1:][ordered[1:] == ordered[:-1]])


def first_of_runs(ordered: np.ndarray) -> np.ndarray:
    """Positions where a run of equal values starts in an ordered array."""
    starts = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    return np.flatnonzero(starts)


def constant(value, n: int, kind: pa.DataType) -> pa.Array:
    """`n` copies of `value`: `pa.array([value] * n)` builds n Python references first, and
    `pa.repeat` appends a string n times; a string column is laid out directly instead."""
    if kind == pa.string() and value is not None:
        encoded = value.encode()
        if n * len(encoded) < 2**31 - 1:
            offsets = np.arange(n + 1, dtype=np.int32) * np.int32(len(encoded))
            return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(encoded * n))
    return pa.repeat(pa.scalar(value, kind), n)


def constant_dictionary(value: str, n: int) -> pa.DictionaryArray:
    """`n` copies of `value` as a one-entry dictionary: a file's name on each of its rows, stored
    once, so filters and takes of millions of rows do not copy it."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)),
                                          pa.array([value], pa.string()))


# the process's in-memory DuckDB database (in_memory_duckdb), opened on first use
_DATABASE = None
_DATABASE_LOCK = threading.Lock()


def _close_database() -> None:
    """Before a fork: a child that inherits an open database, whose threads stay in the parent,
    crashes when it lets go of it (seen: SIGSEGV at exit, a hang opening another), so none is
    open across a fork; parent and child reopen on their next use."""
    global _DATABASE
    with _DATABASE_LOCK:
        if _DATABASE is not None:
            _DATABASE, database = None, _DATABASE
            database.close()


os.register_at_fork(before=_close_database)


@contextlib.contextmanager
def in_memory_duckdb():
    """A connection to the process's in-process DuckDB database, which never spills to disk: what
    it holds may include contacts (phone numbers), which must not leave the landing zone, not even
    as a temp file. One database per process, a connection per use: opening a database per use
    cost a split 15-50 ms per file (docs/decisions.md, "Engine"). What a connection registers is
    its own and goes with it."""
    global _DATABASE
    import duckdb

    with _DATABASE_LOCK:
        if _DATABASE is None:
            _DATABASE = duckdb.connect(config={"temp_directory": ""})
        con = _DATABASE.cursor()
    try:
        yield con
    finally:
        con.close()


def distinct_sorted(values: np.ndarray) -> np.ndarray:
    """`np.unique(values)` by sorting (see the module docstring)."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]
