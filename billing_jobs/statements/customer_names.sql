-- every customer's current name (the newest reference version that has it)
select customer_id, name from billing.current_customers
