-- published days since :since that a conflict found after they were billed reaches: a copy in a
-- partition the day read (D-2..D), found by a run of another day
with latest as (
    select
        billing_date,
        started_at,
        row_number() over (partition by billing_date order by finished_at desc, run_id desc) as k
    from billing.billing_runs
    where status = 'published' and billing_date >= :since
),

reached as (
    select distinct
        latest.billing_date,
        conflicts.found_by_run
    from latest
    inner join billing.identity_conflicts as conflicts
        on conflicts.partition_date <= latest.billing_date
        and conflicts.partition_date >= latest.billing_date - 2
    where latest.k = 1
        and conflicts.found_at > latest.started_at
        and conflicts.found_for <> latest.billing_date
)

select billing_date, min(found_by_run) as found_by_run
from reached
group by billing_date
order by billing_date
