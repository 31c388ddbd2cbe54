create or replace view billing.monthly_invoice_lines as

with

invoice_lines as (
    select * from billing.invoice_lines
),

final as (
    select
        cast(date_trunc('month', billing_date) as date) as month,
        customer_id,
        country,
        conversation_type,
        currency,
        sum(quantity) as quantity,
        sum(amount) as amount
    from invoice_lines
    group by 1, 2, 3, 4, 5
)

select * from final
