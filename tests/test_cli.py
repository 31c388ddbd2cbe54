"""The `billing-jobs` command line as scripts and people use it: the installed console script, exit
codes, and one-line errors."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq

BIN = Path(sys.executable).parent / "billing-jobs"


def cli(*args, check=True, env=None) -> subprocess.CompletedProcess:
    import os

    proc = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generate_is_reproducible_and_follows_the_landing_layout(tmp_path):
    for name in ("a", "b"):
        cli("generate", "--out", tmp_path / name, "--start", "2026-03-01", "--days", 3,
            "--messages-per-day", 3000, "--seed", 5, "--format", "mixed")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    files = digest(tmp_path / "a")
    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        assert f"messages/date={day}/_SUCCESS" in files
    assert any(f.endswith("-late.parquet") for f in files)  # past-midnight spill, a file of its own
    assert {f.rsplit(".", 1)[-1] for f in files} >= {"parquet", "csv", "jsonl"}
    for ref in ("customers.csv", "lines.csv", "rate_card.csv"):
        assert f"reference/{ref}" in files
    other = tmp_path / "c"
    cli("generate", "--out", other, "--start", "2026-03-01", "--days", 3,
        "--messages-per-day", 3000, "--seed", 6, "--format", "mixed")
    assert digest(other) != digest(tmp_path / "a")


def test_reconcile_writes_starts_and_reports_counts(tmp_path):
    cli("generate", "--out", tmp_path, "--start", "2026-03-01", "--days", 2,
        "--messages-per-day", 2000)
    proc = cli("reconcile", "--messages", tmp_path / "messages", "--out", tmp_path / "s.parquet",
               "--anomalies", tmp_path / "a.csv")
    starts = pq.read_table(tmp_path / "s.parquet")
    assert starts.column_names == ["message_id", "customer_id", "line_id", "contact_id",
                                   "conversation_type", "started_at"]
    assert starts.num_rows > 0
    assert f"{starts.num_rows:,} conversation starts" in proc.stdout
    assert "duplicates" in proc.stdout and "quarantined" in proc.stdout
    anomalies = pcsv.read_csv(tmp_path / "a.csv")
    assert set(anomalies.column("kind").to_pylist()) == {"outside_session"}

    cli("reconcile", "--messages", tmp_path / "messages", "--out", tmp_path / "s.csv")
    assert pcsv.read_csv(tmp_path / "s.csv").column("message_id").to_pylist() == \
        starts.column("message_id").to_pylist()


def test_explain_prints_the_decision_and_reason_for_each_message(tmp_path):
    (tmp_path / "log.jsonl").write_text(
        '{"message_id":"m1","customer_id":"C1","line_id":"L1","contact_id":"+1","direction":'
        '"outbound","message_type":"template","sent_at":"2026-03-01T09:40:00Z"}\n'
        '{"message_id":"m2","customer_id":"C1","line_id":"L1","contact_id":"+1","direction":'
        '"inbound","message_type":"session","sent_at":"2026-03-01T10:02:00Z"}\n'
        '{"message_id":"m3","customer_id":"C1","line_id":"L1","contact_id":"+1","direction":'
        '"inbound","message_type":"session","sent_at":"2026-03-02T10:02:00Z"}\n'
    )
    out = cli("explain", "--line", "L1", "--contact", "+1", "--messages", tmp_path).stdout
    lines = out.splitlines()
    assert "3 messages, 2 conversation starts" in lines[0]
    assert "warning: only the files given are read" in lines[1]
    assert max(len(x) for x in lines) <= 120

    def entry(mid: str) -> str:  # a message's row and its wrapped "why" lines
        at = next(i for i, x in enumerate(lines) if f" {mid} " in x)
        end = next((i for i in range(at + 1, len(lines)) if not lines[i].startswith("    ")),
                   len(lines))
        return " ".join(x.strip() for x in lines[at:end])

    m1, m2, m3 = entry("m1"), entry("m2"), entry("m3")
    assert "business_initiated 2026-03-01" in " ".join(m1.split())
    assert "answers attempt m1 at 2026-03-01 09:40:00" in m2
    assert "user_initiated" in m3 and "exactly 24 h after inbound m2" in m3


def test_explain_for_support_reads_history_takes_any_spelling_and_says_when_nothing(tmp_path):
    """Given the landing zone and a date, explain reads D-2..D itself and warns when that history
    is missing; a number in any spelling finds the stream; no stream is an error; csv and json
    carry every field."""
    from billing_jobs.generate import generate

    generate(tmp_path / "zone", dt.date(2026, 3, 1), days=3, messages_per_day=300, seed=5)
    first = pq.read_table(next((tmp_path / "zone" / "messages" / "date=2026-03-03").glob(
        "*.parquet"))).to_pylist()[0]
    contact, line = first["contact_id"].lstrip("+"), first["line_id"]
    spaced = f"+{contact[:2]} {contact[2:5]}-{contact[5:]}"
    zone = str(tmp_path / "zone")
    text = cli("explain", "--line", line, "--contact", spaced, "--date", "2026-03-03",
               "--source", zone).stdout
    assert "warning" not in text and max(len(x) for x in text.splitlines()) <= 120
    assert contact not in text  # the stream is named by its key, never by the number
    rows = list(csv.DictReader(io.StringIO(cli(
        "explain", "--line", line, "--contact", f"00{contact}", "--date", "2026-03-03",
        "--source", zone, "--format", "csv").stdout)))
    assert first["message_id"] in {r["message_id"] for r in rows}
    charged = [r for r in rows if r["billing_date"]]
    assert charged and all(r["unit_price"] and r["currency"] == "USD" for r in charged)
    assert all(r["billing_date"] == r["sent_at"][:10] for r in charged)
    day_one = pq.read_table(next((tmp_path / "zone" / "messages" / "date=2026-03-01").glob(
        "*.parquet"))).to_pylist()[0]
    early = json.loads(cli("explain", "--line", day_one["line_id"], "--contact",
                           day_one["contact_id"], "--date", "2026-03-01", "--source", zone,
                           "--format", "json").stdout)
    assert early["warnings"][0].startswith("no partition for 2026-02-27, 2026-02-28")
    none = cli("explain", "--line", line, "--contact", "+1 555 0100", "--date", "2026-03-03",
               "--source", zone, check=False)
    assert none.returncode == 1 and none.stdout == ""
    assert none.stderr.startswith("billing-jobs explain: error: no messages for line "
                                  f"{line} and contact key ")
    assert none.stderr.count("\n") == 1 and "5550100" not in none.stderr


def test_bad_input_gives_one_line_and_a_nonzero_exit(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    proc = cli("reconcile", "--messages", tmp_path / "bad.parquet", "--out", tmp_path / "s.csv",
               check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "bad.parquet" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = cli("reconcile", "--messages", tmp_path / "nowhere", "--out", tmp_path / "s.csv",
               check=False)
    assert proc.returncode == 1 and "nowhere does not exist" in proc.stderr

    proc = cli("generate", "--out", tmp_path, "--start", "March", "--days", 1,
               "--messages-per-day", 1, check=False)
    assert proc.returncode == 2 and "not a date" in proc.stderr


def test_every_command_has_help():
    for command in ("generate", "reconcile", "explain", "run"):
        assert "usage: billing-jobs " + command in cli(command, "--help").stdout


def test_run_publishes_a_range_and_the_audit_results_render_as_data_docs(tmp_path):
    cli("generate", "--out", tmp_path / "landing", "--start", "2026-03-01", "--days", 2,
        "--messages-per-day", 1500)
    env = {"BILLING_SOURCE": str(tmp_path / "landing"), "BILLING_STAGING": str(tmp_path / "stg"),
           "BILLING_WAREHOUSE_URL": f"duckdb:///{tmp_path}/wh.duckdb"}
    proc = cli("run", "--date", "2026-03-01", "--to", "2026-03-02", env=env)
    assert "[1/2] 2026-03-01: published:" in proc.stdout
    assert "[2/2] 2026-03-02: published:" in proc.stdout
    assert "quarantined" in proc.stdout.splitlines()[-3]  # the summary table's header
    assert "contact keys: the DEMO secret" in proc.stdout
    dry = cli("run", "--date", "2026-03-02", "--dry-run", env=env)
    assert "audited (dry run, not published)" in dry.stdout

    docs = cli("audit-docs", env=env).stdout
    index = Path(docs.split("Data Docs: ", 1)[1].strip())
    assert index.is_file()
    pages = list((index.parent / "validations").rglob("*.html"))
    assert {p.parts[-4] for p in pages} >= {"conversation_starts", "invoice_lines",
                                            "accepted_messages", "run_totals"}


def test_a_failed_run_says_why_in_one_line(tmp_path):
    cli("generate", "--out", tmp_path / "landing", "--start", "2026-03-01", "--days", 1,
        "--messages-per-day", 500)
    env = {"BILLING_SOURCE": str(tmp_path / "landing"), "BILLING_STAGING": str(tmp_path / "stg"),
           "BILLING_WAREHOUSE_URL": f"duckdb:///{tmp_path}/wh.duckdb"}
    proc = cli("run", "--date", "2026-03-05", env=env, check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "no partition for 2026-03-05" in errors[0]
    assert "Traceback" not in proc.stderr


def test_a_range_and_restate_name_the_days_that_are_not_billed(tmp_path):
    import shutil

    cli("generate", "--out", tmp_path / "landing", "--start", "2026-03-01", "--days", 3,
        "--messages-per-day", 500)
    shutil.rmtree(tmp_path / "landing" / "messages" / "date=2026-03-02")  # the day never landed
    env = {"BILLING_SOURCE": str(tmp_path / "landing"), "BILLING_STAGING": str(tmp_path / "stg"),
           "BILLING_WAREHOUSE_URL": f"duckdb:///{tmp_path}/wh.duckdb"}
    proc = cli("run", "--date", "2026-03-01", "--to", "2026-03-03", env=env, check=False)
    assert proc.returncode == 1
    assert "[2/3] 2026-03-02: FAILED" in proc.stdout
    assert "not billed (2 day(s)):" in proc.stdout
    assert "2026-03-02  failed at plan: no partition for 2026-03-02" in proc.stdout
    assert "2026-03-03  never billed" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "not run: 2026-03-03" in errors[0]

    restated = cli("restate", "--since", "2026-03-01", env=env).stdout
    assert "no published day since 2026-03-01 has changed inputs" in restated
    assert "2026-03-02  failed at plan: no partition for 2026-03-02" in restated
    assert "2026-03-03  never billed" in restated
    assert "is published" not in restated
