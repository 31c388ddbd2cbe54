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
