-- lineage of an invoice line: the month's published starts of its customer, currency, country,
-- type and price, as they are when the invoice is issued
insert into billing.invoice_item_starts (
    invoice_number, item_no, message_id, billing_date, started_at, unit_price, rate_row, sign,
    run_id
)
select
    :invoice_number, :item_no, message_id, billing_date, started_at, unit_price, rate_row, 1,
    run_id
from billing.conversation_starts
where billing_date between :first_day and :last_day
    and customer_id = :customer_id
    and currency = :currency
    and country = :country
    and conversation_type = :conversation_type
    and unit_price = :unit_price
