"""The warehouse (data-contracts.md §3) behind any SQLAlchemy URL: the job's statements
(`billing_jobs/statements/`), bulk loading from Arrow, and the publish transaction that replaces a
billing date's rows atomically. The schema itself is made by migrations (migrate.py), never here.

DuckDB (the embedded default) allows one writing process per file: connections are short-lived
and a locked file makes us wait and retry for a bounded time, then fail naming the process.
PostgreSQL (production): every write transaction bounds its lock waits (`lock_timeout`) and
serialises on rows of `job_locks`, which a role with only SELECT cannot lock; a lock wait that
runs out fails with one line naming the sessions that held it.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from billing_jobs import shipped
from billing_jobs.config import SCHEMA_NAME, check_warehouse_url
from billing_jobs.errors import RunError, WarehouseError, one_line, redact

SQL_DIR = shipped("sql")  # finance's SQL: views, queries, the read-only role
STATEMENTS = Path(__file__).resolve().parent / "statements"  # the job's own, with bind parameters
DEFAULT_SCHEMA = "billing"
DAY_TABLES = ("conversation_starts", "invoice_lines", "session_anomalies", "quarantined_messages")
KEYED_DAY_TABLES = ("conversation_starts", "invoice_lines", "session_anomalies")  # primary keys
_QUALIFIER = re.compile(r"(?<![\w.])billing\.(?=[a-z_])")


def sql_file(path: Path, schema: str) -> str:
    """A SQL file's text for `schema`. The files name `billing.` as it is, so they run unchanged
    in psql and the DuckDB CLI on the default schema; another schema replaces that qualifier."""
    if not SCHEMA_NAME.fullmatch(schema):
        raise WarehouseError(f"schema name must be a lower-case identifier: {schema!r}")
    text = path.read_text()
    return text if schema == DEFAULT_SCHEMA else _QUALIFIER.sub(f"{schema}.", text)


def query(conn: sa.Connection, name: str, schema: str, **params) -> list[dict]:
    """Rows of `statements/NAME.sql` as dicts: the job's own queries live as files too."""
    sql = sql_file(STATEMENTS / f"{name}.sql", schema)
    return [dict(r._mapping) for r in conn.execute(sa.text(sql), params).all()]


def execute(conn: sa.Connection, name: str, schema: str, **params) -> None:
    """Run the statement of `statements/NAME.sql` with `params`."""
    conn.execute(sa.text(sql_file(STATEMENTS / f"{name}.sql", schema)), params)



def create_engine(url: str, read_only: bool = False) -> sa.Engine:
    """An engine with no pool: every connection is closed when done, so a DuckDB file is locked
    only while we actually use it. `read_only` opens a DuckDB file for reading, which any number
    of processes may do at once (the shards of a day)."""
    if url.startswith("duckdb:///") and not url.startswith("duckdb:///:memory:"):
        Path(url.removeprefix("duckdb:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        if read_only and url.startswith("duckdb:"):
            return sa.create_engine(url, poolclass=NullPool, connect_args={"read_only": True})
        if url.startswith("postgresql"):  # names our sessions in pg_stat_activity
            return sa.create_engine(url, poolclass=NullPool,
                                    connect_args={"application_name": APPLICATION})
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


@contextmanager
def _reading(url: str, schema: str, wait_s: float, table: str):
    """A read-only connection, or None when `table` is not there yet (a warehouse nothing was
    published to); the engine is disposed of afterwards."""
    if not _readable(url):
        yield None
        return
    engine = create_engine(url, read_only=True)
    try:
        with connect(engine, wait_s) as conn:
            yield conn if has_table(conn, schema, table) else None
    finally:
        engine.dispose()


def read_job_query(url: str, schema: str, wait_s: float, name: str, table: str,
                   **params) -> list[dict]:
    """Rows of `sql/jobs/NAME.sql` read without writing anything; [] while `table` does not
    exist (a warehouse nothing was published to)."""
    with _reading(url, schema, wait_s, table) as conn:
        return [] if conn is None else query(conn, name, schema, **params)


def read_job_arrow(url: str, schema: str, wait_s: float, name: str, table: str,
                   columns: pa.Schema, **params) -> pa.Table:
    """`read_job_query` as an Arrow table of `columns`, for large results: DuckDB hands over
    Arrow, PostgreSQL a COPY in CSV; no Python row is built. Empty while `table` does not exist."""
    with _reading(url, schema, wait_s, table) as conn:
        if conn is None:
            return columns.empty_table()
        sql = sa.text(sql_file(STATEMENTS / f"{name}.sql", schema)).bindparams(**params)
        literal = str(sql.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        raw = conn.connection.dbapi_connection
        if conn.dialect.name == "duckdb":
            result = raw.sql(literal).to_arrow_table()
        elif conn.dialect.name == "postgresql":
            result = _copy_out(raw, literal, columns)
        else:
            rows = [dict(r._mapping) for r in conn.execute(sa.text(literal)).all()]
            result = pa.Table.from_pylist(rows, schema=columns)
    return result.select(columns.names).cast(columns)


def _copy_out(raw, select: str, columns: pa.Schema) -> pa.Table:
    import io

    import pyarrow.csv as pcsv

    buffer = io.BytesIO()
    with raw.cursor() as cur:
        with cur.copy(f"copy ({select.strip().rstrip(';')}) to stdout with (format csv)") as copy:
            for chunk in copy:
                buffer.write(chunk)
    buffer.seek(0)
    return pcsv.read_csv(buffer, read_options=pcsv.ReadOptions(column_names=columns.names),
                         convert_options=pcsv.ConvertOptions(
                             column_types=dict(zip(columns.names, columns.types)),
                             strings_can_be_null=True, quoted_strings_can_be_null=False))


def billed_dates(url: str, schema: str, wait_s: float, ids: pa.Array,
                 window: tuple[dt.date, dt.date]) -> dict[str, object]:
    """The billing date of every id of `ids` that is billed as a conversation start on a date
    outside `window` (first and last day, both included)."""
    if len(ids) == 0:
        return {}
    with _reading(url, schema, wait_s, "conversation_starts") as conn:
        if conn is None:
            return {}
        candidates = pa.table({"message_id": ids})
        raw = conn.connection.dbapi_connection
        if conn.dialect.name == "duckdb":
            raw.register("candidate_ids", candidates)
        else:
            conn.execute(sa.text("create temporary table candidate_ids (message_id text)"))
            insert_arrow(conn, None, "candidate_ids", candidates)
        rows = query(conn, "billed_starts", schema, first_day=window[0], last_day=window[1])
    return {r["message_id"]: r["billing_date"] for r in rows}


def check_reachable(url: str, wait_s: float) -> None:
    """Connect once and let go: a wrong host, database or password fails before any work."""
    engine = create_engine(url)
    try:
        with connect(engine, wait_s):
            pass
    finally:
        engine.dispose()


APPLICATION = "billing-jobs"


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
                    pid = re.search(r"\(PID (\d+)\)", str(exc))
                    holder = f"process {pid.group(1)}" if pid else "another process"
                    raise WarehouseError(
                        f"warehouse {engine.url.render_as_string(hide_password=True)} is locked by "
                        f"{holder} (a running job or an open DuckDB session; DuckDB lets one "
                        f"process write a file at a time); gave up after {wait_s:.0f} s",
                        transient=True
                    ) from None
                raise WarehouseError(f"cannot connect to the warehouse "
                                     f"{engine.url.render_as_string(hide_password=True)}: "
                                     f"{one_line(exc)}", transient=True) from None
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


@contextmanager
def write_transaction(conn: sa.Connection, wait_s: float, doing: str):
    """A transaction whose every lock wait is bounded by `wait_s` (PostgreSQL's lock_timeout);
    one that runs out ends it with one line naming `doing` and the sessions holding locks."""
    try:
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(f"set local lock_timeout = '{max(int(wait_s * 1000), 1)}ms'"))
            yield conn
    except sa.exc.OperationalError as exc:
        if "lock timeout" not in str(exc):
            raise
        raise WarehouseError(f"{doing}: gave up after {wait_s:.0f} s waiting for a lock held by "
                             f"{lock_holders(conn.engine)}", transient=True) from None


def hold(conn: sa.Connection, schema: str, name: str, *, shared: bool = False) -> None:
    """Lock the `job_locks` row `name` until the transaction ends (shared: others may share it,
    only an exclusive holder waits). Row locks need UPDATE on the table, which finance's read-only
    role does not have. DuckDB needs none: one process writes a file at a time."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(sa.text(f"insert into {schema}.job_locks (name) values (:n)"
                         f" on conflict do nothing"), {"n": name})
    mode = "share" if shared else "update"
    conn.execute(sa.text(f"select name from {schema}.job_locks where name = :n for {mode}"),
                 {"n": name}).all()


def lock_holders(engine: sa.Engine) -> str:
    """Who holds locks a run may wait for, asked on a fresh connection: other billing-jobs
    sessions inside a transaction, and sessions holding locks on the warehouse's tables."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("""
                select distinct a.pid, a.usename, a.application_name, a.state, a.xact_start
                from pg_stat_activity as a
                left join pg_locks as l on l.pid = a.pid and l.granted and l.locktype = 'relation'
                left join pg_class as c on c.oid = l.relation
                where a.datname = current_database() and a.pid <> pg_backend_pid()
                    and a.xact_start is not null
                    and (a.application_name = :app or c.relnamespace is not null
                         and c.relnamespace not in (select oid from pg_namespace
                                                    where nspname like 'pg\\_%'
                                                    or nspname = 'information_schema'))
                order by a.xact_start limit 3"""), {"app": APPLICATION}).all()
    except sa.exc.SQLAlchemyError:
        return "another session (could not ask the warehouse which)"
    if not rows:
        return "another session (gone by now)"
    return "; ".join(
        f"pid {r.pid} (user {r.usename}, {r.application_name or 'no application name'}, "
        f"{r.state} since {r.xact_start:%Y-%m-%d %H:%M:%S %Z})" for r in rows)


def billing_date_lock(day) -> str:
    return f"billing_date:{day.isoformat()}"


def month_lock(month) -> str:
    return f"month:{month:%Y-%m}"


def grant_finance(conn: sa.Connection, schema: str, role: str) -> None:
    """PostgreSQL only: `role` (created if missing) may read the billing schema and nothing else
    (sql/roles/billing_finance.sql, which psql runs as it is for the default role)."""
    if conn.dialect.name != "postgresql":
        raise WarehouseError("roles are a PostgreSQL feature: a DuckDB file is read by whoever "
                             "can read the file")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise WarehouseError(f"role name must be a lower-case identifier: {role!r}")
    text = sql_file(SQL_DIR / "roles" / "billing_finance.sql", schema)
    conn.execute(sa.text(re.sub(r"\bbilling_finance\b", role, text)))


def insert_arrow(conn: sa.Connection, schema: str, table: str, data: pa.Table) -> None:
    """Append `data` to `schema.table` inside the caller's transaction, by the fastest path the
    dialect has: DuckDB scans the Arrow table, PostgreSQL gets COPY, others executemany."""
    if data.num_rows == 0:
        return
    if conn.dialect.name == "duckdb":
        _duckdb_insert(conn, schema, table, data)
        return
    columns = ", ".join(data.column_names)
    target = f"{schema}.{table}" if schema else table
    data = _microseconds(data)
    if conn.dialect.name == "postgresql":
        _copy_in(conn.connection.dbapi_connection, target, columns, data)
    else:
        meta = sa.table(table, *(sa.column(c) for c in data.column_names), schema=schema)
        conn.execute(meta.insert(), data.to_pylist())


@contextmanager
def scratch_table(conn: sa.Connection, name: str, data: pa.Table, like: str):
    """`data` as a table `name` the transaction's statements can join, so that many rows are
    written by one set-based statement: DuckDB scans the Arrow table in place, PostgreSQL gets a
    temporary table shaped like `like` (dropped at commit)."""
    if conn.dialect.name != "duckdb":
        conn.execute(sa.text(f"create temporary table {name} (like {like}) on commit drop"))
        insert_arrow(conn, None, name, data)
        yield
        return
    with _duckdb_rows(conn, name, data):
        yield


def _copy_in(raw, target: str, columns: str, data: pa.Table) -> None:
    """COPY in CSV written by Arrow, batch by batch: no Python object per value. In PostgreSQL's
    CSV an unquoted empty field is NULL and a quoted one (Arrow's spelling of '') the empty
    string; times go as ISO text with their zone, decimals as exact text."""
    import io

    import pyarrow.csv as pcsv

    plain = pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
                       for f in data.schema])
    data = data.cast(plain)
    options = pcsv.WriteOptions(include_header=False)
    with raw.cursor() as cur, cur.copy(f"copy {target} ({columns}) from stdin"
                                       " with (format csv)") as copy:
        for batch in data.to_batches(max_chunksize=200_000):
            out = io.BytesIO()
            pcsv.write_csv(batch, out, options)
            copy.write(out.getbuffer())


def _microseconds(data: pa.Table) -> pa.Table:
    """Nanosecond instants truncated to the warehouses' microseconds. Both would round on their
    own (DuckDB does), and rounding can carry a start at 23:59:59.9999996 into the next day."""
    for i, field in enumerate(data.schema):
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            data = data.set_column(i, field.name, data.column(i).cast(
                pa.timestamp("us", field.type.tz), safe=False))
    return data


def insert_parquet(conn: sa.Connection, schema: str, table: str, path: Path) -> None:
    """Append a parquet file's rows to `schema.table` without holding the file in memory: DuckDB
    reads it itself, other dialects get it in batches."""
    if conn.dialect.name == "duckdb":
        _duckdb_insert(conn, schema, table, path)
        return
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=200_000):
        insert_arrow(conn, schema, table, pa.Table.from_batches([batch]))


@contextmanager
def _duckdb_rows(conn: sa.Connection, name: str, data: pa.Table | Path):
    """`data` as relation `name` that DuckDB's statements read in place, and its columns: an
    Arrow table registered as it is, or a parquet file read by DuckDB itself (a view, not held in
    memory). Nanosecond instants are truncated to microseconds either way (`_microseconds`).
    Removed again only on success: after a failed statement the transaction is aborted (a removal
    would replace its error by DuckDB's "transaction is aborted"), and the connection is
    discarded with what it registered."""
    if isinstance(data, Path):
        import pyarrow.parquet as pq

        fields = pq.read_schema(data)
        values = ", ".join(
            f"make_timestamp{'tz' if f.type.tz else ''}(epoch_ns({f.name}) // 1000) as {f.name}"
            if pa.types.is_timestamp(f.type) and f.type.unit == "ns" else f.name for f in fields)
        literal = "'" + str(data).replace("'", "''") + "'"
        conn.execute(sa.text(f"create or replace temporary view {name} as select {values}"
                             f" from read_parquet({literal})"))
        yield name, fields.names
        conn.execute(sa.text(f"drop view {name}"))
        return
    raw = conn.connection.dbapi_connection
    raw.register(name, _microseconds(data))
    yield name, data.column_names
    raw.unregister(name)


def _duckdb_insert(conn: sa.Connection, schema: str | None, table: str,
                   data: pa.Table | Path) -> None:
    target = f"{schema}.{table}" if schema else table
    with _duckdb_rows(conn, f"staged_{table}", data) as (staged, columns):
        names = ", ".join(columns)
        conn.execute(sa.text(f"insert into {target} ({names}) select {names} from {staged}"))


def insert(conn: sa.Connection, schema: str, table: str, data: pa.Table | Path) -> None:
    """`insert_parquet` for a staged file, `insert_arrow` for a table."""
    if isinstance(data, Path):
        insert_parquet(conn, schema, table, data)
    else:
        insert_arrow(conn, schema, table, data)


def replace_day(conn: sa.Connection, schema: str, day, tables: dict[str, pa.Table | Path],
                run_id: str) -> None:
    """Make the date's rows of every day table exactly `tables` (same transaction): delete them,
    then insert the new ones. A table given as a path is a staged parquet file, loaded without
    reading it into memory. All of the new rows carry `run_id`.

    On DuckDB the tables with a primary key that hold rows of the date already are changed by
    difference instead (`_replace_by_difference`): DuckDB takes each deleted row's key out of the
    index one by one at commit (0.7 s for the 46k starts of a 1M-message day, ~15 us a row),
    while a day published again mostly holds the rows it held."""
    keyed = KEYED_DAY_TABLES if conn.dialect.name == "duckdb" else ()
    for name in DAY_TABLES:
        if name in keyed and _rows_of_day(conn, f"{schema}.{name}", day):
            _replace_by_difference(conn, schema, name, day, tables[name], run_id)
        else:  # (a day not published yet, the nightly run, has nothing to keep)
            conn.execute(sa.text(f"delete from {schema}.{name} where billing_date = :d"),
                         {"d": day})
            insert(conn, schema, name, tables[name])


def _rows_of_day(conn: sa.Connection, target: str, day) -> int:
    return conn.execute(sa.text(f"select count(*) from {target} where billing_date = :d"),
                        {"d": day}).scalar_one()


def _replace_by_difference(conn: sa.Connection, schema: str, table: str, day,
                           data: pa.Table | Path, run_id: str) -> None:
    """DuckDB: the date's rows of `target` made exactly `data` without touching the rows equal
    to one of `data`'s but for the run id: the others are deleted, the kept ones take `run_id`
    (an update of a column outside the key, in place), and the rows not kept are inserted. The
    key makes the table's rows unique; a row that `data` holds twice would be kept or inserted
    once, so the day's rows are counted against `data`'s and the transaction fails if they
    differ, as the key would fail a plain insert."""
    target = f"{schema}.{table}"
    day_of = {"d": day}
    with _duckdb_rows(conn, f"staged_{table}", data) as (staged, columns):
        same = " and ".join(f"t.{c} is not distinct from s.{c}" for c in columns if c != "run_id")
        names = ", ".join(columns)
        conn.execute(sa.text(f"delete from {target} as t where t.billing_date = :d and not exists"
                             f" (select 1 from {staged} as s where {same})"), day_of)
        conn.execute(sa.text(f"update {target} set run_id = :r where billing_date = :d"),
                     {**day_of, "r": run_id})
        conn.execute(sa.text(f"insert into {target} ({names}) select {names} from {staged} as s"
                             f" where not exists (select 1 from {target} as t"
                             f" where t.billing_date = :d and {same})"), day_of)
        given = conn.execute(sa.text(f"select count(*) from {staged}")).scalar_one()
    held = _rows_of_day(conn, target, day)
    if given != held:
        raise RunError(f"{target}: {given:,} rows to publish for {day} but {held:,} distinct "
                       f"ones: the staged run holds a duplicate row; nothing published")


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
    insert_row(conn, schema, "billing_runs", run)


def insert_row(conn: sa.Connection, schema: str, table: str, row: dict) -> None:
    """One row, its keys the column names (run records)."""
    columns = ", ".join(row)
    values = ", ".join(f":{k}" for k in row)
    conn.execute(sa.text(f"insert into {schema}.{table} ({columns}) values ({values})"), row)
