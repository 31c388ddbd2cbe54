-- whether :month is closed (its invoices issued)
select month
from billing.closed_months
where month = :month
