create or replace view billing.issued_invoice_items as

-- what each customer was billed: every item of every issued invoice (lines and adjustments) with
-- its invoice's header; issued invoices never change, whatever is published later

with

invoices as (
    select * from billing.invoices
),

items as (
    select * from billing.invoice_items
),

final as (
    select
        invoices.invoice_number,
        invoices.month,
        invoices.period_start,
        invoices.period_end,
        invoices.issue_date,
        invoices.customer_id,
        invoices.customer_name,
        invoices.currency,
        items.item_no,
        items.kind,
        items.country,
        items.conversation_type,
        items.unit_price,
        items.quantity,
        items.amount,
        items.billing_date,
        items.reason,
        invoices.exact_total as invoice_exact_total,
        invoices.total as invoice_total
    from invoices
    inner join items on items.invoice_number = invoices.invoice_number
)

select * from final
