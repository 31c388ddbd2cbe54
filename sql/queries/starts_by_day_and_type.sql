-- Conversation starts per billing day and type, with the run that published them.
with

starts as (
    select * from billing.conversation_starts
),

final as (
    select
        billing_date,
        conversation_type,
        count(*) as starts,
        sum(unit_price) as amount,
        min(run_id) as run_id
    from starts
    group by billing_date, conversation_type
)

select * from final
order by billing_date, conversation_type
