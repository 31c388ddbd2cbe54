-- invoice numbers are gapless: the next one follows this
select coalesce(max(invoice_number), 0) as last_number
from billing.invoices
