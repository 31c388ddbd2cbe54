-- warehouses made before failed runs named their step
alter table {schema}.billing_runs add column if not exists failed_step text
