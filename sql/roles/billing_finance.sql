-- PostgreSQL: the read-only role for finance analysts: SELECT on the billing schema, nothing else.
-- No UPDATE anywhere, so it cannot lock the rows the job serialises on (billing.job_locks).
-- In psql, as the schema's owner:  psql -f sql/roles/billing_finance.sql, then
-- grant billing_finance to alice;  `billing-jobs warehouse grant-finance --role NAME` does the
-- same for another role name (and another schema).
do $$
begin
    if not exists (select from pg_roles where rolname = 'billing_finance') then
        create role billing_finance nologin;
    end if;
end
$$;
revoke all on schema billing from billing_finance;
grant usage on schema billing to billing_finance;
revoke all on all tables in schema billing from billing_finance;
grant select on all tables in schema billing to billing_finance;
alter default privileges in schema billing grant select on tables to billing_finance;
