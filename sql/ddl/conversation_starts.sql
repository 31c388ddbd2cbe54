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
