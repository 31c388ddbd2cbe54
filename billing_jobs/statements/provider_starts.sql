-- our published conversation starts of :first_day..:last_day, what provider reconciliation pairs
select
    message_id, billing_date, customer_id, line_id, contact_key, country, conversation_type,
    started_at, unit_price, currency
from billing.conversation_starts
where billing_date between :first_day and :last_day
