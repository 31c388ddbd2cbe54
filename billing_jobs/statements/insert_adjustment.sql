insert into billing.adjustments (
    adjustment_id, billing_date, customer_id, country, conversation_type, currency, unit_price,
    quantity, amount, run_id, reason, booked_month
)
values (
    :adjustment_id, :billing_date, :customer_id, :country, :conversation_type, :currency,
    :unit_price, :quantity, :amount, :run_id, :reason, :booked_month
)
