"""billing-rules.md, "Days": the starts of day D depend only on messages from D-2 00:00 to the end
of D. Reading D-2..D must give the same starts on D as reading all history; reading only D-1..D
would not."""

from __future__ import annotations

import datetime as dt

from helpers import BASE, charged, engine_result, msg
from hypothesis import given, settings
from hypothesis import strategies as st
from test_properties import message_logs

from billing_jobs.reference import Message

DAY = dt.timedelta(days=1)


def starts_on(day: dt.date, messages: list[Message], look_back_days: int) -> list:
    first = dt.datetime.combine(day - look_back_days * DAY, dt.time(), dt.timezone.utc)
    end = dt.datetime.combine(day + DAY, dt.time(), dt.timezone.utc)
    window = [m for m in messages if first <= m.sent_at < end]
    return [s for s in engine_result(window)["starts"] if s[2].date() == day]


def same_day_copies(messages: list[Message]) -> list[Message]:
    """Drop messages whose copies fall on different UTC dates (see the test below)."""
    dates: dict[str, set] = {}
    for m in messages:
        dates.setdefault(m.message_id, set()).add(m.sent_at.date())
    return [m for m in messages if len(dates[m.message_id]) == 1]


@settings(max_examples=300, deadline=None)
@given(message_logs(max_messages=60), st.integers(0, 3))
def test_two_day_look_back_equals_all_history(messages, offset):
    messages = same_day_copies(messages)
    day = BASE.date() + offset * DAY
    everything = [s for s in engine_result(messages)["starts"] if s[2].date() == day]
    assert starts_on(day, messages, look_back_days=2) == everything


def test_one_day_look_back_is_not_enough():
    # D-2 23:00 inbound keeps the session open until D-1 23:00, so the D-1 22:00 template is free;
    # the D 10:00 inbound then opens a user-initiated conversation. Without D-2, the template looks
    # like a charged attempt and the D 10:00 inbound looks like its (free) answer.
    messages = [msg("i", "in", 23), msg("t", "tpl", 24 + 22), msg("answer", "in", 48 + 10)]
    day = (BASE + 2 * DAY).date()
    everything = [s for s in engine_result(messages)["starts"] if s[2].date() == day]
    assert [s[:2] for s in everything] == [("answer", "user_initiated")]
    assert starts_on(day, messages, look_back_days=2) == everything
    assert starts_on(day, messages, look_back_days=1) != everything
    assert charged(engine_result(messages[1:])) == [("t", "business_initiated")]


def test_a_conflicting_copy_on_a_later_day_is_seen_by_the_later_run_only():
    # Deduplication sees the copies inside the window a run reads. A copy of m that disagrees and
    # lands on D+1 cannot be known to the run for D, which bills m; the run for D+1 reads D and
    # D+1, finds the conflict and quarantines both copies. Documented in docs/decisions.md.
    original, conflicting = msg("m", "in", 23), msg("m", "in", 24)
    day = BASE.date()
    assert [s[0] for s in starts_on(day, [original, conflicting], 2)] == ["m"]
    assert engine_result([original, conflicting])["conflicts"] == ["m", "m"]
    assert starts_on(day + DAY, [original, conflicting], 2) == []
