insert into {schema}.invoices (
    invoice_number, month, customer_id, currency, issued_at, lines_amount, adjustments_amount,
    exact_total, total, minor_unit
)
values (
    :invoice_number, :month, :customer_id, :currency, :issued_at, :lines_amount,
    :adjustments_amount, :exact_total, :total, :minor_unit
)
