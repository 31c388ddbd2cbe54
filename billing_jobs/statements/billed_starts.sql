-- which of a run's message ids (the candidate_ids table the run loads) are billed as starts, and
-- on which date: a copy far from that date is a reused id, a near one a conflicting copy
select starts.message_id, starts.billing_date
from billing.conversation_starts as starts
inner join candidate_ids as candidates on candidates.message_id = starts.message_id
