"""The daily job against the real warehouses: DuckDB (embedded default) and the local PostgreSQL,
each test in its own database. Expected invoice lines come from an independent path: the
reference rules and a plain-Python rate lookup."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from helpers import suites_with, write_day

from billing_jobs import audit_inputs, auditor, landing, reference, sequence, window
from billing_jobs.config import Settings
from billing_jobs.errors import AuditFailed, PricingError, ReferenceDataError, RunError
from billing_jobs.generate import generate
from billing_jobs.reference_data import load_reference

START = dt.date(2026, 3, 1)
DAYS = [START + dt.timedelta(days=k) for k in range(3)]
DAY_TABLES = ("conversation_starts", "invoice_lines", "session_anomalies", "quarantined_messages")


@pytest.fixture(scope="module")
def landing_zone(tmp_path_factory):
    root = tmp_path_factory.mktemp("landing")
    generate(root, START, days=3, messages_per_day=3000, seed=21, fmt="mixed")
    return root


@pytest.fixture
def settings(landing_zone, tmp_path, warehouse_url):
    source = tmp_path / "landing"
    shutil.copytree(landing_zone, source)
    return Settings.resolve(source=str(source), warehouse_url=warehouse_url,
                            staging=str(tmp_path / "staging"), lock_wait_s="2")


def query(settings: Settings, sql: str, **params) -> list[tuple]:
    engine = sa.create_engine(settings.warehouse_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(sql), params).all()]
    engine.dispose()
    return rows


def day_tables(settings: Settings, day: dt.date | None = None) -> dict[str, list[tuple]]:
    """Every published row (run ids left out, so two runs can be compared)."""
    out = {}
    for table in DAY_TABLES:
        rows = query(settings, f"select * from billing.{table}" +
                     (" where billing_date = :d" if day else ""), **({"d": day} if day else {}))
        names = [r[0] for r in query(settings, "select column_name from information_schema.columns"
                 f" where table_schema = 'billing' and table_name = '{table}' order by ordinal_position")]
        keep = [i for i, n in enumerate(names) if n != "run_id"]
        out[table] = sorted((tuple(str(r[i]) for i in keep) for r in rows))
    return out


def expected_lines(settings: Settings, day: dt.date) -> dict[tuple, tuple[int, Decimal]]:
    """Invoice lines for `day` by the reference rules and a direct reading of the rate card."""
    ref = load_reference(settings.reference)
    files = [f for d in window.partitions_read(day)
             for f in landing.partition_files(settings.source, d)]
    batch = landing.read_files(files, lines=ref.line_owners)
    result = reference.reconcile(reference.messages_from_table(batch.valid))
    counts: Counter = Counter()
    for start in result.starts:
        m = start.message
        if m.sent_at.date() != day:
            continue
        country = ref.lines[m.line_id][1]
        (rate,) = [r for r in ref.rates if r.country == country
                   and r.conversation_type == start.outcome and r.applies_at(m.sent_at)]
        counts[(day, m.customer_id, country, start.outcome, rate.currency, rate.unit_price)] += 1
    return {k: (q, q * k[-1]) for k, q in counts.items()}


def published_lines(settings: Settings, day: dt.date) -> dict[tuple, tuple[int, Decimal]]:
    rows = query(settings, "select billing_date, customer_id, country, conversation_type, currency,"
                 " unit_price, quantity, amount from billing.invoice_lines where billing_date = :d",
                 d=day)
    return {(dt.date.fromisoformat(str(r[0])), *r[1:5], Decimal(r[5]).normalize()):
            (r[6], Decimal(r[7])) for r in rows}


def normalised(lines: dict) -> dict:
    return {(*k[:5], k[5].normalize()): v for k, v in lines.items()}


def test_a_multi_day_run_publishes_the_expected_lines(settings):
    for day in DAYS:
        sequence.run_day(settings, day)
    for day in DAYS:
        assert published_lines(settings, day) == normalised(expected_lines(settings, day))
    runs = query(settings, "select billing_date, status, messages_read, accepted, duplicates,"
                 " quarantined, starts, amount from billing.billing_runs order by billing_date")
    assert [r[1] for r in runs] == ["published"] * 3
    for _, _, read, accepted, duplicates, quarantined, _, _ in runs:
        assert read == accepted + duplicates + quarantined
    # the view finance reads adds up to the same money
    (month_amount,) = query(settings, "select sum(amount) from billing.monthly_invoice_lines")[0]
    assert Decimal(month_amount) == sum(Decimal(r[7]) for r in runs)


def test_invoice_totals_equal_priced_starts_across_a_price_change(settings):
    for day in DAYS:
        sequence.run_day(settings, day)
    prices = query(settings, "select distinct unit_price from billing.conversation_starts"
                   " where country = 'US' and conversation_type = 'business_initiated'")
    assert {Decimal(p[0]).normalize() for p in prices} == {Decimal("0.0266"), Decimal("0.025")}
    for day in DAYS:
        (lines,) = query(settings, "select coalesce(sum(amount), 0) from billing.invoice_lines"
                         " where billing_date = :d", d=day)[0]
        (starts,) = query(settings, "select coalesce(sum(unit_price), 0) from"
                          " billing.conversation_starts where billing_date = :d", d=day)[0]
        assert Decimal(lines) == Decimal(starts) and Decimal(lines) > 0


def test_rerunning_a_day_leaves_every_table_identical(settings):
    for day in DAYS:
        sequence.run_day(settings, day)
    before = day_tables(settings)
    sequence.run_day(settings, DAYS[1])
    assert day_tables(settings) == before
    runs = query(settings, "select status from billing.billing_runs where billing_date = :d",
                 d=DAYS[1])
    assert runs == [("published",), ("published",)]


def test_a_failure_between_delete_and_insert_keeps_the_previous_day(settings):
    sequence.run_day(settings, DAYS[0])
    before = day_tables(settings)
    folder = write_day(settings, DAYS[0])
    sequence.audit(settings, folder)
    # the staged starts now hold one message twice: the insert after the delete must fail
    path = folder.path / "conversation_starts.parquet"
    starts = pq.read_table(path)
    pq.write_table(pa.concat_tables([starts, starts.slice(0, 1)]), path)
    with pytest.raises(Exception, match="(?i)duplicate|unique|primary key|constraint"):
        sequence.publish(settings, folder)
    assert day_tables(settings) == before


@pytest.mark.parametrize("where", ["here", "in GX's worker process"])
def test_a_failed_audit_publishes_nothing_and_names_the_expectation(settings, where):
    folder = write_day(settings, DAYS[0])
    path = folder.path / "invoice_lines.parquet"
    lines = pq.read_table(path)
    wrong = pa.array([a + Decimal("0.01") for a in lines.column("amount").to_pylist()],
                     lines.schema.field("amount").type)
    pq.write_table(lines.set_column(lines.schema.get_field_index("amount"), "amount", wrong), path)
    with pytest.raises(AuditFailed, match=r"invoice_lines: expect_column_pair_values_to_be_equal"
                                          r"\(amount, quantity_times_unit_price\)"):
        with auditor.started() if where != "here" else contextlib.nullcontext():
            sequence.audit(settings, folder)
    assert json.loads((folder.path / "audit.json").read_text())["success"] is False
    with pytest.raises(RunError, match="not audited, or the audit failed"):
        sequence.publish(settings, folder)


@pytest.mark.parametrize("where", ["here", "in GX's worker process"])
def test_a_run_whose_audit_fails_while_publish_writes_keeps_the_previous_day(settings, tmp_path,
                                                                            where):
    """run_day writes the day while GX audits it and commits only once the audit passed: a
    failing audit rolls the written day back, and billing_runs names the audit."""
    sequence.run_day(settings, DAYS[0])
    before = day_tables(settings)
    # a file of the day is gone: what the failing run writes differs from what is published
    min((Path(settings.source) / "messages" / f"date={DAYS[0]}").glob("part-*")).unlink()
    suites = suites_with(settings.suites, tmp_path / "suites", "run_totals", {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "starts", "max_value": 0}})
    failing = dataclasses.replace(settings, expectations=str(suites))
    worker = auditor.started() if where != "here" else contextlib.nullcontext()
    with worker, pytest.raises(AuditFailed, match=r"run_totals: expect_column_values_to_be_"
                                                  r"between\(starts\)"):
        sequence.run_day(failing, DAYS[0])
    assert day_tables(settings) == before
    runs = query(settings, "select status, failed_step from billing.billing_runs"
                 " where billing_date = :d order by started_at", d=DAYS[0])
    assert runs == [("published", None), ("failed", "audit")]


def _edit_rate_card(settings: Settings, edit) -> None:
    path = f"{settings.reference}/rate_card.csv"
    lines = open(path).read().splitlines()
    open(path, "w").write("\n".join(edit(lines)) + "\n")


def test_a_rate_card_missing_a_country_stops_the_load(settings):
    sequence.run_day(settings, DAYS[0])
    before = day_tables(settings)
    _edit_rate_card(settings, lambda rows: [r for r in rows if not r.startswith("US,")])
    with pytest.raises(PricingError, match=r"have no rate in rate_card.csv, e.g. US "):
        sequence.run_day(settings, DAYS[0])
    assert day_tables(settings) == before
    statuses = query(settings, "select status, error from billing.billing_runs order by started_at")
    assert statuses[-1][0] == "failed" and "no rate" in statuses[-1][1]


def test_overlapping_rate_rows_stop_the_load(settings):
    country = next(iter(load_reference(settings.reference).lines.values()))[1]
    _edit_rate_card(settings, lambda rows: rows + [f"{country},user_initiated,0.04,USD,2026-01-01,"])
    with pytest.raises(ReferenceDataError, match=r"rate_card.csv rows \d+ and \d+: two .* "
                                                 r"user_initiated rates in force at"):
        sequence.run_day(settings, DAYS[0])
    assert day_tables(settings)["invoice_lines"] == []


def test_a_broken_rate_card_row_is_named(settings):
    _edit_rate_card(settings, lambda rows: rows + ["BR,user_initiated,cheap,USD,2026-01-01,"])
    with pytest.raises(ReferenceDataError, match=r"rate_card.csv row \d+: unit_price is not a decimal"):
        sequence.run_day(settings, DAYS[0])


def test_unknown_lines_and_unparseable_rows_are_quarantined_not_billed(settings):
    part = f"{settings.source}/messages/date={DAYS[0]}"
    with open(f"{part}/extra.jsonl", "w") as f:
        base = {"customer_id": "C001", "contact_id": "+4915100000001", "direction": "inbound",
                "message_type": "session", "sent_at": f"{DAYS[0]}T10:00:00Z"}
        f.write(json.dumps({**base, "message_id": "x-unknown-line", "line_id": "L9999"}) + "\n")
        f.write(json.dumps({**base, "message_id": "x-bad-time", "line_id": "L0011",
                            "sent_at": "10 o'clock"}) + "\n")
    sequence.run_day(settings, DAYS[0])
    quarantined = dict(query(settings, "select message_id, reason from"
                             " billing.quarantined_messages where message_id like 'x-%'"))
    assert quarantined == {"x-unknown-line": "unknown_line", "x-bad-time": "invalid_sent_at"}
    assert query(settings, "select count(*) from billing.conversation_starts"
                 " where message_id like 'x-%'") == [(0,)]


def test_an_unreadable_file_fails_the_run_naming_it(settings):
    sequence.run_day(settings, DAYS[0])
    before = day_tables(settings)
    bad = f"{settings.source}/messages/date={DAYS[0]}/corrupt.parquet"
    open(bad, "wb").write(b"PAR1 this is not parquet")
    with pytest.raises(landing.LandingError, match="corrupt.parquet: cannot read file"):
        sequence.run_day(settings, DAYS[0])
    assert day_tables(settings) == before


def test_no_phone_number_reaches_the_warehouse(settings):
    part = f"{settings.source}/messages/date={DAYS[0]}"
    with open(f"{part}/broken.jsonl", "w") as f:  # quarantined rows carry contacts too
        f.write(json.dumps({"message_id": "x-broken", "customer_id": "C001", "line_id": "L0011",
                            "contact_id": "+4915199999999", "direction": "sideways",
                            "message_type": "session", "sent_at": f"{DAYS[0]}T10:00:00Z"}) + "\n")
    sequence.run_day(settings, DAYS[0])
    contacts = set(landing.read_files(landing.message_files(
        [f"{settings.source}/messages"])).valid.column("contact_id").to_pylist())
    contacts.add("+4915199999999")
    keys = {r[0] for r in query(settings, "select contact_key from billing.conversation_starts")}
    assert keys and not (keys & contacts)
    (record,) = query(settings, "select record from billing.quarantined_messages"
                      " where message_id = 'x-broken'")[0]
    assert "contact_id" not in json.loads(record) and len(json.loads(record)["contact_key"]) == 64
    tables = [r[0] for r in query(settings, "select table_name from information_schema.tables"
                                  " where table_schema = 'billing'")]
    digits = {c.lstrip("+") for c in contacts}
    for table in tables:
        text = " ".join(" ".join(map(str, r)) for r in query(settings, f"select * from billing.{table}"))
        assert not any(d in text for d in digits), table


def test_the_contact_key_depends_on_the_secret(settings):
    sequence.run_day(settings, DAYS[0])
    first = query(settings, "select contact_key from billing.conversation_starts order by 1")
    other = dataclasses.replace(settings, contact_key_secret="another-secret")
    sequence.run_day(other, DAYS[0])
    second = query(settings, "select contact_key from billing.conversation_starts order by 1")
    assert len(first) == len(second) and set(first).isdisjoint(second)


def test_a_missing_partition_is_refused_not_published_as_empty(settings):
    with pytest.raises(RunError, match="no partition for 2026-03-09"):
        sequence.run_day(settings, dt.date(2026, 3, 9))


def _hold_duckdb_file(path: str, seconds: float):
    """Another process with the DuckDB file open for writing, like a second job or an analyst."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
        "con.execute('create table if not exists held (a int)'); print('held', flush=True); "
        "time.sleep(float(sys.argv[2]))"), path, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_locked_duckdb_file_makes_the_run_wait_then_fail_clearly(tmp_path, landing_zone):
    from billing_jobs.errors import WarehouseError

    path = tmp_path / "warehouse.duckdb"
    settings = Settings.resolve(source=str(landing_zone), warehouse_url=f"duckdb:///{path}",
                                staging=str(tmp_path / "staging"), lock_wait_s="1")
    holder = _hold_duckdb_file(str(path), 60)
    try:
        with pytest.raises(WarehouseError, match=rf"is locked by process {holder.pid} \(a running "
                                                 rf"job or an open DuckDB session.*gave up after 1 s"):
            sequence.run_day(settings, DAYS[0])
    finally:
        holder.kill()
        holder.wait()
    # once the other writer is gone, the same run goes through
    assert sequence.run_day(settings, DAYS[0])["published"]


def test_a_briefly_locked_duckdb_file_is_waited_for(tmp_path, landing_zone):
    path = tmp_path / "warehouse.duckdb"
    settings = Settings.resolve(source=str(landing_zone), warehouse_url=f"duckdb:///{path}",
                                staging=str(tmp_path / "staging"), lock_wait_s="60")
    holder = _hold_duckdb_file(str(path), 3)
    try:
        assert sequence.run_day(settings, DAYS[0])["published"]
    finally:
        holder.wait()


def test_postgresql_runs_of_one_date_do_not_interleave(pg_url, landing_zone, tmp_path):
    """Two runs of one date serialise on the date's row of billing.job_locks: a run that cannot
    get it in time fails naming who holds it; another date is not blocked; a patient run goes
    through once the holder lets go."""
    import threading

    from billing_jobs.errors import WarehouseError

    settings = Settings.resolve(source=str(landing_zone), warehouse_url=pg_url,
                                staging=str(tmp_path / "staging"), lock_wait_s="1")
    assert sequence.run_day(settings, DAYS[1])["published"]  # the schema, job_locks included
    engine = sa.create_engine(pg_url, connect_args={"application_name": "billing-jobs"})
    holder = engine.connect()
    pid = holder.execute(sa.text("select pg_backend_pid()")).scalar()
    holder.execute(sa.text("insert into billing.job_locks values (:k) on conflict do nothing"),
                   {"k": f"billing_date:{DAYS[0]}"})
    holder.execute(sa.text("select * from billing.job_locks where name = :k for update"),
                   {"k": f"billing_date:{DAYS[0]}"}).all()
    try:
        with pytest.raises(WarehouseError, match=rf"billing date {DAYS[0]}: publish: gave up "
                                                 rf"after 1 s waiting for a lock held by pid "
                                                 rf"{pid} \(user postgres, billing-jobs, idle in "
                                                 rf"transaction since "):
            sequence.run_day(settings, DAYS[0])
        # another date is not blocked
        assert sequence.run_day(settings, DAYS[2])["published"]
        # with a longer wait, the run goes through once the other run lets go
        patient = dataclasses.replace(settings, lock_wait_s=60)
        threading.Timer(2, holder.commit).start()
        assert sequence.run_day(patient, DAYS[0])["published"]
    finally:
        holder.close()
        engine.dispose()


def test_finance_queries_run_and_round_totals_half_up(settings):
    from decimal import ROUND_HALF_UP

    from billing_jobs.summary import run_query

    for day in DAYS:
        sequence.run_day(settings, day)
    for name in ("published_invoice_lines", "starts_by_day_and_type", "quarantine_by_reason"):
        assert run_query(name, settings)[1], name
    columns, rows = run_query("monthly_totals_by_customer", settings)
    assert {r[columns.index("status")] for r in rows} == {"open"}
    exact = {r[1]: Decimal(r[columns.index("exact_amount")]) for r in rows}
    shown = {r[1]: Decimal(r[columns.index("total")]) for r in rows}
    (total,) = query(settings, "select sum(amount) from billing.invoice_lines")[0]
    assert sum(exact.values()) == Decimal(total)
    assert shown == {c: a.quantize(Decimal("0.01"), ROUND_HALF_UP) for c, a in exact.items()}
    # the rounding the query relies on is half-up on both engines
    assert query(settings, "select round(cast(0.125 as numeric(38, 10)), 2),"
                 " round(cast(2.675 as numeric(38, 10)), 2)") == [(Decimal("0.13"), Decimal("2.68"))]


def test_a_late_file_reaches_its_day_and_the_two_after_and_no_further(tmp_path):
    """Six published days, a late file in the second: exactly days 2, 3 and 4 are stale (they
    read partition 2); days 5 and 6 read 3..6 and are not."""
    from billing_jobs import restate

    generate(tmp_path / "landing", START, days=6, messages_per_day=300, seed=2)
    settings = Settings.resolve(source=str(tmp_path / "landing"), staging=str(tmp_path / "stg"),
                                warehouse_url=f"duckdb:///{tmp_path}/w.duckdb")
    days = [START + dt.timedelta(days=k) for k in range(6)]
    for day in days:
        sequence.run_day(settings, day)
    (tmp_path / "landing" / "messages" / f"date={days[1]}" / "late.csv").write_text(
        "message_id,customer_id,line_id,contact_id,direction,message_type,sent_at\n")
    assert restate.stale_days(settings, START) == days[1:4]


def test_restatement_rebills_exactly_the_days_a_late_file_changes(settings):
    from billing_jobs import restate

    days = [START + dt.timedelta(days=k) for k in range(3)]
    for day in days:
        sequence.run_day(settings, day)
    assert restate.stale_days(settings, START) == []
    before = {day: day_tables(settings, day) for day in days}

    # a late answer lands in the first day's partition, after that day was billed
    late = {"message_id": "late-1", "customer_id": "C001", "line_id": next(
                line for line, (c, _) in load_reference(settings.reference).lines.items()
                if c == "C001"),
            "contact_id": "+4915100000077", "direction": "inbound", "message_type": "session",
            "sent_at": f"{START}T23:59:00Z"}
    with open(f"{settings.source}/messages/date={START}/late-arrival.jsonl", "w") as f:
        f.write(json.dumps(late) + "\n")
    assert restate.stale_days(settings, START) == days  # D and the two days that read it
    assert restate.stale_days(settings, START + dt.timedelta(days=1)) == days[1:]

    restated = restate.restate(settings, START)
    assert [d for d, _ in restated] == days
    assert restate.stale_days(settings, START) == []
    # the first day gained exactly the late start; the others equal a from-scratch run
    after = day_tables(settings, START)
    assert len(after["conversation_starts"]) == len(before[START]["conversation_starts"]) + 1
    for day in days:
        assert published_lines(settings, day) == normalised(expected_lines(settings, day))


def test_a_partition_fingerprint_is_the_recorded_definition(tmp_path):
    """Published days keep their partitions' fingerprints (billing_runs.partitions) and each
    night's restatement compares them: a changed definition would re-bill every published day.
    Both ways of computing it (the plan's, with each file's own hash, and restatement's) keep
    the one definition: SHA-256 over each file's name, a NUL and its bytes, in name order."""
    import hashlib

    files = []
    for name, size in (("b.parquet", 3 << 20), ("a.csv", 5), ("c.jsonl", 0)):  # blocks and none
        files.append(tmp_path / name)
        files[-1].write_bytes(bytes(k % 251 for k in range(size)))
    expected = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        expected.update(path.name.encode() + b"\0" + path.read_bytes())
    assert window.fingerprint(files) == expected.hexdigest()
    fingerprint, own = window.fingerprint_and_digests(files)
    assert fingerprint == expected.hexdigest()
    assert own == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_a_publish_task_whose_audit_process_cannot_start_fails_in_one_line(
        settings, monkeypatch, tmp_path):
    """billing_daily's publish task starts Great Expectations' process first: when it cannot
    start (here: no interpreter where sys.executable says), the task fails with the one-line
    reason naming the date and the step, as every other failure of the step does."""
    from airflow.sdk.exceptions import AirflowFailException

    from billing_jobs import orchestration

    folder = write_day(settings, DAYS[0])
    for name, value in {"BILLING_SOURCE": settings.source, "BILLING_STAGING": settings.staging,
                        "BILLING_WAREHOUSE_URL": settings.warehouse_url}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    with pytest.raises(AirflowFailException) as failed:
        orchestration.publish(str(folder.path))
    message = str(failed.value)
    assert message.startswith(f"billing date {DAYS[0]}: publish failed: ") and "\n" not in message
    assert "no-python-here" in message


def test_the_starts_are_audited_in_slices_and_ids_stay_unique_across_them(settings, monkeypatch):
    monkeypatch.setattr(audit_inputs, "AUDIT_CHUNK_ROWS", 100)  # several slices even on a small day
    folder = write_day(settings, DAYS[0])
    sequence.audit(settings, folder)
    results = json.loads((folder.path / "audit.json").read_text())["results"]
    assert {"conversation_starts", "conversation_starts-1", "conversation_starts-2"} <= set(results)
    # one start twice, in different slices: no slice sees it, the day's totals do
    path = folder.path / "conversation_starts.parquet"
    starts = pq.read_table(path)
    pq.write_table(pa.concat_tables([starts, starts.slice(0, 1)]), path)
    with pytest.raises(AuditFailed, match=r"run_totals: expect_column_pair_values_to_be_equal"
                                          r"\(starts, distinct_start_ids\)"):
        sequence.audit(settings, folder)


def test_an_expectation_that_cannot_run_says_why(settings, tmp_path):
    suites = suites_with(settings.suites, tmp_path / "suites", "run_totals", {
        "type": "expect_column_values_to_not_be_null", "kwargs": {"column": "no_such_column"}})
    folder = write_day(settings, DAYS[0])
    sequence.audit(settings, folder)  # the staging area's GX project now holds the shipped suites
    changed = dataclasses.replace(settings, expectations=str(suites))  # ... then the suite changes
    with pytest.raises(AuditFailed, match=r"run_totals: expect_column_values_to_not_be_null"
                                          r"\(no_such_column\) failed: could not be evaluated: .*"
                                          r"no_such_column"):
        sequence.audit(changed, folder)


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_a_landing_zone_behind_an_fsspec_url_bills_what_a_local_one_bills(landing_zone, tmp_path,
                                                                           scheme):
    """data-contracts.md §1: a source is a directory or any fsspec URL. `memory://` stands in for
    an object store (s3://, gs://): listing, reading every format, fingerprints, shards and the
    reference data all go through fsspec."""
    import uuid

    import fsspec

    local = tmp_path / "landing"
    shutil.copytree(landing_zone, local)
    with open(f"{local}/messages/date={DAYS[2]}/extra.jsonl", "w") as f:  # a quarantined row
        f.write(json.dumps({"message_id": "x-unknown-line", "customer_id": "C001",
                            "line_id": "L9999", "contact_id": "+4915100000001",
                            "direction": "inbound", "message_type": "session",
                            "sent_at": f"{DAYS[2]}T10:00:00Z"}) + "\n")
    if scheme == "memory":
        url = f"memory://landing-{uuid.uuid4().hex}"
        fsspec.filesystem("memory").put(str(local), url.removeprefix("memory:/"), recursive=True)
    else:
        url = f"file://{local}"

    def run(source: str, name: str, shards: int) -> tuple[dict, dict]:
        s = Settings.resolve(source=source, staging=str(tmp_path / f"staging-{name}"),
                             warehouse_url=f"duckdb:///{tmp_path}/{name}.duckdb")
        done = sequence.run_day(s, DAYS[2], shards=shards)
        return day_tables(s, DAYS[2]), {k: done[k] for k in ("rows_read", "accepted",
                                                               "quarantined", "amount")}

    tables, counts = run(str(local), "local", 1)
    assert any("x-unknown-line" in row for row in tables["quarantined_messages"])
    # the same rows, except that quarantined rows name their file by its URL
    tables["quarantined_messages"] = sorted(tuple(v.replace(str(local), url) for v in row)
                                            for row in tables["quarantined_messages"])
    assert run(url, "url", 1) == (tables, counts)
    assert run(url, "url-sharded", 3) == (tables, counts)
    s = Settings.resolve(source=url, staging=str(tmp_path / "staging-url"),
                         warehouse_url=f"duckdb:///{tmp_path}/url.duckdb")
    assert query(s, "select source_file from billing.quarantined_messages"
                    " where message_id = 'x-unknown-line'") == [
        (f"{url}/messages/date={DAYS[2]}/extra.jsonl",)]
    with pytest.raises(RunError, match=f"no partition for {START + dt.timedelta(days=9)}"):
        sequence.run_day(s, START + dt.timedelta(days=9))
