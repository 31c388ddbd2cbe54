-- every row a run set aside, with the reason and the row as read (JSON text)
create table if not exists {schema}.quarantined_messages (
    run_id text not null,
    billing_date date not null,
    message_id text,
    reason text not null,
    record text not null,
    source_file text not null,
    source_row bigint not null
)
