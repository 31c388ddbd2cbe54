insert into {schema}.closed_months (month, closed_at, invoices)
values (:month, :closed_at, :invoices)
