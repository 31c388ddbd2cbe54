-- Lineage: the conversation starts behind an invoice item (every item when :item_no is null), as
-- they were when the item was issued, with the rate-card row applied. sign -1 marks a start an
-- adjustment takes back. The amounts of the rows of an item add up to the item's amount.
with

items as (
    select * from {schema}.invoice_items
    where invoice_number = :invoice_number
        and (cast(:item_no as integer) is null or item_no = cast(:item_no as integer))
),

item_starts as (
    select * from {schema}.invoice_item_starts
),

runs as (
    select run_id, reference_hash from {schema}.billing_runs
),

rate_card as (
    select * from {schema}.rate_card
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
order by item_no, started_at, message_id
