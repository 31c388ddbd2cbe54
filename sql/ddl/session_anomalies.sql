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
