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
