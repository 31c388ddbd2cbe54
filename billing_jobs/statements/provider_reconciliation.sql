-- Per customer, country and conversation type, billing date $day: our starts against WhatsApp's
-- conversations, with the closing identities our_starts = matched + ours_only + type_mismatch and
-- provider_conversations = matched + provider_only + type_mismatch. A pair counts under our
-- start's key, WhatsApp-only and non-billable conversations under their own. Same in-process
-- tables as provider_day_pairs.sql.
with

ours as (
    select
        customer_id, country, conversation_type,
        1 as our_starts, 0 as provider_conversations, 0 as matched, 0 as ours_only,
        0 as provider_only, 0 as type_mismatch, 0 as provider_not_billable,
        unit_price as our_amount, null::decimal(20, 10) as cost,
        currency as our_currency, null::varchar as provider_currency,
        starts.s
    from starts
    where billing_date = $day
),

facts as (
    select * exclude (s) from ours
    union all
    select
        ours.customer_id, ours.country, ours.conversation_type,
        0, 1, pairs.matched::int, 0, 0, (not pairs.matched)::int, 0,
        0, convs.cost, null, null
    from pairs
    inner join ours on ours.s = pairs.s
    inner join convs on convs.c = pairs.c
    union all
    select
        customer_id, country, conversation_type,
        0, 0, 0, 1, 0, 0, 0, 0, null, null, null
    from ours
    anti join pairs on pairs.s = ours.s
    union all
    select
        convs.customer_id, convs.country, convs.conversation_type,
        0, 1, 0, 0, 1, 0, 0, 0, convs.cost, null, convs.currency
    from convs
    anti join pairs on pairs.c = convs.c
    where convs.billing_date = $day and convs.eligible
    union all
    select
        customer_id, country, conversation_type,
        0, 0, 0, 0, 0, 0, 1, 0, null, null, null
    from convs
    where billing_date = $day and not billable
)

select
    customer_id,
    country,
    conversation_type,
    sum(our_starts)::bigint as our_starts,
    sum(provider_conversations)::bigint as provider_conversations,
    sum(matched)::bigint as matched,
    sum(ours_only)::bigint as ours_only,
    sum(provider_only)::bigint as provider_only,
    sum(type_mismatch)::bigint as type_mismatch,
    sum(provider_not_billable)::bigint as provider_not_billable,
    sum(our_amount)::decimal(38, 10) as our_amount,
    sum(cost)::decimal(38, 10) as provider_cost,
    coalesce(max(our_currency), max(provider_currency)) as currency
from facts
group by customer_id, country, conversation_type
order by customer_id, country, conversation_type
