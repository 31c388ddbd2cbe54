-- Why each difference of a provider reconciliation exists, in plain words, from what the message
-- log and WhatsApp's conversations say. Runs in-process on: diffs (idx, kind, line_id, contact,
-- contact_key, message_id, conversation_type, started_at, provider_conversation_type,
-- opened_at), log (the message log of D-1..D+1: message_id, line_id, contact (canonical),
-- contact_id (as written), direction, status, sent_at) and convs (WhatsApp's accepted
-- conversations of D-1..D+1). The log is scanned once, joined to the differences' streams on the
-- contact as written (both spellings of each difference's contact: no per-row rewriting of 30M
-- log rows), with each difference's time bounds computed once.
with

anchored as (
    select
        *,
        -- each difference's bounds, once: our start's instant, or WhatsApp's opening
        coalesce(started_at, opened_at) - interval 24 hour as window_from,
        coalesce(started_at, opened_at) + interval 24 hour as window_to,
        started_at + interval 24 hour as answer_until,
        opened_at - interval 24 hour as inbound_after
    from diffs
    where kind <> 'type_mismatch'
),

spellings as (
    -- the log's contact as written: with or without the leading +
    select idx, contact as written from anchored
    union all
    select idx, '+' || contact from anchored
),

stream_messages as (
    -- each difference with the messages of its stream within 24 h of it
    select
        anchored.idx,
        anchored.kind,
        anchored.conversation_type,
        anchored.message_id as start_id,
        anchored.started_at,
        anchored.opened_at,
        anchored.answer_until,
        anchored.inbound_after,
        log.message_id,
        log.direction,
        log.status,
        log.sent_at
    from anchored
    inner join spellings using (idx)
    inner join log
        on log.line_id = anchored.line_id and log.contact_id = spellings.written
        and log.sent_at between anchored.window_from and anchored.window_to
),

facts as (
    select
        idx,
        -- our start's own message as the log has it: 1 sent, 2 delivered, 3 read
        max(case status when 'read' then 3 when 'delivered' then 2 else 1 end)
            filter (where kind = 'ours_only' and message_id = start_id) as status_rank,
        -- the business's first delivered message in the 24 h after a user-initiated start
        min({'sent_at': sent_at, 'message_id': message_id}) filter (
            where kind = 'ours_only' and conversation_type = 'user_initiated'
            and direction = 'outbound' and status in ('delivered', 'read')
            and sent_at > started_at and sent_at < answer_until
        ) as answer,
        -- whether the stream has messages within 24 h of a conversation only WhatsApp has (status
        -- copies of a message are rows of their own: counted, they would overstate it)
        count(*) filter (where kind = 'provider_only') > 0 as near_messages,
        -- the contact's last message in the 24 h before it: our session was open
        max({'sent_at': sent_at, 'message_id': message_id}) filter (
            where kind = 'provider_only' and direction = 'inbound'
            and sent_at > inbound_after and sent_at <= opened_at
        ) as last_inbound
    from stream_messages
    group by idx
),

holder as (
    -- the earliest conversation of the stream WhatsApp had open when our template was sent
    select
        anchored.idx,
        min({'opened_at': convs.opened_at, 'conversation_id': convs.conversation_id}) as holder
    from anchored
    inner join convs
        on convs.line_id = anchored.line_id and convs.contact_key = anchored.contact_key
        and convs.opened_at <= anchored.started_at
        and anchored.started_at < convs.opened_at + interval 24 hour
    where anchored.kind = 'ours_only' and anchored.conversation_type = 'business_initiated'
    group by anchored.idx
),

facts_of_each as (
    select
        diffs.idx,
        diffs.kind,
        diffs.conversation_type,
        diffs.provider_conversation_type,
        facts.status_rank,
        holder.holder.conversation_id as holder_id,
        strftime(holder.holder.opened_at at time zone 'UTC', '%Y-%m-%d %H:%M:%S') as holder_at,
        facts.answer.message_id as answer_id,
        strftime(facts.answer.sent_at at time zone 'UTC', '%Y-%m-%d %H:%M:%S') as answer_at,
        coalesce(facts.near_messages, false) as near_messages,
        facts.last_inbound.message_id as inbound_id,
        strftime(facts.last_inbound.sent_at at time zone 'UTC', '%Y-%m-%d %H:%M:%S') as inbound_at
    from diffs
    left join facts on facts.idx = diffs.idx
    left join holder on holder.idx = diffs.idx
),

final as (
    -- the plain words of billing-rules.md's cases
    select
        idx,
        case
            when kind = 'type_mismatch' then
                'WhatsApp reports a ' || provider_conversation_type || ' conversation where the '
                || 'rules charged a ' || conversation_type || ' start'
            when kind = 'ours_only' and conversation_type = 'business_initiated' then
                case
                    when status_rank = 1 then
                        'the template never reached delivered or read (status sent): WhatsApp '
                        || 'opens a conversation only on delivery'
                    when holder_id is not null then
                        'sent while WhatsApp already had conversation ' || holder_id || ' of this '
                        || 'stream open (opened ' || holder_at || ' UTC): the rules charge every '
                        || 'template attempt outside a session, WhatsApp one conversation per 24 h'
                    else 'WhatsApp reported no conversation of this stream around the template'
                end
            when kind = 'ours_only' then
                case
                    when answer_id is null then
                        'the business sent no delivered message in the 24 h after it: WhatsApp '
                        || 'charges a user-initiated conversation only once the business answers'
                    else
                        'the business answered (' || answer_id || ' delivered ' || answer_at
                        || ' UTC) but WhatsApp reported no conversation of this stream'
                end
            when not near_messages then
                'our log has no message of this stream within 24 h of the opening: a message '
                || 'missing from our log'
            when inbound_id is not null then
                'the contact''s session was already open in our log (inbound ' || inbound_id
                || ' at ' || inbound_at || ' UTC): the rules charge a session once however long '
                || 'it runs, WhatsApp a new conversation every 24 h'
            else
                'our log has messages of this stream within 24 h of the opening but the rules '
                || 'charged no start that pairs with it'
        end as explanation
    from facts_of_each
)

select explanation from final
order by idx
