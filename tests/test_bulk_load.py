"""Bulk loading into the warehouse (`warehouse.insert_arrow`) keeps every value exactly: the empty
string apart from NULL, separators, quotes and line breaks inside text, exact decimals, instants
(to PostgreSQL's microseconds), dates, booleans and dictionary-encoded text, on both warehouses;
and a day loaded again (`warehouse.replace_day`) holds exactly its new rows."""

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


def _day_tables(day: dt.date, run_id: str, starts: dict[str, str]) -> dict[str, pa.Table]:
    """A day's four tables: one start per (message id: unit price), ns instants as staged."""
    n = len(starts)
    ns = 1_772_323_200 * 10**9 + 123_456_789  # 2026-03-01 00:00:00.123456789
    text = lambda v: pa.array([v] * n, pa.string())
    when = pa.array([ns + i * 10**9 + (day - dt.date(2026, 3, 1)).days * 86_400 * 10**9
                     for i in range(n)], pa.timestamp("ns", "UTC"))
    return {
        "conversation_starts": pa.table({
            "message_id": list(starts), "billing_date": pa.array([day] * n, pa.date32()),
            "customer_id": text("C1"), "line_id": text("L1"), "contact_key": text("k"),
            "country": text("DE"), "conversation_type": text("user_initiated"), "started_at": when,
            "unit_price": pa.array([Decimal(p) for p in starts.values()], pa.decimal128(20, 10)),
            "currency": text("EUR"), "rate_row": pa.array([1] * n, pa.int32()),
            "run_id": text(run_id)}),
        "invoice_lines": pa.table({
            "billing_date": pa.array([day], pa.date32()), "customer_id": ["C1"], "country": ["DE"],
            "conversation_type": ["user_initiated"], "currency": ["EUR"],
            "unit_price": pa.array([Decimal("0.1")], pa.decimal128(20, 10)),
            "quantity": pa.array([n], pa.int64()),
            "amount": pa.array([Decimal(n) / 10], pa.decimal128(38, 10)), "run_id": [run_id]}),
        "session_anomalies": pa.table({
            "message_id": [f"a-{day}"], "customer_id": ["C1"], "line_id": ["L1"],
            "contact_key": ["k"], "sent_at": when.slice(0, 1), "kind": ["outside_session"],
            "run_id": [run_id], "billing_date": pa.array([day], pa.date32())}),
        "quarantined_messages": pa.table({
            "message_id": [None], "reason": ["missing_message_id"], "record": ["{}"],
            "source_file": ["f.parquet"], "source_row": pa.array([2], pa.int64()),
            "run_id": [run_id], "billing_date": pa.array([day], pa.date32()),
            "partition_date": pa.array([day], pa.date32())}),
    }


def test_a_day_replaced_holds_exactly_the_new_rows(warehouse_url, tmp_path):
    """Publishing a day again leaves exactly its new rows (run id included) and every other day
    as it was; on DuckDB the rows that did not change stay where they were (same rowid: not
    deleted from the key index and inserted again, which DuckDB's commit pays per row)."""
    from billing_jobs import migrate

    day, other = dt.date(2026, 3, 2), dt.date(2026, 3, 1)
    first = _day_tables(day, "run-1", {"m1": "0.1", "m2": "0.1", "m3": "0.1"})
    again = _day_tables(day, "run-2", {"m1": "0.1", "m2": "0.2", "m4": "0.1"})
    pq.write_table(again["conversation_starts"], tmp_path / "starts.parquet")
    again["conversation_starts"] = tmp_path / "starts.parquet"  # as publish gives it
    engine = warehouse.create_engine(warehouse_url)
    duckdb = engine.dialect.name == "duckdb"
    try:
        with engine.connect() as conn:
            migrate.upgrade(conn, "billing", 30)
        for tables, on, run in ((_day_tables(other, "run-0", {"m0": "0.1"}), other, "run-0"),
                                (first, day, "run-1")):
            with engine.begin() as conn:
                warehouse.replace_day(conn, "billing", on, tables, run)
        where = "select message_id, {} from billing.conversation_starts order by message_id"
        with engine.begin() as conn:  # rowids compared inside the transaction: a checkpoint
            # after it may number the rows afresh
            rowids = lambda: (dict(tuple(r) for r in conn.execute(
                sa.text(where.format("rowid"))).all()) if duckdb else {})
            before = rowids()
            warehouse.replace_day(conn, "billing", day, again, "run-2")
            after = rowids()
        with engine.connect() as conn:
            starts = conn.execute(sa.text(where.format(
                "billing_date, unit_price, run_id, started_at"))).all()
            others = {name: conn.execute(sa.text(
                f"select billing_date, run_id, count(*) from billing.{name}"
                f" group by billing_date, run_id order by billing_date")).all()
                for name in warehouse.DAY_TABLES}
    finally:
        engine.dispose()
    assert [(m, d, p, r) for m, d, p, r, _ in starts] == [
        ("m0", other, Decimal("0.1"), "run-0"), ("m1", day, Decimal("0.1"), "run-2"),
        ("m2", day, Decimal("0.2"), "run-2"), ("m4", day, Decimal("0.1"), "run-2")]
    assert starts[1][4].astimezone(UTC).microsecond == 123456  # truncated, as a first load
    for name, rows in others.items():
        assert [tuple(r) for r in rows] == [(other, "run-0", 1), (day, "run-2", 3 if
                                            name == "conversation_starts" else 1)], name
    if duckdb:
        assert after["m0"] == before["m0"] and after["m1"] == before["m1"]  # kept in place
        assert after["m2"] not in before.values() and after["m4"] not in before.values()


@pytest.mark.parametrize("published", [False, True], ids=["first publish", "published again"])
def test_a_start_billed_on_another_day_fails_the_replacement_by_its_key(warehouse_url, tmp_path,
                                                                        published):
    """The key still decides: a staged start whose message is billed on another day fails the
    publish with the database's own word for it, not an error of the clean-up after it, whether
    the day was published before (on DuckDB: by difference) or not (a plain insert)."""
    from billing_jobs import migrate

    day, other = dt.date(2026, 3, 2), dt.date(2026, 3, 1)
    again = _day_tables(day, "run-2", {"m0": "0.1"})
    pq.write_table(again["conversation_starts"], tmp_path / "starts.parquet")
    again["conversation_starts"] = tmp_path / "starts.parquet"
    engine = warehouse.create_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            migrate.upgrade(conn, "billing", 30)
        for on, starts in ((other, {"m0": "0.1"}), *([(day, {"m5": "0.1"})] if published else [])):
            with engine.begin() as conn:
                warehouse.replace_day(conn, "billing", on, _day_tables(on, "run-0", starts),
                                      "run-0")
        with pytest.raises(Exception, match="(?i)duplicate key|primary key"), \
                engine.begin() as conn:
            warehouse.replace_day(conn, "billing", day, again, "run-2")
    finally:
        engine.dispose()
