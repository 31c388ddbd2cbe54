-- the issued invoices of :month, for one customer or (:customer_id null) all
select
    invoice_number,
    month,
    customer_id,
    customer_name,
    currency,
    issued_at,
    issue_date,
    period_start,
    period_end,
    lines_amount,
    adjustments_amount,
    exact_total,
    total,
    minor_unit
from billing.invoices
where month = :month and (cast(:customer_id as text) is null or customer_id = :customer_id)
order by invoice_number
