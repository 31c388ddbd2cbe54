-- What each customer owes per month and currency: the issued invoice's total once the month is
-- closed, else what is published so far; amounts stay exact, totals are rounded half-up to the
-- currency's minor unit exactly as invoices are (view billing.customer_month_totals).
with

totals as (
    select * from billing.customer_month_totals
),

final as (
    select
        month,
        customer_id,
        customer_name,
        currency,
        status,
        invoice_number,
        exact_amount,
        total
    from totals
)

select * from final
order by month, customer_id, currency
