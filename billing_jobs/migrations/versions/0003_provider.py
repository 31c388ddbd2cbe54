"""Provider reconciliation (data-contracts.md §5): WhatsApp's conversations as accepted, each
pairing and each difference with its explanation, the per-day reconciliation, and the provider
runs and their quarantined rows. A provider run replaces its billing date in all of them.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = {
    "provider_conversations": """
        conversation_id text not null,
        billing_date date not null,
        customer_id text not null,
        line_id text not null,
        country text not null,
        contact_key text not null,
        conversation_type text not null,
        opened_at timestamp with time zone not null,
        message_id text,
        billable boolean not null,
        cost numeric(20, 10),
        currency text,
        source_file text not null,
        source_row bigint not null,
        run_id text not null,
        primary key (billing_date, conversation_id)""",
    "provider_pairs": """
        billing_date date not null,
        message_id text not null,
        conversation_id text not null,
        kind text not null,
        run_id text not null,
        primary key (billing_date, message_id)""",
    "provider_differences": """
        billing_date date not null,
        kind text not null,
        customer_id text not null,
        line_id text not null,
        country text not null,
        contact_key text not null,
        message_id text,
        conversation_type text,
        started_at timestamp with time zone,
        conversation_id text,
        provider_conversation_type text,
        opened_at timestamp with time zone,
        explanation text not null,
        run_id text not null""",
    "provider_reconciliation": """
        billing_date date not null,
        customer_id text not null,
        country text not null,
        conversation_type text not null,
        our_starts bigint not null,
        provider_conversations bigint not null,
        matched bigint not null,
        ours_only bigint not null,
        provider_only bigint not null,
        type_mismatch bigint not null,
        provider_not_billable bigint not null,
        our_amount numeric(38, 10) not null,
        provider_cost numeric(38, 10),
        currency text,
        run_id text not null,
        primary key (billing_date, customer_id, country, conversation_type)""",
    "provider_quarantined": """
        run_id text not null,
        billing_date date not null,
        conversation_id text,
        reason text not null,
        record text not null,
        source_file text not null,
        source_row bigint not null""",
    "provider_runs": """
        run_id text primary key,
        billing_date date not null,
        status text not null,
        started_at timestamp with time zone not null,
        finished_at timestamp with time zone,
        rows_read bigint,
        accepted bigint,
        duplicates bigint,
        quarantined bigint,
        our_starts bigint,
        matched bigint,
        ours_only bigint,
        provider_only bigint,
        type_mismatch bigint,
        tolerance_minutes integer,
        code_version text,
        error text""",
}


def upgrade() -> None:
    s = op.get_context().config.attributes["schema"]
    for name, columns in TABLES.items():
        op.execute(f"create table {s}.{name} ({columns}\n)")


def downgrade() -> None:
    s = op.get_context().config.attributes["schema"]
    for name in reversed(list(TABLES)):
        op.execute(f"drop table {s}.{name}")
