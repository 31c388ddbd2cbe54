"""Property-based tests: the engine agrees with the reference on arbitrary streams, and the result
depends neither on row order nor on how the rows are split into files of any format."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from helpers import BASE, LINE_CUSTOMER, engine_result, reference_result, table_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_jobs import engine, landing
from billing_jobs.dedupe import deduplicate
from billing_jobs.reconcile import reconcile
from billing_jobs.reference import Message

KINDS = [("inbound", "session"), ("outbound", "session"), ("outbound", "template")]
STATUSES = ["sent", "failed", "delivered", "read"]


@st.composite
def message_logs(draw, max_messages: int = 40) -> list[Message]:
    """Messages on few lines and contacts, on a coarse time grid so that same-instant ties and
    exact 24 h gaps are common, plus status copies and conflicting copies of some of them."""
    n = draw(st.integers(0, max_messages))
    ids = draw(st.lists(st.text("aAbB09.-é", min_size=1, max_size=4), min_size=n, max_size=n,
                        unique=True))
    messages = []
    for mid in ids:
        direction, mtype = draw(st.sampled_from(KINDS))
        line = draw(st.sampled_from(sorted(LINE_CUSTOMER)))
        # quarter hours over four days, and now and then a second off the grid
        when = BASE + dt.timedelta(minutes=15 * draw(st.integers(0, 4 * 96)),
                                   seconds=draw(st.sampled_from([0, 0, 0, 1])))
        # one contact in two spellings ("+1" and "1": one stream, billing-rules.md "Contacts")
        contact = draw(st.sampled_from(["+1", "1", "+2"]))
        messages.append(Message(mid, LINE_CUSTOMER[line], line, contact,
                                direction, mtype, when, draw(st.sampled_from(STATUSES))))
    copies = []
    for m in messages:
        for _ in range(draw(st.integers(0, 2)) if draw(st.booleans()) else 0):
            if draw(st.integers(0, 9)) == 0:  # a copy that disagrees on more than status
                copies.append(Message(m.message_id, m.customer_id, m.line_id, m.contact_id,
                                      m.direction, m.message_type,
                                      m.sent_at + dt.timedelta(hours=1), m.status))
            else:  # a status copy, sometimes with the contact spelt the other way
                contact = m.contact_id.lstrip("+") if draw(st.booleans()) else m.contact_id
                copies.append(Message(**{**m.__dict__, "contact_id": contact,
                                         "status": draw(st.sampled_from(STATUSES))}))
    return messages + copies


@settings(max_examples=400, deadline=None)
@given(message_logs(), st.integers(1, 3))
def test_engine_agrees_with_reference(messages, parts):
    """In one part or dealt by stream into parts computed side by side."""
    assert engine_result(messages, parts) == reference_result(messages)


@settings(max_examples=100, deadline=None)
@given(message_logs(), st.integers(2, engine.MAX_PARTS))
def test_parts_give_the_same_tables(messages, parts):
    """The starts and anomalies tables, row order included, whatever the number of parts (more
    parts than threads, or than streams, included), and whether they are built in two halves."""
    deduped = deduplicate(table_of(messages))
    one = engine.conversation_starts(deduped.table, deduped.rows, parts=1, halves=False)
    many = engine.conversation_starts(deduped.table, deduped.rows, parts=parts, halves=True)
    assert many[0].equals(one[0]) and many[1].equals(one[1])


@settings(max_examples=200, deadline=None)
@given(message_logs(), st.randoms(use_true_random=False))
def test_row_order_does_not_matter(messages, rnd):
    shuffled = list(messages)
    rnd.shuffle(shuffled)
    assert engine_result(shuffled) == engine_result(messages)


def _write(rows: list[Message], path, fmt: str) -> None:
    records = [m.__dict__ for m in rows]
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    elif fmt == "csv":
        import csv

        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(records[0]) if records else ["message_id"])
            w.writeheader()
            w.writerows({**r, "sent_at": r["sent_at"].isoformat()} for r in records)
    else:
        import json

        tz = dt.timezone(dt.timedelta(hours=-3))
        with open(path, "w") as f:
            for r in records:
                f.write(json.dumps({**r, "sent_at": r["sent_at"].astimezone(tz).isoformat()}) + "\n")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message_logs(), st.integers(1, 5), st.randoms(use_true_random=False))
def test_splitting_into_files_of_any_format_does_not_matter(tmp_path, messages, parts, rnd):
    import tempfile

    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    pieces: list[list[Message]] = [[] for _ in range(parts)]
    for m in messages:
        pieces[rnd.randrange(parts)].append(m)
    for i, piece in enumerate(pieces):
        if piece:
            fmt = rnd.choice(["parquet", "csv", "jsonl"])
            _write(piece, folder / f"part-{i}.{fmt}", fmt)
    result = reconcile(landing.read_files(landing.message_files([folder])))
    expected = engine_result(messages)
    got = sorted((r["message_id"], r["conversation_type"], r["started_at"], r["line_id"],
                  r["contact_id"], r["customer_id"]) for r in result.starts.to_pylist())
    assert got == expected["starts"]
    assert sorted(result.anomalies.column("message_id").to_pylist()) == expected["anomalies"]
    assert result.duplicates == expected["duplicates"]
    assert result.rows_read == len(messages)
    assert result.accepted + result.duplicates + result.quarantined.num_rows == len(messages)


def test_engine_agrees_with_reference_on_generated_traffic(tmp_path):
    # realistic volume and shape (bursts, late answers, duplicates, failed sends), beyond what the
    # small hypothesis logs reach
    from billing_jobs.generate import generate
    from billing_jobs.reference import messages_from_table

    generate(tmp_path, dt.date(2026, 3, 1), days=3, messages_per_day=4000, seed=11)
    batch = landing.read_files(landing.message_files([tmp_path / "messages"]))
    rows = messages_from_table(batch.valid)
    ours, theirs = engine_result(rows), reference_result(rows)
    assert len(ours["starts"]) > 500 and ours["duplicates"] > 0 and ours["anomalies"]
    assert ours == theirs
