"""Staged runs are pruned by age; published data, recent runs and the GX project stay."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from billing_jobs import cli, sequence
from billing_jobs.config import Settings
from billing_jobs.generate import generate
from billing_jobs.staging import prune, staged_runs

DAY = dt.date(2026, 3, 1)


@pytest.fixture(params=["local", "s3"])
def settings(tmp_path, request):
    """A landing zone, a warehouse and a staging area: a local folder, or a bucket on an
    S3-compatible server (the GX project then stays local)."""
    generate(tmp_path / "landing", DAY, days=1, messages_per_day=500, seed=4)
    staging = (str(tmp_path / "staging") if request.param == "local"
               else request.getfixturevalue("s3_bucket") + "/staging")
    return Settings.resolve(source=str(tmp_path / "landing"), staging=staging,
                            warehouse_url=f"duckdb:///{tmp_path}/w.duckdb",
                            gx=None if request.param == "local" else str(tmp_path / "gx"))


def _age(folder, days: int) -> None:
    """Make a staged run look `days` old (its run.json or plan.json says when it started)."""
    for name in ("run.json", "plan.json"):
        path = folder / name
        if path.exists():
            meta = json.loads(path.read_text())
            started = dt.datetime.fromisoformat(meta["started_at"]) - dt.timedelta(days=days)
            path.write_text(json.dumps({**meta, "started_at": started.isoformat()}))


def test_runs_older_than_the_limit_are_removed_and_nothing_else(settings, capsys):
    old = sequence.run_day(settings, DAY)["run_id"]
    recent = sequence.run_day(settings, DAY)["run_id"]
    planned = sequence.plan(settings, DAY, shards=2).path  # a sharded run that never finished
    folders = {r.folder.name: r.folder for r in staged_runs(settings.staging)}
    assert set(folders) == {old, recent, planned.name}
    _age(folders[old], 20)
    _age(planned, 15)

    assert cli.main(["prune-staging", "--staging", settings.staging, "--dry-run"]) == 0
    assert "would remove 2 staged run(s) older than 14 days" in capsys.readouterr().out
    assert len(staged_runs(settings.staging)) == 3

    removed = prune(settings.staging, settings.staging_keep_days)
    assert {r.folder.name for r in removed} == {old, planned.name}
    assert all(r.bytes > 0 for r in removed)
    assert [r.folder.name for r in staged_runs(settings.staging)] == [recent]
    assert settings.gx_project.is_dir()  # every audit's results stay
    # what was published stays published
    import duckdb

    con = duckdb.connect(settings.warehouse_url.removeprefix("duckdb:///"), read_only=True)
    assert con.execute("select count(*) from billing.billing_runs where status = 'published'"
                       ).fetchall() == [(2,)]
    assert con.execute("select count(*) from billing.invoice_lines").fetchall()[0][0] > 0


def test_a_day_folder_goes_with_its_last_run(settings):
    run = sequence.run_day(settings, DAY)["run_id"]
    [staged] = staged_runs(settings.staging)
    assert staged.folder.name == run
    _age(staged.folder, 3)
    assert [r.folder for r in prune(settings.staging, 2)] == [staged.folder]
    assert not staged.folder.parent.exists()


def test_the_limit_is_at_least_one_day(settings, capsys):
    with pytest.raises(ValueError, match="at least 1"):
        prune(settings.staging, 0)
    assert cli.main(["prune-staging", "--staging", settings.staging, "--keep-days", "0.5"]) == 1
    assert cli.main(["prune-staging", "--staging", settings.staging, "--keep-days", "x"]) == 1
    assert "staging_keep_days (BILLING_STAGING_KEEP_DAYS) must be a number, got 'x'" in \
        capsys.readouterr().err


def test_the_dag_task_prunes_with_the_configured_limit(settings, monkeypatch):
    from billing_jobs import orchestration

    run = sequence.run_day(settings, DAY)["run_id"]
    [staged] = staged_runs(settings.staging)
    _age(staged.folder, 5)
    monkeypatch.setenv("BILLING_STAGING", settings.staging)
    monkeypatch.setenv("BILLING_STAGING_KEEP_DAYS", "7")
    assert orchestration.prune_staging() == []
    monkeypatch.setenv("BILLING_STAGING_KEEP_DAYS", "3")
    assert orchestration.prune_staging() == [str(staged.folder)]
    assert staged.folder.name == run and not staged.folder.exists()


def test_prepared_files_go_when_no_plan_used_them_for_the_limit(settings, capsys):
    """A file's prepared pieces stay while nights use them (each plan marks them used) and go
    with the staged runs once no plan has used them for `staging_keep_days`."""
    from billing_jobs import prepared
    from billing_jobs.landing import location

    folder = sequence.plan(settings, DAY, shards=2)
    for k in range(folder.plan.split_tasks):
        sequence.split(settings, folder, k)
    [old, *used] = [prepared.Entry(p) for p in folder.plan.prepared]
    assert used and all(e.ready() for e in (old, *used))
    for entry in (old, *used):  # written 20 days ago ...
        info = json.loads((entry.path / "entry.json").read_text())
        then = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=20)).isoformat()
        (entry.path / "entry.json").write_text(json.dumps({**info, "used_at": then,
                                                           "created_at": then}))
    now = dt.datetime.now(dt.timezone.utc)
    assert all(e.use(now) for e in used)  # ... and used by tonight's plan, but one
    writing = location(f"{settings.staging}/prepared/being-written")  # no entry.json yet
    writing.mkdir(parents=True, exist_ok=True)
    (writing / "0.arrow").write_bytes(b"a split task is writing this file's pieces")
    assert cli.main(["prune-staging", "--staging", settings.staging]) == 0
    out = capsys.readouterr().out
    assert f"removed {old.path} (last used " in out
    assert "removed the prepared pieces of 1 file(s) unused for as long" in out
    left = {str(p) for p in location(f"{settings.staging}/prepared").iterdir()}
    assert left == {str(e.path) for e in used} | {str(writing)}
    # the next plan of the day prepares that file again, and only that one
    again = sequence.plan(settings, DAY, shards=2).plan
    assert [i for part in again.split_parts for i in part] == [0]
