-- lineage of an adjustment item: the starts the adjustment added (+1) or removed (-1)
insert into billing.invoice_item_starts (
    invoice_number, item_no, message_id, billing_date, started_at, unit_price, rate_row, sign,
    run_id
)
select
    :invoice_number, :item_no, message_id, billing_date, started_at, unit_price, rate_row, sign,
    run_id
from billing.adjustment_starts
where adjustment_id = :adjustment_id
