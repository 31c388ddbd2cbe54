create or replace view billing.quarantined_rows as

-- every bad input row once, under the date of the partition it came from: the runs of D, D+1
-- and D+2 all read partition D (the look-back) and each quarantines its bad rows again

with

quarantined as (
    select
        *,
        row_number() over (
            partition by source_file, source_row
            order by billing_date desc, run_id desc
        ) as newest_first
    from billing.quarantined_messages
),

final as (
    select
        coalesce(partition_date, billing_date) as partition_date,
        source_file,
        source_row,
        message_id,
        reason,
        record,
        billing_date as last_seen_by_billing_date,
        run_id as last_seen_by_run
    from quarantined
    where newest_first = 1
)

select * from final
