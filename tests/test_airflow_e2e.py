"""End to end with the real Airflow components (api-server, scheduler, dag-processor; SQLite
metadata, LocalExecutor): a backfill created through the REST API the UI uses, against the DuckDB
default, then a late file and the restatement."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import pytest

from billing_jobs import restate, sequence
from billing_jobs.config import Settings
from billing_jobs.generate import generate
from billing_jobs.provider_reconcile import reconcile_day

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START = dt.date(2026, 3, 1)
DAYS = [START + dt.timedelta(days=k) for k in range(4)]
DAY_TABLES = ("conversation_starts", "invoice_lines", "session_anomalies")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, method: str, path: str, body: dict | None = None,
         unavailable_for_s: float = 120) -> dict:
    """One REST call. A 503 (the api-server still starting a component it needs) is answered
    again, for a bounded time: the call is only made once the server says it can take it."""
    deadline = time.monotonic() + unavailable_for_s
    while True:
        request = urllib.request.Request(
            base + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise
        time.sleep(1)


def healthy(base: str, components: tuple[str, ...]) -> bool:
    """Whether the api-server reports these components (scheduler, dag_processor...) healthy."""
    try:
        health = call(base, "GET", "/api/v2/monitor/health", unavailable_for_s=0)
    except OSError:
        return False
    return all((health.get(c) or {}).get("status") == "healthy" for c in components)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """A running Airflow with our DAGs and a generated landing zone; yields (base URL, settings)."""
    home = tmp_path_factory.mktemp("airflow-e2e")
    generate(home / "landing", START, days=len(DAYS), messages_per_day=2000, seed=13)
    port = free_port()
    settings = Settings.resolve(source=str(home / "landing"), staging=str(home / "staging"),
                                warehouse_url=f"duckdb:///{home}/warehouse.duckdb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "BILLING_SOURCE": settings.source,
        "BILLING_STAGING": settings.staging,
        "BILLING_WAREHOUSE_URL": settings.warehouse_url,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    })
    with running_airflow(env, home / "logs", port, {
        name: [name] for name in ("api-server", "scheduler", "dag-processor")
    }) as base:
        yield base, settings


@contextlib.contextmanager
def running_airflow(env: dict, logs: Path, port: int, commands: dict[str, list[str]],
                    own_env: dict[str, dict] | None = None):
    """Migrate the metadata DB, start each `airflow <command>` in its own process group (logs in
    `logs/<name>.log`; `own_env[name]` added to its environment), wait until billing_daily is
    served, yield the base URL, then stop them."""
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True,
                   capture_output=True)
    logs.mkdir(exist_ok=True)
    procs = [subprocess.Popen([str(BIN / "airflow"), *cmd],
                              env={**env, **(own_env or {}).get(name, {})},
                              start_new_session=True, stdout=open(logs / f"{name}.log", "w"),
                              stderr=subprocess.STDOUT)
             for name, cmd in commands.items()]
    base = f"http://127.0.0.1:{port}"
    components = tuple(c.replace("-", "_") for c in commands if c in ("scheduler",
                                                                      "dag-processor"))
    try:
        # the real readiness signals: every component we started reports healthy, and the
        # dag-processor has parsed billing_daily (a busy machine takes longer: 300 s at most)
        deadline = time.monotonic() + 300
        while True:
            try:
                if healthy(base, components) and any(
                        d["dag_id"] == "billing_daily"
                        for d in call(base, "GET", "/api/v2/dags", unavailable_for_s=0)["dags"]):
                    break
            except OSError:
                pass
            for name, proc in zip(commands, procs):
                if proc.poll() is not None:
                    pytest.fail(f"airflow {name} exited with {proc.returncode}; logs in {logs}")
            if time.monotonic() > deadline:
                pytest.fail(f"Airflow was not healthy with billing_daily in 300 s; logs in {logs}")
            time.sleep(1)
        yield base
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def tables(url: str, day: dt.date) -> dict[str, list]:
    con = duckdb.connect(url.removeprefix("duckdb:///"), read_only=True)
    out = {}
    for table in DAY_TABLES:
        rel = con.execute(
            f"select * exclude (run_id) from billing.{table} where billing_date = ? order by all",
            [day])
        out[table] = [tuple(map(str, r)) for r in rel.fetchall()]
    con.close()
    return out


def runs(url: str) -> dict[dt.date, list[str]]:
    con = duckdb.connect(url.removeprefix("duckdb:///"), read_only=True)
    rows = con.execute("select billing_date, run_id from billing.billing_runs"
                       " where status = 'published' order by finished_at").fetchall()
    con.close()
    out: dict[dt.date, list[str]] = {}
    for day, run_id in rows:
        out.setdefault(day, []).append(run_id)
    return out


def queued_events(base: str, dag_id: str) -> int:
    """Asset events waiting to trigger a run of `dag_id` (the API answers 404 for none)."""
    try:
        return call(base, "GET", f"/api/v2/dags/{dag_id}/assets/queuedEvents")["total_entries"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return 0
        raise


def provider_tables(url: str, day: dt.date) -> dict[str, list]:
    con = duckdb.connect(url.removeprefix("duckdb:///"), read_only=True)
    out = {}
    for table in ("provider_pairs", "provider_differences", "provider_reconciliation"):
        rel = con.execute(f"select * exclude (run_id) from billing.{table}"
                          f" where billing_date = ? order by all", [day])
        out[table] = [tuple(map(str, r)) for r in rel.fetchall()]
    con.close()
    return out


def from_scratch(settings: Settings, tmp_path: Path, days: list[dt.date]) -> Settings:
    scratch = dataclasses.replace(settings, warehouse_url=f"duckdb:///{tmp_path}/scratch.duckdb",
                                  staging=str(tmp_path / "scratch-staging"))
    for day in days:
        sequence.run_day(scratch, day)
    return scratch


def test_ui_backfill_then_late_data_restatement(airflow, tmp_path):
    base, settings = airflow
    backfill = call(base, "POST", "/api/v2/backfills", {
        "dag_id": "billing_daily", "from_date": f"{DAYS[0]}T00:00:00Z",
        "to_date": f"{DAYS[-1]}T00:00:00Z", "max_active_runs": 3,
        "reprocess_behavior": "completed", "run_backwards": False, "dag_run_conf": {}})
    assert backfill["max_active_runs"] == 3
    # provider reconciliation follows every publish (the invoice-lines asset)
    call(base, "PATCH", "/api/v2/dags/provider_reconciliation", {"is_paused": False})
    call(base, "PATCH", "/api/v2/dags/billing_daily", {"is_paused": False})  # as in the UI
    deadline = time.monotonic() + 300
    while True:
        dag_runs = call(base, "GET", "/api/v2/dags/billing_daily/dagRuns?limit=50")["dag_runs"]
        done = [r for r in dag_runs if r["run_type"] == "backfill"]
        if len(done) == len(DAYS) and all(r["state"] in ("success", "failed") for r in done):
            break
        assert time.monotonic() < deadline, f"backfill not finished in 300 s: {done}"
        time.sleep(3)
    call(base, "PATCH", "/api/v2/dags/billing_daily", {"is_paused": True})
    assert {r["state"] for r in done} == {"success"}, done
    # each publish triggered provider_reconciliation: wait for the triggered runs (they write the
    # warehouse, which DuckDB lets one process open at a time); compared further down
    deadline = time.monotonic() + 300
    while True:
        provider_runs = [r for r in call(base, "GET", "/api/v2/dags/provider_reconciliation/"
                                                      "dagRuns?limit=50")["dag_runs"]
                         if r["run_type"] == "asset_triggered"]
        # every publish's event taken by a run (none queued), and every such run finished
        if provider_runs and queued_events(base, "provider_reconciliation") == 0 and all(
                r["state"] in ("success", "failed") for r in provider_runs):
            break
        assert time.monotonic() < deadline, f"provider runs not finished in 300 s: {provider_runs}"
        time.sleep(3)
    call(base, "PATCH", "/api/v2/dags/provider_reconciliation", {"is_paused": True})
    assert {r["state"] for r in provider_runs} == {"success"}, provider_runs
    assert sorted(r["logical_date"][:10] for r in done) == [str(d) for d in DAYS]

    # every backfilled day is billed, once, and equals a from-scratch run of the same code
    first_runs = runs(settings.warehouse_url)
    assert sorted(first_runs) == DAYS and all(len(v) == 1 for v in first_runs.values())
    scratch = from_scratch(settings, tmp_path / "a", DAYS)
    for day in DAYS:
        assert tables(settings.warehouse_url, day) == tables(scratch.warehouse_url, day)

    for day in DAYS:  # as the command line reconciles it after the whole backfill
        reconcile_day(scratch, day)
        assert provider_tables(settings.warehouse_url, day) == provider_tables(
            scratch.warehouse_url, day)

    # a late file lands in the second day's partition after it was billed
    late_day = DAYS[1]
    late = {"message_id": "late-e2e-1", "customer_id": "C001", "line_id": "L0011",
            "contact_id": "+4915100000099", "direction": "inbound", "message_type": "session",
            "sent_at": f"{late_day}T23:30:00Z"}
    (Path(settings.source) / "messages" / f"date={late_day}" / "late.jsonl").write_text(
        json.dumps(late) + "\n")
    before = {day: tables(settings.warehouse_url, day) for day in DAYS}
    restated = subprocess.run(
        [str(BIN / "billing-jobs"), "restate", "--since", str(DAYS[0])], capture_output=True,
        text=True, env={**os.environ, "BILLING_SOURCE": settings.source,
                        "BILLING_STAGING": settings.staging,
                        "BILLING_WAREHOUSE_URL": settings.warehouse_url})
    assert restated.returncode == 0, restated.stderr
    affected = DAYS[1:4]  # the late day and the two days that read it
    rebilled = [line for line in restated.stdout.splitlines() if "re-billed" in line]
    assert [line.split(":")[0] for line in rebilled
            if "a partition it read changed" in line] == [str(d) for d in affected]
    # days billed side by side can also learn of a generated conflicting copy only after one of
    # them was published (identity across days): those are re-billed too, and say so
    by_conflict = [line.split(":")[0] for line in rebilled if "conflicting copy" in line]
    assert len(rebilled) == len(affected) + len(by_conflict)
    assert restated.stdout.splitlines()[-1] == f"every day from {DAYS[0]} to {DAYS[-1]} is published"
    after_runs = runs(settings.warehouse_url)
    for day in affected:
        assert len(after_runs[day]) == 2
    if str(DAYS[0]) not in by_conflict:
        assert after_runs[DAYS[0]] == first_runs[DAYS[0]]  # untouched
        assert tables(settings.warehouse_url, DAYS[0]) == before[DAYS[0]]
    assert tables(settings.warehouse_url, late_day) != before[late_day]  # it gained the start
    scratch = from_scratch(settings, tmp_path / "b", DAYS)
    for day in DAYS:
        assert tables(settings.warehouse_url, day) == tables(scratch.warehouse_url, day)
    assert restate.stale_days(settings, DAYS[0]) == []
