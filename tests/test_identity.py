"""Identity across days, end to end (billing-rules.md, "Identity across days" and "Contacts"):
generated traffic with conflicting copies in the next day's partition, ids reused days later
(of starts and of other messages) and both spellings of contacts, billed day by day in date
order and then restated. Every published day then equals the reference run over the complete
landing zone, and no message id is billed twice."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from helpers import LINE_CUSTOMER, table_of
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from billing_jobs import identity, landing, reference, restate, sequence
from billing_jobs.config import Settings
from billing_jobs.day import on_day
from billing_jobs.generate import generate
from billing_jobs.reconcile import reconcile
from billing_jobs.reference_data import load_reference

START = dt.date(2026, 3, 1)
DAYS = [START + dt.timedelta(days=k) for k in range(8)]


def _valid_rows(source: Path) -> dict[dt.date, list[reference.Message]]:
    lines = load_reference(source / "reference").line_owners
    out: dict[dt.date, list[reference.Message]] = {}
    for day in DAYS:
        files = landing.partition_files(source, day)
        batch = landing.read_files(files, lines=lines)
        out[day] = reference.messages_from_table(batch.valid)
    return out


def _row(m: reference.Message, **changes) -> dict:
    row = {**m.__dict__, **changes}
    row["sent_at"] = row["sent_at"].isoformat().replace("+00:00", "Z")
    return row


def _write(source: Path, day: dt.date, name: str, rows: list[dict]) -> None:
    path = source / "messages" / f"date={day}" / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def injected(tmp_path_factory):
    """The landing zone with the identity cases written in, and what was injected."""
    source = tmp_path_factory.mktemp("identity") / "landing"
    generate(source, START, days=len(DAYS), messages_per_day=600, seed=21)
    rows = _valid_rows(source)
    starts = {day: reference.bill_landing_zone(rows, [day])[day].starts for day in DAYS[:3]}
    start_ids = {d.message.message_id for ds in starts.values() for d in ds}
    plain = [m for m in rows[DAYS[1]] if m.message_id not in start_ids and m.direction == "inbound"]
    cases = {
        # a start of day 2 and an ordinary inbound message of day 2, copied into day 3's
        # partition with another instant: conflicting copies within reach
        "conflict_start": starts[DAYS[1]][0].message,
        "conflict_plain": plain[0],
        # a start of day 1 reused 5 days later; an unbilled id of day 2 reused 5 days later
        "reused_start": starts[DAYS[0]][0].message,
        "reused_plain": plain[1],
        # a start of day 3 with a status copy spelt without "+": one message, one stream
        "spelling": starts[DAYS[2]][1].message,
    }
    later = dt.timedelta(days=1)
    _write(source, DAYS[2], "next-day-copies.jsonl", [
        _row(cases["conflict_start"], sent_at=cases["conflict_start"].sent_at + later),
        _row(cases["conflict_plain"], sent_at=cases["conflict_plain"].sent_at + later)])
    _write(source, DAYS[5], "reused-ids.jsonl", [
        _row(cases["reused_start"], sent_at=cases["reused_start"].sent_at + 5 * later,
             direction="inbound", message_type="session", status="read",
             contact_id="+4915199999001"),  # a stream of its own: alone, it would be a start
        _row(cases["reused_plain"], sent_at=cases["reused_plain"].sent_at + 4 * later)])
    spelt = cases["spelling"]
    _write(source, DAYS[2], "other-spelling.jsonl", [
        _row(spelt, contact_id=spelt.contact_id.lstrip("+"), status="read")])
    return source, cases


def _published_starts(url: str) -> dict[dt.date, list[tuple]]:
    con = duckdb.connect(url.removeprefix("duckdb:///"), read_only=True)
    rows = con.execute("select billing_date, message_id, conversation_type, started_at"
                       " from billing.conversation_starts order by all").fetchall()
    con.close()
    out: dict[dt.date, list[tuple]] = {}
    for day, mid, kind, at in rows:
        out.setdefault(day, []).append((mid, kind, at))
    return out


def test_days_billed_in_order_then_restated_equal_the_complete_landing_zone(injected, tmp_path):
    source, cases = injected
    settings = Settings.resolve(source=str(source), staging=str(tmp_path / "staging"),
                                warehouse_url=f"duckdb:///{tmp_path}/w.duckdb")
    for day in DAYS:
        sequence.run_day(settings, day)  # a reused id never stops a run
    why = restate.stale_reasons(settings, START)
    assert set(why) == {DAYS[1]}  # only day 2 billed the copy that day 3's run found conflicting
    assert "conflicting copy" in why[DAYS[1]]
    restate.restate(settings, START)
    assert restate.stale_days(settings, START) == []

    expected = reference.bill_landing_zone(_valid_rows(source), DAYS)
    published = _published_starts(settings.warehouse_url)
    for day in DAYS:
        want = sorted((d.message.message_id, d.outcome, d.message.sent_at)
                      for d in expected[day].starts)
        got = [(m, k, at.astimezone(dt.timezone.utc)) for m, k, at in published.get(day, [])]
        assert got == want, day
    billed = [m for rows in published.values() for m, _, _ in rows]
    assert len(billed) == len(set(billed))  # no id billed twice

    con = duckdb.connect(settings.warehouse_url.removeprefix("duckdb:///"), read_only=True)
    reasons = dict(con.execute(
        "select message_id, string_agg(distinct reason, ',') from billing.quarantined_messages"
        " where message_id in (?, ?, ?, ?) group by 1",
        [cases[k].message_id for k in ("conflict_start", "conflict_plain", "reused_start",
                                       "reused_plain")]).fetchall())
    con.close()
    assert reasons[cases["conflict_start"].message_id] == "conflicting_duplicate"
    assert reasons[cases["conflict_plain"].message_id] == "conflicting_duplicate"
    assert reasons[cases["reused_start"].message_id] == "reused_message_id"
    assert cases["reused_plain"].message_id not in reasons  # never billed: a message of its day
    spelt = cases["spelling"].message_id
    assert spelt in [m for m, _, _ in published[DAYS[2]]]


def test_a_backfill_out_of_order_keeps_the_first_billed_start(injected, tmp_path):
    source, cases = injected
    settings = Settings.resolve(source=str(source), staging=str(tmp_path / "staging"),
                                warehouse_url=f"duckdb:///{tmp_path}/w.duckdb")
    sequence.run_day(settings, DAYS[5])  # the reused copy's day first: it bills a start there
    sequence.run_day(settings, DAYS[0])  # the original day then finds its id billed far away
    published = _published_starts(settings.warehouse_url)
    mid = cases["reused_start"].message_id
    assert [m for m, _, _ in published[DAYS[5]]].count(mid) == 1
    assert mid not in [m for m, _, _ in published.get(DAYS[0], [])]


# --- the same rules on arbitrary logs: the engine's identity step against the reference -------

SIX = [START + dt.timedelta(days=k) for k in range(6)]


@st.composite
def partitioned_logs(draw) -> dict[dt.date, list[reference.Message]]:
    """A few ids over six daily partitions: most once, some copied into a partition within
    reach (a conflict) or far away (a reused id, or a message of its own day)."""
    out: dict[dt.date, list[reference.Message]] = {d: [] for d in SIX}
    for k in range(draw(st.integers(1, 24))):
        mid = f"m{k}"
        for day in sorted(draw(st.sets(st.sampled_from(SIX), min_size=1, max_size=2))):
            line = draw(st.sampled_from(sorted(LINE_CUSTOMER)))
            kind = draw(st.sampled_from([("inbound", "session"), ("outbound", "template"),
                                         ("outbound", "session")]))
            at = dt.datetime.combine(day, dt.time(), dt.timezone.utc) + dt.timedelta(
                hours=draw(st.integers(0, 23)))
            contact = draw(st.sampled_from(["+1", "1", "+2"]))
            out[day].append(reference.Message(mid, LINE_CUSTOMER[line], line, contact, *kind, at,
                                              "delivered"))
    return out


def _engine_days(logs: dict[dt.date, list[reference.Message]]) -> dict[dt.date, list[tuple]]:
    """The product's identity path without a warehouse: days billed in date order (what each
    run knows: the starts billed so far, the conflicts found so far), then restated until no
    day is reached by a conflict found after it was billed."""

    billed: dict[str, dt.date] = {}
    found: dict[tuple[str, dt.date], tuple[dt.date, int]] = {}  # (id, partition) -> (day, when)
    published: dict[dt.date, tuple[int, list[tuple]]] = {}
    clock = iter(range(10**6))

    def run(day: dt.date) -> None:
        started = next(clock)
        window = [day - dt.timedelta(days=k) for k in (2, 1, 0)]
        rows = [m for p in window for m in logs.get(p, [])]
        table = table_of(rows)
        files = [f"x/date={m.sent_at.date()}/f.jsonl" for m in rows]
        table = table.set_column(table.schema.get_field_index("source_file"), "source_file",
                                 pa.array(files).dictionary_encode())
        batch = landing.Batch(valid=table, quarantined=landing.QUARANTINE_SCHEMA.empty_table(),
                              rows_read=len(rows), files=[])
        for mid, _ in published.get(day, (0, []))[1]:  # billed again: its own starts go
            if billed.get(mid) == day:
                del billed[mid]
        near = {}
        for (mid, p), _ in found.items():
            if abs((p - day).days) <= 4:
                near.setdefault(mid, set()).add(p)
        known = identity.Known((window[0], window[-1]), dict(billed), near)
        settled, forced = identity.settle(batch, known)
        result = reconcile(settled, forced)
        starts = result.starts.filter(on_day(result.starts.column("started_at"), day))
        out = sorted((r["message_id"], r["conversation_type"]) for r in starts.to_pylist())
        for mid, _ in out:
            billed.setdefault(mid, day)
        when = next(clock)
        for r in result.quarantined.to_pylist():
            if r["reason"] == "conflicting_duplicate":
                p = identity.partition_of(r["source_file"])
                found.setdefault((r["message_id"], p), (day, when))
        published[day] = (started, out)

    for day in SIX:
        run(day)
    while True:
        stale = sorted(day for day, (started, _) in published.items()
                       if any(day - dt.timedelta(days=2) <= p <= day and when > started
                              and by != day for (_, p), (by, when) in found.items()))
        if not stale:
            break
        for day in stale:
            run(day)
    return {day: out for day, (_, out) in published.items()}


def _restatement_meets_a_far_copy(logs) -> bool:
    """Whether a day that a conflict makes billed again also reads a copy of an id with a far
    copy elsewhere: its restatement may then make that id a start where a later day already
    billed it, and the later day keeps it (the first billed date keeps the start; decisions.md)
    while a run over the complete landing zone would bill the earlier one."""
    where: dict[str, set[dt.date]] = {}
    for p, rows in logs.items():
        for m in rows:
            where.setdefault(m.message_id, set()).add(p)
    conflict_days = {p for ps in where.values() for p in ps
                     if any(q != p and abs((q - p).days) <= 2 for q in ps)}
    far = {p for ps in where.values() for p in ps
           if any(abs((q - p).days) > 2 for q in ps)}
    return any(abs((a - b).days) <= 2 for a in conflict_days for b in far)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(partitioned_logs())
def test_the_identity_rules_agree_with_the_reference(logs):
    assume(not _restatement_meets_a_far_copy(logs))
    expected = reference.bill_landing_zone(logs, SIX)
    got = _engine_days(logs)
    for day in SIX:
        assert got[day] == sorted((d.message.message_id, d.outcome)
                                  for d in expected[day].starts), day


def test_conflicts_are_recorded_once_from_the_first_run_that_found_them(injected, tmp_path,
                                                                         warehouse_url):
    """The conflicting copies a run found go into identity_conflicts in one set-based statement,
    per id and partition; a later run of the same day finds them again and changes nothing."""
    import sqlalchemy as sa

    source, cases = injected
    settings = Settings.resolve(source=str(source), staging=str(tmp_path / "staging"),
                                warehouse_url=warehouse_url)
    first = sequence.run_day(settings, DAYS[2])["run_id"]
    again = sequence.run_day(settings, DAYS[2])["run_id"]
    engine = sa.create_engine(warehouse_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "select message_id, partition_date, found_for, found_by_run"
            " from billing.identity_conflicts order by 1, 2")).all()
    engine.dispose()
    conflicting = cases["conflict_start"].message_id
    assert [(str(p), str(f)) for m, p, f, _ in rows if m == conflicting] == [
        (str(DAYS[1]), str(DAYS[2])), (str(DAYS[2]), str(DAYS[2]))]  # both copies' partitions
    assert {r for *_, r in rows} == {first} and first != again
    assert len(rows) == len({(m, p) for m, p, _, _ in rows})


def test_sharded_nights_publish_what_unsharded_ones_do(injected, tmp_path):
    """Every night in three shards, from prepared pieces (contacts keyed once per file, reused
    and conflicting copies quarantined from keyed rows): the same tables, records and keys as
    the unsharded nights, to the byte."""
    source, _ = injected
    tables = ("conversation_starts", "session_anomalies", "quarantined_messages",
              "invoice_lines")
    out = {}
    for shards in (1, 3):
        settings = Settings.resolve(source=str(source), staging=str(tmp_path / f"s{shards}"),
                                    warehouse_url=f"duckdb:///{tmp_path}/w{shards}.duckdb")
        for day in DAYS:
            sequence.run_day(settings, day, shards=shards)
        con = duckdb.connect(f"{tmp_path}/w{shards}.duckdb", read_only=True)
        out[shards] = {t: con.execute(f"select * exclude (run_id) from billing.{t} order by all"
                                      ).fetchall() for t in tables}
        reasons = {r for (r,) in con.execute("select reason from billing.quarantined_messages")
                   .fetchall()}
        assert {"conflicting_duplicate", "reused_message_id"} <= reasons
        con.close()
    assert out[3] == out[1]


def test_the_billed_lookup_names_only_starts_billed_outside_the_window(injected, tmp_path,
                                                                        warehouse_url):
    """A re-run finds all of its own starts billed inside its window, where they decide nothing:
    the lookup leaves them out (they cost a re-run of a 1M day a second, one by one), and still
    names every start billed on a date outside the window, on PostgreSQL as on DuckDB."""
    from billing_jobs import warehouse

    source, _ = injected
    settings = Settings.resolve(source=str(source), staging=str(tmp_path / "staging"),
                                warehouse_url=warehouse_url)
    sequence.run_day(settings, DAYS[0])
    engine = warehouse.create_engine(settings.warehouse_url, read_only=True)
    with engine.connect() as conn:
        billed = [r[0] for r in conn.exec_driver_sql(
            "select message_id from billing.conversation_starts").all()]
    engine.dispose()
    assert billed
    ids = pa.array([*billed, "never-billed"])

    def lookup(first: dt.date, last: dt.date) -> dict:
        return warehouse.billed_dates(settings.warehouse_url, settings.schema, 5.0, ids,
                                      (first, last))

    assert lookup(DAYS[0] - dt.timedelta(days=2), DAYS[0]) == {}  # the run of DAYS[0] again
    assert lookup(DAYS[0], DAYS[2]) == {}  # a later day's window that reads DAYS[0]
    outside = lookup(DAYS[1], DAYS[3])
    assert set(outside) == set(billed)
    assert {dt.date.fromisoformat(str(d)[:10]) for d in outside.values()} == {DAYS[0]}
    assert set(lookup(DAYS[0] - dt.timedelta(days=5), DAYS[0] - dt.timedelta(days=3))) == \
        set(billed)
