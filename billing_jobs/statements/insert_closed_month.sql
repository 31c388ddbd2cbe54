insert into billing.closed_months (month, closed_at, invoices)
values (:month, :closed_at, :invoices)
