insert into billing.invoice_items (
    invoice_number, item_no, kind, country, conversation_type, unit_price, quantity, amount,
    billing_date, cause_run_id, reason
)
values (
    :invoice_number, :item_no, :kind, :country, :conversation_type, :unit_price, :quantity,
    :amount, :billing_date, :cause_run_id, :reason
)
