-- For operations: why rows were set aside, per landing partition date, each bad row counted once
-- (the runs of D, D+1 and D+2 all read partition D: view billing.quarantined_rows).
with

quarantined as (
    select * from billing.quarantined_rows
),

final as (
    select
        partition_date,
        reason,
        count(*) as rows_quarantined
    from quarantined
    group by partition_date, reason
)

select * from final
order by partition_date, reason
