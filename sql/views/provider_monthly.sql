create or replace view billing.provider_monthly as

-- per customer and month: what we billed (our starts and their amount) against what WhatsApp
-- reported (its billable conversations and, where it says, their cost), with how they pair

with

days as (
    select * from billing.provider_reconciliation
),

final as (
    select
        cast(date_trunc('month', billing_date) as date) as month,
        customer_id,
        currency,
        sum(our_starts) as our_starts,
        sum(provider_conversations) as provider_conversations,
        sum(matched) as matched,
        sum(type_mismatch) as type_mismatch,
        sum(ours_only) as ours_only,
        sum(provider_only) as provider_only,
        sum(provider_not_billable) as provider_not_billable,
        sum(our_amount) as our_amount,
        sum(provider_cost) as provider_cost
    from days
    group by 1, 2, 3
)

select * from final
