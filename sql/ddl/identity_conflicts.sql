-- message ids whose copies conflict across partitions (billing-rules.md, "Identity across days"):
-- one row per id and partition holding a copy, kept from the first run that found it. A run
-- quarantines every copy of these ids within reach; restatement re-bills the days a conflict
-- found later reaches
create table if not exists {schema}.identity_conflicts (
    message_id text not null,
    partition_date date not null,
    found_for date not null,
    found_by_run text not null,
    found_at timestamp with time zone not null,
    primary key (message_id, partition_date)
)
