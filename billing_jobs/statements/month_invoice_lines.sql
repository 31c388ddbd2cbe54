-- a month's published invoice lines per customer, currency, country, type and price
select
    customer_id,
    currency,
    country,
    conversation_type,
    unit_price,
    sum(quantity) as quantity,
    sum(amount) as amount
from billing.invoice_lines
where billing_date between :first_day and :last_day
group by customer_id, currency, country, conversation_type, unit_price
order by customer_id, currency, country, conversation_type, unit_price
