-- For operations: why rows were set aside, per billing date.
with

quarantined as (
    select * from {schema}.quarantined_messages
),

final as (
    select
        billing_date,
        reason,
        count(*) as rows_quarantined
    from quarantined
    group by billing_date, reason
)

select * from final
order by billing_date, reason
