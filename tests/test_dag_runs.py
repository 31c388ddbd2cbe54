"""Runs of `billing_daily` through real `airflow dags test`, as the nightly schedule and the
operators run it: the DAG publishes what `billing-jobs run` publishes, and every failure fails
the run at once (no retry of a data error), leaves a `failed` row naming the step and the reason
in one line, and keeps the earlier version of the day."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags"
BIN = Path(sys.executable).parent
DAY = dt.date(2026, 3, 2)
DAY_TABLES = ("conversation_starts", "invoice_lines", "session_anomalies", "quarantined_messages")
# billing_runs columns that say what was billed (not who ran it or when)
RUN_COLUMNS = ("billing_date", "status", "messages_read", "accepted", "duplicates", "quarantined",
               "failed_sends", "starts", "anomalies", "amount", "input_fingerprint", "partitions",
               "reference_hash", "rules_version")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from billing_jobs.generate import generate

    root = tmp_path_factory.mktemp("landing")
    generate(root, dt.date(2026, 3, 1), days=3, messages_per_day=2000, seed=5)
    return root


@pytest.fixture
def landing(generated, tmp_path):
    """A landing zone of its own for each test (some tests break its reference data)."""
    return Path(shutil.copytree(generated, tmp_path / "landing"))


def airflow_env(tmp_path: Path, landing: Path, warehouse_url: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BILLING"))}
    env.update({
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "BILLING_SOURCE": str(landing),
        "BILLING_WAREHOUSE_URL": warehouse_url,
        "BILLING_STAGING": str(tmp_path / "staging"),
        "BILLING_ALLOW_DEMO_SECRET": "1",
        "PATH": f"{BIN}:{env.get('PATH', '')}",
        **extra,
    })
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True,
                   capture_output=True)
    return env


def dags_test(env: dict, day: dt.date | str, conf: str | None = None,
              dag_id: str = "billing_daily") -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "airflow"), "dags", "test", dag_id, str(day),
                           *(["--conf", conf] if conf else [])], env=env, capture_output=True,
                          text=True, timeout=600)


def billing_jobs(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "billing-jobs"), *args], env=env, capture_output=True,
                          text=True, timeout=600)


def published(url: str, day: dt.date = DAY) -> dict[str, list]:
    """The day's rows of every day table without run ids, and what billing_runs says was billed."""
    engine = sa.create_engine(url)
    out = {}
    with engine.connect() as conn:
        for table in DAY_TABLES:
            columns = [c for c in _columns(conn, table) if c != "run_id"]
            rows = conn.execute(sa.text(
                f"select {', '.join(columns)} from billing.{table} where billing_date = :d"),
                {"d": day}).all()
            out[table] = sorted(tuple(map(str, r)) for r in rows)
        out["billing_runs"] = [tuple(map(str, r)) for r in conn.execute(sa.text(
            f"select {', '.join(RUN_COLUMNS)} from billing.billing_runs"
            " where status = 'published' and billing_date = :d"), {"d": day}).all()]
    engine.dispose()
    return out


def _columns(conn, table: str) -> list[str]:
    return [r[0] for r in conn.execute(sa.text(
        "select column_name from information_schema.columns"
        " where table_schema = 'billing' and table_name = :t order by ordinal_position"),
        {"t": table}).all()]


def runs(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select billing_date, status, failed_step, error"
                                    " from billing.billing_runs order by finished_at")).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def task_states(output: str) -> list[str]:
    return [line.split("new_state=")[1].split()[0] for line in output.splitlines()
            if "Task instance state updated" in line and "new_state=" in line]


@pytest.mark.parametrize("shards", [1, 4])
def test_the_dag_publishes_what_billing_jobs_run_publishes(tmp_path, landing, shards):
    dag_url = f"duckdb:///{tmp_path}/dag.duckdb"
    env = airflow_env(tmp_path, landing, dag_url)
    proc = dags_test(env, DAY, f'{{"shards": {shards}}}')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    mapped = [line for line in proc.stdout.splitlines()
              if "task_id='write_shard'" in line and "Task instance state updated" not in line]
    assert len({line.split("map_index=")[1].split(",")[0] for line in mapped
                if "map_index=" in line}) == shards

    cli_url = f"duckdb:///{tmp_path}/cli.duckdb"
    done = billing_jobs({**env, "BILLING_STAGING": str(tmp_path / "cli-staging")}, "run",
                        "--date", str(DAY), "--shards", str(shards), "--warehouse", cli_url)
    assert done.returncode == 0, done.stderr
    dag, cli = published(dag_url), published(cli_url)
    assert dag["conversation_starts"] and dag["invoice_lines"] and dag["quarantined_messages"]
    assert len(dag["billing_runs"]) == 1
    assert dag == cli
    assert {r[0] for r in runs(dag_url)} == {DAY}  # exactly that day


def test_a_dry_run_audits_the_day_and_publishes_nothing(tmp_path, landing):
    """The dry-run param: the day is written and audited (in the publish task, which audits while
    it writes), the task is skipped and the published version of the day stands."""
    import json

    import pyarrow.parquet as pq

    from billing_jobs.reference_data import load_reference

    url = f"duckdb:///{tmp_path}/wh.duckdb"
    env = airflow_env(tmp_path, landing, url)
    first = dags_test(env, DAY)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = published(url)
    # a late answer from a new contact: a start the dry run computes and must not publish
    line, (customer, _) = next(iter(load_reference(landing / "reference").lines.items()))
    late = {"message_id": "late-dry-run", "customer_id": customer, "line_id": line,
            "contact_id": "+4915199999901", "direction": "inbound", "message_type": "session",
            "sent_at": f"{DAY}T12:00:00Z"}
    (landing / "messages" / f"date={DAY}" / "late.jsonl").write_text(json.dumps(late) + "\n")

    proc = dags_test(env, DAY, '{"dry_run": true}')
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert f"dry run: {DAY} audited, nothing published" in output
    assert "skipped" in task_states(output)
    assert published(url) == before
    newest = max((tmp_path / "staging" / str(DAY)).iterdir(), key=lambda p: p.name)
    assert json.loads((newest / "audit.json").read_text())["success"] is True
    staged = pq.read_table(newest / "conversation_starts.parquet").column("message_id")
    assert "late-dry-run" in staged.to_pylist()


def _drop_country(landing: Path, country: str) -> None:
    path = landing / "reference" / "rate_card.csv"
    rows = path.read_text().splitlines()
    path.write_text("\n".join(r for r in rows if not r.startswith(f"{country},")) + "\n")


def _strict_suite(tmp_path: Path) -> dict:
    suites = tmp_path / "expectations"
    shutil.copytree(ROOT / "expectations", suites)
    strict = (suites / "invoice_lines.json").read_text().replace(
        '"min_value": 1', '"min_value": 1000000')  # no line has a million starts
    (suites / "invoice_lines.json").write_text(strict)
    return {"BILLING_EXPECTATIONS": str(suites)}


FROZEN = """
create function billing.frozen() returns trigger language plpgsql as $$
begin
    raise exception 'injected failure: invoice lines are frozen'
        using detail = 'a second line of detail', hint = 'and a hint';
end $$;
create trigger frozen before insert on billing.invoice_lines
    for each row execute function billing.frozen();
"""


@pytest.mark.parametrize("failure", ["rate_card_missing_a_country", "failing_expectation",
                                     "publish_refused_by_postgresql"])
def test_a_failing_run_fails_at_once_says_why_and_keeps_the_earlier_day(
        tmp_path, landing, failure, request):
    url = (request.getfixturevalue("pg_url") if failure == "publish_refused_by_postgresql"
           else f"duckdb:///{tmp_path}/wh.duckdb")
    env = airflow_env(tmp_path, landing, url)
    first = dags_test(env, DAY)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = published(url)

    if failure == "rate_card_missing_a_country":
        _drop_country(landing, "US")
        step, reason = "write_shard", "conversation start(s) have no rate in rate_card.csv, e.g. US"
    elif failure == "failing_expectation":
        env.update(_strict_suite(tmp_path))
        step, reason = "audit", ("invoice_lines: expect_column_values_to_be_between(quantity) "
                                 "failed")
    else:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(FROZEN)
        engine.dispose()
        step, reason = "publish", "injected failure: invoice lines are frozen"

    proc = dags_test(env, DAY)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "state=failed" in output
    states = task_states(output)
    assert "failed" in states and "up_for_retry" not in states  # a data error is not retried
    errors = [line for line in output.splitlines() if "[error" in line]
    assert f"billing date {DAY}: {step} failed: " in errors[0] and reason in errors[0]

    failed = [r for r in runs(url) if r[1] == "failed"]
    assert len(failed) == 1
    assert (str(failed[0][0]), failed[0][2]) == (str(DAY), step)
    assert reason in failed[0][3] and "\n" not in failed[0][3]
    assert published(url) == before  # the earlier version of the day stands


def test_a_manual_run_for_a_day_without_a_partition_fails_at_once_naming_the_path(
        tmp_path, landing):
    url = f"duckdb:///{tmp_path}/wh.duckdb"
    env = airflow_env(tmp_path, landing, url)
    missing = dt.date(2026, 3, 9)
    proc = dags_test(env, missing)  # a manual run: it does not wait 12 hours for the day
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "up_for_reschedule" not in task_states(output)
    errors = [line for line in output.splitlines() if "[error" in line]
    assert (f"billing date {missing}: wait_for_partition failed: no partition for {missing}: "
            f"{landing}/messages/date={missing} does not exist") in errors[0]
    assert runs(url) == [(missing, "failed", "wait_for_partition", runs(url)[0][3])]


def test_a_closed_month_s_day_run_again_by_the_dag_books_and_logs_its_adjustments(tmp_path):
    """February is billed and closed; a late message lands for 10 February and the nightly DAG
    runs that day again: the difference is booked as an adjustment on March and the task log
    says so per customer (what an operator reads in the Airflow UI)."""
    import json

    from billing_jobs.generate import generate

    landing = tmp_path / "landing"
    generate(landing, dt.date(2026, 2, 1), days=28, messages_per_day=40, seed=9)
    url = f"duckdb:///{tmp_path}/warehouse.duckdb"
    env = airflow_env(tmp_path, landing, url)
    billed = billing_jobs(env, "run", "--date", "2026-02-01", "--to", "2026-02-28")
    assert billed.returncode == 0, billed.stderr
    closed = billing_jobs(env, "close", "--month", "2026-02")
    assert closed.returncode == 0 and "invoice 1:" in closed.stdout, closed.stderr
    line, customer = next(
        (r["line_id"], r["customer_id"]) for r in
        csv_rows(landing / "reference" / "lines.csv"))
    (landing / "messages" / "date=2026-02-10" / "late.jsonl").write_text(json.dumps({
        "message_id": "late-0210", "customer_id": customer, "line_id": line,
        "contact_id": "+4915100000555", "direction": "inbound", "message_type": "session",
        "sent_at": "2026-02-10T12:00:00Z"}) + "\n")

    proc = dags_test(env, "2026-02-10")
    assert "state=success" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    assert f"adjustments for {customer}: 1 booked on 2026-03" in proc.stdout + proc.stderr
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        (adjustment,) = conn.execute(sa.text("select * from billing.adjustments")).all()
    engine.dispose()
    assert (adjustment.customer_id, adjustment.quantity, str(adjustment.billing_date)) == (
        customer, 1, "2026-02-10")
    assert adjustment.reason.endswith(f"1 start(s) added at unit price "
                                      f"{format(adjustment.unit_price.normalize(), 'f')}")


def csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_provider_reconciliation_dag_reconciles_what_the_command_line_does(tmp_path, landing):
    """`airflow dags test provider_reconciliation D` publishes what `billing-jobs
    reconcile-provider --date D` publishes; a date not billed yet fails at once, saying why."""
    url = f"duckdb:///{tmp_path}/warehouse.duckdb"
    env = airflow_env(tmp_path, landing, url)
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    billed = billing_jobs(env, "run", "--date", days[0], "--to", days[1])
    assert billed.returncode == 0, billed.stderr

    refused = dags_test(env, days[2], dag_id="provider_reconciliation")
    assert "state=failed" in refused.stdout + refused.stderr
    assert f"billing date {days[2]} is not published" in refused.stdout + refused.stderr

    proc = dags_test(env, days[1], dag_id="provider_reconciliation")
    assert "state=success" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        by_dag = conn.execute(sa.text(
            "select kind, message_id, conversation_id, explanation from"
            " billing.provider_differences order by 1, 2, 3")).all()
        runs = conn.execute(sa.text("select status from billing.provider_runs")).all()
    engine.dispose()
    assert by_dag and [r.status for r in runs] == ["failed", "published"]
    cli = billing_jobs(env, "reconcile-provider", "--date", days[1])
    assert cli.returncode == 0, cli.stderr
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        by_cli = conn.execute(sa.text(
            "select kind, message_id, conversation_id, explanation from"
            " billing.provider_differences order by 1, 2, 3")).all()
    engine.dispose()
    assert by_cli == by_dag
