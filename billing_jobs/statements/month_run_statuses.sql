-- every run of the days of a month, oldest first: the last one of a day is its state
select billing_date, status
from billing.billing_runs
where billing_date between :first_day and :last_day
order by finished_at
