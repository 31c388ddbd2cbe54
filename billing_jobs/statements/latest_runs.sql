-- the latest run of each billing date since :since, whatever its status
with ranked as (
    select
        billing_date,
        run_id,
        status,
        failed_step,
        error,
        partitions,
        finished_at,
        row_number() over (partition by billing_date order by finished_at desc, run_id desc) as k
    from billing.billing_runs
    where billing_date >= :since
)

select billing_date, run_id, status, failed_step, error, partitions, finished_at
from ranked
where k = 1
order by billing_date
