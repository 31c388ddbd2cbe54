"""Finance: the job's own lock rows, currencies with their minor unit, invoice header fields for
accounting exports, and each quarantined row's own partition date.

- `job_locks`: rows the job locks (`select ... for update|share`). A role with only SELECT cannot
  lock a row, so a finance reader can neither block nor break a run (advisory locks it could).
- `currencies`: ISO 4217 minor units, so SQL rounds like the invoices do.
- `invoices`: customer name, issue date and the period, filled for invoices issued before.
- `quarantined_messages.partition_date`: the date of the partition the bad row came from; a row
  read by the runs of D, D+1 and D+2 is then counted once (view `quarantined_rows`).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from billing_jobs.iso import MINOR_UNITS

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = op.get_context().config.attributes["schema"]
    op.execute(f"create table {s}.job_locks (name text primary key)")
    op.execute(f"create table {s}.currencies (currency text primary key,"
               f" minor_unit integer not null)")
    currencies = sa.table("currencies", sa.column("currency"), sa.column("minor_unit"), schema=s)
    op.bulk_insert(currencies, [{"currency": c, "minor_unit": u}
                                for c, u in sorted(MINOR_UNITS.items())])
    for column, kind in (("customer_name", "text"), ("issue_date", "date"),
                         ("period_start", "date"), ("period_end", "date")):
        op.execute(f"alter table {s}.invoices add column {column} {kind}")
    op.execute(f"""
        update {s}.invoices set
            issue_date = cast(issued_at as date),
            period_start = month,
            period_end = cast(month + interval '1 month' - interval '1 day' as date),
            customer_name = (
                select max(c.name) from {s}.customers as c
                where c.customer_id = {s}.invoices.customer_id
            )
    """)
    op.execute(f"alter table {s}.quarantined_messages add column partition_date date")
    pattern = r"date=(\d{4}-\d{2}-\d{2})"
    if op.get_context().dialect.name == "postgresql":
        found = f"substring(source_file from '{pattern}')"
    else:
        found = f"nullif(regexp_extract(source_file, '{pattern}', 1), '')"
    op.execute(f"update {s}.quarantined_messages set partition_date = cast({found} as date)")


def downgrade() -> None:
    s = op.get_context().config.attributes["schema"]
    op.execute(f"alter table {s}.quarantined_messages drop column partition_date")
    for column in ("customer_name", "issue_date", "period_start", "period_end"):
        op.execute(f"alter table {s}.invoices drop column {column}")
    op.execute(f"drop table {s}.currencies")
    op.execute(f"drop table {s}.job_locks")
