"""Sharded days: the same published day for any number of shards, and a clear refusal where
shards cannot see a conflict."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil

import duckdb
import pytest

from billing_jobs import landing as landing_zone
from billing_jobs import sequence
from billing_jobs import window as windows
from billing_jobs.config import Settings
from billing_jobs.errors import RunError
from billing_jobs.generate import generate
from billing_jobs.run_folder import RunFolder
from billing_jobs.shards import shard_of

START = dt.date(2026, 3, 1)
TABLES = ("conversation_starts", "invoice_lines", "session_anomalies", "quarantined_messages")


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    root = tmp_path_factory.mktemp("landing")
    generate(root, START, days=3, messages_per_day=6000, seed=8, fmt="mixed")
    # rows a shard must still account for: a missing line and an unknown one
    day = root / "messages" / f"date={START + dt.timedelta(days=2)}"
    base = {"customer_id": "C001", "contact_id": "+4915100000001", "direction": "inbound",
            "message_type": "session", "sent_at": f"{START + dt.timedelta(days=2)}T08:00:00Z"}
    (day / "odd.jsonl").write_text(
        json.dumps({**base, "message_id": "no-line"}) + "\n"
        + json.dumps({**base, "message_id": "unknown-line", "line_id": "L9999"}) + "\n")
    # a malformed line (a cell too many) between rows of three lines: it is quarantined once, and
    # the rows after it keep their own numbers in every shard (csv-after: an unknown line)
    csv_rows = [("csv-before", "L0011"), None, ("csv-after", "L9998"), ("csv-late", "L0421")]
    header = "message_id,customer_id,line_id,contact_id,direction,message_type,sent_at,status\n"
    lines = [f"{m},C001,{line},+4915100000002,inbound,session,{base['sent_at']},\n" if m else
             f"cut,C001,L0011,+4915100000002,inbound,session,{base['sent_at']},read,extra\n"
             for m, line in (r or (None, None) for r in csv_rows)]
    (day / "odd.csv").write_text(header + "".join(lines))
    return root


def published(url: str, day: dt.date) -> dict[str, list]:
    con = duckdb.connect(url.removeprefix("duckdb:///"), read_only=True)
    out = {t: con.execute(f"select * exclude (run_id) from billing.{t} where billing_date = ?"
                          " order by all", [day]).fetchall() for t in TABLES}
    out["billing_runs"] = con.execute(
        "select messages_read, accepted, duplicates, quarantined, failed_sends, starts, anomalies,"
        " amount from billing.billing_runs").fetchall()
    con.close()
    return out


def test_shard_assignment_is_stable():
    assert [shard_of(line, 16) for line in ("L0011", "L0012", "L0421")] == [
        shard_of(line, 16) for line in ("L0011", "L0012", "L0421")]
    assert shard_of(None, 16) == 0
    assert len({shard_of(f"L{i:04d}", 16) for i in range(200)}) == 16


@pytest.mark.parametrize("shards", [4, 16])
def test_any_number_of_shards_publishes_the_same_day(landing, tmp_path, shards):
    day = START + dt.timedelta(days=2)
    results = {}
    for n in (1, shards):
        settings = Settings.resolve(source=str(landing), staging=str(tmp_path / f"s{n}"),
                                    warehouse_url=f"duckdb:///{tmp_path}/w{n}.duckdb")
        sequence.run_day(settings, day, shards=n)
        results[n] = published(settings.warehouse_url, day)
    assert results[1]["invoice_lines"] and results[1]["quarantined_messages"]
    reasons = {(r[1], r[2], r[5]) for r in results[1]["quarantined_messages"]}
    assert {(None, "malformed_row", 2), ("csv-after", "unknown_line", 3)} <= reasons
    assert results[shards] == results[1]


@pytest.mark.parametrize("staging", ["local", "s3"])
def test_a_conflict_across_shards_publishes_exactly_the_unsharded_day(landing, tmp_path, staging,
                                                                      request):
    """Copies of one id on lines of different shards: no shard sees both, the combine step's
    second phase computes the shards holding them again, and the day equals the unsharded one
    (every copy quarantined as conflicting_duplicate, nothing billed for them). With the staging
    area on an S3-compatible server, every step hands its work on through the object store."""
    where = (str(tmp_path) if staging == "local"
             else request.getfixturevalue("s3_bucket") + "/staging")
    source = tmp_path / "landing"
    shutil.copytree(landing, source)
    day = START + dt.timedelta(days=2)
    owner = {row.split(",")[0]: row.split(",")[1]
             for row in (source / "reference" / "lines.csv").read_text().split()[1:]}
    a = next(line for line in owner if shard_of(line, 4) == 0)  # two lines in different shards
    b = next(line for line in owner if shard_of(line, 4) != 0)
    base = {"contact_id": "+4915100000002", "direction": "inbound", "message_type": "session",
            "sent_at": f"{day}T09:00:00Z"}
    copies = [{**base, "message_id": "twice", "customer_id": owner[a], "line_id": a,
               "status": "delivered"},
              {**base, "message_id": "twice", "customer_id": owner[a], "line_id": a,
               "status": "read"},  # a status copy beside it: quarantined too, not a duplicate
              {**base, "message_id": "twice", "customer_id": owner[b], "line_id": b}]
    (source / "messages" / f"date={day}" / "twice.jsonl").write_text(
        "".join(json.dumps(c) + "\n" for c in copies))
    results, runs = {}, {}
    for n in (1, 4):
        settings = Settings.resolve(source=str(source), staging=f"{where}/s{n}",
                                    warehouse_url=f"duckdb:///{tmp_path}/w{n}.duckdb",
                                    gx=str(tmp_path / "gx"))
        runs[n] = RunFolder(f"{where}/s{n}/{day}/{sequence.run_day(settings, day, shards=n)['run_id']}")
        results[n] = published(settings.warehouse_url, day)
    assert results[4] == results[1]
    assert runs[4].audited()
    assert (runs[4].path / "shards" / "3" / "ids.npy").exists()
    if staging == "s3":
        assert not any((tmp_path / name).exists() for name in ("s1", "s4"))  # nothing local
    con = duckdb.connect(f"{tmp_path}/w4.duckdb", read_only=True)
    assert con.execute("select reason from billing.quarantined_messages where message_id = 'twice'"
                       ).fetchall() == [("conflicting_duplicate",)] * 3
    assert con.execute("select count(*) from billing.conversation_starts"
                       " where message_id = 'twice'").fetchall() == [(0,)]


def test_shared_ids_are_counted_range_by_range(tmp_path):
    import numpy as np

    from billing_jobs.shards import shared_ids

    rng = np.random.default_rng(1)
    a = np.unique(rng.integers(0, 2**64 - 1, 50_000, dtype=np.uint64))
    b = np.unique(rng.integers(0, 2**64 - 1, 50_000, dtype=np.uint64))
    common = np.array([a[7], a[-1], a[25_000]], dtype=np.uint64)  # low, top and middle ranges
    b = np.unique(np.concatenate([b, common]))
    for name, values in (("a", a), ("b", b)):
        np.save(tmp_path / f"{name}.npy", values)
    assert shared_ids([tmp_path / "a.npy", tmp_path / "b.npy"]).tolist() == sorted(common.tolist())
    assert len(shared_ids([tmp_path / "a.npy"])) == 0


def test_shards_read_the_files_of_their_plan_not_a_late_arrival(landing, tmp_path):
    """A late file landing while the shards run is not half-read by the shards still to come:
    every shard reads the plan's files, and restatement picks the late file up later."""
    from billing_jobs.shards import split, write_shard

    source = tmp_path / "landing"
    shutil.copytree(landing, source)
    day = START + dt.timedelta(days=2)
    settings = Settings.resolve(source=str(source), staging=str(tmp_path / "staging"),
                                warehouse_url=f"duckdb:///{tmp_path}/w.duckdb")
    expected = sequence.run_day(dataclasses.replace(
        settings, staging=str(tmp_path / "one")), day)["rows_read"]
    folder = sequence.plan(settings, day, shards=4)
    with pytest.raises(RunError, match="not prepared .*: run the split tasks again"):
        write_shard(folder, 0)
    for k in range(folder.plan.split_tasks):
        split(folder, k, settings.contact_key_secret)
    write_shard(folder, 0)
    line = next(f"L{i:04d}" for i in range(1, 100) if shard_of(f"L{i:04d}", 4) != 0)
    late = {"message_id": "late-1", "customer_id": "C001", "line_id": line,
            "contact_id": "+4915100000003", "direction": "inbound", "message_type": "session",
            "sent_at": f"{day}T23:00:00Z"}
    (source / "messages" / f"date={day}" / "late.jsonl").write_text(json.dumps(late) + "\n")
    for k in (1, 2, 3):
        write_shard(folder, k)
    run = sequence.combine(settings, folder)
    assert run.counts["rows_read"] == expected
    assert run.partitions == folder.plan.partitions == RunFolder(folder.path).run.partitions


def test_distinct_sorted_is_np_unique():
    import numpy as np

    from billing_jobs.tables import distinct_sorted

    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 1000):
        values = rng.integers(0, 50, n).astype(np.uint64)
        assert distinct_sorted(values).tolist() == np.unique(values).tolist()


def test_without_a_shard_count_a_day_gets_one_per_rows_per_shard_of_its_window(landing, tmp_path):
    """The nightly schedule names no count: a shard holds its share of all of D-2..D (what is in
    memory), so a day grows shards as traffic grows instead of outgrowing one process."""
    day = START + dt.timedelta(days=2)
    window = sum(sum(landing_zone.estimated_rows(landing_zone.partition_files(landing, d)))
                 for d in windows.partitions_read(day))
    assert window > 18_000  # three days of 6,000 messages and the text files' estimates
    settings = Settings.resolve(source=str(landing), staging=str(tmp_path / "staging"),
                                warehouse_url=f"duckdb:///{tmp_path}/w.duckdb",
                                rows_per_shard="5000")
    expected = -(-window // 5000)
    assert expected > 1
    assert windows.shards_for(window, settings.rows_per_shard) == expected
    folder = sequence.plan(settings, day, shards=None)
    assert folder.plan.shards == expected
    # every file of the window is split by exactly one split task, of one per two shards' rows
    assert sorted(i for part in folder.plan.split_parts for i in part) == list(
        range(len(folder.plan.files)))
    assert folder.plan.split_tasks == len(folder.plan.split_parts) == -(-window // 10_000)
    auto = sequence.run_day(settings, day)
    one = sequence.run_day(dataclasses.replace(settings, rows_per_shard=1e9,
                                               warehouse_url=f"duckdb:///{tmp_path}/one.duckdb"),
                           day)
    assert published(settings.warehouse_url, day) == published(
        f"duckdb:///{tmp_path}/one.duckdb", day)
    assert (auto["starts_on_day"], auto["amount"]) == (one["starts_on_day"], one["amount"])


def test_split_tasks_get_files_dealt_out_by_size():
    """The nightly day's big files go one to a task, not wherever their number falls (file i to
    task i mod N put two of three big files on one task)."""
    from billing_jobs.shards import deal

    rows = [4_000_000, 300_000, 20, 4_000_000, 10, 4_000_000, 5]
    parts = deal(rows, 3)
    assert sorted(i for part in parts for i in part) == list(range(len(rows)))
    assert sorted(sum(rows[i] for i in part) // 1_000_000 for part in parts) == [4, 4, 4]


def test_split_tasks_prepare_small_files_side_by_side_and_large_ones_alone():
    """Two 4M-row files at once would take a split task past its memory; small ones share the
    cores. Decided at plan time from the row counts the plan has (no footers read again)."""
    from billing_jobs.shards import split_tasks

    rows = [4_000_000, 300_000, 20, 4_000_000, 10]
    assert split_tasks(rows, [1, 2, 4], 4, 4_000_000) == ([[1, 2, 4]], True)
    assert split_tasks(rows, [0, 1, 3], 4, 4_000_000)[1] is False
    assert split_tasks(rows, [], 4, 4_000_000) == ([], False)


def _split_files(folder: RunFolder) -> list[str]:
    plan = folder.plan
    return sorted(plan.files[i] for part in plan.split_parts for i in part)


def test_a_night_prepares_only_the_files_no_earlier_run_prepared(landing, tmp_path):
    """D-1's and D-2's files were prepared by the nights before: the night of D prepares D's
    files alone and publishes the day an unsharded run publishes, and so does an unsharded night
    (one shard). A file that changed, or another shard count, is prepared again."""
    source = tmp_path / "landing"
    shutil.copytree(landing, source)
    first, day = START + dt.timedelta(days=1), START + dt.timedelta(days=2)
    sharded, unsharded = (Settings.resolve(
        source=str(source), staging=str(tmp_path / name),
        warehouse_url=f"duckdb:///{tmp_path}/{name}.duckdb") for name in ("sharded", "one"))
    for settings, shards in ((sharded, 4), (unsharded, 1)):
        sequence.run_day(settings, first, shards=shards)
    assert len(list((tmp_path / "sharded" / "prepared").iterdir())) == len(
        windows.listing(source, first))
    folder = sequence.plan(sharded, day, shards=4)
    todays = [str(f) for f in landing_zone.partition_files(source, day)]
    assert _split_files(folder) == sorted(todays)
    assert _split_files(sequence.plan(unsharded, day, shards=1)) == sorted(todays)
    for settings, shards in ((sharded, 4), (unsharded, 1)):
        sequence.run_day(settings, day, shards=shards)
    assert published(sharded.warehouse_url, day) == published(unsharded.warehouse_url, day)

    # a file of D-1 delivered again with one more row: prepared again, and the day follows it
    changed = next(f for f in landing_zone.partition_files(source, first) if f.suffix == ".csv")
    owner = {row.split(",")[0]: row.split(",")[1]
             for row in (source / "reference" / "lines.csv").read_text().split()[1:]}
    line = next(line for line in owner if shard_of(line, 4) == 3)
    changed.write_text(changed.read_text() + f"redelivered-1,{owner[line]},{line},+4915100000004,"
                       f"outbound,template,{first}T23:59:00Z,sent\n")
    assert _split_files(sequence.plan(sharded, day, shards=4)) == [str(changed)]
    assert _split_files(sequence.plan(unsharded, day, shards=1)) == [str(changed)]
    assert len(_split_files(sequence.plan(sharded, day, shards=3))) == len(
        windows.listing(source, day))
    for settings, shards in ((sharded, 4), (unsharded, 1)):
        sequence.run_day(settings, day, shards=shards)
    assert published(sharded.warehouse_url, day) == published(unsharded.warehouse_url, day)


def test_a_shard_refuses_pieces_pruned_since_its_plan(landing, tmp_path):
    from billing_jobs import prepared
    from billing_jobs.run_folder import remove

    day = START + dt.timedelta(days=2)
    settings = Settings.resolve(source=str(landing), staging=str(tmp_path / "staging"),
                                warehouse_url=f"duckdb:///{tmp_path}/w.duckdb")
    folder = sequence.plan(settings, day, shards=2)
    for k in range(folder.plan.split_tasks):
        sequence.split(settings, folder, k)
    assert all(prepared.Entry(p).ready() for p in folder.plan.prepared)
    remove(prepared.Entry(folder.plan.prepared[1]).path)
    with pytest.raises(RunError, match=f"{folder.plan.files[1]}: not prepared"):
        sequence.write_shard(settings, folder, 0)
    for k in range(folder.plan.split_tasks):  # as the message says: prepared again
        sequence.split(settings, folder, k)
    # a prune that took the pieces but not yet the entry's record of them
    entry = prepared.Entry(folder.plan.prepared[2])
    (entry.path / "quarantined.arrow").unlink()
    with pytest.raises(RunError, match=f"{folder.plan.files[2]}: not prepared"):
        sequence.write_shard(settings, folder, 0)


def test_a_split_refuses_reference_data_changed_since_the_plan(landing, tmp_path):
    """Its pieces would be kept under the old reference's key and read by later nights."""
    source = tmp_path / "landing"
    shutil.copytree(landing, source)
    settings = Settings.resolve(source=str(source), staging=str(tmp_path / "staging"),
                                warehouse_url=f"duckdb:///{tmp_path}/w.duckdb")
    folder = sequence.plan(settings, START + dt.timedelta(days=2), shards=2)
    lines = source / "reference" / "lines.csv"
    lines.write_text(lines.read_text() + "L7777,C001,DE\n")
    with pytest.raises(RunError, match="reference data changed since this run was planned"):
        sequence.split(settings, folder, 0)
    assert not list((tmp_path / "staging" / "prepared").glob("*/entry.json"))
    with pytest.raises(RunError, match="reference data changed since this run was planned"):
        sequence.write_shard(settings, folder, 0)
