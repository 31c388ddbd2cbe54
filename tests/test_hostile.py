"""Hostile input (data-contracts.md §1): more than 10,000 bad rows of 25 kinds, spread over
parquet, CSV and JSONL files of one partition beside ordinary traffic, billed on DuckDB and on
PostgreSQL. No row stops a day; every bad row is quarantined under its own reason; the counts add
up exactly for every day; both backends publish identical tables."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from billing_jobs import sequence
from billing_jobs.config import Settings
from billing_jobs.generate import generate
from billing_jobs.reference_data import load_reference

START = dt.date(2026, 3, 1)
DAYS = [START + dt.timedelta(days=k) for k in range(3)]
HOSTILE_DAY = DAYS[1]
PER_KIND = 420
COLUMNS = ["message_id", "customer_id", "line_id", "contact_id", "direction", "message_type",
           "sent_at", "status"]


def _kinds(line: str, customer: str, other_customer: str) -> dict[str, tuple[str, callable]]:
    """kind -> (the reason it must be quarantined under, row k of that kind as a dict)."""
    at = f"{HOSTILE_DAY}T10:00:00Z"

    def good(k: int, kind: str) -> dict:
        return {"message_id": f"hostile-{kind}-{k}", "customer_id": customer, "line_id": line,
                "contact_id": f"+49151{k:07d}", "direction": "inbound",
                "message_type": "session", "sent_at": at, "status": "delivered"}

    def change(kind: str, **values):
        return lambda k: {**good(k, kind), **{c: (v(k) if callable(v) else v)
                                              for c, v in values.items()}}

    return {
        "no_message_id": ("missing_message_id", change("a", message_id=None)),
        "empty_message_id": ("missing_message_id", change("b", message_id="")),
        "no_customer": ("missing_customer_id", change("c", customer_id=None)),
        "no_line": ("missing_line_id", change("d", line_id="")),
        "no_contact": ("missing_contact_id", change("e", contact_id=None)),
        "no_direction": ("missing_direction", change("f", direction=None)),
        "no_type": ("missing_message_type", change("g", message_type="")),
        "no_time": ("missing_sent_at", change("h", sent_at=None)),
        "long_id": ("invalid_message_id", change("i", message_id=lambda k: "x" * 256 + str(k))),
        "nul_in_id": ("invalid_message_id", change("j", message_id=lambda k: f"id\x00{k}")),
        "bell_in_id": ("invalid_message_id", change("k", message_id=lambda k: f"id\x07{k}")),
        "sideways": ("invalid_direction", change("l", direction="sideways")),
        "voice_note": ("invalid_message_type", change("m", message_type="voice")),
        "inbound_template": ("inbound_template", change("n", message_type="template")),
        "seen_status": ("invalid_status", change("o", status="seen")),
        "spaced_contact": ("invalid_contact_id", change("p", contact_id=lambda k: f"+49 151 {k}")),
        "lettered_contact": ("invalid_contact_id", change("q", contact_id="+49abc")),
        "naive_time": ("invalid_sent_at", change("r", sent_at=f"{HOSTILE_DAY}T10:00:00")),
        "year_9999": ("invalid_sent_at", change("s", sent_at="9999-03-02T10:00:00Z")),
        "year_1": ("invalid_sent_at", change("t", sent_at="0001-03-02T10:00:00Z")),
        "month_13": ("invalid_sent_at", change("u", sent_at="2026-13-02T10:00:00Z")),
        "other_day": ("sent_at_outside_partition", change("v", sent_at=f"{START}T10:00:00Z")),
        "unknown_line": ("unknown_line", change("w", line_id="L9999")),
        "foreign_line": ("line_of_other_customer", change("x", customer_id=other_customer)),
        # two copies of one id at two instants: both quarantined
        "conflict": ("conflicting_duplicate", lambda k: change(
            "y", message_id=f"conflict-{k // 2}",
            sent_at=f"{HOSTILE_DAY}T1{k % 2}:00:00Z")(k)),
    }


def _write_hostile(part: Path, kinds: dict) -> Counter:
    """The hostile rows, each kind spread over the three formats, plus rows that are no row at
    all (CSV and JSONL) and text that is not UTF-8 (CSV and parquet). Returns reason counts."""
    expected: Counter = Counter()
    by_format: dict[str, list[dict]] = {"parquet": [], "csv": [], "jsonl": []}
    for kind, (reason, make) in kinds.items():
        for k in range(PER_KIND):
            by_format[("parquet", "csv", "jsonl")[k % 3]].append(make(k))
            expected[reason] += 1
    table = pa.table({c: pa.array([r[c] for r in by_format["parquet"]], pa.string())
                      for c in COLUMNS})
    pq.write_table(table, part / "hostile.parquet")
    pcsv.write_csv(pa.table({c: pa.array([r[c] for r in by_format["csv"]], pa.string())
                             for c in COLUMNS}), part / "hostile.csv")
    with open(part / "hostile.csv", "ab") as f:  # a cell too many, and bytes that are no UTF-8
        for k in range(PER_KIND):
            f.write(f'"m-extra-{k}","C001","L0011","+4915100000001","inbound","session",'
                    f'"{HOSTILE_DAY}T10:00:00Z","read","extra"\n'.encode())
            f.write(f'"m-bytes-{k}","C001","L0011","+4915100000001","inbound","session",'
                    f'"{HOSTILE_DAY}T10:00:00Z","read"\n'.encode().replace(b"bytes", b"\xff\xfe"))
    expected["malformed_row"] += PER_KIND
    expected["invalid_encoding"] += PER_KIND
    with open(part / "hostile.jsonl", "w") as f:
        for r in by_format["jsonl"]:
            f.write(json.dumps(r) + "\n")
        for k in range(PER_KIND):
            f.write('{"message_id": "cut-short-' + str(k) + '", "contact_id": "+4915\n')
    expected["malformed_row"] += PER_KIND
    ids = pa.array([b"ok-not-" + bytes([0xff, 0xfe]) + str(k).encode() for k in range(PER_KIND)],
                   pa.binary())
    base = kinds["no_message_id"][1](0)
    pq.write_table(pa.table({"message_id": ids, **{c: pa.array([base[c]] * PER_KIND, pa.string())
                                                   for c in COLUMNS[1:]}}),
                   part / "hostile-bytes.parquet")
    expected["invalid_encoding"] += PER_KIND
    return expected


@pytest.fixture(scope="module")
def hostile_landing(tmp_path_factory):
    source = tmp_path_factory.mktemp("hostile") / "landing"
    generate(source, START, days=len(DAYS), messages_per_day=1500, seed=4, fmt="mixed")
    lines = load_reference(source / "reference").lines
    line, (customer, _) = next(iter(sorted(lines.items())))
    other = next(c for c, _ in lines.values() if c != customer)
    expected = _write_hostile(source / "messages" / f"date={HOSTILE_DAY}",
                              _kinds(line, customer, other))
    assert sum(expected.values()) >= 10_000 and len(expected) >= 20
    return source, expected


def _tables(url: str) -> dict[str, list]:
    engine = sa.create_engine(url)
    out = {}
    with engine.connect() as conn:
        for table, columns in (
                ("conversation_starts", "billing_date, message_id, customer_id, line_id,"
                 " contact_key, country, conversation_type, started_at, unit_price, currency"),
                ("invoice_lines", "billing_date, customer_id, country, conversation_type,"
                 " currency, unit_price, quantity, amount"),
                ("session_anomalies", "billing_date, message_id, customer_id, line_id, kind"),
                ("quarantined_messages", "billing_date, message_id, reason, record, source_row"),
                ("billing_runs", "billing_date, status, messages_read, accepted, duplicates,"
                 " quarantined, failed_sends, starts, anomalies, amount")):
            rows = conn.execute(sa.text(f"select {columns} from billing.{table}")).all()
            out[table] = sorted(tuple(str(v) for v in r) for r in rows)
    engine.dispose()
    return out


def test_hostile_rows_never_stop_a_day_and_both_backends_agree(hostile_landing, tmp_path,
                                                              pg_url):
    source, expected = hostile_landing
    published = {}
    for name, url in (("duckdb", f"duckdb:///{tmp_path}/w.duckdb"), ("postgresql", pg_url)):
        settings = Settings.resolve(source=str(source), staging=str(tmp_path / name),
                                    warehouse_url=url)
        for day in DAYS:
            done = sequence.run_day(settings, day)  # no day fails because of a row
            assert done["published"]
            assert done["rows_read"] == done["accepted"] + done["duplicates"] + \
                done["quarantined"], (name, day)
        published[name] = _tables(url)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            got = Counter(dict(conn.execute(sa.text(
                "select reason, count(*) from billing.quarantined_messages"
                " where billing_date = :d and source_file like '%hostile%' group by reason"),
                {"d": HOSTILE_DAY}).all()))
            runs = conn.execute(sa.text(
                "select billing_date, messages_read, accepted, duplicates, quarantined"
                " from billing.billing_runs")).all()
        engine.dispose()
        assert got == expected, name
        for day, read, accepted, duplicates, quarantined in runs:
            assert read == accepted + duplicates + quarantined, (name, day)
    assert published["duckdb"] == published["postgresql"]
