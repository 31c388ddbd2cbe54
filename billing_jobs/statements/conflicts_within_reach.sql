-- known conflicting copies in partitions a run for D-2..D can reach (:first_day = D-4,
-- :last_day = D+2)
select message_id, partition_date
from billing.identity_conflicts
where partition_date between :first_day and :last_day
