-- the starts behind one invoice (every item when :item_no is null)
select * from billing.invoice_item_lineage
where invoice_number = :invoice_number
    and (cast(:item_no as integer) is null or item_no = cast(:item_no as integer))
order by item_no, started_at, message_id
