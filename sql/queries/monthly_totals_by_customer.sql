-- What each customer owes per month and currency. Amounts stay exact in the tables; the total is
-- rounded half-up to the currency's minor unit (2 decimals for USD) only here, where it is shown.
with

monthly as (
    select * from {schema}.monthly_invoice_lines
),

totals as (
    select
        month,
        customer_id,
        currency,
        sum(quantity) as conversations,
        sum(amount) as exact_amount
    from monthly
    group by month, customer_id, currency
),

final as (
    select
        month,
        customer_id,
        currency,
        conversations,
        exact_amount,
        round(exact_amount, 2) as invoice_total
    from totals
)

select * from final
order by month, customer_id, currency
