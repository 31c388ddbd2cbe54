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
