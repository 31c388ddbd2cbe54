create or replace view billing.closed_month_differences as

-- for closed months: what is published now against what was invoiced, and the adjustments booked
-- for the month's days (invoiced later or pending). Always:
-- published = invoiced + adjusted, so `unexplained_quantity` and `unexplained_amount` are 0

with

closed_months as (
    select * from billing.closed_months
),

published as (
    select
        cast(date_trunc('month', billing_date) as date) as month,
        customer_id, currency, country, conversation_type, unit_price,
        sum(quantity) as quantity,
        sum(amount) as amount
    from billing.invoice_lines
    group by 1, 2, 3, 4, 5, 6
),

invoiced as (
    select
        invoices.month,
        invoices.customer_id, invoices.currency, items.country, items.conversation_type,
        items.unit_price,
        sum(items.quantity) as quantity,
        sum(items.amount) as amount
    from billing.invoices as invoices
    inner join billing.invoice_items as items on items.invoice_number = invoices.invoice_number
    where items.kind = 'line'
    group by 1, 2, 3, 4, 5, 6
),

adjusted as (
    select
        cast(date_trunc('month', billing_date) as date) as month,
        customer_id, currency, country, conversation_type, unit_price,
        sum(quantity) as quantity,
        sum(amount) as amount,
        sum(case when invoice_number is null then quantity else 0 end) as pending_quantity,
        sum(case when invoice_number is null then amount else 0 end) as pending_amount
    from billing.adjustments
    group by 1, 2, 3, 4, 5, 6
),

keys as (
    select month, customer_id, currency, country, conversation_type, unit_price from published
    union
    select month, customer_id, currency, country, conversation_type, unit_price from invoiced
    union
    select month, customer_id, currency, country, conversation_type, unit_price from adjusted
),

final as (
    select
        keys.month,
        keys.customer_id,
        keys.currency,
        keys.country,
        keys.conversation_type,
        keys.unit_price,
        coalesce(published.quantity, 0) as published_quantity,
        coalesce(invoiced.quantity, 0) as invoiced_quantity,
        coalesce(adjusted.quantity, 0) as adjusted_quantity,
        coalesce(adjusted.pending_quantity, 0) as pending_adjustment_quantity,
        coalesce(published.quantity, 0) - coalesce(invoiced.quantity, 0)
            - coalesce(adjusted.quantity, 0) as unexplained_quantity,
        coalesce(published.amount, 0) as published_amount,
        coalesce(invoiced.amount, 0) as invoiced_amount,
        coalesce(adjusted.amount, 0) as adjusted_amount,
        coalesce(adjusted.pending_amount, 0) as pending_adjustment_amount,
        coalesce(published.amount, 0) - coalesce(invoiced.amount, 0)
            - coalesce(adjusted.amount, 0) as unexplained_amount
    from keys
    inner join closed_months on closed_months.month = keys.month
    left join published
        on published.month = keys.month and published.customer_id = keys.customer_id
        and published.currency = keys.currency and published.country = keys.country
        and published.conversation_type = keys.conversation_type
        and published.unit_price = keys.unit_price
    left join invoiced
        on invoiced.month = keys.month and invoiced.customer_id = keys.customer_id
        and invoiced.currency = keys.currency and invoiced.country = keys.country
        and invoiced.conversation_type = keys.conversation_type
        and invoiced.unit_price = keys.unit_price
    left join adjusted
        on adjusted.month = keys.month and adjusted.customer_id = keys.customer_id
        and adjusted.currency = keys.currency and adjusted.country = keys.country
        and adjusted.conversation_type = keys.conversation_type
        and adjusted.unit_price = keys.unit_price
)

select * from final
