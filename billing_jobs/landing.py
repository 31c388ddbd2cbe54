"""Reading the landing zone (data-contracts.md §1): parquet, CSV and JSONL files become one Arrow
schema with UTC timestamps; rows that break the contract are split off with a reason.

A file that cannot be read at all raises `LandingError` naming it; a bad *row* never does."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_jobs.contract import (
    CONTRACT_COLUMNS,
    DEFAULT_STATUS,
    DICT,
    DICTIONARY_COLUMNS,
    DIRECTIONS,
    INBOUND,
    MESSAGE_TYPES,
    MESSAGES_SCHEMA,
    REQUIRED_COLUMNS,
    SOURCE_COLUMNS,
    STATUSES,
    TEMPLATE,
    TIMESTAMP,
)
from billing_jobs.errors import LandingError, redact
from billing_jobs.tables import constant_dictionary, read_parquet, side_by_side, take_rows

SUFFIXES = (".parquet", ".csv", ".jsonl")
PARTITION_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
# ISO 8601 with an explicit offset; a naive time is a contract break, not "probably UTC".
ISO_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}(:?\d{2})?)$"

MAX_MESSAGE_ID = 255  # data-contracts.md §1: longer ids are invalid_message_id
# what every backend can store: a timestamp in nanoseconds (1677-09-21 .. 2262-04-11)
EARLIEST = -(2**63) + 1
LATEST = 2**63 - 1

# Quarantine reasons, in the order they are checked; a row gets the first that applies.
REASONS = (
    "malformed_row",  # a line of a CSV or JSONL file that is no row at all (wrong cell count, not JSON)
    "invalid_encoding",  # text that is not UTF-8
    *(f"missing_{c}" for c in REQUIRED_COLUMNS),
    "invalid_message_id",
    "invalid_direction",
    "invalid_message_type",
    "inbound_template",
    "invalid_status",
    "invalid_contact_id",
    "invalid_sent_at",
    "sent_at_outside_partition",
    "unknown_line",
    "line_of_other_customer",
)
CONFLICTING_DUPLICATE = "conflicting_duplicate"  # decided by deduplication, not here

VALID_SCHEMA = pa.schema([*MESSAGES_SCHEMA, *SOURCE_COLUMNS])  # a file's or a day's valid rows
QUARANTINE_SCHEMA = pa.schema(
    [*SOURCE_COLUMNS, ("message_id", pa.string()), ("reason", pa.string()), ("record", pa.string())]
)


@dataclass
class Batch:
    """Rows read from some files: the valid ones in contract form and the quarantined ones."""

    valid: pa.Table  # MESSAGES_SCHEMA + source columns
    quarantined: pa.Table  # QUARANTINE_SCHEMA
    rows_read: int
    files: list[str]
    # the valid rows' 64-bit message-id hashes (dedupe.id_hashes), row by row, when a step has
    # computed them already (a shard does, for combine); else computed where needed
    hashes: np.ndarray | None = None


def location(place: str | Path) -> Path:
    """A place in the landing zone: a local path, or any fsspec URL (`s3://…`, `gs://…`,
    `file://…`, `memory://…`; data-contracts.md §1) as a pathlib-like `UPath` over that filesystem.
    Everything that lists, hashes or reads landing files goes through this."""
    if isinstance(place, Path) or "://" not in str(place):
        return Path(place)
    from upath import UPath

    return UPath(place)


def arrow_source(path: Path) -> dict:
    """Where pyarrow's readers find `path`: a local file by name, else through the URL's fsspec
    filesystem."""
    if isinstance(path, Path):
        return {"source": str(path)}
    if path.protocol in ("file", "local"):
        return {"source": path.path}
    return {"source": path.path, "filesystem": path.fs}


@contextlib.contextmanager
def _opened(path: Path):
    """A local file by name (pyarrow reads it natively), anything else as an open fsspec file."""
    where = arrow_source(path)
    if "filesystem" not in where:
        yield where["source"]
    else:
        with path.open("rb") as f:
            yield f


def partition_date_of(path: Path) -> dt.date | None:
    """The `date=YYYY-MM-DD` directory a file sits in, if any."""
    match = PARTITION_RE.match(path.parent.name)
    return dt.date.fromisoformat(match.group(1)) if match else None


def message_files(paths: list[str | Path]) -> list[Path]:
    """Message files named directly or found below directories, in a stable order."""
    found: list[Path] = []
    for raw in paths:
        path = location(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise LandingError(f"{path} does not exist")
    return found


def partition_files(source: str | Path, day: dt.date) -> list[Path]:
    """Files of one landing-zone partition; a missing partition is an empty day, not an error."""
    folder = location(source) / "messages" / f"date={day.isoformat()}"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())


TEXT_BYTES_PER_ROW = 80  # a short CSV row; JSONL rows are longer, so this errs towards more rows


def estimated_rows(files: list[Path]) -> list[int]:
    """Rows in each of `files` without reading them: parquet footers say; CSV and JSONL are
    estimated from their size (generously: too many shards cost time, too few cost memory)."""
    import pyarrow.parquet as pq

    rows = []
    for path in files:
        try:
            if path.suffix == ".parquet":
                where = arrow_source(path)
                rows.append(pq.read_metadata(where["source"],
                                             filesystem=where.get("filesystem")).num_rows)
            else:
                rows.append(path.stat().st_size // TEXT_BYTES_PER_ROW + 1)
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(path, exc) from exc
    return rows


def _unreadable(path: Path, exc: Exception) -> LandingError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return LandingError(f"{path}: cannot read file: {first_line}")


def read_raw(path: Path, columns: tuple[str, ...] = CONTRACT_COLUMNS,
             dictionary: tuple[str, ...] = DICTIONARY_COLUMNS) -> pa.Table:
    """One file as read, before validation. Raises LandingError naming the file if unreadable.

    Only `columns` are kept (others are ignored, as the contract allows); `dictionary` columns are
    read dictionary-encoded where the format allows it. The message log's columns by default;
    provider records (provider_records.py) name their own."""
    try:
        if path.suffix in SUFFIXES and path.stat().st_size == 0:  # a zero-byte file has no rows
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            where = arrow_source(path)
            names = pq.read_schema(where["source"], filesystem=where.get("filesystem")).names
            table = read_parquet(
                where["source"], filesystem=where.get("filesystem"),
                columns=[c for c in columns if c in names],
                read_dictionary=[c for c in dictionary if c in names],
            )
        elif path.suffix == ".csv":
            table = _read_csv(path, columns, dictionary)
        elif path.suffix == ".jsonl":
            import pyarrow.json as pjson

            try:
                with _opened(path) as source:
                    table = pjson.read_json(
                        source,
                        parse_options=pjson.ParseOptions(
                            explicit_schema=pa.schema([(c, pa.string()) for c in columns]),
                            unexpected_field_behavior="ignore",
                        ),
                    )
            except pa.ArrowInvalid:  # a number where text was due, a broken line, bad UTF-8
                table = _read_jsonl_row_by_row(path, columns)
        else:
            raise LandingError(f"{path}: unsupported file type (expected {', '.join(SUFFIXES)})")
    except LandingError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _unreadable(path, exc) from exc
    return table


def _read_csv(path: Path, columns: tuple[str, ...], dictionary: tuple[str, ...]) -> pa.Table:
    """A CSV file; rows with the wrong number of cells become `malformed_row` (the reader's own
    handler counts them), text that is not UTF-8 is read again row by row."""
    import pyarrow.csv as pcsv

    malformed: list[int] = []

    def skip(row) -> str:  # CSV line k (the header is line 1) is data row k - 1
        malformed.append(row.number - 1)
        return "skip"

    def read(types):
        with _opened(path) as source:
            return pcsv.read_csv(
                source,
                read_options=pcsv.ReadOptions(use_threads=False),  # numbers the skipped rows
                parse_options=pcsv.ParseOptions(invalid_row_handler=skip),
                convert_options=pcsv.ConvertOptions(
                    column_types={c: types(c) for c in columns},
                    strings_can_be_null=True, include_columns=list(columns),
                    include_missing_columns=True))

    try:
        table = read(lambda c: DICT if c in dictionary else pa.string())
    except pa.ArrowInvalid as exc:
        if "UTF8" not in str(exc) and "utf8" not in str(exc).lower():
            raise
        malformed.clear()
        table = _decoded(read(lambda c: pa.binary()))
    return with_malformed(table, malformed)


def _read_jsonl_row_by_row(path: Path, columns: tuple[str, ...]) -> pa.Table:
    """A JSONL file the fast reader refused: each line parsed on its own. A value of another JSON
    type is read as its text (an integer as its digits, data-contracts.md "Contacts"); a line
    that is not a JSON object is `malformed_row`; text that is not UTF-8 is `invalid_encoding`."""
    rows, malformed, numbers = [], [], []
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except (UnicodeDecodeError, ValueError):
                malformed.append(number)
                continue
            if not isinstance(value, dict):
                malformed.append(number)
                continue
            rows.append({c: _as_text(value.get(c)) for c in columns})
            numbers.append(number)
    table = pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in columns})
    return with_malformed(table, malformed, numbers)


def _as_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True)


def _decoded(table: pa.Table) -> pa.Table:
    """Binary columns as text; values that are not UTF-8 become null, and the rows holding one
    are marked (column `__invalid_encoding`)."""
    bad = np.zeros(table.num_rows, dtype=bool)
    columns = {}
    for name, col in zip(table.column_names, table.columns):
        if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
            columns[name] = col
            continue
        texts = []
        for i, raw in enumerate(col.to_pylist()):
            try:
                texts.append(None if raw is None else raw.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(None)
                bad[i] = True
        columns[name] = pa.array(texts, pa.string())
    out = pa.table(columns)
    return out.append_column(INVALID_ENCODING, pa.array(bad)) if bad.any() else out


INVALID_ENCODING = "__invalid_encoding"
MALFORMED = "__malformed_rows"  # schema metadata: line numbers of rows that are no row at all


def with_malformed(table: pa.Table, malformed: list[int], numbers: list[int] | None = None
                   ) -> pa.Table:
    """Carry the malformed rows' line numbers (and, when rows were skipped, every kept row's own
    line number) beside the table, for `validate` to quarantine and number them."""
    meta = dict(table.schema.metadata or {})
    if malformed:
        meta[MALFORMED.encode()] = json.dumps(malformed).encode()
    if numbers is not None:
        meta[b"__row_numbers"] = json.dumps(numbers).encode()
    return table.replace_schema_metadata(meta) if meta else table


def read_files(
    paths: list[Path],
    partition_date: dt.date | None | str = "infer",
    lines: dict[str, str] | None = None,
) -> Batch:
    """Read and validate files; `partition_date="infer"` takes it from each file's directory.

    Files are read and validated side by side on the machine's cores (Arrow's and numpy's
    kernels run without the GIL); the first unreadable file in `paths` order is the error."""
    def one(path: Path) -> tuple[pa.Table, pa.Table]:
        day = partition_date_of(path) if partition_date == "infer" else partition_date
        return validate(read_raw(path), str(path), day, lines)

    results = side_by_side(one, paths)
    return batch_of([ok for ok, _ in results], [bad for _, bad in results],
                    [str(p) for p in paths])


def batch_of(valid: list[pa.Table], quarantined: list[pa.Table], files: list[str]) -> Batch:
    """One batch of validated rows: every row read is valid or quarantined (a malformed line is
    quarantined too), so the rows read are the two counts added."""
    rows = sum(t.num_rows for t in valid) + sum(t.num_rows for t in quarantined)
    return Batch(
        valid=_compact(valid),
        quarantined=pa.concat_tables(quarantined) if quarantined else QUARANTINE_SCHEMA.empty_table(),
        rows_read=rows,
        files=files,
    )


def _compact(tables: list[pa.Table]) -> pa.Table:
    """The day's valid rows with one chunk and one dictionary for every column but message_id:
    rows then share codes for lines and contacts and are cheap to index. message_id stays chunked
    so its strings are never copied as a whole. A file's chunks share its dictionaries, so they
    are joined per file first (no hashing), then the files' dictionaries unified once each."""
    if not tables:
        return VALID_SCHEMA.empty_table()
    columns = {}
    for name in VALID_SCHEMA.names:
        if name == "message_id":
            columns[name] = pa.chunked_array([c for t in tables for c in t.column(name).chunks],
                                             VALID_SCHEMA.field(name).type)
            continue
        field = VALID_SCHEMA.field(name)
        parts = ([t.column(name).combine_chunks() for t in tables]
                 if pa.types.is_dictionary(field.type) else
                 [c for t in tables for c in t.column(name).chunks])
        columns[name] = pa.chunked_array([pa.chunked_array(parts, field.type).combine_chunks()])
    return pa.table(columns, schema=VALID_SCHEMA)


def _column(raw: pa.Table, name: str) -> pa.ChunkedArray:
    """A contract column in its normalised type (string or dictionary), all nulls if absent."""
    target = DICT if name in DICTIONARY_COLUMNS else pa.string()
    if name not in raw.column_names:
        return pa.chunked_array([pa.nulls(raw.num_rows, target)], type=target)
    col = raw.column(name)
    if col.type == target:
        return col
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, pa.string())
    if not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    return pc.dictionary_encode(col) if target == DICT else col


def _check(col: pa.ChunkedArray, test, null_as: bool) -> np.ndarray:
    """`test` (Arrow array -> boolean array) for every row, as a numpy mask. On a dictionary column
    it runs once per distinct value and is spread to the rows through the indices."""
    if not pa.types.is_dictionary(col.type):
        return _mask(test(col), null_as)
    parts, seen, per_value = [], None, None
    for chunk in col.chunks:
        if seen is None or not chunk.dictionary.equals(seen):  # chunks often share one
            seen = chunk.dictionary
            per_value = np.append(_mask(test(seen), null_as), null_as)
        idx = pc.fill_null(chunk.indices, len(per_value) - 1)  # a null row reads the last slot
        parts.append(per_value[idx.to_numpy(zero_copy_only=False)])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


_NONE = np.zeros(0, dtype=np.int64)  # no row fails


def _failing(col: pa.ChunkedArray, test, null_as: bool) -> np.ndarray:
    """Positions of the rows for which `test` (Arrow array -> boolean array) is false, a null row
    counted as `null_as`: `np.flatnonzero(~_check(col, test, null_as))`, but a chunk whose every
    row passes costs no mask as long as the chunk, which on a valid day is every chunk (on a
    dictionary column it is told from the distinct values alone)."""
    found, offset = [], 0
    for chunk in col.chunks:
        if pa.types.is_dictionary(chunk.type):
            fails = ~np.append(_mask(test(chunk.dictionary), null_as), null_as)  # last: null
            if fails[:-1].any() or (chunk.null_count and not null_as):
                codes = pc.fill_null(chunk.indices, len(fails) - 1)
                found.append(np.flatnonzero(fails[codes.to_numpy(zero_copy_only=False)]) + offset)
        else:
            ok = pc.fill_null(test(chunk), null_as)
            if not pc.all(ok).as_py():
                found.append(np.flatnonzero(~_mask(ok)) + offset)
        offset += len(chunk)
    return np.concatenate(found) if found else _NONE


def parse_sent_at(raw: pa.Table, name: str = "sent_at") -> tuple[pa.ChunkedArray, np.ndarray]:
    """UTC nanosecond timestamps of column `name` and a mask of values that are present but not
    usable."""
    n = raw.num_rows
    if name not in raw.column_names:
        return pa.chunked_array([pa.nulls(n, TIMESTAMP)]), np.zeros(n, dtype=bool)
    col = raw.column(name)
    if pa.types.is_timestamp(col.type):
        if col.type.tz is None:  # a naive instant cannot be placed in UTC with certainty
            present = _mask(col.is_valid())
            return pa.chunked_array([pa.nulls(n, TIMESTAMP)]), present
        return _in_range(col)
    text = _column(raw, name)
    present = _mask(pc.not_equal(text, ""), null_as=False)
    well_formed = pc.fill_null(pc.match_substring_regex(text, ISO_WITH_OFFSET), False)
    # years no backend holds the same way (before 1678, after 2261: year 1, year 9999) are invalid
    year = pc.cast(pc.if_else(well_formed, pc.utf8_slice_codeunits(text, 0, 4), "2000"), pa.int32())
    well_formed = pc.and_(well_formed, pc.and_(pc.greater_equal(year, 1678),
                                               pc.less_equal(year, 2261)))
    candidate = pc.if_else(well_formed, text, pa.scalar(None, pa.string()))
    try:
        parsed = pc.cast(candidate, TIMESTAMP)
    except pa.ArrowInvalid:  # e.g. month 13: parse value by value, unparseable ones become null
        import pandas as pd

        values = pd.to_datetime(
            candidate.to_pandas(), utc=True, format="ISO8601", errors="coerce"
        ).astype("datetime64[ns, UTC]")
        parsed = pa.chunked_array([pa.array(values, type=TIMESTAMP)])
    bad = present & ~_mask(parsed.is_valid())
    return parsed, bad


def _in_range(col: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Timestamps with a zone as UTC nanoseconds; those no backend holds the same way (outside
    1677..2262, e.g. year 9999 or year 1) become null and are flagged."""
    unit = col.type.unit
    if unit == "ns":
        return pc.cast(col, TIMESTAMP), np.zeros(len(col), dtype=bool)
    per_ns = {"s": 10**9, "ms": 10**6, "us": 10**3}[unit]
    ticks = pc.cast(col, pa.int64())
    lo, hi = EARLIEST // per_ns + 1, LATEST // per_ns - 1
    bounds = pc.min_max(ticks)  # the usual case, every instant inside: one pass, no masks
    if bounds["min"].as_py() is None or lo <= bounds["min"].as_py() <= bounds["max"].as_py() <= hi:
        return pc.cast(col, TIMESTAMP), np.zeros(len(col), dtype=bool)
    inside = pc.and_(pc.greater_equal(ticks, lo), pc.less_equal(ticks, hi))
    bad = _mask(col.is_valid()) & ~_mask(inside, null_as=True)
    kept = pc.if_else(pa.chunked_array([pa.array(~bad)]), ticks, pa.scalar(None, pa.int64()))
    ns = pc.multiply(kept, per_ns)
    return pc.cast(ns, TIMESTAMP), bad


def validate(
    raw: pa.Table,
    source_file: str,
    partition_date: dt.date | None = None,
    lines: dict[str, str] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Split raw rows into valid contract rows and quarantined rows with the first failed check.

    `lines` maps line_id -> customer_id; without it the line checks are skipped (pure reconcile).
    """
    rows, valid, quarantined = checked(raw, source_file, partition_date, lines)
    return (rows if valid is None else rows.filter(pa.array(valid))), quarantined


def checked(
    raw: pa.Table,
    source_file: str,
    partition_date: dt.date | None = None,
    lines: dict[str, str] | None = None,
) -> tuple[pa.Table, np.ndarray | None, pa.Table]:
    """`validate` without the copy of the valid rows: every row in contract form (VALID_SCHEMA;
    a quarantined row's values there mean nothing), a mask of the valid ones (None: all), and
    the quarantined rows. For a caller that gathers the valid rows in an order of its own anyway
    (shards.py): one copy of the rows instead of two."""
    row_numbers, malformed = file_rows(raw)
    if any(pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in raw.schema.types):
        raw = _decoded(raw)  # parquet may hold ids as bytes
    bad_encoding = (raw.column(INVALID_ENCODING).to_numpy(zero_copy_only=False)
                    if INVALID_ENCODING in raw.column_names else None)
    if bad_encoding is not None:
        raw = raw.drop_columns([INVALID_ENCODING])
    n = raw.num_rows
    cols = {c: _column(raw, c) for c in CONTRACT_COLUMNS if c != "sent_at"}
    # contacts encoded once, in one chunk: checked and made canonical per distinct value, and the
    # day's dictionary is a union of the files' (batch_of), not an encoding of every row again
    cols["contact_id"] = pc.dictionary_encode(_one_chunk(cols["contact_id"]))
    sent_at, bad_time = parse_sent_at(raw)
    reason = np.zeros(n, dtype=np.int16)  # 0 = valid, k = REASONS[k - 1]

    def flag(name: str, rows: np.ndarray) -> None:
        """`rows`: positions of the rows failing check `name`; a row keeps its first failure."""
        if len(rows):
            rows = rows[reason[rows] == 0]
            reason[rows] = REASONS.index(name) + 1

    if bad_encoding is not None:
        flag("invalid_encoding", np.flatnonzero(bad_encoding))
    for c in REQUIRED_COLUMNS:
        if c == "sent_at":
            flag("missing_sent_at", np.flatnonzero(~_mask(sent_at.is_valid()) & ~bad_time)
                 if sent_at.null_count else _NONE)
        else:
            flag(f"missing_{c}", _failing(cols[c], _is_given, null_as=False))
    flag("invalid_message_id", _failing(cols["message_id"], _is_message_id, null_as=True))
    direction, mtype = cols["direction"], cols["message_type"]
    flag("invalid_direction", _failing(direction, _is_in(DIRECTIONS), null_as=False))
    flag("invalid_message_type", _failing(mtype, _is_in(MESSAGE_TYPES), null_as=False))
    inbound = _check(direction, lambda v: pc.equal(v, INBOUND), null_as=False)
    flag("inbound_template", np.flatnonzero(
        inbound & _check(mtype, lambda v: pc.equal(v, TEMPLATE), False)))
    # a missing status means "sent"; a given one must be one of STATUSES
    no_status = _failing(cols["status"], _is_given, null_as=False)
    flag("invalid_status", _failing(cols["status"], lambda v: pc.or_(_is_empty(v),
                                                                     _is_in(STATUSES)(v)), True))
    flag("invalid_contact_id", _failing(cols["contact_id"], _is_phone_number, null_as=False))
    flag("invalid_sent_at", np.flatnonzero(bad_time))
    if partition_date is not None:
        day = pc.cast(pc.cast(sent_at, pa.timestamp("ns")), pa.date32())
        partition = pa.scalar(partition_date, pa.date32())
        flag("sent_at_outside_partition",
             _failing(day, lambda v: pc.equal(v, partition), null_as=True))
    if lines is not None:
        known = _is_in(tuple(lines))
        flag("unknown_line", _failing(cols["line_id"], known, null_as=False))
        flag("line_of_other_customer",
             np.flatnonzero(~_owned_by(cols["line_id"], cols["customer_id"], lines)))

    contact = canonical_contacts(cols["contact_id"])
    status = cols["status"]
    if len(no_status):
        given = np.ones(n, dtype=bool)
        given[no_status] = False
        status = pc.dictionary_encode(pc.if_else(pa.array(given), pc.cast(status, pa.string()),
                                                 DEFAULT_STATUS))
    valid = pa.table(
        {
            **{c: cols[c] for c in ("message_id", "customer_id", "line_id")},
            "contact_id": contact,
            "direction": direction,
            "message_type": mtype,
            "sent_at": sent_at,
            "status": status,
            "source_file": constant_dictionary(source_file, n),
            "source_row": pa.array(row_numbers, pa.int64()),  # 1-based, as people count
        },
        schema=VALID_SCHEMA,
    )
    bad_idx = np.flatnonzero(reason)
    quarantined = quarantine_rows(
        take_rows(raw, bad_idx), source_file, row_numbers[bad_idx].tolist(),
        [REASONS[r - 1] for r in reason[bad_idx]],
    )
    if malformed:
        lines = pa.table({"row": pa.array(malformed, pa.int64())})
        quarantined = pa.concat_tables([quarantined, quarantine_rows(
            lines, source_file, malformed, ["malformed_row"] * len(malformed))])
    return valid, (reason == 0 if len(bad_idx) else None), quarantined


def file_rows(raw: pa.Table) -> tuple[np.ndarray, list[int]]:
    """The 1-based number in its file of every row read, and those of the malformed lines, which
    are no row at all (read_raw keeps both beside the table)."""
    meta = raw.schema.metadata or {}
    malformed = json.loads(meta.get(MALFORMED.encode(), b"[]"))
    if b"__row_numbers" in meta:
        return np.array(json.loads(meta[b"__row_numbers"]), dtype=np.int64), malformed
    return _row_numbers(raw.num_rows, malformed), malformed


def _row_numbers(n: int, malformed: list[int]) -> np.ndarray:
    """1-based data-row numbers of the n rows read, skipping the malformed ones."""
    if not malformed:
        return np.arange(1, n + 1, dtype=np.int64)
    skipped = set(malformed)
    numbers, k = [], 0
    while len(numbers) < n:
        k += 1
        if k not in skipped:
            numbers.append(k)
    return np.array(numbers, dtype=np.int64)


def canonical_contacts(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Contact ids in their canonical form: the digits without the optional leading `+`
    (billing-rules.md, Contacts). Text stays text; a dictionary column stays one, its values made
    canonical (two spellings of one contact then share one code)."""
    def strip(values, plus):
        return pc.if_else(plus, pc.utf8_slice_codeunits(values, 1), values)

    if not pa.types.is_dictionary(col.type):
        return strip(col, pc.starts_with(col, "+"))
    chunks = []
    for chunk in col.chunks:
        plus = _mask(pc.starts_with(chunk.dictionary, "+"), null_as=False)
        values = strip(chunk.dictionary, pa.array(plus))
        if _spelled_both_ways(values, plus):  # "+1" and "1": one code for both
            encoded = pc.dictionary_encode(values)
            chunk = pa.DictionaryArray.from_arrays(encoded.indices.take(chunk.indices),
                                                   encoded.dictionary)
        else:
            chunk = pa.DictionaryArray.from_arrays(chunk.indices, values)
        chunks.append(chunk)
    return pa.chunked_array(chunks, col.type)


def _spelled_both_ways(canonical: pa.Array, plus: np.ndarray) -> bool:
    """Whether distinct contact ids, made `canonical`, hold one number spelled with and without
    its `+` (`plus`: spelled with it): only then are the canonical values not distinct. Looked up
    among the values spelled without a `+` alone, where counting the distinct canonical values
    hashed all of them (0.12 s per file of 393k contacts, every one spelled with its `+`)."""
    if plus.all() or not plus.any():
        return False
    spelled_with = canonical.filter(pa.array(plus))
    spelled_without = canonical.filter(pa.array(~plus))
    return bool(pc.any(pc.is_in(spelled_with, value_set=spelled_without)).as_py())


def _one_chunk(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column in one chunk (a CSV file is read as many): encoding it then gives one
    dictionary, where chunk by chunk each chunk would get its own, growing, one."""
    return col if col.num_chunks <= 1 else pa.chunked_array([col.combine_chunks()])


def _is_empty(values) -> pa.Array:
    """Empty text, read from the value lengths alone."""
    return pc.equal(pc.binary_length(values), 0)


def _is_given(values) -> pa.Array:
    """Text that is not empty (a null is neither)."""
    return pc.not_equal(pc.binary_length(values), 0)


def _is_message_id(values) -> pa.Array:
    """At most 255 characters and no control character (NUL included): what every backend can
    store and compare the same way."""
    short = pc.less_equal(pc.binary_length(values), MAX_MESSAGE_ID)  # bytes >= characters
    if not _mask(short, null_as=True).all():  # some are longer in bytes: count characters
        short = pc.less_equal(pc.utf8_length(values), MAX_MESSAGE_ID)
    if not _may_hold_control_characters(values):  # the usual case: no regex over every id
        return short
    return pc.and_(short, pc.invert(pc.match_substring_regex(values, r"[[:cntrl:]]")))


# bytes of text scanned at a time: fresh memory as large as a day's ids costs more in page faults
# here than the comparisons themselves (0.43 s vs 0.015 s for 94 MB of ids)
_SCAN_BLOCK = 1 << 20


def _may_hold_control_characters(values) -> bool:
    """False when no value of this text column holds a control character ([[:cntrl:]]: bytes
    0x00-0x1F and 0x7F, which in UTF-8 only ever encode those characters), read from the raw
    character bytes. True when one may (a slice's buffer can hold bytes of other values)."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    seen = np.empty(_SCAN_BLOCK, dtype=bool)  # one small mask reused, not three as large as text
    for chunk in chunks:
        if not pa.types.is_string(chunk.type):
            return True
        data = chunk.buffers()[2]
        if data is None:
            continue
        raw = np.frombuffer(data, dtype=np.uint8)
        for start in range(0, len(raw), _SCAN_BLOCK):
            block = raw[start:start + _SCAN_BLOCK]
            mask = seen[:len(block)]
            if np.less(block, 0x20, out=mask).any() or np.equal(block, 0x7F, out=mask).any():
                return True
    return False


def quarantine_rows(raw: pa.Table, source_file, source_rows, reasons: list[str]) -> pa.Table:
    """Quarantine records keeping each raw row as JSON text, so nothing about it is lost."""
    records = raw.to_pylist()
    files = source_file if isinstance(source_file, list) else [source_file] * len(records)
    return pa.table(
        {
            "source_file": pa.array(files, pa.string()),
            "source_row": pa.array(source_rows, pa.int64()),
            "message_id": pa.array([_storable_id(r.get("message_id")) for r in records],
                                   pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "record": pa.array(
                [json.dumps(r, default=str, sort_keys=True) for r in records], pa.string()
            ),
        },
        schema=QUARANTINE_SCHEMA,
    )


def _storable_id(value) -> str | None:
    """The message id as the quarantine table keeps it: None when it is missing or not an id
    every backend can store (the record keeps it, JSON-escaped)."""
    if value is None or value == "" or not isinstance(value, str):
        return None
    if len(value) > MAX_MESSAGE_ID or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return None
    return None if redact(value) != value else value  # a phone number in the id column


def _owned_by(line: pa.ChunkedArray, customer: pa.ChunkedArray, lines: dict[str, str]) -> np.ndarray:
    """Rows whose line belongs to their customer (or whose line is unknown: checked elsewhere),
    compared on dictionary codes: one lookup per distinct line, not per row."""
    line, customer = line.combine_chunks(), customer.combine_chunks()
    if len(line) == 0:
        return np.zeros(0, dtype=bool)
    owners = [lines.get(v) for v in line.dictionary.to_pylist()]
    owner_code = pc.index_in(pa.array(owners, pa.string()), value_set=customer.dictionary)
    owner_code = pc.fill_null(owner_code, -2).to_numpy(zero_copy_only=False).copy()  # -2: no match
    owner_code[[o is None for o in owners]] = -1  # unknown line: reported as unknown_line instead
    owner_code = np.append(owner_code, -1)  # a null line: reported as missing_line_id
    expected = owner_code[pc.fill_null(line.indices, len(owner_code) - 1).to_numpy()]
    actual = pc.fill_null(customer.indices, -3).to_numpy(zero_copy_only=False)
    return (expected == -1) | (expected == actual)


def _mask(flags, null_as: bool = False) -> np.ndarray:
    """An Arrow boolean array as a numpy mask, nulls taken as `null_as`."""
    return np.asarray(pc.fill_null(flags, null_as).to_numpy(zero_copy_only=False), dtype=bool)


def _is_phone_number(values: pa.Array) -> pa.Array:
    """Digits with an optional leading `+` (a cheaper spelling of the regex ^\\+?[0-9]+$)."""
    plus = pc.starts_with(values, "+")
    return pc.ascii_is_decimal(pc.if_else(plus, pc.utf8_slice_codeunits(values, 1), values))


def _is_in(allowed: tuple[str, ...]):
    value_set = pa.array(allowed, pa.string())
    return lambda values: pc.is_in(values, value_set=value_set)
