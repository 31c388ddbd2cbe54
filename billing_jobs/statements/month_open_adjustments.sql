-- adjustments booked on :month and not yet on an invoice
select
    adjustment_id,
    billing_date,
    customer_id,
    country,
    conversation_type,
    currency,
    unit_price,
    quantity,
    amount,
    run_id,
    reason
from billing.adjustments
where booked_month = :month and invoice_number is null
order by customer_id, currency, billing_date, country, conversation_type, unit_price
