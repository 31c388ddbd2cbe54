"""The fast rules engine: conversation starts for deduplicated messages, with array passes only.

It implements exactly what `reference.py` spells out message by message (billing-rules.md, Charges);
property tests keep the two equal. The idea: sort once into processing order, then every question
the rules ask ("is a session open?", "is there a charged template in the last 24 h?") is about the
*latest* earlier inbound message or charged template of the same stream, which a running maximum
of row indices answers for all rows at once.
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

DAY_NS = 24 * 3600 * 10**9


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, int]:
    encoded = pc.dictionary_encode(column).combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), len(encoded.dictionary)


def processing_order(messages: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Row indices in processing order (stream, sent_at, inbound first, message_id byte-wise),
    and each row's stream code."""
    line, _ = _codes(messages.column("line_id"))
    contact, n_contacts = _codes(messages.column("contact_id"))
    stream = line * max(n_contacts, 1) + contact
    sent = pc.cast(messages.column("sent_at"), pa.int64()).to_numpy()
    outbound = pc.not_equal(messages.column("direction"), INBOUND).to_numpy(zero_copy_only=False)
    # sent_at is < 2**62 ns until 2116, so twice it plus the direction bit stays in an int64.
    when = sent * 2 + outbound
    order = np.lexsort((when, stream))
    s, w = stream[order], when[order]
    same = np.zeros(len(order), dtype=bool)  # same stream, instant and direction as the row before
    same[1:] = (s[1:] == s[:-1]) & (w[1:] == w[:-1])
    if same.any():  # only such ties need the (costly) message_id comparison
        in_tie = same.copy()
        in_tie[:-1] |= same[1:]
        group = np.cumsum(~same)
        pos = np.flatnonzero(in_tie)
        ids = messages.column("message_id").take(pa.array(order[pos]))
        ranked = pa.table({"g": group[pos], "row": order[pos], "id": ids})
        ranked = ranked.sort_by([("g", "ascending"), ("id", "ascending")])
        order[pos] = ranked.column("row").to_numpy()  # each group keeps its block of positions
    return order, stream


def _latest_before(flag: np.ndarray, first_of_stream: np.ndarray) -> np.ndarray:
    """For each row, the index of the latest earlier row of its stream with `flag`, else -1."""
    idx = np.where(flag, np.arange(len(flag)), -1)
    latest = np.maximum.accumulate(idx) if len(idx) else idx
    before = np.empty_like(latest)
    before[:1] = -1
    before[1:] = latest[:-1]
    return np.where(before >= first_of_stream, before, -1)


def conversation_starts(messages: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Charged starts and outside-session anomalies of deduplicated messages (STARTS_SCHEMA,
    ANOMALIES_SCHEMA), each sorted by instant then message_id."""
    live = messages.filter(pc.not_equal(messages.column("status"), FAILED))
    if live.num_rows == 0:
        return STARTS_SCHEMA.empty_table(), ANOMALIES_SCHEMA.empty_table()
    order, stream = processing_order(live)
    rows = live.take(pa.array(order))
    n = rows.num_rows
    stream = stream[order]
    sent = pc.cast(rows.column("sent_at"), pa.int64()).to_numpy()
    inbound = pc.equal(rows.column("direction"), INBOUND).to_numpy(zero_copy_only=False)
    template = pc.equal(rows.column("message_type"), TEMPLATE).to_numpy(zero_copy_only=False)
    template &= ~inbound

    new_stream = np.ones(n, dtype=bool)
    new_stream[1:] = stream[1:] != stream[:-1]
    first_of_stream = np.maximum.accumulate(np.where(new_stream, np.arange(n), 0))

    last_in = _latest_before(inbound, first_of_stream)
    session_open = (last_in >= 0) & (sent[last_in] > sent - DAY_NS)

    business = template & ~session_open
    last_attempt = _latest_before(business, first_of_stream)
    t0 = sent[last_attempt]
    answers_attempt = (last_attempt >= 0) & (t0 > sent - DAY_NS) & (t0 < sent)
    user = inbound & ~session_open & ~answers_attempt
    outside = ~inbound & ~template & ~session_open

    charged = user | business
    kind = np.where(user[charged], USER_INITIATED, BUSINESS_INITIATED)
    starts = rows.filter(pa.array(charged)).select(
        ["message_id", "customer_id", "line_id", "contact_id", "sent_at"]
    )
    starts = pa.table(
        {
            **{c: starts.column(c) for c in ("message_id", "customer_id", "line_id", "contact_id")},
            "conversation_type": pa.array(kind, pa.string()),
            "started_at": starts.column("sent_at"),
        },
        schema=STARTS_SCHEMA,
    )
    anomalies = rows.filter(pa.array(outside)).select(list(ANOMALIES_SCHEMA.names[:-1]))
    anomalies = anomalies.append_column(
        "kind", pa.array([OUTSIDE_SESSION] * anomalies.num_rows, pa.string())
    )
    return (
        starts.sort_by([("started_at", "ascending"), ("message_id", "ascending")]),
        anomalies.sort_by([("sent_at", "ascending"), ("message_id", "ascending")]),
    )
