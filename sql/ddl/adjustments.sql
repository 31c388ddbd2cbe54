-- differences found when a day of a closed month is published again, waiting for (or booked on)
-- the invoice of booked_month, the next open month
create table if not exists {schema}.adjustments (
    adjustment_id text primary key,
    billing_date date not null,
    customer_id text not null,
    country text not null,
    conversation_type text not null,
    currency text not null,
    unit_price numeric(20, 10) not null,
    quantity bigint not null,
    amount numeric(38, 10) not null,
    run_id text not null,
    reason text not null,
    booked_month date not null,
    invoice_number bigint
)
