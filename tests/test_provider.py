"""Provider reconciliation end to end, on DuckDB and PostgreSQL: generated traffic, WhatsApp's
side simulated from it, known differences injected; the warehouse holds exactly those
differences (beside the ones the two models make by design), every reconciliation row closes, bad
provider rows are quarantined with a reason, and a re-run replaces the day."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from billing_jobs import auditor, sequence
from billing_jobs.config import Settings
from billing_jobs.errors import RunError
from billing_jobs.generate import RATES, generate
from billing_jobs.generate_provider import MANIFEST, write_provider
from billing_jobs.provider_reconcile import reconcile_day
from billing_jobs.reference_data import load_reference
from helpers import suites_with
from helpers import warehouse_rows as rows

DAYS = [dt.date(2026, 3, 1) + dt.timedelta(days=k) for k in range(4)]


@pytest.fixture(scope="module")
def zones(tmp_path_factory) -> tuple[Path, Path]:
    """The same message log twice: WhatsApp's side clean in one, with injected noise in the
    other."""
    noisy = tmp_path_factory.mktemp("noisy")
    generate(noisy, DAYS[0], days=len(DAYS), messages_per_day=4000, seed=21, fmt="mixed")
    clean = tmp_path_factory.mktemp("clean")
    shutil.copytree(noisy / "messages", clean / "messages")
    shutil.copytree(noisy / "reference", clean / "reference")
    ref = load_reference(clean / "reference")
    write_provider(clean, DAYS[0], len(DAYS), 21, {k: v[1] for k, v in ref.lines.items()},
                   RATES, ["parquet", "csv", "jsonl"], noise=False)
    return clean, noisy


def differences(url: str) -> set[tuple]:
    return {(r["kind"], r["message_id"], r["conversation_id"]) for r in rows(
        url, "select * from billing.provider_differences")}


def pairs(url: str) -> dict[str, tuple]:
    return {r["conversation_id"]: (r["message_id"], r["kind"]) for r in rows(
        url, "select * from billing.provider_pairs")}


def test_the_tables_hold_exactly_the_injected_differences(zones, tmp_path, warehouse_url):
    clean, noisy = zones
    settings = Settings.resolve(source=str(clean), warehouse_url=warehouse_url,
                                staging=str(tmp_path / "staging"))
    for day in DAYS:
        sequence.run_day(settings, day)
    for day in DAYS:
        reconcile_day(settings, day)
    by_design, clean_pairs = differences(warehouse_url), pairs(warehouse_url)
    explanations = {r["explanation"].split(" (")[0][:40] for r in rows(
        warehouse_url, "select explanation from billing.provider_differences")}
    assert by_design  # the two models differ by design, and every difference says why
    assert any(e.startswith("sent while WhatsApp already had") for e in explanations)
    assert any(e.startswith("the business sent no delivered message") for e in explanations)

    noisy_settings = Settings.resolve(source=str(noisy), warehouse_url=warehouse_url,
                                      staging=str(tmp_path / "staging"))
    for day in DAYS:  # a re-run replaces the day
        reconcile_day(noisy_settings, day)
    injected = json.loads((noisy / MANIFEST).read_text())
    expected = set(by_design)
    for cid in injected["lost"] + injected["not_billable"] + injected["referral"]:
        if cid in clean_pairs:
            mid, kind = clean_pairs[cid]
            expected.discard(("type_mismatch", mid, cid))
            expected.add(("ours_only", mid, None))
        else:
            expected.discard(("provider_only", None, cid))
    for cid in injected["flipped"]:
        if cid in clean_pairs:
            mid, kind = clean_pairs[cid]
            expected.discard(("type_mismatch", mid, cid))
            if kind == "matched":
                expected.add(("type_mismatch", mid, cid))
    for cid in injected["provider_only"]:
        expected.add(("provider_only", None, cid))
    assert differences(warehouse_url) == expected
    extra = rows(warehouse_url, "select explanation from billing.provider_differences"
                                " where conversation_id like 'conv.21.extra.%'")
    assert extra and all(e["explanation"].startswith("our log has no message of this stream")
                         for e in extra)

    for r in rows(warehouse_url, "select * from billing.provider_reconciliation"):
        assert r["our_starts"] == r["matched"] + r["ours_only"] + r["type_mismatch"]
        assert r["provider_conversations"] == r["matched"] + r["provider_only"] + r["type_mismatch"]
    runs = rows(warehouse_url, "select * from billing.provider_runs where status = 'published'")
    assert len(runs) == 2 * len(DAYS)
    for run in runs:
        assert run["rows_read"] == run["accepted"] + run["duplicates"] + run["quarantined"]
    latest = rows(warehouse_url, "select billing_date, count(distinct run_id) as runs"
                                 " from billing.provider_conversations group by billing_date")
    assert all(r["runs"] == 1 for r in latest)  # each day replaced, not appended
    (copies,) = rows(warehouse_url, "select sum(duplicates) as n from billing.provider_runs"
                                    " where run_id in (select run_id from"
                                    " billing.provider_conversations)")
    assert copies["n"] == injected["copies"]
    not_billable = rows(warehouse_url, "select sum(provider_not_billable) as n"
                                       " from billing.provider_reconciliation")[0]["n"]
    assert not_billable == len(injected["not_billable"])


def test_bad_provider_rows_are_quarantined_with_a_reason(zones, tmp_path):
    clean, _ = zones
    source = tmp_path / "landing"
    shutil.copytree(clean, source)
    url = f"duckdb:///{tmp_path}/w.duckdb"
    settings = Settings.resolve(source=str(source), warehouse_url=url,
                                staging=str(tmp_path / "staging"))
    day = DAYS[1]
    for d in DAYS[:3]:
        sequence.run_day(settings, d)
    good = {"conversation_id": "c-ok", "line_id": "L0011", "contact_id": "+4915100000001",
            "conversation_type": "business_initiated", "opened_at": f"{day}T10:00:00Z"}
    bad = {
        "missing_conversation_id": {**good, "conversation_id": ""},
        "missing_line_id": {**good, "conversation_id": "c1", "line_id": None},
        "invalid_contact_id": {**good, "conversation_id": "c2", "contact_id": "+49 151"},
        "invalid_opened_at": {**good, "conversation_id": "c3", "opened_at": "yesterday"},
        "opened_at_outside_partition": {**good, "conversation_id": "c4",
                                        "opened_at": f"{DAYS[2]}T10:00:00Z"},
        "invalid_billable": {**good, "conversation_id": "c5", "billable": "maybe"},
        "invalid_cost": {**good, "conversation_id": "c6", "cost": "-1", "currency": "USD"},
        "invalid_currency": {**good, "conversation_id": "c7", "cost": "0.02"},
        "unknown_line": {**good, "conversation_id": "c8", "line_id": "L9999"},
    }
    conflict = [{**good, "conversation_id": "c-twice"},
                {**good, "conversation_id": "c-twice", "opened_at": f"{day}T11:00:00Z"}]
    lines = [json.dumps(r) for r in [good, good, *bad.values(), *conflict]] + ["not json"]
    (source / "provider_conversations" / f"date={day}" / "hostile.jsonl").write_text(
        "\n".join(lines) + "\n")
    done = reconcile_day(settings, day)
    quarantined = rows(url, "select * from billing.provider_quarantined")
    reasons = sorted(q["reason"] for q in quarantined if "hostile" in q["source_file"])
    assert reasons == sorted([*bad, "conflicting_duplicate", "conflicting_duplicate",
                              "malformed_row"])
    assert done["rows_read"] == done["accepted"] + done["duplicates"] + done["quarantined"]
    assert "4915100000001" not in json.dumps(quarantined, default=str)
    kept = rows(url, "select * from billing.provider_conversations where conversation_id = 'c-ok'")
    assert len(kept) == 1 and kept[0]["billable"] is True


def test_a_failed_audit_publishes_nothing_and_keeps_the_day(zones, tmp_path, warehouse_url):
    # the audit runs while the day is written into the open transaction: its failure must roll
    # the replacement back, leave the earlier run's rows as they were and record the failure
    clean, _ = zones
    settings = Settings.resolve(source=str(clean), warehouse_url=warehouse_url,
                                staging=str(tmp_path / "staging"))
    day = DAYS[1]
    for d in DAYS[:3]:
        sequence.run_day(settings, d)
    first = reconcile_day(settings, day)["run_id"]
    before = {name: rows(warehouse_url, f"select * from billing.{name} where billing_date = '{day}'"
                                        f" order by 1, 2, 3")
              for name in ("provider_conversations", "provider_pairs", "provider_differences",
                           "provider_reconciliation")}
    suites = suites_with(settings.suites, tmp_path / "expectations", "provider_totals", {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "accepted", "max_value": 0}})
    strict = Settings.resolve(source=str(clean), warehouse_url=warehouse_url,
                              staging=str(tmp_path / "staging"), expectations=str(suites))
    with pytest.raises(Exception, match="expectation"), auditor.started():
        reconcile_day(strict, day)  # as the command runs it: GX in its worker process
    after = {name: rows(warehouse_url, f"select * from billing.{name} where billing_date = '{day}'"
                                       f" order by 1, 2, 3") for name in before}
    assert after == before and all(before.values())
    assert {r["run_id"] for r in after["provider_conversations"]} == {first}
    runs = rows(warehouse_url, "select status, error from billing.provider_runs"
                               f" where billing_date = '{day}' order by started_at")
    assert [r["status"] for r in runs] == ["published", "failed"]
    assert "accepted" in runs[-1]["error"]


def test_an_unpublished_day_is_refused_with_one_line(zones, tmp_path):
    clean, _ = zones
    settings = Settings.resolve(source=str(clean), warehouse_url=f"duckdb:///{tmp_path}/w.duckdb",
                                staging=str(tmp_path / "staging"))
    with pytest.raises(RunError, match=f"billing date {DAYS[0]} is not published"):
        reconcile_day(settings, DAYS[0])
    proc = subprocess.run([sys.executable, "-m", "billing_jobs.cli", "reconcile-provider",
                           "--date", str(DAYS[0]), "--source", str(clean), "--warehouse",
                           settings.warehouse_url], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "is not published" in proc.stderr and "Traceback" not in proc.stderr


def primary_keys(url: str) -> set[str]:
    return {r["table_name"] for r in rows(
        url, "select table_name from information_schema.table_constraints"
             " where table_schema = 'billing' and constraint_type = 'PRIMARY KEY'"
             " and table_name like 'provider_%'")}


def test_revision_0004_drops_the_day_keys_and_keeps_the_rows_both_ways(zones, tmp_path,
                                                                        warehouse_url):
    """Revision 0004 takes the primary-key indexes off the two large provider tables (replacing a
    day under them was the slow part of a re-run on DuckDB) and keeps every row, up and down."""
    from alembic import command
    from alembic.config import Config

    from billing_jobs import migrate, warehouse

    clean, _ = zones
    settings = Settings.resolve(source=str(clean), warehouse_url=warehouse_url,
                                staging=str(tmp_path / "staging"))
    for day in DAYS[:2]:
        sequence.run_day(settings, day)
    reconcile_day(settings, DAYS[0])

    def snapshot() -> dict:
        return {t: sorted(map(str, (tuple(r.values()) for r in rows(
            warehouse_url, f"select * from billing.{t}")))) for t in (
            "provider_conversations", "provider_pairs")}

    before = snapshot()
    assert before["provider_conversations"] and before["provider_pairs"]
    assert primary_keys(warehouse_url) == {"provider_reconciliation", "provider_runs"}
    engine = warehouse.create_engine(warehouse_url)
    try:
        with engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(migrate.MIGRATIONS))
            config.attributes.update(connection=conn, schema="billing")
            command.downgrade(config, "0003")
        assert primary_keys(warehouse_url) == {"provider_conversations", "provider_pairs",
                                               "provider_reconciliation", "provider_runs"}
        assert snapshot() == before
        with engine.connect() as conn:
            assert migrate.upgrade(conn, "billing", 30) == ("0003", migrate.HEAD)
    finally:
        engine.dispose()
    assert primary_keys(warehouse_url) == {"provider_reconciliation", "provider_runs"}
    assert snapshot() == before
    reconcile_day(settings, DAYS[0])  # and a re-run still replaces the day
    assert len(snapshot()["provider_conversations"]) == len(before["provider_conversations"])
