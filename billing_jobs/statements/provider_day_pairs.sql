-- The pairs of billing date $day (provider reconciliation): a pair's date is our start's. Runs
-- in-process on starts (our published starts of D-1..D+1, row number s), convs (WhatsApp's
-- accepted conversations of D-1..D+1, row number c) and pairs (s, c, matched).
select
    starts.message_id,
    convs.conversation_id,
    case when pairs.matched then 'matched' else 'type_mismatch' end as kind
from pairs
inner join starts on starts.s = pairs.s
inner join convs on convs.c = pairs.c
where starts.billing_date = $day
order by starts.message_id
