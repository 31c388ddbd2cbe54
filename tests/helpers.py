"""Small builders shared by the tests: messages in hours from a base instant, and the two
implementations run side by side on the same rows."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow as pa

from billing_jobs import engine, landing, reference
from billing_jobs.contract import MESSAGES_SCHEMA, SOURCE_COLUMNS
from billing_jobs.dedupe import deduplicate
from billing_jobs.reference import Message

BASE = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
LINE_CUSTOMER = {"L1": "C1", "L2": "C1", "L3": "C2"}


def at(hours: float) -> dt.datetime:
    return BASE + dt.timedelta(hours=hours)


def msg(mid: str, kind: str, hours: float, status: str = "sent", line: str = "L1",
        contact: str = "+100") -> Message:
    """kind: 'in' (inbound), 'tpl' (template) or 'free' (free-form outbound)."""
    direction = "inbound" if kind == "in" else "outbound"
    mtype = "template" if kind == "tpl" else "session"
    return Message(mid, LINE_CUSTOMER[line], line, contact, direction, mtype, at(hours), status)


def table_of(messages: list[Message]) -> pa.Table:
    """Valid rows as `landing` hands them to the engine: contacts in their canonical form."""
    rows = [
        {**m.__dict__, "source_file": "test", "source_row": i + 1} for i, m in enumerate(messages)
    ]
    table = pa.Table.from_pylist(rows, schema=pa.schema([*MESSAGES_SCHEMA, *SOURCE_COLUMNS]))
    index = table.schema.get_field_index("contact_id")
    return table.set_column(index, table.schema.field(index),
                            landing.canonical_contacts(table.column("contact_id")))


def engine_result(messages: list[Message], parts: int | None = None) -> dict:
    """What the product computes, in a shape comparable with `reference_result`; `parts`: the
    engine's parts computed side by side (its own choice if None)."""
    deduped = deduplicate(table_of(messages))
    starts, anomalies = engine.conversation_starts(deduped.table, deduped.rows, parts)
    return {
        "starts": sorted(
            (r["message_id"], r["conversation_type"], r["started_at"], r["line_id"],
             r["contact_id"], r["customer_id"])
            for r in starts.to_pylist()
        ),
        "anomalies": sorted(anomalies.column("message_id").to_pylist()),
        "duplicates": deduped.duplicates,
        "conflicts": sorted(deduped.conflicts.column("message_id").to_pylist()),
    }


def reference_result(messages: list[Message]) -> dict:
    result = reference.reconcile(messages)
    return {
        "starts": sorted(
            (d.message.message_id, d.outcome, d.message.sent_at, d.message.line_id,
             d.message.contact_id, d.message.customer_id)
            for d in result.starts
        ),
        "anomalies": sorted(d.message.message_id for d in result.anomalies),
        "duplicates": result.duplicates,
        "conflicts": sorted(m.message_id for m in result.conflicts),
    }


def charged(result: dict) -> list[tuple[str, str]]:
    """(message_id, conversation type) of the starts, in time order."""
    return [(s[0], s[1]) for s in sorted(result["starts"], key=lambda s: (s[2], s[0]))]


def write_day(settings, day: dt.date, shards: int = 1):
    """The steps of a run before its audit (plan, split, write every shard, combine), as
    `sequence.run_day` runs them; returns the run folder."""
    from billing_jobs import sequence

    folder = sequence.plan(settings, day, shards)
    for k in range(folder.plan.split_tasks):
        sequence.split(settings, folder, k)
    for k in range(shards):
        sequence.write_shard(settings, folder, k)
    sequence.combine(settings, folder)
    return folder


def warehouse_rows(url: str, sql: str, **params) -> list[dict]:
    """The rows of one query on a warehouse, as dicts."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        out = [dict(r._mapping) for r in conn.execute(sa.text(sql), params).all()]
    engine.dispose()
    return out


def suites_with(suites: Path, into: Path, suite: str, expectation: dict) -> Path:
    """A copy of the expectation suites `suites` in `into`, with `expectation` (type and kwargs)
    added to suite `suite`: an audit that fails or cannot run, on demand."""
    shutil.copytree(suites, into)
    spec = json.loads((into / f"{suite}.json").read_text())
    spec["expectations"].append(expectation)
    (into / f"{suite}.json").write_text(json.dumps(spec))
    return into
