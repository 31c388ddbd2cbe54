-- the latest published run of each billing date since :since: what restatement compares
with ranked as (
    select
        billing_date,
        run_id,
        partitions,
        row_number() over (partition by billing_date order by finished_at desc, run_id desc) as k
    from billing.billing_runs
    where status = 'published' and billing_date >= :since
)

select billing_date, run_id, partitions
from ranked
where k = 1
order by billing_date
