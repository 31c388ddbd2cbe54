-- The peer the engine is measured against: the same rules (billing-rules.md) as one DuckDB query
-- with window functions. `$files` is the list of parquet message files.
with

messages as (
    select * from read_parquet($files, union_by_name = true)
),

valid as (
    select
        message_id, customer_id, line_id, contact_id, direction, message_type,
        sent_at::timestamptz as sent_at,
        case coalesce(nullif(status, ''), 'sent')
            when 'sent' then 0 when 'failed' then 1 when 'delivered' then 2 when 'read' then 3
        end as status_rank
    from messages
    where coalesce(message_id, '') <> '' and coalesce(customer_id, '') <> ''
        and coalesce(line_id, '') <> '' and regexp_full_match(contact_id, '\+?[0-9]+')
        and direction in ('inbound', 'outbound') and message_type in ('session', 'template')
        and not (direction = 'inbound' and message_type = 'template')
        and coalesce(nullif(status, ''), 'sent') in ('sent', 'failed', 'delivered', 'read')
        and sent_at is not null
),

deduplicated as (
    select
        message_id,
        any_value(customer_id) as customer_id,
        any_value(line_id) as line_id,
        any_value(contact_id) as contact_id,
        any_value(direction) as direction,
        any_value(message_type) as message_type,
        any_value(sent_at) as sent_at,
        max(status_rank) as status_rank,
        count(distinct (customer_id, line_id, contact_id, direction, message_type, sent_at))
            as variants
    from valid
    group by message_id
),

live as (
    select * from deduplicated where variants = 1 and status_rank <> 1  -- 1 = failed
),

sessions as (
    select
        *,
        coalesce(
            max(case when direction = 'inbound' then sent_at end) over stream_before
                > sent_at - interval 24 hour,
            false
        ) as session_open
    from live
    window stream_before as (
        partition by line_id, contact_id
        order by sent_at, direction <> 'inbound', message_id
        rows between unbounded preceding and 1 preceding
    )
),

attempts as (
    select
        *,
        direction = 'outbound' and message_type = 'template' and not session_open as business
    from sessions
),

answers as (
    select
        *,
        max(case when business then sent_at end) over stream_before as last_attempt
    from attempts
    window stream_before as (
        partition by line_id, contact_id
        order by sent_at, direction <> 'inbound', message_id
        rows between unbounded preceding and 1 preceding
    )
),

final as (
    select
        message_id, customer_id, line_id, contact_id,
        case when business then 'business_initiated' else 'user_initiated' end
            as conversation_type,
        sent_at as started_at
    from answers
    where business
        or (
            direction = 'inbound' and not session_open
            and not coalesce(
                last_attempt > sent_at - interval 24 hour and last_attempt < sent_at, false
            )
        )
)

select * from final order by started_at, message_id
