"""Baseline: the schema of release 0.1, as it made warehouses before schema versioning.

Every statement is `if not exists`, so a warehouse made by release 0.1 (its tables, no
`alembic_version`) is adopted as it is, with its data, and a new warehouse gets the same tables.
Frozen: later changes are later revisions. `{schema}` is the configured schema (`billing`).

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATEMENTS = [
    # 00_schema
    """
create schema if not exists {schema}
""",
    # adjustment_starts
    """
create table if not exists {schema}.adjustment_starts (
    adjustment_id text not null,
    message_id text not null,
    billing_date date not null,
    started_at timestamp with time zone not null,
    unit_price numeric(20, 10) not null,
    rate_row integer not null,
    sign integer not null,
    run_id text not null
)
""",
    # adjustments
    """
-- differences found when a day of a closed month is published again, waiting for (or booked on)
-- the invoice of booked_month, the next open month
create table if not exists {schema}.adjustments (
    adjustment_id text primary key,
    billing_date date not null,
    customer_id text not null,
    country text not null,
    conversation_type text not null,
    currency text not null,
    unit_price numeric(20, 10) not null,
    quantity bigint not null,
    amount numeric(38, 10) not null,
    run_id text not null,
    reason text not null,
    booked_month date not null,
    invoice_number bigint
)
""",
    # billing_runs
    """
-- one row per run of one billing date, failed runs included
create table if not exists {schema}.billing_runs (
    run_id text primary key,
    billing_date date not null,
    status text not null,
    started_at timestamp with time zone not null,
    finished_at timestamp with time zone,
    messages_read bigint,
    accepted bigint,
    duplicates bigint,
    quarantined bigint,
    failed_sends bigint,
    starts bigint,
    anomalies bigint,
    amount numeric(38, 10),
    input_fingerprint text,
    partitions text,
    reference_hash text,
    rules_version text,
    code_version text,
    error text,
    failed_step text
)
""",
    # billing_runs_failed_step
    """
-- warehouses made before failed runs named their step
alter table {schema}.billing_runs add column if not exists failed_step text
""",
    # closed_months
    """
-- a month whose invoices are issued: its invoices never change again
create table if not exists {schema}.closed_months (
    month date primary key,
    closed_at timestamp with time zone not null,
    invoices integer not null
)
""",
    # conversation_starts
    """
create table if not exists {schema}.conversation_starts (
    message_id text primary key,
    billing_date date not null,
    customer_id text not null,
    line_id text not null,
    contact_key text not null,
    country text not null,
    conversation_type text not null,
    started_at timestamp with time zone not null,
    unit_price numeric(20, 10) not null,
    currency text not null,
    rate_row integer not null,
    run_id text not null
)
""",
    # customers
    """
-- reference rows as used by the runs, one version per content hash of the reference files
create table if not exists {schema}.customers (
    reference_hash text not null,
    customer_id text not null,
    name text,
    primary key (reference_hash, customer_id)
)
""",
    # identity_conflicts
    """
-- message ids whose copies conflict across partitions (billing-rules.md, "Identity across days"):
-- one row per id and partition holding a copy, kept from the first run that found it. A run
-- quarantines every copy of these ids within reach; restatement re-bills the days a conflict
-- found later reaches
create table if not exists {schema}.identity_conflicts (
    message_id text not null,
    partition_date date not null,
    found_for date not null,
    found_by_run text not null,
    found_at timestamp with time zone not null,
    primary key (message_id, partition_date)
)
""",
    # invoice_item_starts
    """
-- lineage: the conversation starts behind each invoice item, as they were when it was issued
-- (sign -1: a start an adjustment takes back)
create table if not exists {schema}.invoice_item_starts (
    invoice_number bigint not null,
    item_no integer not null,
    message_id text not null,
    billing_date date not null,
    started_at timestamp with time zone not null,
    unit_price numeric(20, 10) not null,
    rate_row integer not null,
    sign integer not null,
    run_id text not null
)
""",
    # invoice_items
    """
-- kind 'line': the month's starts per (country, type, unit price);
-- kind 'adjustment': a correction of an earlier, already invoiced day (billing_date, cause_run_id)
create table if not exists {schema}.invoice_items (
    invoice_number bigint not null,
    item_no integer not null,
    kind text not null,
    country text not null,
    conversation_type text not null,
    unit_price numeric(20, 10) not null,
    quantity bigint not null,
    amount numeric(38, 10) not null,
    billing_date date,
    cause_run_id text,
    reason text,
    primary key (invoice_number, item_no)
)
""",
    # invoice_lines
    """
create table if not exists {schema}.invoice_lines (
    billing_date date not null,
    customer_id text not null,
    country text not null,
    conversation_type text not null,
    currency text not null,
    unit_price numeric(20, 10) not null,
    quantity bigint not null,
    amount numeric(38, 10) not null,
    run_id text not null,
    primary key (billing_date, customer_id, country, conversation_type, currency, unit_price)
)
""",
    # invoices
    """
-- one issued invoice per (month, customer, currency); numbers are gapless, given at close
create table if not exists {schema}.invoices (
    invoice_number bigint primary key,
    month date not null,
    customer_id text not null,
    currency text not null,
    issued_at timestamp with time zone not null,
    lines_amount numeric(38, 10) not null,
    adjustments_amount numeric(38, 10) not null,
    exact_total numeric(38, 10) not null,
    total numeric(38, 4) not null,
    minor_unit integer not null
)
""",
    # lines
    """
create table if not exists {schema}.lines (
    reference_hash text not null,
    line_id text not null,
    customer_id text not null,
    country text not null,
    primary key (reference_hash, line_id)
)
""",
    # quarantined_messages
    """
-- every row a run set aside, with the reason and the row as read (JSON text)
create table if not exists {schema}.quarantined_messages (
    run_id text not null,
    billing_date date not null,
    message_id text,
    reason text not null,
    record text not null,
    source_file text not null,
    source_row bigint not null
)
""",
    # rate_card
    """
-- rate_row is the 1-based data row of rate_card.csv; conversation_starts.rate_row points to it
create table if not exists {schema}.rate_card (
    reference_hash text not null,
    rate_row integer not null,
    country text not null,
    conversation_type text not null,
    unit_price numeric(20, 10) not null,
    currency text not null,
    valid_from timestamp with time zone not null,
    valid_to timestamp with time zone,
    primary key (reference_hash, rate_row)
)
""",
    # session_anomalies
    """
create table if not exists {schema}.session_anomalies (
    billing_date date not null,
    message_id text primary key,
    customer_id text not null,
    line_id text not null,
    contact_key text not null,
    sent_at timestamp with time zone not null,
    kind text not null,
    run_id text not null
)
""",
]


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    for statement in STATEMENTS:
        op.execute(statement.replace("{schema}", schema))


def downgrade() -> None:
    raise NotImplementedError("release 0.1 had no downgrade: restore the warehouse from a backup")
