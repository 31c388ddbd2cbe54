-- the conflicting copies a run found (its found_conflicts table), one row per id and partition:
-- the first run that finds a copy records it; later finds change nothing
insert into billing.identity_conflicts (
    message_id, partition_date, found_for, found_by_run, found_at
)
select
    found.message_id, found.partition_date, found.found_for, found.found_by_run, found.found_at
from found_conflicts as found
where not exists (
    select 1
    from billing.identity_conflicts as known
    where known.message_id = found.message_id and known.partition_date = found.partition_date
)
