"""The billing rules as a reader of `billing-rules.md` would write them: one message at a time.

This is the reference, not the product: it is slow on purpose and exists so that a reviewer can
check it against the spec line by line, so that property tests can hold the fast engine to it, and
so that support can say *why* a message was or was not charged (`billing-jobs explain`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, replace

from billing_jobs.contract import (
    BUSINESS_INITIATED,
    FAILED,
    INBOUND,
    OUTSIDE_SESSION,
    STATUS_RANK,
    TEMPLATE,
    USER_INITIATED,
)

DAY = dt.timedelta(hours=24)
IDENTITY = ("customer_id", "line_id", "contact_id", "direction", "message_type", "sent_at")


@dataclass(frozen=True)
class Message:
    message_id: str
    customer_id: str
    line_id: str
    contact_id: str
    direction: str
    message_type: str
    sent_at: dt.datetime  # timezone-aware UTC
    status: str = "sent"

    @property
    def is_template(self) -> bool:
        return self.direction != INBOUND and self.message_type == TEMPLATE


@dataclass(frozen=True)
class Decision:
    """What the rules did with one message, and why, in words support can read to a customer."""

    message: Message
    outcome: str  # user_initiated | business_initiated | free | outside_session | excluded
    reason: str

    @property
    def charged(self) -> bool:
        return self.outcome in (USER_INITIATED, BUSINESS_INITIATED)


@dataclass
class Result:
    decisions: list[Decision]
    duplicates: int  # copies folded into another copy of the same message
    conflicts: list[Message]  # every copy of a message whose copies disagree

    @property
    def starts(self) -> list[Decision]:
        return [d for d in self.decisions if d.charged]

    @property
    def anomalies(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome == OUTSIDE_SESSION]


def processing_key(m: Message) -> tuple:
    """`sent_at` ascending, then inbound before outbound, then `message_id` byte-wise."""
    return (m.sent_at, m.direction != INBOUND, m.message_id.encode())


def deduplicate(rows: list[Message]) -> tuple[list[Message], int, list[Message]]:
    """Rows sharing a message_id are one message: the most advanced status wins; copies that
    disagree on any other column are all set aside as conflicting."""
    copies: dict[str, list[Message]] = defaultdict(list)
    for row in rows:
        copies[row.message_id].append(row)
    messages, duplicates, conflicts = [], 0, []
    for same_id in copies.values():
        if len({tuple(getattr(c, f) for f in IDENTITY) for c in same_id}) > 1:
            conflicts.extend(same_id)
            continue
        messages.append(max(same_id, key=lambda c: STATUS_RANK[c.status]))
        duplicates += len(same_id) - 1
    return messages, duplicates, conflicts


def _at(m: Message) -> str:
    return f"{m.message_id} at {m.sent_at:%Y-%m-%d %H:%M:%S}"


def decide_stream(messages: list[Message]) -> list[Decision]:
    """Apply the charge rules to one stream (one line, one contact), in processing order."""
    decisions: list[Decision] = []
    last_inbound: Message | None = None
    last_charged_template: Message | None = None
    for m in sorted(messages, key=processing_key):
        if m.status == FAILED:
            decisions.append(Decision(m, "excluded", "failed: never reached the other side"))
            continue
        t = m.sent_at
        # A session is open at t if an inbound message t' has t - 24h < t' <= t.
        session_open = last_inbound is not None and t - DAY < last_inbound.sent_at <= t
        if session_open:
            why_open = f"session kept open by inbound {_at(last_inbound)}"
        elif last_inbound is not None and last_inbound.sent_at == t - DAY:
            why_open = f"exactly 24 h after inbound {_at(last_inbound)}: session closed"
        elif last_inbound is not None:
            why_open = f"last inbound {_at(last_inbound)} is more than 24 h ago"
        else:
            why_open = "no earlier inbound message"

        if m.direction == INBOUND:
            if session_open:
                decisions.append(Decision(m, "free", f"extends the {why_open}"))
            elif (
                last_charged_template is not None
                and t - DAY < last_charged_template.sent_at < t
            ):
                decisions.append(Decision(
                    m, "free",
                    f"answers attempt {_at(last_charged_template)}: business-initiated, already "
                    f"charged ({why_open})",
                ))
            else:
                decisions.append(Decision(m, USER_INITIATED, f"opens a session: {why_open}"))
            last_inbound = m
        elif m.is_template:
            if session_open:
                decisions.append(Decision(m, "free", f"template inside the {why_open}"))
            else:
                decisions.append(Decision(m, BUSINESS_INITIATED, f"attempt: {why_open}"))
                last_charged_template = m
        elif session_open:
            decisions.append(Decision(m, "free", f"free-form inside the {why_open}"))
        else:
            decisions.append(Decision(m, OUTSIDE_SESSION, f"free-form with no session: {why_open}"))
    return decisions


def canonical_contact(contact_id: str) -> str:
    """`+5491100000001` and `5491100000001` are one contact: the digits alone."""
    return contact_id[1:] if contact_id.startswith("+") else contact_id


def reconcile(rows: list[Message]) -> Result:
    """Contacts in their canonical form, deduplicate, then decide every stream independently."""
    rows = [replace(m, contact_id=canonical_contact(m.contact_id)) for m in rows]
    messages, duplicates, conflicts = deduplicate(rows)
    streams: dict[tuple[str, str], list[Message]] = defaultdict(list)
    for m in messages:
        streams[(m.line_id, m.contact_id)].append(m)
    decisions = [d for key in sorted(streams) for d in decide_stream(streams[key])]
    return Result(decisions, duplicates, conflicts)


def messages_from_table(table) -> list[Message]:
    """Contract rows of an Arrow table (as produced by `landing`) as Message objects."""
    fields = Message.__dataclass_fields__
    return [Message(**{k: v for k, v in row.items() if k in fields}) for row in table.to_pylist()]


REACH = dt.timedelta(days=2)  # "copies within reach": partition dates at most two days apart


@dataclass
class DayResult:
    starts: list[Decision]  # the starts billed on the day
    conflicting: set[str]  # ids of the window's copies quarantined as conflicting
    reused: set[str]  # ids of the window's copies quarantined as reused


def bill_landing_zone(partitions: dict[dt.date, list[Message]],
                      days: list[dt.date]) -> dict[dt.date, DayResult]:
    """What a run over the complete landing zone bills on each of `days` ("Identity across
    days"), the days billed in date order:

    - the copies of one id in one partition follow the rules above (status copies fold, other
      differences conflict); copies in partitions within reach of each other always conflict
      (a valid copy's `sent_at` lies in its own partition, so two partitions mean two instants):
      every copy of both is quarantined, on every day;
    - copies further apart are separate messages, except that a copy of an id billed as a start
      on an earlier date is reused: quarantined, it takes no part in the rules;
    - a day D is billed from the partitions D-2..D, like every run.
    """
    canonical = {p: [replace(m, contact_id=canonical_contact(m.contact_id)) for m in rows]
                 for p, rows in partitions.items()}
    where: dict[str, set[dt.date]] = defaultdict(set)
    for p, rows in canonical.items():
        for m in rows:
            where[m.message_id].add(p)
    conflicted = {(mid, p) for mid, ps in where.items() for p in ps
                  if any(q != p and abs(q - p) <= REACH for q in ps)}
    billed: dict[str, dt.date] = {}
    out = {}
    for day in sorted(days):
        window = [day - dt.timedelta(days=k) for k in (2, 1, 0)]
        rows, conflicting, reused = [], set(), set()
        for p in window:
            for m in canonical.get(p, []):
                if (m.message_id, p) in conflicted:
                    conflicting.add(m.message_id)
                elif m.message_id in billed and billed[m.message_id] < p - REACH:
                    reused.add(m.message_id)
                else:
                    rows.append(m)
        result = reconcile(rows)
        starts = [d for d in result.starts if d.message.sent_at.date() == day]
        for d in starts:
            billed.setdefault(d.message.message_id, day)
        out[day] = DayResult(starts, conflicting | {m.message_id for m in result.conflicts},
                             reused)
    return out
