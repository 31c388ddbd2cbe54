-- Provider reconciliation for finance: every difference by month, kind and explanation (the
-- explanation's first words, before the ids and instants that make each one unique).
with

differences as (
    select * from billing.provider_differences
),

final as (
    select
        cast(date_trunc('month', billing_date) as date) as month,
        kind,
        coalesce(conversation_type, provider_conversation_type) as conversation_type,
        case
            when explanation like 'sent while WhatsApp already had%'
                then 'sent while WhatsApp already had a conversation open'
            when explanation like 'the business answered%'
                then 'the business answered but WhatsApp reported no conversation'
            when explanation like 'the contact''s session was already open%'
                then 'our session was open: WhatsApp opens a new conversation every 24 h'
            when explanation like 'our log has no message%'
                then 'no message of this stream in our log'
            when explanation like 'our log has %'
                then 'messages in our log but no start pairs with it'
            else explanation
        end as explanation,
        count(*) as differences
    from differences
    group by 1, 2, 3, 4
)

select * from final
order by month, kind, conversation_type, differences desc
