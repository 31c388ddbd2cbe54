"""The fast rules engine: conversation starts for deduplicated messages, with array passes only.

It implements exactly what `reference.py` spells out message by message (billing-rules.md, Charges);
property tests keep the two equal. The idea: sort once into processing order, then every question
the rules ask ("is a session open?", "is there a charged template in the last 24 h?") is about the
*latest* earlier inbound message or charged template of the same stream, which a running maximum
of row indices answers for all rows at once.

Strings are never compared row by row: lines, contacts, directions and statuses arrive
dictionary-encoded (see `contract.MESSAGES_SCHEMA`), and the engine works on their integer codes.
Only the rows that end up charged are looked up as strings again.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs.contract import (
    ANOMALIES_SCHEMA,
    BUSINESS_INITIATED,
    FAILED,
    INBOUND,
    OUTSIDE_SESSION,
    STARTS_SCHEMA,
    TEMPLATE,
    USER_INITIATED,
)
from billing_jobs.tables import (
    PARALLEL_FROM,
    THREADS,
    dictionary_codes,
    side_by_side,
    take_column,
    take_rows,
)

DAY_NS = 24 * 3600 * 10**9
# Rows of one part: a large day is dealt into many small parts, not one per core, and each part
# takes its own columns, so that its dozen temporaries are reused memory, not fresh pages (the
# 10M day's engine step in a fresh process: 2.5-3.4 s, against 4.0-4.9 s with the columns taken
# for the whole day and dealt into two parts, most of the difference system time faulting pages).
ROWS_PER_PART = 400_000
MAX_PARTS = 255  # a part number is one byte


def _code_of(dictionary: pa.Array, value: str) -> int:
    pos = pc.index(dictionary, value).as_py()
    return -1 if pos is None else pos  # -1 matches no row


def _sort_key(stream: np.ndarray, sent: np.ndarray, outbound: np.ndarray) -> np.ndarray:
    """Row order by (stream, sent_at, inbound first). One int64 key when it fits, which is the
    usual case (whole milliseconds over a few days); else a two-key lexicographic sort."""
    if len(sent) == 0:
        return np.zeros(0, dtype=np.int64)
    t0 = int(sent.min())
    offset = sent - t0
    unit = next(u for u in (10**9, 10**6, 10**3, 1)  # a sample rules most units out at once
                if u == 1 or not (offset[::97] % u).any() and not (offset % u).any())
    slots = (int(offset.max()) // unit + 1) * 2
    if (int(stream.max()) + 1) * slots < 2**62:
        key = stream.astype(np.int64)  # stream * slots + (offset // unit) * 2 + outbound,
        key *= slots  # in place: a day's arrays are large
        offset //= unit
        offset *= 2
        key += offset
        key += outbound
        return np.argsort(key)  # equal keys are re-ordered by message_id afterwards
    return np.lexsort((sent * 2 + outbound, stream))  # sent < 2**62 ns, i.e. before 2116


def processing_order(stream, sent, outbound, message_ids: pa.ChunkedArray, rows: np.ndarray):
    """Positions into `rows` in processing order: stream, sent_at, inbound before outbound, then
    message_id byte-wise. Only runs of rows equal on the first three compare message ids.
    Returns the order and `stream`, `sent`, `outbound` taken in it (a tie moves rows only among
    rows equal on all three, so they stay valid)."""
    order = _sort_key(stream, sent, outbound)
    s, t, o = stream[order], sent[order], outbound[order]
    same = np.zeros(len(order), dtype=bool)  # same stream, instant and direction as the row before
    same[1:] = (s[1:] == s[:-1]) & (t[1:] == t[:-1]) & (o[1:] == o[:-1])
    if same.any():
        in_tie = same.copy()
        in_tie[:-1] |= same[1:]
        pos = np.flatnonzero(in_tie)
        group = np.cumsum(~same[pos])  # a tie group starts at each of its rows unlike the one before
        ids = take_column(message_ids, rows[order[pos]])
        ranked = pa.table({"g": group, "at": order[pos], "id": ids})
        ranked = ranked.sort_by([("g", "ascending"), ("id", "ascending")])
        order[pos] = ranked.column("at").to_numpy()  # each tie group keeps its block of positions
    return order, s, t, o


def _latest_before(flag: np.ndarray, first_of_stream: np.ndarray) -> np.ndarray:
    """For each row, the index of the latest earlier row of its stream with `flag`, else -1."""
    before = np.full(len(flag), -1, dtype=np.int64)  # row i looks at rows 0..i-1: shifted by one
    if len(flag) > 1:
        np.copyto(before[1:], np.arange(len(flag) - 1), where=flag[:-1])
        np.maximum.accumulate(before, out=before)  # in place: a day's arrays are large
    before[before < first_of_stream] = -1
    return before


def conversation_starts(messages: pa.Table, rows: np.ndarray | None = None,
                        parts: int | None = None, halves: bool | None = None
                        ) -> tuple[pa.Table, pa.Table]:
    """Charged starts and outside-session anomalies (STARTS_SCHEMA, ANOMALIES_SCHEMA), each sorted
    by instant then message_id, of the deduplicated messages `messages.take(rows)` (all rows if
    `rows` is None).

    Streams never look at each other, so the rows are dealt by contact (which keeps each stream
    whole) into `parts` that are computed side by side on the cores (numpy and Arrow run without
    the GIL); by default parts of about ROWS_PER_PART rows on a large day, one on a small one.
    `halves`: build each output table in two ranges of instants side by side (by default when
    it is large). The result depends on neither `parts` nor `halves` (a property test)."""
    line, _ = dictionary_codes(messages.column("line_id"))
    contact, contacts = dictionary_codes(messages.column("contact_id"))
    direction, directions = dictionary_codes(messages.column("direction"))
    mtype, mtypes = dictionary_codes(messages.column("message_type"))
    status, statuses = dictionary_codes(messages.column("status"))
    sent = pc.cast(messages.column("sent_at"), pa.int64()).to_numpy()
    if rows is None:
        rows = np.arange(messages.num_rows)
    failed, inbound_code = _code_of(statuses, FAILED), _code_of(directions, INBOUND)
    template_code, width = _code_of(mtypes, TEMPLATE), max(len(contacts), 1)
    ids = messages.column("message_id")

    def one(at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        at = at[status[at] != failed]  # failed sends take no part
        stream = line[at].astype(np.int64) * width + contact[at]
        return _charges(stream, sent[at], direction[at] == inbound_code,
                        mtype[at] == template_code, at, ids)

    if parts is None:
        parts = (1 if len(rows) < PARALLEL_FROM else
                 min(MAX_PARTS, max(THREADS, -(-len(rows) // ROWS_PER_PART))))
    if parts > 1:  # a stream's rows share its contact, so dealing by contact keeps streams whole
        part = (contact[rows] % parts).astype(np.uint8)
        by_part = rows[np.argsort(part, kind="stable")]  # a radix sort: one pass
        bounds = np.cumsum(np.bincount(part, minlength=parts))[:-1]
        results = side_by_side(one, np.split(by_part, bounds), THREADS)
        charged, user, outside = (np.concatenate(r) for r in zip(*results, strict=True))
    else:
        charged, user, outside = one(rows)

    def starts(at: np.ndarray) -> pa.Table:
        columns = _strings(take_rows(messages, charged[at], list(STARTS_SCHEMA.names[:4]) + ["sent_at"]))
        columns["conversation_type"] = _KINDS_OF_START.take(pa.array(user[at].astype(np.int8)))
        columns["started_at"] = columns.pop("sent_at")
        return pa.table(columns, schema=STARTS_SCHEMA).sort_by(
            [("started_at", "ascending"), ("message_id", "ascending")])

    def anomalies(at: np.ndarray) -> pa.Table:
        columns = _strings(take_rows(messages, outside[at], list(ANOMALIES_SCHEMA.names[:5])))
        columns["kind"] = pa.array([OUTSIDE_SESSION] * len(at), pa.string())
        return pa.table(columns, schema=ANOMALIES_SCHEMA).sort_by(
            [("sent_at", "ascending"), ("message_id", "ascending")])

    return _by_instant(sent[charged], starts, halves), _by_instant(sent[outside], anomalies, halves)


_KINDS_OF_START = pa.array([BUSINESS_INITIATED, USER_INITIATED], pa.string())  # by `user` flag


def _by_instant(sent: np.ndarray, build, halves: bool | None = None) -> pa.Table:
    """`build(positions)`, a table sorted by instant then message_id, of all positions into
    `sent`. In `halves` (by default a large output) it is cut into two ranges of instants built
    side by side (the sort's ties on whole seconds compare message ids, a serial step that took
    ~0.4 s for the 10M day's 1M starts): the ranges do not overlap, so the two tables one after
    the other are in order too. Always two, whatever the cores: the same chunks everywhere."""
    if halves is None:
        halves = len(sent) >= PARALLEL_FROM
    if not halves or len(sent) == 0:
        return build(np.arange(len(sent)))
    middle = np.partition(sent, len(sent) // 2)[len(sent) // 2]
    early = sent < middle  # every row of one instant falls on the same side
    return pa.concat_tables(side_by_side(build, (np.flatnonzero(early), np.flatnonzero(~early)), 2))


def _charges(stream, sent, inbound, template, rows, message_ids: pa.ChunkedArray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rules over whole streams (billing-rules.md, Charges): of `rows`, the charged ones, a
    flag of each that says user-initiated (else business-initiated), and the outbound session
    messages sent outside any session."""
    order, stream, sent, outbound = processing_order(stream, sent, ~inbound, message_ids, rows)
    rows, inbound, template = rows[order], ~outbound, template[order] & outbound
    n = len(rows)

    new_stream = np.ones(n, dtype=bool)
    new_stream[1:] = stream[1:] != stream[:-1]
    first_of_stream = np.maximum.accumulate(np.where(new_stream, np.arange(n), 0)) if n else rows

    last_in = _latest_before(inbound, first_of_stream)
    session_open = (last_in >= 0) & (sent[last_in] > sent - DAY_NS)
    business = template & ~session_open
    last_attempt = _latest_before(business, first_of_stream)
    t0 = sent[last_attempt]
    answers_attempt = (last_attempt >= 0) & (t0 > sent - DAY_NS) & (t0 < sent)
    user = inbound & ~session_open & ~answers_attempt
    outside = ~inbound & ~template & ~session_open
    charged = user | business
    return rows[charged], user[charged], rows[outside]


def _strings(table: pa.Table) -> dict[str, pa.ChunkedArray]:
    """Columns with dictionaries decoded to plain values, for output."""
    out = {}
    for c in table.column_names:
        col = table.column(c)
        out[c] = pc.cast(col, col.type.value_type) if pa.types.is_dictionary(col.type) else col
    return out
