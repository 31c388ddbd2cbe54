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
