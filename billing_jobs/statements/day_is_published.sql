-- whether the latest run of :billing_date published it
select status
from billing.billing_runs
where billing_date = :billing_date
order by started_at desc
limit 1
