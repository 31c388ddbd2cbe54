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
