-- The peer of the whole daily job (read, dedupe, rules, price, aggregate) in DuckDB SQL, on top of
-- the `starts` view made from peer_reconcile.sql: the day's invoice lines, which the peer puts in
-- place of the day's earlier ones (bench/reconcile_one.py). $day is the billing date, $lines and
-- $rates the reference CSV paths.

with

starts as (
    select * from starts where cast(started_at as date) = cast($day as date)
),

lines as (
    select * from read_csv($lines, all_varchar = true)
),

rates as (
    select
        country, conversation_type, currency,
        cast(unit_price as decimal(20, 10)) as unit_price,
        cast(valid_from as timestamptz) as valid_from,
        cast(nullif(valid_to, '') as timestamptz) as valid_to
    from read_csv($rates, all_varchar = true)
),

priced as (
    select starts.*, lines.country, rates.unit_price, rates.currency
    from starts
    join lines using (line_id)
    join rates
        on rates.country = lines.country
        and rates.conversation_type = starts.conversation_type
        and rates.valid_from <= starts.started_at
        and (rates.valid_to is null or starts.started_at < rates.valid_to)
),

final as (
    select
        cast(started_at as date) as billing_date, customer_id, country, conversation_type,
        currency, unit_price, count(*) as quantity, count(*) * unit_price as amount
    from priced
    group by billing_date, customer_id, country, conversation_type, currency, unit_price
)

select * from final
