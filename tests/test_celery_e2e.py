"""The production shape, for real: CeleryExecutor with a Redis broker and PostgreSQL metadata, two
workers that share no folder (landing zone and staging in a bucket of an S3-compatible server,
each worker its own GX project), a sharded day published into a PostgreSQL warehouse, equal to an
unsharded run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
import shutil
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_airflow_e2e import call, free_port, running_airflow

from billing_jobs import sequence
from billing_jobs.config import Settings
from billing_jobs.generate import generate
from billing_jobs.landing import location
from billing_jobs.run_folder import RunFolder

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DAY = dt.date(2026, 3, 2)
SHARDS = 4


def redis_up() -> bool:
    import redis

    try:
        return redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture
def celery_airflow(pg_url, s3_bucket, tmp_path):
    if not redis_up():
        if os.environ.get("CI"):
            pytest.fail("Redis is required in CI and unreachable at 127.0.0.1:6379")
        pytest.skip("Redis not reachable at 127.0.0.1:6379")
    import s3fs

    landing = tmp_path / "landing"
    generate(landing, dt.date(2026, 3, 1), days=2, messages_per_day=4000, seed=17)
    s3fs.S3FileSystem(skip_instance_cache=True).put(str(landing), f"{s3_bucket}/landing",
                                                    recursive=True)
    shutil.rmtree(landing)  # the bucket is the only landing zone
    port, redis_db = free_port(), random.randint(1, 15)
    settings = Settings.resolve(source=f"{s3_bucket}/landing", staging=f"{s3_bucket}/staging",
                                warehouse_url=pg_url)  # billing schema beside Airflow's tables
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url,
        # psycopg 3 serves Airflow's async engine too (no asyncpg needed)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": pg_url.replace("+psycopg:", "+psycopg_async:"),
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"redis://127.0.0.1:6379/{redis_db}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "BILLING_SOURCE": settings.source,
        "BILLING_STAGING": settings.staging,
        "BILLING_WAREHOUSE_URL": settings.warehouse_url,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    })
    logs = tmp_path / "logs"
    commands = {
        "api-server": ["api-server"], "scheduler": ["scheduler"],
        "dag-processor": ["dag-processor"],
        "worker-1": ["celery", "worker", "--celery-hostname", "w1@%h", "--skip-serve-logs"],
        "worker-2": ["celery", "worker", "--celery-hostname", "w2@%h", "--skip-serve-logs"],
    }
    try:
        # the AWS_* variables of s3_bucket reach every component through `env`; each worker
        # keeps its GX project in a folder of its own
        own = {name: {"BILLING_GX_PROJECT": str(tmp_path / name / "gx")}
               for name in ("worker-1", "worker-2")}
        with running_airflow(env, logs, port, commands, own) as base:
            workers_answer(env["AIRFLOW__CELERY__BROKER_URL"], {"w1", "w2"}, logs)
            yield base, settings, logs
    finally:
        import redis

        redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()


def workers_answer(broker: str, names: set[str], logs: Path, within_s: float = 300) -> None:
    """Wait until every named Celery worker answers a ping on the broker, so that both can take
    tasks of the day from its first one."""
    from celery import Celery

    app = Celery(broker=broker)
    deadline = time.monotonic() + within_s
    answered: set[str] = set()
    while not names <= answered:
        if time.monotonic() > deadline:
            pytest.fail(f"Celery workers {sorted(names - answered)} did not answer in"
                        f" {within_s:.0f} s; logs in {logs}")
        # ping waits for answers up to its timeout: the broker's replies are the signal
        answered |= {reply_from.split("@")[0] for reply in app.control.ping(timeout=2)
                     for reply_from in reply}
    app.close()


def test_a_sharded_day_on_celery_with_two_workers(celery_airflow, tmp_path):
    base, settings, logs = celery_airflow
    call(base, "PATCH", "/api/v2/dags/billing_daily", {"is_paused": False})
    run = call(base, "POST", "/api/v2/dags/billing_daily/dagRuns", {
        "logical_date": f"{DAY}T00:00:00Z", "conf": {"shards": SHARDS}})
    deadline = time.monotonic() + 300
    while True:
        state = call(base, "GET", f"/api/v2/dags/billing_daily/dagRuns/{run['dag_run_id']}")["state"]
        if state in ("success", "failed"):
            break
        assert time.monotonic() < deadline, "the run did not finish in 300 s; logs in " + str(logs)
        time.sleep(3)
    call(base, "PATCH", "/api/v2/dags/billing_daily", {"is_paused": True})
    assert state == "success", f"run failed; logs in {logs}"

    tis = call(base, "GET", f"/api/v2/dags/billing_daily/dagRuns/{run['dag_run_id']}"
                            "/taskInstances?limit=100")["task_instances"]
    shards = [t for t in tis if t["task_id"] == "write_shard"]
    assert sorted(t["map_index"] for t in shards) == list(range(SHARDS))
    # both workers ran tasks of the day, so steps handed their work on through the staging from
    # one worker to the other. Which of two idle workers takes a given task is Celery's choice:
    # one of them took all eight shard tasks in two of seven runs (while the other had run plan
    # and split), so the count is of every task each ran, not of shards
    ran = {name: (logs / f"{name}.log").read_text().count("Executing workload in Celery")
           for name in ("worker-1", "worker-2")}
    assert all(ran.values()), f"both workers run tasks of the day: {ran}"
    # the run was handed on through the bucket: its folder there, audited, and the files'
    # prepared pieces there too
    [folder] = location(f"{settings.staging}/{DAY}").iterdir()
    assert RunFolder(folder).audited()
    assert len(list(location(f"{settings.staging}/prepared").iterdir())) == len(
        RunFolder(folder).plan.files)
    assert len(list((folder / "shards").iterdir())) == SHARDS
    audited_by = [name for name in ("worker-1", "worker-2") if (tmp_path / name / "gx").exists()]
    assert len(audited_by) == 1, audited_by  # the GX project of the worker that audited

    engine = sa.create_engine(settings.warehouse_url)
    with engine.connect() as conn:
        published = sorted(tuple(map(str, r)) for r in conn.execute(sa.text(
            "select billing_date, customer_id, country, conversation_type, currency, unit_price,"
            " quantity, amount from billing.invoice_lines")).all())
        runs = conn.execute(sa.text("select billing_date, status from billing.billing_runs")).all()
    engine.dispose()
    assert [(str(d), s) for d, s in runs] == [(str(DAY), "published")]
    scratch = dataclasses.replace(settings, warehouse_url=f"duckdb:///{tmp_path}/scratch.duckdb",
                                  staging=str(tmp_path / "scratch"))
    sequence.run_day(scratch, DAY)
    import duckdb

    expected = sorted(tuple(map(str, r)) for r in duckdb.connect(
        f"{tmp_path}/scratch.duckdb", read_only=True).execute(
        "select billing_date, customer_id, country, conversation_type, currency, unit_price,"
        " quantity, amount from billing.invoice_lines").fetchall())
    assert published and published == expected
