"""WhatsApp's side of the bill (data-contracts.md §5): `provider_conversations/` read like the
message log, in the same three formats, every row accepted, folded into its conversation or
quarantined with a reason.

A conversation arrives with every status notification of its messages, so one conversation id
often comes several times: copies that agree are folded into one (the first read keeps its
`message_id`, the message whose status first carried it); copies that disagree on the stream, the
type or the opening instant are all quarantined as `conflicting_duplicate` (which one WhatsApp
billed cannot be told). Contacts are compared in their canonical form and leave as `contact_key`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs import iso
from billing_jobs.contract import BUSINESS_INITIATED, TIMESTAMP, USER_INITIATED
from billing_jobs.landing import (
    INVALID_ENCODING,
    MALFORMED,
    _check,
    _column,
    _decoded,
    _is_empty,
    _is_message_id,
    _is_phone_number,
    _mask,
    _storable_id,
    canonical_contacts,
    file_rows,
    location,
    parse_sent_at,
    quarantine_rows,
    read_raw,
)
from billing_jobs.tables import constant, constant_dictionary, first_of_runs, side_by_side

FOLDER = "provider_conversations"
COLUMNS = ("conversation_id", "line_id", "contact_id", "conversation_type", "opened_at",
           "message_id", "billable", "cost", "currency")
REQUIRED = ("conversation_id", "line_id", "contact_id", "conversation_type", "opened_at")
MATCHED_TYPES = (USER_INITIATED, BUSINESS_INITIATED)
CONFLICTING_DUPLICATE = "conflicting_duplicate"
REASONS = (
    "malformed_row",
    "invalid_encoding",
    *(f"missing_{c}" for c in REQUIRED),
    "invalid_conversation_id",
    "invalid_message_id",
    "invalid_contact_id",
    "invalid_opened_at",
    "opened_at_outside_partition",
    "invalid_billable",
    "invalid_cost",
    "invalid_currency",
    "unknown_line",
)
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")
VALID_SCHEMA = pa.schema([
    ("conversation_id", pa.string()), ("line_id", pa.string()), ("contact_id", pa.string()),
    ("conversation_type", pa.string()), ("opened_at", TIMESTAMP), ("message_id", pa.string()),
    ("billable", pa.bool_()), ("cost", pa.decimal128(20, 10)), ("currency", pa.string()),
    ("source_file", pa.dictionary(pa.int32(), pa.string())), ("source_row", pa.int64()),
])


@dataclass
class ProviderBatch:
    valid: pa.Table  # one row per conversation (VALID_SCHEMA)
    quarantined: pa.Table  # source_file, source_row, conversation_id, reason, record
    rows_read: dict[dt.date, int]  # rows per partition, malformed lines included


def partition_complete(source: str | Path, day: dt.date) -> bool:
    """Whether WhatsApp's partition of `day` has its `_SUCCESS` marker."""
    return (location(source) / FOLDER / f"date={day}" / "_SUCCESS").exists()


def partition_files(source: str | Path, day: dt.date) -> list[Path]:
    folder = location(source) / FOLDER / f"date={day}"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".parquet", ".csv", ".jsonl"))


def read(source: str | Path, days: list[dt.date], lines: set[str]) -> ProviderBatch:
    """The provider partitions of `days`, validated and deduplicated by conversation id."""
    valid, quarantined, rows = [], [], dict.fromkeys(days, 0)
    files = [(day, path) for day in days for path in partition_files(source, day)]

    def one(day: dt.date, path: Path) -> tuple[int, pa.Table, pa.Table]:
        raw = read_raw(path, COLUMNS, ())
        lines_read = raw.num_rows + len(json.loads((raw.schema.metadata or {}).get(
            MALFORMED.encode(), b"[]")))
        return (lines_read, *validate(raw, str(path), day, lines))

    # files side by side: Arrow's kernels release the GIL, and each file is its own work
    for (day, _), (lines_read, ok, bad) in zip(files, side_by_side(lambda f: one(*f), files, 2)):
        rows[day] += lines_read
        valid.append(ok)
        quarantined.append(bad)
    table = pa.concat_tables(valid) if valid else VALID_SCHEMA.empty_table()
    bad = pa.concat_tables(quarantined) if quarantined else _quarantine_schema().empty_table()
    table, conflicts, _ = deduplicate(table)
    return ProviderBatch(table, pa.concat_tables([bad, conflicts]), rows)


def validate(raw: pa.Table, source_file: str, partition_date: dt.date | None,
             lines: set[str] | None) -> tuple[pa.Table, pa.Table]:
    """Valid provider rows (VALID_SCHEMA) and the others with the first failed check."""
    numbers, malformed = file_rows(raw)
    if any(pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in raw.schema.types):
        raw = _decoded(raw)
    bad_encoding = None
    if INVALID_ENCODING in raw.column_names:
        bad_encoding = raw.column(INVALID_ENCODING).to_numpy(zero_copy_only=False)
        raw = raw.drop_columns([INVALID_ENCODING])
    n = raw.num_rows
    cols = {c: _text(raw, c) for c in COLUMNS if c != "opened_at"}
    opened_at, bad_time = parse_sent_at(raw, "opened_at")
    reason = np.zeros(n, dtype=np.int16)

    def flag(name: str, mask: np.ndarray) -> None:
        reason[(reason == 0) & mask] = REASONS.index(name) + 1

    if bad_encoding is not None:
        flag("invalid_encoding", bad_encoding)
    for c in REQUIRED:
        if c == "opened_at":
            flag("missing_opened_at", ~_mask(opened_at.is_valid()) & ~bad_time)
        else:
            flag(f"missing_{c}", _check(cols[c], _is_empty, null_as=True))
    flag("invalid_conversation_id", ~_mask(_is_message_id(cols["conversation_id"]), True)
         | _has_number(cols["conversation_id"]))
    given_mid = ~_check(cols["message_id"], _is_empty, null_as=True)
    flag("invalid_message_id", given_mid & (~_mask(_is_message_id(cols["message_id"]), True)
                                            | _has_number(cols["message_id"])))
    flag("invalid_contact_id", ~_check(cols["contact_id"], _is_phone_number, null_as=False))
    flag("invalid_opened_at", bad_time)
    if partition_date is not None:
        day = pc.cast(pc.cast(opened_at, pa.timestamp("ns")), pa.date32())
        inside = pc.equal(day, pa.scalar(partition_date, pa.date32()))
        flag("opened_at_outside_partition", ~_mask(inside, null_as=True))
    billable_text = pc.utf8_lower(pc.utf8_trim_whitespace(cols["billable"]))
    billable_given = _mask(pc.not_equal(billable_text, ""), null_as=False)
    known = _mask(pc.is_in(billable_text, value_set=pa.array(TRUE + FALSE)), null_as=False)
    flag("invalid_billable", billable_given & ~known)
    cost, bad_cost = _costs(cols["cost"])
    flag("invalid_cost", bad_cost)
    currency = cols["currency"]
    currency_given = _mask(pc.not_equal(currency, ""), null_as=False)
    currency_known = _mask(pc.is_in(currency, value_set=pa.array(sorted(iso.CURRENCIES))), False)
    cost_given = _mask(cost.is_valid(), null_as=False)
    flag("invalid_currency", (currency_given & ~currency_known) | (cost_given & ~currency_given))
    if lines is not None:
        flag("unknown_line", ~_mask(pc.is_in(cols["line_id"], value_set=pa.array(
            sorted(lines), pa.string())), null_as=False))

    valid = pa.table({
        "conversation_id": cols["conversation_id"], "line_id": cols["line_id"],
        "contact_id": canonical_contacts(cols["contact_id"]),
        "conversation_type": cols["conversation_type"], "opened_at": opened_at,
        "message_id": pc.if_else(pa.array(given_mid), cols["message_id"],
                                 pa.scalar(None, pa.string())),
        "billable": pa.array(~(billable_given & _mask(pc.is_in(
            billable_text, value_set=pa.array(FALSE)), null_as=False))),
        "cost": cost, "currency": pc.if_else(pa.array(currency_given), currency,
                                             pa.scalar(None, pa.string())),
        "source_file": constant_dictionary(source_file, n),
        "source_row": pa.array(numbers, pa.int64()),
    }, schema=VALID_SCHEMA)
    if reason.any():
        valid = valid.filter(pa.array(reason == 0))
    bad_idx = np.flatnonzero(reason)
    quarantined = quarantine_rows(raw.take(pa.array(bad_idx, pa.int64())), source_file,
                                  numbers[bad_idx].tolist(),
                                  [REASONS[r - 1] for r in reason[bad_idx]])
    if malformed:
        quarantined = pa.concat_tables([quarantined, quarantine_rows(
            pa.table({"row": pa.array(malformed, pa.int64())}), source_file, malformed,
            ["malformed_row"] * len(malformed))])
    return valid, _as_quarantine(quarantined)


# errors.redact's phone number, in the regex dialect Arrow speaks (no look-behind)
_PHONE = r"(^|[^0-9A-Za-z_.])\+?[0-9]{7,15}([^0-9A-Za-z_.]|$)"


def _has_number(col: pa.ChunkedArray) -> np.ndarray:
    """Ids holding what may be a phone number (a producer that swapped columns): never stored."""
    return _mask(pc.match_substring_regex(col, _PHONE), null_as=False)


def deduplicate(table: pa.Table) -> tuple[pa.Table, pa.Table, int]:
    """One row per conversation id. Returns (kept, conflicting copies as quarantine rows,
    copies folded)."""
    if table.num_rows == 0:
        return table, _quarantine_schema().empty_table(), 0
    ids = np.asarray(pc.dictionary_encode(table.column("conversation_id").combine_chunks())
                     .indices, dtype=np.int64)
    order = np.argsort(ids, kind="stable")  # by id, then as read
    heads = first_of_runs(ids[order])
    first = np.zeros(len(order), dtype=bool)
    first[heads] = True
    group = np.cumsum(first) - 1
    copies = np.flatnonzero(~first)  # positions, in that order, of every copy after the first
    differs = _differs(table, order[copies], order[heads[group[copies]]])
    varies = np.zeros(len(heads), dtype=bool)
    varies[group[copies][differs]] = True
    conflicting = varies[group]
    folded = int(np.sum(~first & ~conflicting))
    if not conflicting.any() and folded == 0:
        return table, _quarantine_schema().empty_table(), 0
    kept = np.zeros(table.num_rows, dtype=bool)
    kept[order[first & ~conflicting]] = True
    return table.filter(pa.array(kept)), _conflicts(table, np.sort(order[conflicting])), folded


def _differs(table: pa.Table, rows: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """Whether each copy (`rows`) differs from the first copy of its id (`heads`) in what copies
    must agree on: stream, type and opening (all required, never null once valid)."""
    differs = np.zeros(len(rows), dtype=bool)
    if len(rows) == 0:
        return differs
    at, of = pa.array(rows, pa.int64()), pa.array(heads, pa.int64())
    for name in ("line_id", "contact_id", "conversation_type", "opened_at"):
        column = table.column(name)
        differs |= ~np.asarray(pc.fill_null(pc.equal(column.take(at), column.take(of)), False),
                               dtype=bool)
    return differs


def _conflicts(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """Conflicting copies as quarantine rows."""
    if len(rows) == 0:
        return _quarantine_schema().empty_table()
    conflicts = table.take(pa.array(rows, pa.int64()))
    records = [json.dumps({k: _plain(v) for k, v in r.items()
                           if k not in ("source_file", "source_row")}, sort_keys=True)
               for r in conflicts.to_pylist()]
    return pa.table({
        "source_file": pc.cast(conflicts.column("source_file"), pa.string()),
        "source_row": conflicts.column("source_row"),
        "conversation_id": conflicts.column("conversation_id"),
        "reason": constant(CONFLICTING_DUPLICATE, conflicts.num_rows, pa.string()),
        "record": pa.array(records, pa.string())}, schema=_quarantine_schema())


def _plain(value):
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value) if isinstance(value, Decimal) else value


def _text(raw: pa.Table, name: str) -> pa.ChunkedArray:
    col = _column(raw, name)
    return pc.cast(col, pa.string()) if pa.types.is_dictionary(col.type) else col


COST_DIGITS = r"^[0-9]{1,10}(\.[0-9]{1,10})?$"  # the common spelling, converted by Arrow


def _costs(col: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Costs as decimal(20, 10) and a mask of unusable ones (negative, not finite, more than 10
    decimals, 1e10 or more). Plain digits are converted in one cast; any other spelling
    (`1e-3`, `+0.5`, leading zeros) is judged value by value."""
    text = pc.utf8_trim_whitespace(col)
    blank = _mask(_is_empty(text), null_as=True)
    plain = _mask(pc.match_substring_regex(text, COST_DIGITS), null_as=False)
    values = pc.cast(pc.if_else(pa.array(plain), text, pa.scalar(None, pa.string())),
                     pa.decimal128(20, 10))
    bad = np.zeros(len(text), dtype=bool)
    other = np.flatnonzero(~blank & ~plain)
    if len(other) == 0:
        return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values, bad
    merged = values.to_pylist()
    for i, spelled in zip(other.tolist(), text.take(pa.array(other)).to_pylist()):
        merged[i], bad[i] = _cost(spelled)
    return pa.array(merged, pa.decimal128(20, 10)), bad


def _cost(text: str) -> tuple[Decimal | None, bool]:
    try:
        value = Decimal(text)
        ok = value.is_finite() and value >= 0 and value == value.quantize(Decimal("1e-10"))
    except InvalidOperation:
        ok = False
    ok = ok and value < Decimal("1e10")
    return (value if ok else None), not ok


def _quarantine_schema() -> pa.Schema:
    return pa.schema([("source_file", pa.string()), ("source_row", pa.int64()),
                      ("conversation_id", pa.string()), ("reason", pa.string()),
                      ("record", pa.string())])


def _as_quarantine(table: pa.Table) -> pa.Table:
    """landing's quarantine rows (which name the message id column) as provider quarantine."""
    return pa.table({
        "source_file": pc.cast(table.column("source_file"), pa.string()),
        "source_row": table.column("source_row"),
        "conversation_id": [_conversation_id(r) for r in table.column("record").to_pylist()],
        "reason": pc.cast(table.column("reason"), pa.string()),
        "record": table.column("record")}, schema=_quarantine_schema())


def _conversation_id(record: str) -> str | None:
    """As the quarantine keeps it: None when missing, unstorable or holding a phone number."""
    return _storable_id(json.loads(record).get("conversation_id"))
