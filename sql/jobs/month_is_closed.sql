-- whether :month is closed (its invoices issued)
select month
from {schema}.closed_months
where month = :month
