create or replace view billing.current_customers as

-- one row per customer: its name in the newest reference version that has it (customers keeps
-- every version a run used, so joining it directly counts a renamed customer twice)

with

customers as (
    select * from billing.customers
),

versions as (
    select
        reference_hash,
        max(finished_at) as last_used_at
    from billing.billing_runs
    where status = 'published'
    group by reference_hash
),

ranked as (
    select
        customers.customer_id,
        customers.name,
        versions.last_used_at,
        row_number() over (
            partition by customers.customer_id
            order by versions.last_used_at desc nulls last, customers.reference_hash
        ) as version_rank
    from customers
    left join versions on versions.reference_hash = customers.reference_hash
),

final as (
    select
        customer_id,
        name,
        last_used_at as name_as_of
    from ranked
    where version_rank = 1
)

select * from final
