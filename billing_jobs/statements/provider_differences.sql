-- The differences of billing date $day: our starts of $day nobody paired, WhatsApp's billable
-- conversations opened on $day nobody paired (of the two types we charge), and the pairs of $day
-- whose types differ. Same in-process tables as provider_day_pairs.sql.
with

ours_only as (
    select
        'ours_only' as kind,
        starts.customer_id, starts.line_id, starts.country, starts.contact_key,
        null::varchar as contact,
        starts.message_id, starts.conversation_type, starts.started_at,
        null::varchar as conversation_id, null::varchar as provider_conversation_type,
        null::timestamptz as opened_at
    from starts
    anti join pairs on pairs.s = starts.s
    where starts.billing_date = $day
),

provider_only as (
    select
        'provider_only' as kind,
        convs.customer_id, convs.line_id, convs.country, convs.contact_key,
        convs.contact_id as contact,
        null::varchar as message_id, null::varchar as conversation_type,
        null::timestamptz as started_at,
        convs.conversation_id, convs.conversation_type as provider_conversation_type,
        convs.opened_at
    from convs
    anti join pairs on pairs.c = convs.c
    where convs.billing_date = $day and convs.eligible
),

type_mismatch as (
    select
        'type_mismatch' as kind,
        starts.customer_id, starts.line_id, starts.country, starts.contact_key,
        convs.contact_id as contact,
        starts.message_id, starts.conversation_type, starts.started_at,
        convs.conversation_id, convs.conversation_type as provider_conversation_type,
        convs.opened_at
    from pairs
    inner join starts on starts.s = pairs.s
    inner join convs on convs.c = pairs.c
    where starts.billing_date = $day and not pairs.matched
),

final as (
    select * from ours_only
    union all
    select * from provider_only
    union all
    select * from type_mismatch
)

select * from final
order by kind, message_id, conversation_id
