-- the items of one invoice, in order
select
    invoice_number,
    item_no,
    kind,
    country,
    conversation_type,
    unit_price,
    quantity,
    amount,
    billing_date,
    cause_run_id,
    reason
from billing.invoice_items
where invoice_number = :invoice_number
order by item_no
