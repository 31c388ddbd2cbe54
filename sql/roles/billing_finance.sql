-- PostgreSQL: a read-only role for finance analysts: SELECT on the billing schema, nothing else.
-- Apply after the schema exists: psql -v schema=billing -f sql/roles/billing_finance.sql
-- (billing-jobs applies it with {schema} filled in). Grant it to people: grant billing_finance to alice;
do $$
begin
    if not exists (select from pg_roles where rolname = 'billing_finance') then
        create role billing_finance nologin;
    end if;
end
$$;
revoke all on schema {schema} from billing_finance;
grant usage on schema {schema} to billing_finance;
revoke all on all tables in schema {schema} from billing_finance;
grant select on all tables in schema {schema} to billing_finance;
alter default privileges in schema {schema} grant select on tables to billing_finance;
