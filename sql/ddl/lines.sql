create table if not exists {schema}.lines (
    reference_hash text not null,
    line_id text not null,
    customer_id text not null,
    country text not null,
    primary key (reference_hash, line_id)
)
