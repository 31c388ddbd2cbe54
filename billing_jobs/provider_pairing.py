"""Pairing our conversation starts with WhatsApp's conversations (billing-rules.md, "Provider
reconciliation"), twice: `pair_reference` reads like the spec, pass by pass and item by item;
`pair_indices` is the one the job runs, on Arrow tables, one vectorised lookup per pass. The
tests hold them equal on arbitrary inputs (tests/test_provider.py).

Both take only what can be paired: our starts, and WhatsApp's billable conversations of the two
matched types (the caller keeps the others out and reports them). Stream = (line_id,
contact_key); times are UTC nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs.contract import BUSINESS_INITIATED
from billing_jobs.tables import distinct_sorted, in_memory_duckdb, repeated

MINUTE = 60 * 10**9
DAY = 24 * 60 * MINUTE
DEFAULT_TOLERANCE = 10 * MINUTE
MATCHED, TYPE_MISMATCH = "matched", "type_mismatch"


@dataclass(frozen=True)
class Start:
    message_id: str
    line_id: str
    contact_key: str
    conversation_type: str
    started_at: int


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    line_id: str
    contact_key: str
    conversation_type: str
    opened_at: int
    message_id: str | None


def window(start: Start, tolerance: int) -> tuple[int, int]:
    """[lo, hi) in nanoseconds: a business-initiated start pairs with a conversation opened from
    a minute before it to `tolerance` after it (inclusive); a user-initiated one up to 24 h after
    it (exclusive)."""
    if start.conversation_type == BUSINESS_INITIATED:
        return start.started_at - MINUTE, start.started_at + tolerance + 1
    return start.started_at - MINUTE, start.started_at + DAY


def pair_reference(starts: list[Start], conversations: list[Conversation],
                   tolerance: int = DEFAULT_TOLERANCE) -> list[tuple[str, str, str]]:
    """(message_id, conversation_id, kind) of every pair; kind `matched` or `type_mismatch`."""
    pairs: list[tuple[str, str, str]] = []
    free_starts = sorted(starts, key=lambda s: (s.started_at, s.message_id))
    free = sorted(conversations, key=lambda c: (c.opened_at, c.conversation_id))

    def take(s: Start, c: Conversation) -> None:
        kind = MATCHED if s.conversation_type == c.conversation_type else TYPE_MISMATCH
        pairs.append((s.message_id, c.conversation_id, kind))
        free.remove(c)

    # 1. by message: the conversation carries the message id of our start, same stream
    left = []
    for s in free_starts:
        c = next((c for c in free if c.message_id == s.message_id
                  and (c.line_id, c.contact_key) == (s.line_id, s.contact_key)), None)
        if c is None:
            left.append(s)
        else:
            take(s, c)
    # 2. by stream and time, same type; 3. what is left, any type
    for same_type in (True, False):
        still = []
        for s in left:
            lo, hi = window(s, tolerance)
            c = next((c for c in free if (c.line_id, c.contact_key) == (s.line_id, s.contact_key)
                      and lo <= c.opened_at < hi
                      and (not same_type or c.conversation_type == s.conversation_type)), None)
            if c is None:
                still.append(s)
            else:
                take(s, c)
        left = still
    return pairs


def pair(starts: pa.Table, conversations: pa.Table,
         tolerance: int = DEFAULT_TOLERANCE) -> list[tuple[str, str, str]]:
    """`pair_reference` on tables (starts: message_id, line_id, contact_key, conversation_type,
    started_at; conversations: conversation_id, line_id, contact_key, conversation_type,
    opened_at, message_id), as (message_id, conversation_id, kind) tuples."""
    s_idx, c_idx = pair_indices(starts, conversations, tolerance)
    if len(s_idx) == 0:
        return []
    s_ids = starts.column("message_id").take(pa.array(s_idx)).to_pylist()
    c_ids = conversations.column("conversation_id").take(pa.array(c_idx)).to_pylist()
    same = pair_kinds(starts, conversations, s_idx, c_idx)
    return [(m, c, MATCHED if k else TYPE_MISMATCH) for m, c, k in zip(s_ids, c_ids, same)]


def pair_kinds(starts: pa.Table, conversations: pa.Table, s_idx: np.ndarray,
               c_idx: np.ndarray) -> np.ndarray:
    """True where a pair's types agree (`matched`), False for a `type_mismatch`."""
    s_type = starts.column("conversation_type").take(pa.array(s_idx))
    c_type = conversations.column("conversation_type").take(pa.array(c_idx))
    return _bools(pc.equal(s_type, c_type))


def pair_indices(starts: pa.Table, conversations: pa.Table,
                 tolerance: int = DEFAULT_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """The pairs as row numbers into `starts` and `conversations`.

    Each pass is one vectorised step: every start still free looks up the earliest free
    conversation of its group (stream and message id; stream and type; stream) inside its window,
    by one binary search over the conversations sorted by (group, opened_at, conversation_id).
    Where no two starts of a group want the same conversation, that lookup is exactly what the
    reference's item-by-item greedy takes; the few groups where two starts compete are swept in
    order, item by item, as the reference does."""
    n_s, n_c = starts.num_rows, conversations.num_rows
    none = np.zeros(0, dtype=np.int64)
    if n_s == 0 or n_c == 0:
        return none, none
    s_at = _ns(starts.column("started_at"))
    c_at = _ns(conversations.column("opened_at"))
    codes = _group_codes(starts, conversations)
    s_stream, c_stream = codes["stream"]
    s_type, c_type = codes["type"]
    s_group, c_group = codes["by_message"]
    # processing order: starts earliest first, then by message id; conversations likewise
    s_order = _sort(starts, "started_at", "message_id")
    c_rank = np.empty(n_c, dtype=np.int64)
    c_rank[_sort(conversations, "opened_at", "conversation_id")] = np.arange(n_c)
    s_match = np.full(n_s, -1, dtype=np.int64)
    c_free = np.ones(n_c, dtype=bool)
    lowest, highest = np.iinfo(np.int64).min, np.iinfo(np.int64).max

    # 1. by message id, within the stream: no window
    _pass(s_order, s_group, np.full(n_s, lowest), np.full(n_s, highest),
          c_group, c_at, c_rank, s_match, c_free)
    # 2. by stream and time, same type; 3. what is left, any type
    business = s_type == codes["business_initiated"]
    n_types = int(max(s_type.max(initial=0), c_type.max(initial=0))) + 1
    lo = s_at - MINUTE
    hi = np.where(business, s_at + tolerance + 1, s_at + DAY)
    _pass(s_order, s_stream * n_types + s_type, lo, hi, c_stream * n_types + c_type, c_at,
          c_rank, s_match, c_free)
    _pass(s_order, s_stream, lo, hi, c_stream, c_at, c_rank, s_match, c_free)
    paired = np.flatnonzero(s_match >= 0)
    return paired, s_match[paired]


def _pass(s_order, s_group, s_lo, s_hi, c_group, c_at, c_rank, s_match, c_free) -> None:
    """One pass: each free start (in `s_order`) takes the earliest free conversation of its group
    with lo <= opened_at < hi; updates s_match and c_free."""
    todo = s_order[s_match[s_order] < 0]
    cands = np.flatnonzero(c_free & (c_group >= 0))
    if len(todo) == 0 or len(cands) == 0:
        return
    # only conversations of groups some free start looks in can be taken (most are paired by then)
    cands = cands[np.isin(c_group[cands], s_group[todo])]
    # times as ranks, so that (group, time) is one int64 key that cannot overflow
    times = distinct_sorted(np.concatenate([c_at[cands], s_lo[todo], s_hi[todo]]))
    width = len(times) + 1
    cands = cands[np.lexsort((c_rank[cands], c_at[cands], c_group[cands]))]
    c_key = c_group[cands] * width + np.searchsorted(times, c_at[cands])
    lo_key = s_group[todo] * width + np.searchsorted(times, s_lo[todo])
    hi_key = s_group[todo] * width + np.searchsorted(times, s_hi[todo])
    first = np.searchsorted(c_key, lo_key, side="left")
    found = first < len(cands)
    found[found] = c_key[first[found]] < hi_key[found]
    # groups in which two starts want the same conversation are swept item by item
    wanted = first[found]
    contested_groups = distinct_sorted(s_group[todo[found][np.isin(wanted, repeated(wanted))]])
    contested = np.isin(s_group[todo], contested_groups)
    easy = found & ~contested
    s_match[todo[easy]] = cands[first[easy]]
    c_free[cands[first[easy]]] = False
    for k in np.flatnonzero(contested).tolist():
        i = int(todo[k])
        at, end = int(first[k]), hi_key[k]
        while at < len(cands) and c_key[at] < end:
            j = int(cands[at])
            if c_free[j]:
                s_match[i], c_free[j] = j, False
                break
            at += 1


def _sort(table: pa.Table, at: str, ident: str) -> np.ndarray:
    """Row numbers by (`at`, `ident`): by time in numpy, then only the rows that share an
    instant ordered by their id (sorting millions of ids as text is what took the time)."""
    instants = _ns(table.column(at))
    order = np.argsort(instants, kind="stable")
    times = instants[order]
    tied = np.zeros(len(order), dtype=bool)
    same = times[1:] == times[:-1]
    tied[1:] |= same
    tied[:-1] |= same
    if not tied.any():
        return order
    rows = order[tied]
    by_id = np.asarray(pc.sort_indices(pa.table({
        "at": pa.array(times[tied]), "id": table.column(ident).take(pa.array(rows))}),
        sort_keys=[("at", "ascending"), ("id", "ascending")]), dtype=np.int64)
    order[np.flatnonzero(tied)] = rows[by_id]
    return order


def _group_codes(starts: pa.Table, conversations: pa.Table) -> dict:
    """Integer codes shared by both sides: `stream` per (line_id, contact_key); `by_message`,
    equal for a start and a conversation of the same stream and message id (-1 for a
    conversation no start shares its message with); `type` per conversation type, and the code
    of `business_initiated`. Streams and messages come from in-process DuckDB queries (a hash
    join runs on every core; Arrow's dictionary encoding of 3.6M composite keys did not); the
    few types from Arrow."""
    columns = ["line_id", "contact_key", "message_id"]
    with in_memory_duckdb() as con:
        for name, table in (("s", starts), ("c", conversations)):
            con.register(name, table.select(columns).append_column(
                "i", pa.array(np.arange(table.num_rows), pa.int64())))
        streams = con.sql("""
            with
            items as (
                select 0 as side, i, line_id, contact_key from s
                union all
                select 1, i, line_id, contact_key from c
            ),
            streams as (
                select line_id, contact_key, row_number() over () - 1 as stream
                from (select distinct line_id, contact_key from items)
            )
            select items.side, items.i, streams.stream
            from items
            inner join streams using (line_id, contact_key)
        """).to_arrow_table()
        # a (stream, message id) group is named by the first start in it; every start of a
        # group meets the same conversations, so the group a conversation meets is its name
        shared = con.sql("""
            with
            meets as (
                select s.i as si, c.i as ci
                from s
                inner join c using (line_id, contact_key, message_id)
            ),
            named as (
                select ci, min(si) as name from meets group by ci
            )
            select meets.si, meets.ci, named.name
            from meets
            inner join named using (ci)
        """).to_arrow_table()
    side = np.asarray(streams.column("side"), dtype=np.int64)
    at = np.asarray(streams.column("i"), dtype=np.int64)
    values = np.asarray(streams.column("stream"), dtype=np.int64)
    pair = []
    for k, n in ((0, starts.num_rows), (1, conversations.num_rows)):
        codes = np.empty(n, dtype=np.int64)
        codes[at[side == k]] = values[side == k]
        pair.append(codes)
    out = {"stream": tuple(pair)}
    name = np.asarray(shared.column("name"), dtype=np.int64)
    s_group = np.arange(starts.num_rows, dtype=np.int64)  # a start no conversation meets: alone
    s_group[np.asarray(shared.column("si"), dtype=np.int64)] = name
    c_group = np.full(conversations.num_rows, -1, dtype=np.int64)
    c_group[np.asarray(shared.column("ci"), dtype=np.int64)] = name
    out["by_message"] = (s_group, c_group)
    types = [pc.cast(t.column("conversation_type"), pa.string()) for t in (starts, conversations)]
    kinds = pc.unique(pa.chunked_array(types[0].chunks + types[1].chunks, pa.string()))
    out["type"] = tuple(np.asarray(pc.index_in(t, value_set=kinds, skip_nulls=False),
                                   dtype=np.int64) for t in types)
    business = pc.index_in(pa.array([BUSINESS_INITIATED]), value_set=kinds)[0].as_py()
    out["business_initiated"] = -1 if business is None else business
    return out


def _bools(values) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False), dtype=bool)


def _ns(column) -> np.ndarray:
    return np.asarray(column.cast(pa.timestamp("ns", "UTC")).cast(pa.int64()).to_numpy(),
                      dtype=np.int64)
