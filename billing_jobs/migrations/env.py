"""Alembic's environment for `billing-jobs warehouse upgrade` (billing_jobs/migrate.py).

The caller hands over an open connection and the schema name in `config.attributes`; the version
table lives in that schema, so one database can hold several billing schemas."""

from alembic import context
from alembic.ddl.impl import DefaultImpl


class DuckDBImpl(DefaultImpl):
    """Alembic has no DuckDB dialect of its own (duckdb-engine's "Alembic integration")."""

    __dialect__ = "duckdb"
    transactional_ddl = True


config = context.config
connection = config.attributes["connection"]
context.configure(connection=connection, version_table_schema=config.attributes["schema"],
                  transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
