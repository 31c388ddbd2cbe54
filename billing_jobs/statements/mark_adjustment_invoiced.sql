update billing.adjustments
set invoice_number = :invoice_number
where adjustment_id = :adjustment_id
