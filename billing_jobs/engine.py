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
from billing_jobs.tables import dictionary_codes, take_column, take_rows

DAY_NS = 24 * 3600 * 10**9


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
    unit = next(u for u in (10**9, 10**6, 10**3, 1) if u == 1 or not (offset % u).any())
    slots = (int(offset.max()) // unit + 1) * 2
    if (int(stream.max()) + 1) * slots < 2**62:
        key = stream.astype(np.int64) * slots + (offset // unit) * 2 + outbound
        return np.argsort(key)  # equal keys are re-ordered by message_id afterwards
    return np.lexsort((sent * 2 + outbound, stream))  # sent < 2**62 ns, i.e. before 2116


def processing_order(stream, sent, outbound, message_ids: pa.ChunkedArray, rows: np.ndarray):
    """Positions into `rows` in processing order: stream, sent_at, inbound before outbound, then
    message_id byte-wise. Only runs of rows equal on the first three compare message ids."""
    order = _sort_key(stream, sent, outbound)
    s, t, o = stream[order], sent[order], outbound[order]
    same = np.zeros(len(order), dtype=bool)  # same stream, instant and direction as the row before
    same[1:] = (s[1:] == s[:-1]) & (t[1:] == t[:-1]) & (o[1:] == o[:-1])
    if same.any():
        in_tie = same.copy()
        in_tie[:-1] |= same[1:]
        group = np.cumsum(~same)
        pos = np.flatnonzero(in_tie)
        ids = take_column(message_ids, rows[order[pos]])
        ranked = pa.table({"g": group[pos], "at": order[pos], "id": ids})
        ranked = ranked.sort_by([("g", "ascending"), ("id", "ascending")])
        order[pos] = ranked.column("at").to_numpy()  # each tie group keeps its block of positions
    return order


def _latest_before(flag: np.ndarray, first_of_stream: np.ndarray) -> np.ndarray:
    """For each row, the index of the latest earlier row of its stream with `flag`, else -1."""
    idx = np.where(flag, np.arange(len(flag)), -1)
    latest = np.maximum.accumulate(idx) if len(idx) else idx
    before = np.empty_like(latest)
    before[:1] = -1
    before[1:] = latest[:-1]
    return np.where(before >= first_of_stream, before, -1)


def conversation_starts(messages: pa.Table, rows: np.ndarray | None = None
                        ) -> tuple[pa.Table, pa.Table]:
    """Charged starts and outside-session anomalies (STARTS_SCHEMA, ANOMALIES_SCHEMA), each sorted
    by instant then message_id, of the deduplicated messages `messages.take(rows)` (all rows if
    `rows` is None)."""
    line, _ = dictionary_codes(messages.column("line_id"))
    contact, contacts = dictionary_codes(messages.column("contact_id"))
    direction, directions = dictionary_codes(messages.column("direction"))
    mtype, mtypes = dictionary_codes(messages.column("message_type"))
    status, statuses = dictionary_codes(messages.column("status"))
    sent = pc.cast(messages.column("sent_at"), pa.int64()).to_numpy()
    if rows is None:
        rows = np.arange(messages.num_rows)
    rows = rows[status[rows] != _code_of(statuses, FAILED)]  # failed sends take no part

    inbound = direction[rows] == _code_of(directions, INBOUND)
    stream = line[rows].astype(np.int64) * max(len(contacts), 1) + contact[rows]
    sent = sent[rows]
    order = processing_order(stream, sent, ~inbound, messages.column("message_id"), rows)
    rows, stream, sent, inbound = rows[order], stream[order], sent[order], inbound[order]
    template = (mtype[rows] == _code_of(mtypes, TEMPLATE)) & ~inbound
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
    starts = _strings(take_rows(messages, rows[charged], list(STARTS_SCHEMA.names[:4]) + ["sent_at"]))
    starts["conversation_type"] = pa.array(
        np.where(user[charged], USER_INITIATED, BUSINESS_INITIATED), pa.string())
    starts["started_at"] = starts.pop("sent_at")
    anomalies = _strings(take_rows(messages, rows[outside], list(ANOMALIES_SCHEMA.names[:5])))
    anomalies["kind"] = pa.array([OUTSIDE_SESSION] * int(outside.sum()), pa.string())
    return (
        pa.table(starts, schema=STARTS_SCHEMA)
        .sort_by([("started_at", "ascending"), ("message_id", "ascending")]),
        pa.table(anomalies, schema=ANOMALIES_SCHEMA)
        .sort_by([("sent_at", "ascending"), ("message_id", "ascending")]),
    )


def _strings(table: pa.Table) -> dict[str, pa.ChunkedArray]:
    """Columns with dictionaries decoded to plain values, for output."""
    out = {}
    for c in table.column_names:
        col = table.column(c)
        out[c] = pc.cast(col, col.type.value_type) if pa.types.is_dictionary(col.type) else col
    return out
