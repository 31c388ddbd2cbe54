-- What the message log and WhatsApp's conversations say about each difference (provider
-- reconciliation). Runs in-process on Arrow tables: diffs (idx, kind, line_id, contact_key,
-- message_id, conversation_type, started_at, opened_at), msgs (the message log of D-1..D+1 with
-- contact_key) and convs (WhatsApp's accepted conversations of D-1..D+1).
with

start_copy as (
    -- our start's own message as the log has it: 1 sent, 2 delivered, 3 read
    select
        diffs.idx,
        max(case msgs.status when 'read' then 3 when 'delivered' then 2 else 1 end) as status_rank
    from diffs
    inner join msgs on msgs.message_id = diffs.message_id
    where diffs.kind = 'ours_only'
    group by diffs.idx
),

holder as (
    -- a conversation of the stream WhatsApp had open when our template was sent
    select
        diffs.idx,
        arg_min(convs.conversation_id, convs.opened_at) as conversation_id,
        min(convs.opened_at) as opened_at
    from diffs
    inner join convs
        on convs.line_id = diffs.line_id and convs.contact_key = diffs.contact_key
        and convs.opened_at <= diffs.started_at
        and diffs.started_at < convs.opened_at + interval 24 hour
    where diffs.kind = 'ours_only' and diffs.conversation_type = 'business_initiated'
    group by diffs.idx
),

answer as (
    -- the business's first delivered message in the 24 h after a user-initiated start
    select
        diffs.idx,
        arg_min(msgs.message_id, msgs.sent_at) as message_id,
        min(msgs.sent_at) as sent_at
    from diffs
    inner join msgs
        on msgs.line_id = diffs.line_id and msgs.contact_key = diffs.contact_key
        and msgs.direction = 'outbound' and msgs.status in ('delivered', 'read')
        and msgs.sent_at > diffs.started_at
        and msgs.sent_at < diffs.started_at + interval 24 hour
    where diffs.kind = 'ours_only' and diffs.conversation_type = 'user_initiated'
    group by diffs.idx
),

near as (
    -- messages of the stream within 24 h of a conversation only WhatsApp has
    select
        diffs.idx,
        count(*) as messages
    from diffs
    inner join msgs
        on msgs.line_id = diffs.line_id and msgs.contact_key = diffs.contact_key
        and msgs.sent_at between diffs.opened_at - interval 24 hour
            and diffs.opened_at + interval 24 hour
    where diffs.kind = 'provider_only'
    group by diffs.idx
),

last_inbound as (
    -- the contact's last message in the 24 h before it: our session was open
    select
        diffs.idx,
        arg_max(msgs.message_id, msgs.sent_at) as message_id,
        max(msgs.sent_at) as sent_at
    from diffs
    inner join msgs
        on msgs.line_id = diffs.line_id and msgs.contact_key = diffs.contact_key
        and msgs.direction = 'inbound'
        and msgs.sent_at > diffs.opened_at - interval 24 hour
        and msgs.sent_at <= diffs.opened_at
    where diffs.kind = 'provider_only'
    group by diffs.idx
),

final as (
    select
        diffs.idx,
        start_copy.status_rank,
        holder.conversation_id as holder_id,
        holder.opened_at as holder_opened_at,
        answer.message_id as answer_id,
        answer.sent_at as answer_sent_at,
        coalesce(near.messages, 0) as near_messages,
        last_inbound.message_id as inbound_id,
        last_inbound.sent_at as inbound_sent_at
    from diffs
    left join start_copy on start_copy.idx = diffs.idx
    left join holder on holder.idx = diffs.idx
    left join answer on answer.idx = diffs.idx
    left join near on near.idx = diffs.idx
    left join last_inbound on last_inbound.idx = diffs.idx
)

select * from final
order by idx
