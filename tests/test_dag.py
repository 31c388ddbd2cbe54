"""The Airflow DAG: it imports fast with nothing heavy at parse time, it is wired as meant, it bills
the right date for every kind of run. Runs through `airflow dags test` are in test_dag_runs.py."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from billing_jobs.orchestration import NoBillingDate, billing_date_for

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags"
AIRFLOW = Path(sys.executable).parent / "airflow"
ALLOWED_TAGS = {"billing", "finance", "restatement", "provider"}
HEAVY = ("pandas", "pyarrow", "duckdb", "great_expectations", "sqlalchemy.dialects.postgresql",
         "billing_jobs.sequence", "billing_jobs.day", "billing_jobs.engine")


def test_dag_files_import_fast_without_heavy_modules():
    for path in DAGS.glob("*.py"):
        # airflow itself is imported first: what it loads is the scheduler's cost, not the file's
        probe = (
            "import sys, time, runpy, airflow.sdk; before = set(sys.modules); "
            "t = time.perf_counter(); "
            f"runpy.run_path({str(path)!r}); "
            "print(time.perf_counter() - t); new = set(sys.modules) - before; "
            f"print(','.join(m for m in {HEAVY!r} if m in new))"
        )
        out = subprocess.run([sys.executable, "-c", probe],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        seconds, heavy = float(out[-2]), out[-1]
        assert heavy == "", f"{path.name} imports {heavy} at parse time"
        assert seconds < 2.0, f"{path.name} takes {seconds:.2f} s to parse"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag


def test_one_dag_per_file_named_after_its_id(dagbag):
    assert set(dagbag.dag_ids) == {p.stem for p in DAGS.glob("*.py")}


def test_dag_metadata(dagbag):
    for dag in dagbag.dags.values():
        assert dag.doc_md and dag.dag_id in dag.doc_md
        assert set(dag.tags) <= ALLOWED_TAGS and dag.tags
        for t in dag.tasks:
            assert t.owner == "billing"
            # transient errors are retried; the others fail at once (orchestration.step)
            assert t.retries >= 1
            if dag.dag_id == "billing_daily":  # every failure leaves a row in billing_runs
                assert t.on_failure_callback


def test_billing_daily_structure(dagbag):
    dag = dagbag.dags["billing_daily"]
    assert dag.max_active_runs == 3 and not dag.catchup
    assert dag.timetable.__class__.__name__ == "CronDataIntervalTimetable"
    order = {t.task_id: {d for d in t.downstream_task_ids} for t in dag.tasks}
    assert order["plan"] >= {"split_numbers", "shard_numbers", "split", "write_shard", "combine"}
    assert order["split"] == {"write_shard"}  # every file split before any shard reads
    assert order["write_shard"] == {"combine"}
    assert "MappedOperator" in type(dag.get_task("split")).__name__
    assert order["combine"] == {"publish"}  # which audits while it writes, as `run` does
    assert "MappedOperator" in type(dag.get_task("write_shard")).__name__  # spread by executors
    assert order["publish"] == {"restate_late_data", "prune_staging"}
    assert dag.get_task("publish").max_active_tis_per_dag == 1  # one DuckDB writer at a time
    assert dag.get_task("publish").outlets[0].name == "billing_invoice_lines"
    assert set(dag.params) >= {"billing_date", "dry_run", "restate_days", "shards"}
    assert dag.params["shards"] is None  # the nightly run sizes its shards by its window


def test_a_run_bills_the_utc_date_of_its_logical_date():
    # scheduled and backfill runs: logical date = start of the data interval [D, D+1)
    assert billing_date_for({}, dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)) == dt.date(2026, 3, 2)
    # a logical date given in another zone is still billed as its UTC date
    tz = dt.timezone(dt.timedelta(hours=-5))
    assert billing_date_for({}, dt.datetime(2026, 3, 1, 21, tzinfo=tz)) == dt.date(2026, 3, 2)
    assert billing_date_for({"billing_date": "2026-02-27"}, None) == dt.date(2026, 2, 27)
    with pytest.raises(NoBillingDate, match="give the billing_date param"):
        billing_date_for({"billing_date": None}, None)


def test_the_warehouse_connection_becomes_a_sqlalchemy_url():
    from airflow.sdk import Connection

    from billing_jobs.orchestration import warehouse_url

    pg = Connection(conn_id="billing_warehouse", conn_type="postgres", host="db.internal",
                    login="billing", password="s3cret", port=5432, schema="warehouse")
    assert warehouse_url(pg) == "postgresql+psycopg://billing:s3cret@db.internal:5432/warehouse"
    duck = Connection(conn_id="billing_warehouse", conn_type="generic",
                      extra='{"url": "duckdb:////data/warehouse.duckdb"}')
    assert warehouse_url(duck) == "duckdb:////data/warehouse.duckdb"


def test_the_monthly_close_closes_the_previous_month(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from billing_jobs.orchestration import close_previous_month

    monkeypatch.setenv("BILLING_WAREHOUSE_URL", f"duckdb:///{tmp_path}/wh.duckdb")
    # run on 3 April: March is the month to close, and nothing of it was billed here; a refusal
    # is no glitch, so the task fails at once instead of retrying
    with pytest.raises(AirflowFailException,
                       match=r"close failed: cannot close 2026-03: 31 day\(s\) not published: "
                             r"2026-03-01 \(never run\)"):
        close_previous_month(dt.datetime(2026, 4, 3, 6, tzinfo=dt.timezone.utc))


def test_provider_reconciliation_runs_on_published_invoice_lines_and_daily(dagbag):
    dag = dagbag.dags["provider_reconciliation"]
    publish = dagbag.dags["billing_daily"].get_task("publish")
    (asset,) = publish.outlets
    assert asset.name == "billing_invoice_lines"
    assert dag.timetable.__class__.__name__ == "AssetOrTimeSchedule"
    assert dag.timetable.asset_condition.name == asset.name
    assert dag.timetable.timetable.__class__.__name__ == "CronDataIntervalTimetable"
    assert not dag.catchup and dag.max_active_runs == 3
    order = {t.task_id: t.downstream_task_ids for t in dag.tasks}
    assert order["billing_dates"] == {"wait_for_provider_partition"}
    assert order["wait_for_provider_partition"] == {"reconcile"}
