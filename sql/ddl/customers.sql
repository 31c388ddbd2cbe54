-- reference rows as used by the runs, one version per content hash of the reference files
create table if not exists {schema}.customers (
    reference_hash text not null,
    customer_id text not null,
    name text,
    primary key (reference_hash, customer_id)
)
