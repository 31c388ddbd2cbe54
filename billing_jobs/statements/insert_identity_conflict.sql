-- the first run that finds a conflicting copy records it; later finds change nothing
insert into billing.identity_conflicts (
    message_id, partition_date, found_for, found_by_run, found_at
)
select :message_id, :partition_date, :found_for, :found_by_run, :found_at
where not exists (
    select 1
    from billing.identity_conflicts
    where message_id = :message_id and partition_date = :partition_date
)
