"""Pairing our conversation starts with WhatsApp's conversations (billing-rules.md, "Provider
reconciliation"), twice: `pair_reference` reads like the spec, pass by pass and item by item;
`pair` is the one the job runs, on Arrow tables, sorted once and swept stream by stream. The
tests hold them equal on arbitrary inputs (tests/test_provider.py).

Both take only what can be paired: our starts, and WhatsApp's billable conversations of the two
matched types (the caller keeps the others out and reports them). Stream = (line_id,
contact_key); times are UTC nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from billing_jobs.contract import BUSINESS_INITIATED

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
    opened_at, message_id). Streams are coded once; each stream's items are sorted once and swept
    with its own index, so the cost is a sort plus a pass over each stream."""
    if starts.num_rows == 0 or conversations.num_rows == 0:
        return []
    s_stream, c_stream = _stream_codes(starts, conversations)
    s_at = _ns(starts.column("started_at"))
    c_at = _ns(conversations.column("opened_at"))
    s_id = np.asarray(starts.column("message_id").to_pylist(), dtype=object)
    c_id = np.asarray(conversations.column("conversation_id").to_pylist(), dtype=object)
    s_type = np.asarray(starts.column("conversation_type").to_pylist(), dtype=object)
    c_type = np.asarray(conversations.column("conversation_type").to_pylist(), dtype=object)
    c_mid = np.asarray(conversations.column("message_id").to_pylist(), dtype=object)
    s_order = np.lexsort((s_id.astype(str), s_at, s_stream))
    c_order = np.lexsort((c_id.astype(str), c_at, c_stream))
    c_used = np.zeros(len(c_id), dtype=bool)
    s_done = np.zeros(len(s_id), dtype=bool)
    pairs: list[tuple[str, str, str]] = []

    def take(i: int, j: int) -> None:
        pairs.append((s_id[i], c_id[j], MATCHED if s_type[i] == c_type[j] else TYPE_MISMATCH))
        c_used[j], s_done[i] = True, True

    # 1. by message id, within the stream; earliest start first, earliest conversation first
    by_message: dict[tuple, list[int]] = {}
    for j in c_order:
        if c_mid[j] is not None:
            by_message.setdefault((c_stream[j], c_mid[j]), []).append(j)
    for i in sorted(np.flatnonzero(np.isin(s_stream, c_stream)),
                    key=lambda i: (s_at[i], s_id[i])):
        for j in by_message.get((s_stream[i], s_id[i]), ()):
            if not c_used[j]:
                take(i, j)
                break
    # 2 and 3, stream by stream (streams do not compete): sorted slices of both sides
    s_bounds = _bounds(s_stream[s_order])
    c_bounds = _bounds(c_stream[c_order])
    for stream, (a, b) in s_bounds.items():
        if stream not in c_bounds:
            continue
        ca, cb = c_bounds[stream]
        convs = c_order[ca:cb]
        times = c_at[convs]
        for same_type in (True, False):
            for i in s_order[a:b]:
                if s_done[i]:
                    continue
                lo = s_at[i] - MINUTE
                hi = (s_at[i] + tolerance + 1 if s_type[i] == BUSINESS_INITIATED
                      else s_at[i] + DAY)
                k = int(np.searchsorted(times, lo, side="left"))
                while k < len(convs) and times[k] < hi:
                    j = convs[k]
                    if not c_used[j] and (not same_type or c_type[j] == s_type[i]):
                        take(i, j)
                        break
                    k += 1
    return pairs


def _ns(column) -> np.ndarray:
    return np.asarray(column.cast(pa.timestamp("ns", "UTC")).cast(pa.int64()).to_numpy(),
                      dtype=np.int64)


def _stream_codes(starts: pa.Table, conversations: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """One integer per (line_id, contact_key), shared by both sides."""
    s_keys = list(zip(starts.column("line_id").to_pylist(), starts.column("contact_key").to_pylist()))
    c_keys = list(zip(conversations.column("line_id").to_pylist(),
                      conversations.column("contact_key").to_pylist()))
    codes: dict[tuple, int] = {}
    s = np.fromiter((codes.setdefault(k, len(codes)) for k in s_keys), dtype=np.int64,
                    count=len(s_keys))
    c = np.fromiter((codes.setdefault(k, len(codes)) for k in c_keys), dtype=np.int64,
                    count=len(c_keys))
    return s, c


def _bounds(sorted_codes: np.ndarray) -> dict[int, tuple[int, int]]:
    if len(sorted_codes) == 0:
        return {}
    edges = np.flatnonzero(np.diff(sorted_codes)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(sorted_codes)]])
    return {int(sorted_codes[a]): (int(a), int(b)) for a, b in zip(starts, ends)}
