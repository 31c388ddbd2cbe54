create or replace view billing.published_not_invoiced as

-- what is published but on no invoice yet: the lines of months not closed, and the adjustments
-- booked on a month not closed yet (corrections of closed months' days)

with

closed_months as (
    select * from billing.closed_months
),

open_lines as (
    select
        cast(date_trunc('month', lines.billing_date) as date) as month,
        'line' as kind,
        lines.customer_id,
        lines.country,
        lines.conversation_type,
        lines.currency,
        lines.unit_price,
        sum(lines.quantity) as quantity,
        sum(lines.amount) as amount,
        cast(null as date) as billing_date,
        cast(null as text) as reason
    from billing.invoice_lines as lines
    where cast(date_trunc('month', lines.billing_date) as date)
        not in (select month from closed_months)
    group by 1, 2, 3, 4, 5, 6, 7
),

pending_adjustments as (
    select
        booked_month as month,
        'adjustment' as kind,
        customer_id,
        country,
        conversation_type,
        currency,
        unit_price,
        quantity,
        amount,
        billing_date,
        reason
    from billing.adjustments
    where invoice_number is null
),

final as (
    select * from open_lines
    union all
    select * from pending_adjustments
)

select * from final
