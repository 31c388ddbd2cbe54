insert into billing.invoices (
    invoice_number, month, customer_id, currency, issued_at, lines_amount, adjustments_amount,
    exact_total, total, minor_unit, customer_name, issue_date, period_start, period_end
)
values (
    :invoice_number, :month, :customer_id, :currency, :issued_at, :lines_amount,
    :adjustments_amount, :exact_total, :total, :minor_unit, :customer_name, :issue_date,
    :period_start, :period_end
)
