"""Bulk loading into the warehouse (`warehouse.insert_arrow`) keeps every value exactly: the empty
string apart from NULL, separators, quotes and line breaks inside text, exact decimals, instants
(to PostgreSQL's microseconds), dates, booleans and dictionary-encoded text, on both warehouses."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from billing_jobs import warehouse

UTC = dt.timezone.utc
ROWS = {
    "txt": ["", None, "a,b", 'say "hi"', "two\nlines", "ünïcödé ✓", "\\N", "NULL"],
    "num": [Decimal("0E-10"), None, Decimal("-5.5"), Decimal("1234567890.0123456789"),
          Decimal("0.0000000001"), Decimal("1E+3"), Decimal("7"), Decimal("0.1")],
    "ts": [dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), None,
           dt.datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC),
           dt.datetime(1999, 12, 31, tzinfo=UTC)] * 2,
    "flag": [True, False, None, True, False, True, None, False],
    "day": [dt.date(2026, 3, 1), None, dt.date(2026, 12, 31), dt.date(2000, 2, 29)] * 2,
    "k": [1, None, -3, 2**62, 0, 5, 6, 7],
}


@pytest.mark.parametrize("given_as", ["arrow", "parquet"])
def test_values_survive_the_bulk_load(warehouse_url, given_as, tmp_path):
    """Nanosecond instants are truncated to microseconds, never rounded: 23:59:59.999999789
    stays on its day (DuckDB's own cast would round it to the next midnight)."""
    table = pa.table({
        "txt": pa.array(ROWS["txt"], pa.string()),
        "num": pa.array(ROWS["num"], pa.decimal128(20, 10)),
        "ts": pa.array([None if v is None else int(v.timestamp()) * 10**9 + v.microsecond * 1000
                        + 789 for v in ROWS["ts"]], pa.timestamp("ns", "UTC")),  # ns: truncated
        "flag": pa.array(ROWS["flag"], pa.bool_()),
        "day": pa.array(ROWS["day"], pa.date32()),
        "k": pa.array(ROWS["k"], pa.int64()),
        "dict_txt": pa.array(ROWS["txt"], pa.string()).dictionary_encode(),
    })
    engine = warehouse.create_engine(warehouse_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table loaded (txt text, num numeric(20, 10), ts timestamp"
                                 " with time zone, flag boolean, day date, k bigint, dict_txt text)"))
            if given_as == "arrow":
                warehouse.insert_arrow(conn, None, "loaded", table)
            else:
                pq.write_table(table, tmp_path / "staged.parquet")
                warehouse.insert_parquet(conn, None, "loaded", tmp_path / "staged.parquet")
            rows = conn.execute(sa.text("select txt, num, ts, flag, day, k, dict_txt from loaded")).all()
    finally:
        engine.dispose()
    got = sorted(rows, key=lambda r: (r[5] is None, r[5]))
    want = sorted(zip(*ROWS.values(), ROWS["txt"]), key=lambda r: (r[5] is None, r[5]))
    for row, expected in zip(got, want, strict=True):
        t, n, at, b, d, k, _ = expected
        got_t, got_n, got_at, got_b, got_d, got_k, got_dict = row
        assert (got_t, got_n, got_b, got_d, got_k, got_dict) == (t, n, b, d, k, t)
        assert (got_at is None and at is None) or got_at.astimezone(UTC) == at
