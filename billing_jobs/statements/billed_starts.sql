-- which of a run's message ids (the candidate_ids table the run loads) are billed as starts on a
-- date outside the run's window, and on which date: a copy far from that date is a reused id, a
-- near one a conflicting copy. A start billed inside the window comes from a copy the run reads
-- itself and decides nothing (identity.py), so it is left out here: a re-run, which finds all of
-- its own starts billed, would otherwise weigh each of them one by one
select starts.message_id, starts.billing_date
from billing.conversation_starts as starts
inner join candidate_ids as candidates on candidates.message_id = starts.message_id
where starts.billing_date < :first_day or starts.billing_date > :last_day
