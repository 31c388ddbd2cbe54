"""Provider tables replaced day by day without primary-key indexes: `provider_conversations`
(billing_date, conversation_id) and `provider_pairs` (billing_date, message_id) keep their
one-row-per-item meaning, checked by Great Expectations before every publish, but no longer as
index constraints. On DuckDB, deleting and re-inserting a day under such an index took 27 s for
the 776k conversations of a 10M-message day (0.3 s without); re-running a day is what every
provider run of a day whose neighbour was published since does. PostgreSQL keeps an index on
`billing_date`, which is what the replacement's delete looks up.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

KEYS = {"provider_conversations": ("billing_date", "conversation_id"),
        "provider_pairs": ("billing_date", "message_id")}


def upgrade() -> None:
    s = op.get_context().config.attributes["schema"]
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in KEYS:
        if postgres:  # keeps the table, its rows and its grants
            op.execute(f"alter table {s}.{table} drop constraint {table}_pkey")
            op.execute(f"create index {table}_billing_date on {s}.{table} (billing_date)")
        else:  # DuckDB cannot drop a primary key: the table is made again without it
            _rebuild(s, table, key=None)


def downgrade() -> None:
    s = op.get_context().config.attributes["schema"]
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, key in KEYS.items():
        if postgres:
            op.execute(f"drop index {s}.{table}_billing_date")
            op.execute(f"alter table {s}.{table} add primary key ({', '.join(key)})")
        else:
            _rebuild(s, table, key=key)


def _rebuild(schema: str, table: str, key: tuple[str, ...] | None) -> None:
    """The table again, same columns and NOT NULLs, with or without its primary key."""
    rows = op.get_bind().exec_driver_sql(
        "select column_name, data_type, is_nullable from information_schema.columns"
        f" where table_schema = '{schema}' and table_name = '{table}' order by ordinal_position"
    ).all()
    columns = [f"{name} {kind}{' not null' if nullable == 'NO' else ''}"
               for name, kind, nullable in rows]
    if key:
        columns.append(f"primary key ({', '.join(key)})")
    names = ", ".join(name for name, _, _ in rows)
    op.execute(f"create table {schema}.{table}_rebuilt ({', '.join(columns)})")
    op.execute(f"insert into {schema}.{table}_rebuilt ({names}) select {names}"
               f" from {schema}.{table}")
    op.execute(f"drop table {schema}.{table}")
    op.execute(f"alter table {schema}.{table}_rebuilt rename to {table}")
