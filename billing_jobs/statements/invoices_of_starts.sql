-- the issued invoice item each of :ids is billed on (explain)
select message_id, invoice_number, item_no
from billing.invoice_item_starts
where message_id in :ids and sign = 1
