-- the published starts of :billing_date, as adjustments compare them with a new version
select
    message_id,
    customer_id,
    country,
    conversation_type,
    currency,
    unit_price,
    started_at,
    rate_row,
    run_id
from billing.conversation_starts
where billing_date = :billing_date
