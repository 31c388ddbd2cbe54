-- Provider reconciliation for finance: per customer and month, our starts against WhatsApp's
-- conversations (counts, amounts, and WhatsApp's cost where it reported one).
with

monthly as (
    select * from billing.provider_monthly
),

final as (
    select
        month,
        customer_id,
        currency,
        our_starts,
        provider_conversations,
        matched,
        type_mismatch,
        ours_only,
        provider_only,
        our_amount,
        provider_cost
    from monthly
)

select * from final
order by month, customer_id, currency
