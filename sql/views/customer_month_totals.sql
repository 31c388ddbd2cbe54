create or replace view billing.customer_month_totals as

-- what each customer owes per month and currency: the issued invoice's total for a closed month;
-- for an open month, its published lines plus the adjustments booked on it, rounded half-up to
-- the currency's minor unit exactly as invoices are (every branch cast alike: a case over
-- decimals of different scales would otherwise take the first branch's scale)

with

currencies as (
    select * from billing.currencies
),

invoiced as (
    select
        month,
        customer_id,
        currency,
        'invoiced' as status,
        min(invoice_number) as invoice_number,
        sum(exact_total) as exact_amount,
        sum(total) as total
    from billing.invoices
    group by month, customer_id, currency
),

open_amounts as (
    select
        month,
        customer_id,
        currency,
        sum(amount) as exact_amount
    from billing.published_not_invoiced
    group by month, customer_id, currency
),

open_totals as (
    select
        open_amounts.month,
        open_amounts.customer_id,
        open_amounts.currency,
        'open' as status,
        cast(null as bigint) as invoice_number,
        open_amounts.exact_amount,
        case coalesce(currencies.minor_unit, 2)
            when 0 then cast(round(open_amounts.exact_amount, 0) as numeric(38, 4))
            when 3 then cast(round(open_amounts.exact_amount, 3) as numeric(38, 4))
            when 4 then cast(round(open_amounts.exact_amount, 4) as numeric(38, 4))
            else cast(round(open_amounts.exact_amount, 2) as numeric(38, 4))
        end as total
    from open_amounts
    left join currencies on currencies.currency = open_amounts.currency
),

final as (
    select
        totals.month,
        totals.customer_id,
        customers.name as customer_name,
        totals.currency,
        totals.status,
        totals.invoice_number,
        totals.exact_amount,
        totals.total
    from (select * from invoiced union all select * from open_totals) as totals
    left join billing.current_customers as customers
        on customers.customer_id = totals.customer_id
)

select * from final
