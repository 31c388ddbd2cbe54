-- a month whose invoices are issued: its invoices never change again
create table if not exists {schema}.closed_months (
    month date primary key,
    closed_at timestamp with time zone not null,
    invoices integer not null
)
