-- rate_row is the 1-based data row of rate_card.csv; conversation_starts.rate_row points to it
create table if not exists {schema}.rate_card (
    reference_hash text not null,
    rate_row integer not null,
    country text not null,
    conversation_type text not null,
    unit_price numeric(20, 10) not null,
    currency text not null,
    valid_from timestamp with time zone not null,
    valid_to timestamp with time zone,
    primary key (reference_hash, rate_row)
)
