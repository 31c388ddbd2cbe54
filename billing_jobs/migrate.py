"""Versioned schema migrations (Alembic, billing_jobs/migrations/): the only code that runs DDL.

`billing-jobs warehouse upgrade` applies them, and so does the start of a run, a close or a
failure record when the warehouse is behind; a warehouse at the current revision costs one
SELECT, so a normal run takes no lock a reader could be holding. After the revisions, the views
of `sql/views/` are created again and every column gets its comment (column_docs.py): views and
comments are derived, so they always match the code that made them.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from billing_jobs import column_docs, warehouse
from billing_jobs.errors import WarehouseError

HEAD = "0004"  # the newest revision in migrations/versions (a test holds them equal)
REVISIONS = ("0001", "0002", "0003", "0004")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# in dependency order: a view is created after the views it reads
VIEWS = ("monthly_invoice_lines", "current_customers", "issued_invoice_items",
         "published_not_invoiced", "closed_month_differences", "customer_month_totals",
         "quarantined_rows", "invoice_item_lineage", "provider_monthly")
BOOTSTRAP_LOCK = 0x62696C6C  # only while the schema has no job_locks table yet


def revision(conn: sa.Connection, schema: str) -> str | None:
    """The warehouse's schema revision; None for an empty one, "0.1" for release 0.1's tables."""
    if warehouse.has_table(conn, schema, "alembic_version"):
        rows = conn.execute(sa.text(f"select version_num from {schema}.alembic_version")).all()
        return rows[0][0] if rows else None
    return "0.1" if warehouse.has_table(conn, schema, "billing_runs") else None


def ensure_current(conn: sa.Connection, schema: str, wait_s: float) -> None:
    """Upgrade if the warehouse is behind (outside any open transaction of `conn`)."""
    current = revision(conn, schema)
    if conn.in_transaction():
        conn.commit()  # DuckDB's information_schema read opened one
    if current == HEAD:
        return
    if current not in (None, "0.1", *REVISIONS):
        raise WarehouseError(f"warehouse schema {schema} is at revision {current}, newer than this "
                             f"code knows ({HEAD}): deploy the newer billing-jobs")
    upgrade(conn, schema, wait_s)


@contextmanager
def writing(settings, doing: str, wait_s: float | None = None):
    """A connection inside a bounded write transaction on a current schema: what every writer of
    the warehouse opens (publish, close, failure records, grants, provider runs). `doing` names
    the work in the one line a lock wait that runs out ends with."""
    wait_s = settings.lock_wait_s if wait_s is None else wait_s
    engine = warehouse.create_engine(settings.warehouse_url)
    try:
        with warehouse.connect(engine, wait_s) as conn:
            ensure_current(conn, settings.schema, wait_s)
            with warehouse.write_transaction(conn, wait_s, doing):
                yield conn
    finally:
        engine.dispose()


def upgrade(conn: sa.Connection, schema: str, wait_s: float) -> tuple[str | None, str]:
    """Apply every missing revision, then the views and the column comments, in one transaction
    (PostgreSQL and DuckDB both have transactional DDL). Returns (before, after)."""
    from alembic import command
    from alembic.config import Config

    if conn.in_transaction():
        conn.commit()
    with warehouse.write_transaction(conn, wait_s, f"upgrading warehouse schema {schema}"):
        if conn.dialect.name == "postgresql":  # one upgrade at a time, schema creation included
            if warehouse.has_table(conn, schema, "job_locks"):
                warehouse.hold(conn, schema, "schema")
            else:
                conn.execute(sa.text(f"select pg_advisory_xact_lock({BOOTSTRAP_LOCK})"))
        conn.execute(sa.text(f"create schema if not exists {schema}"))
        before = revision(conn, schema)  # again, now that no other upgrade runs beside us
        if before != HEAD:
            _drop_views(conn, schema)
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes.update(connection=conn, schema=schema)
            command.upgrade(config, "head")
            _create_views(conn, schema)
            _comment_columns(conn, schema)
    return before, HEAD


def _drop_views(conn: sa.Connection, schema: str) -> None:
    cascade = " cascade" if conn.dialect.name == "postgresql" else ""
    for name in reversed(VIEWS):
        conn.execute(sa.text(f"drop view if exists {schema}.{name}{cascade}"))


def _create_views(conn: sa.Connection, schema: str) -> None:
    for name in VIEWS:
        body = warehouse.sql_file(warehouse.SQL_DIR / "views" / f"{name}.sql", schema)
        conn.execute(sa.text(body))


def _comment_columns(conn: sa.Connection, schema: str) -> None:
    columns = conn.execute(sa.text(
        "select table_name, column_name from information_schema.columns"
        " where table_schema = :s and table_name <> 'alembic_version'"), {"s": schema}).all()
    for table, column in columns:
        text = column_docs.describe(table, column)
        if text:
            conn.execute(sa.text(f"comment on column {schema}.{table}.{column} is "
                                 f"'{_literal(text)}'"))


def _literal(text: str) -> str:
    """Quotes doubled for SQL, colons escaped for SQLAlchemy's text()."""
    return text.replace("'", "''").replace(":", "\\:")
