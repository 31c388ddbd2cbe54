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
