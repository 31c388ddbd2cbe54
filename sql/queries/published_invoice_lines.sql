-- The published invoice lines, one per day, customer, country, type and price.
with

invoice_lines as (
    select * from billing.invoice_lines
),

final as (
    select
        billing_date,
        customer_id,
        country,
        conversation_type,
        currency,
        unit_price,
        quantity,
        amount
    from invoice_lines
)

select * from final
order by billing_date, customer_id, country, conversation_type, unit_price
