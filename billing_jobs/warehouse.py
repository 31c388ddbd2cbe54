"""The warehouse (data-contracts.md §3) behind any SQLAlchemy URL: DDL from `sql/`, bulk loading
from Arrow, and the publish transaction that replaces a billing date's rows atomically.

DuckDB (the embedded default) allows one writing process per file: connections are short-lived
and a locked file makes us wait and retry for a bounded time, then fail with a clear message.
PostgreSQL (production) takes a per-date advisory lock so two runs of one date never interleave.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from billing_jobs import shipped
from billing_jobs.config import SCHEMA_NAME, check_warehouse_url
from billing_jobs.errors import WarehouseError, one_line, redact

SQL_DIR = shipped("sql")
DDL = sorted((SQL_DIR / "ddl").glob("*.sql")) + sorted((SQL_DIR / "views").glob("*.sql"))
DAY_TABLES = ("conversation_starts", "invoice_lines", "session_anomalies", "quarantined_messages")


def sql_file(path: Path, schema: str) -> str:
    if not SCHEMA_NAME.fullmatch(schema):
        raise WarehouseError(f"schema name must be a lower-case identifier: {schema!r}")
    return path.read_text().replace("{schema}", schema)


def query(conn: sa.Connection, name: str, schema: str, **params) -> list[dict]:
    """Rows of `sql/jobs/NAME.sql` as dicts: the job's own queries live as files, like finance's."""
    sql = sql_file(SQL_DIR / "jobs" / f"{name}.sql", schema)
    return [dict(r._mapping) for r in conn.execute(sa.text(sql), params).all()]


def execute(conn: sa.Connection, name: str, schema: str, **params) -> None:
    """Run the statement of `sql/jobs/NAME.sql` with `params`."""
    conn.execute(sa.text(sql_file(SQL_DIR / "jobs" / f"{name}.sql", schema)), params)


def create_engine(url: str, read_only: bool = False) -> sa.Engine:
    """An engine with no pool: every connection is closed when done, so a DuckDB file is locked
    only while we actually use it. `read_only` opens a DuckDB file for reading, which any number
    of processes may do at once (the shards of a day)."""
    if url.startswith("duckdb:///") and not url.startswith("duckdb:///:memory:"):
        Path(url.removeprefix("duckdb:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        if read_only and url.startswith("duckdb:"):
            return sa.create_engine(url, poolclass=NullPool, connect_args={"read_only": True})
        return sa.create_engine(url, poolclass=NullPool)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError):
        check_warehouse_url(url)  # says what is wrong with it
        raise WarehouseError(f"unusable warehouse URL {redact(url)!r}") from None


def require_tables(conn: sa.Connection, schema: str, *tables: str) -> None:
    """For readers (trace, export, queries), which never create anything: the tables exist."""
    missing = [t for t in tables if not has_table(conn, schema, t)]
    if missing:
        raise WarehouseError(f"warehouse has no {schema}.{missing[0]}: nothing was published "
                             f"there yet (run a day first, or check --warehouse)")


def has_table(conn: sa.Connection, schema: str, table: str) -> bool:
    """Asked of information_schema, result drained (DuckDB's connection wants it so)."""
    return conn.execute(sa.text(
        "select count(*) from information_schema.tables where table_schema = :s"
        " and table_name = :t"), {"s": schema, "t": table}).all()[0][0] > 0


def _readable(url: str) -> bool:
    """False for a DuckDB file that does not exist yet: nothing was published there."""
    if url.startswith("duckdb:///") and not url.startswith("duckdb:///:memory:"):
        return Path(url.removeprefix("duckdb:///")).exists()
    return True


def read_job_query(url: str, schema: str, wait_s: float, name: str, table: str,
                   **params) -> list[dict]:
    """Rows of `sql/jobs/NAME.sql` read without writing anything; [] while `table` does not
    exist (a warehouse nothing was published to)."""
    if not _readable(url):
        return []
    engine = create_engine(url, read_only=True)
    try:
        with connect(engine, wait_s) as conn:
            if not has_table(conn, schema, table):
                return []
            return query(conn, name, schema, **params)
    finally:
        engine.dispose()


def billed_dates(url: str, schema: str, wait_s: float, ids: pa.Array) -> dict[str, object]:
    """The billing date of every id of `ids` that is billed as a conversation start."""
    if len(ids) == 0 or not _readable(url):
        return {}
    engine = create_engine(url, read_only=True)
    try:
        with connect(engine, wait_s) as conn:
            if not has_table(conn, schema, "conversation_starts"):
                return {}
            candidates = pa.table({"message_id": ids})
            raw = conn.connection.dbapi_connection
            if conn.dialect.name == "duckdb":
                raw.register("candidate_ids", candidates)
            else:
                conn.execute(sa.text("create temporary table candidate_ids (message_id text)"))
                insert_arrow(conn, None, "candidate_ids", candidates)
            rows = query(conn, "billed_starts", schema)
    finally:
        engine.dispose()
    return {r["message_id"]: r["billing_date"] for r in rows}


def check_reachable(url: str, wait_s: float) -> None:
    """Connect once and let go: a wrong host, database or password fails before any work."""
    engine = create_engine(url)
    try:
        with connect(engine, wait_s):
            pass
    finally:
        engine.dispose()


def _locked(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "database is locked" in text or "Conflicting lock" in text


def connect(engine: sa.Engine, wait_s: float = 60.0) -> sa.Connection:
    """A connection, retrying with backoff while another process holds the DuckDB file."""
    deadline, pause = time.monotonic() + wait_s, 0.2
    while True:
        try:
            return engine.connect()
        except sa.exc.DBAPIError as exc:
            if not _locked(exc) or time.monotonic() > deadline:
                if _locked(exc):
                    raise WarehouseError(
                        f"warehouse {engine.url.render_as_string(hide_password=True)} is locked by "
                        f"another process (a running job or an open analyst session); gave up "
                        f"after {wait_s:.0f} s", transient=True
                    ) from None
                raise WarehouseError(f"cannot connect to the warehouse "
                                     f"{engine.url.render_as_string(hide_password=True)}: "
                                     f"{one_line(exc)}", transient=True) from None
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def ensure_schema(conn: sa.Connection, schema: str) -> None:
    for path in DDL:
        conn.execute(sa.text(sql_file(path, schema)))


def lock_key(conn: sa.Connection, key: str, wait_s: float, busy: str | None = None) -> None:
    """PostgreSQL: hold an advisory lock on `key` until the transaction ends, waiting at most
    `wait_s`. (DuckDB has a single writer per file already.)"""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"set local lock_timeout = '{int(wait_s * 1000)}ms'"))
        try:
            conn.execute(sa.text("select pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
        except sa.exc.OperationalError as exc:
            if "lock timeout" not in str(exc):
                raise
            raise WarehouseError(f"{busy or key + ' is held by another run'}; gave up after "
                                 f"{wait_s:.0f} s", transient=True) from None
        conn.execute(sa.text("set local lock_timeout = 0"))


def lock_billing_date(conn: sa.Connection, day, wait_s: float) -> None:
    lock_key(conn, f"billing_date:{day.isoformat()}", wait_s,
             busy=f"billing date {day} is being published by another run")


def apply_finance_role(conn: sa.Connection, schema: str) -> None:
    """PostgreSQL only: the read-only `billing_finance` role (sql/roles/billing_finance.sql)."""
    if conn.dialect.name != "postgresql":
        raise WarehouseError("the billing_finance role is for PostgreSQL warehouses")
    conn.execute(sa.text(sql_file(SQL_DIR / "roles" / "billing_finance.sql", schema)))


def insert_arrow(conn: sa.Connection, schema: str, table: str, data: pa.Table) -> None:
    """Append `data` to `schema.table` inside the caller's transaction, by the fastest path the
    dialect has: DuckDB scans the Arrow table, PostgreSQL gets COPY, others executemany."""
    if data.num_rows == 0:
        return
    columns = ", ".join(data.column_names)
    target = f"{schema}.{table}" if schema else table
    raw = conn.connection.dbapi_connection
    if conn.dialect.name == "duckdb":
        name = f"staged_{table}"
        raw.register(name, data)
        conn.execute(sa.text(f"insert into {target} ({columns}) select {columns} from {name}"))
        raw.unregister(name)  # on failure the connection is discarded with its registration
    elif conn.dialect.name == "postgresql":
        data = _microseconds(data)  # PostgreSQL keeps microseconds; psycopg adapts datetime
        with raw.cursor() as cur, cur.copy(f"copy {target} ({columns}) from stdin") as copy:
            for batch in data.to_batches(max_chunksize=50_000):
                for row in zip(*(col.to_pylist() for col in batch.columns)):
                    copy.write_row(row)
    else:
        meta = sa.table(table, *(sa.column(c) for c in data.column_names), schema=schema)
        conn.execute(meta.insert(), data.to_pylist())


def _microseconds(data: pa.Table) -> pa.Table:
    for i, field in enumerate(data.schema):
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            data = data.set_column(i, field.name, data.column(i).cast(
                pa.timestamp("us", field.type.tz), safe=False))
    return data


def insert_parquet(conn: sa.Connection, schema: str, table: str, path: Path) -> None:
    """Append a parquet file's rows to `schema.table` without holding the file in memory: DuckDB
    reads it itself, other dialects get it in batches."""
    if conn.dialect.name == "duckdb":
        import pyarrow.parquet as pq

        columns = ", ".join(pq.read_schema(path).names)
        literal = "'" + str(path).replace("'", "''") + "'"
        conn.execute(sa.text(f"insert into {schema}.{table} ({columns}) select {columns}"
                             f" from read_parquet({literal})"))
        return
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=200_000):
        insert_arrow(conn, schema, table, pa.Table.from_batches([batch]))


def replace_day(conn: sa.Connection, schema: str, day, tables: dict[str, pa.Table | Path]) -> None:
    """Delete the date's rows from every day table, then insert the new ones (same transaction).
    A table given as a path is a staged parquet file, loaded without reading it into memory."""
    for name in DAY_TABLES:
        conn.execute(sa.text(f"delete from {schema}.{name} where billing_date = :d"), {"d": day})
    for name in DAY_TABLES:
        data = tables[name]
        if isinstance(data, Path):
            insert_parquet(conn, schema, name, data)
        else:
            insert_arrow(conn, schema, name, data)


def store_reference(conn: sa.Connection, schema: str, reference) -> None:
    """The reference rows a run used, once per content hash."""
    seen = conn.execute(sa.text(f"select count(*) from {schema}.lines where reference_hash = :h"),
                        {"h": reference.content_hash}).all()[0][0]  # all(): DuckDB 2 wants results drained
    if seen:
        return
    h = reference.content_hash
    insert_arrow(conn, schema, "customers", pa.Table.from_pylist(
        [{"reference_hash": h, "customer_id": c, "name": n} for c, n in reference.customers.items()]))
    insert_arrow(conn, schema, "lines", pa.Table.from_pylist(
        [{"reference_hash": h, "line_id": line, "customer_id": c, "country": country}
         for line, (c, country) in reference.lines.items()]))
    insert_arrow(conn, schema, "rate_card", pa.table({
        "reference_hash": [h] * len(reference.rates),
        "rate_row": pa.array([r.row for r in reference.rates], pa.int32()),
        "country": [r.country for r in reference.rates],
        "conversation_type": [r.conversation_type for r in reference.rates],
        "unit_price": pa.array([r.unit_price for r in reference.rates], pa.decimal128(20, 10)),
        "currency": [r.currency for r in reference.rates],
        "valid_from": pa.array([r.valid_from for r in reference.rates], pa.timestamp("us", "UTC")),
        "valid_to": pa.array([r.valid_to for r in reference.rates], pa.timestamp("us", "UTC")),
    }))


def record_run(conn: sa.Connection, schema: str, run: dict) -> None:
    conn.execute(sa.text(f"delete from {schema}.billing_runs where run_id = :run_id"), run)
    columns = ", ".join(run)
    values = ", ".join(f":{k}" for k in run)
    conn.execute(sa.text(f"insert into {schema}.billing_runs ({columns}) values ({values})"), run)
