create or replace view billing.invoice_item_lineage as

-- lineage: the conversation starts behind every invoice item, as they were when the item was
-- issued, with the rate-card row applied (what `billing-jobs trace` shows). sign -1 marks a start
-- an adjustment takes back. The amounts of an item's rows add up to the item's amount.

with

items as (
    select * from billing.invoice_items
),

item_starts as (
    select * from billing.invoice_item_starts
),

runs as (
    select run_id, reference_hash from billing.billing_runs
),

rate_card as (
    select * from billing.rate_card
),

final as (
    select
        items.invoice_number,
        items.item_no,
        items.kind,
        item_starts.message_id,
        item_starts.billing_date,
        item_starts.started_at,
        item_starts.sign,
        item_starts.unit_price,
        item_starts.sign * item_starts.unit_price as amount,
        item_starts.run_id,
        item_starts.rate_row,
        rate_card.country,
        rate_card.conversation_type,
        rate_card.currency,
        rate_card.valid_from,
        rate_card.valid_to
    from items
    join item_starts
        on item_starts.invoice_number = items.invoice_number
        and item_starts.item_no = items.item_no
    join runs on runs.run_id = item_starts.run_id
    join rate_card
        on rate_card.reference_hash = runs.reference_hash
        and rate_card.rate_row = item_starts.rate_row
)

select * from final
