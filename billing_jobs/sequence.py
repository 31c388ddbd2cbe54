"""One run of one billing date, whichever way it starts:

    plan -> split (prepare, per part) -> write_shard (per shard) -> combine -> audit -> publish

Airflow runs each step as a task (`dags/billing_daily.py` through `orchestration`); `run_day`
runs them in a row for `billing-jobs run` and restatement. Both end the same way
(`audit_and_publish`, one task in Airflow): publish writes the day in its transaction while Great
Expectations audits it, and commits only once it passed. Both call these functions and nothing
else computes a day. An unsharded day is a plan with one shard.

Every step takes the settings and the run folder, reads and writes only that folder (and, for
`publish`, the warehouse), and can be repeated: a retried step redoes its own work only. A failure
at any step publishes nothing and keeps the previous version of the day; whoever runs the steps
records it in `billing_runs` (`record_failure`: here for a run in a row, the task failure
callback in Airflow).
"""

from __future__ import annotations

import datetime as dt

from billing_jobs import auditor, landing, prepared, warehouse, window
from billing_jobs import publish as publishing
from billing_jobs import shards as sharding
from billing_jobs.config import Settings
from billing_jobs.day import Clock
from billing_jobs.errors import one_line
from billing_jobs.reference_data import load_reference
from billing_jobs.run_folder import Plan, RunFolder, StagedRun, new_run_id
from billing_jobs.tables import release_memory

STEPS = ("plan", "split", "write_shard", "combine", "audit", "publish")


def check(settings: Settings) -> None:
    """What can be verified before any work: the landing zone, the warehouse URL, the suites."""
    settings.check_source()
    settings.check_warehouse()
    settings.check_secret()
    settings.check_expectations()


def plan(settings: Settings, day: dt.date, shards: int | None = None,
         run_id: str | None = None) -> RunFolder:
    """The run folder with plan.json: the files of D-2..D as they are now (a late file that lands
    while the run goes on waits for the next run), their fingerprints, the number of shards
    (None: one per `rows_per_shard` rows of the window), where each file's prepared pieces are
    and which files the split tasks must prepare (those no earlier run prepared: a steady night
    prepares D's files only, sharded or not)."""
    started = dt.datetime.now(dt.timezone.utc)
    source = window.require_partition(settings.source, day)
    files, partitions, digests = window.files_and_fingerprints(source, day)
    rows = landing.estimated_rows(files)
    count = shards or window.shards_for(sum(rows), settings.rows_per_shard)
    reference_hash = load_reference(settings.reference).content_hash
    places = [prepared.entry_place(settings.staging, str(f), digest, reference_hash,
                                   settings.contact_key_secret, count)
              for f, digest in zip(files, digests, strict=True)]
    todo = [i for i, where in enumerate(places) if not prepared.Entry(where).use(started)]
    conflicts: dict[str, list[str]] = {}
    for row in warehouse.read_job_query(
            settings.warehouse_url, settings.schema, settings.lock_wait_s,
            "conflicts_within_reach", "identity_conflicts",
            first_day=day - dt.timedelta(days=2 * window.LOOK_BACK_DAYS),
            last_day=day + dt.timedelta(days=window.LOOK_BACK_DAYS)):
        conflicts.setdefault(row["message_id"], []).append(str(row["partition_date"])[:10])
    split_parts, side_by_side = sharding.split_tasks(rows, todo, count, settings.rows_per_shard)
    return RunFolder.create(settings.staging, Plan(
        run_id=run_id or new_run_id(day, started), billing_date=day, started_at=started,
        source=str(source), reference=str(settings.reference), partitions=partitions,
        files=[str(f) for f in files], shards=count, conflicts=conflicts, prepared=places,
        reference_hash=reference_hash,
        split_parts=split_parts, split_side_by_side=side_by_side))


def split(settings: Settings, folder: RunFolder, part: int) -> list[int]:
    return sharding.split(folder, part, settings.contact_key_secret)


def write_shard(settings: Settings, folder: RunFolder, shard: int) -> str:
    return sharding.write_shard(folder, shard, _billed(settings))


def combine(settings: Settings, folder: RunFolder) -> StagedRun:
    return sharding.combine(folder, _billed(settings))


def _billed(settings: Settings):
    """Which of some message ids are billed as starts already outside a window, and on which
    date."""
    return lambda ids, window: warehouse.billed_dates(settings.warehouse_url, settings.schema,
                                                      settings.lock_wait_s, ids, window)


def audit(settings: Settings, folder: RunFolder) -> None:
    _audited(_start_audit(settings, folder))
    release_memory()


def _start_audit(settings: Settings, folder: RunFolder) -> auditor.Pending:
    """The audit, in GX's warm process if the command started one (else here, when waited for)."""
    # pandas and the audit's inputs only here: the split and shard tasks never pay for them
    from billing_jobs import audit_inputs

    return auditor.submit(audit_inputs.audit_run, folder, settings.suites, settings.gx_project)


def _audited(pending: auditor.Pending) -> None:
    """Wait for the audit. Its failure names the step `audit` (`billing_step`) wherever it is
    waited for, inside the publish too."""
    try:
        pending.result()
    except Exception as exc:
        exc.billing_step = "audit"
        raise


def publish(settings: Settings, folder: RunFolder) -> dict:
    """Publish a run audited already (`audit`)."""
    return publishing.publish(settings, folder)


def audit_and_publish(settings: Settings, folder: RunFolder, clock: Clock | None = None) -> dict:
    """Audit and publish in one: the day is written in its transaction while Great Expectations
    audits it (in its warm process if the caller started one, `auditor.start`), and committed
    only once it passed; a failed audit rolls everything back. `run_day` and the DAG's publish
    task both end with this."""
    clock = clock or Clock()
    audited = _start_audit(settings, folder)

    def wait_for_audit() -> None:  # the last thing before the commit
        clock.lap("publish")
        _audited(audited)
        clock.lap("audit")

    done = publishing.publish(settings, folder, wait_for_audit)
    clock.lap("publish")
    return done


def run_day(settings: Settings, day: dt.date, dry_run: bool = False,
            shards: int | None = None) -> dict:
    """Every step in a row (publish left out with `dry_run`). Returns the run's counts, amount,
    run id and seconds per step; on failure records it and raises the step's error."""
    started = dt.datetime.now(dt.timezone.utc)
    run_id = new_run_id(day, started)
    folder, step, clock = None, "plan", Clock()
    try:
        check(settings)
        folder = plan(settings, day, shards, run_id)
        clock.lap("plan")
        step = "split"
        for part in range(folder.plan.split_tasks):
            split(settings, folder, part)
        clock.lap("split")
        step = "write_shard"
        for shard in range(folder.plan.shards):
            write_shard(settings, folder, shard)
        clock.lap("write_shard")
        step = "combine"
        run = combine(settings, folder)
        clock.lap("combine")
        if dry_run:
            step = "audit"
            audit(settings, folder)
            clock.lap("audit")
            return {**run.counts, "run_id": run_id, "published": False,
                    "seconds": {**run.seconds, **clock.laps}}
        step = "publish"
        done = audit_and_publish(settings, folder, clock)
        return {**done, "published": True, "seconds": {**run.seconds, **clock.laps}}
    except Exception as exc:
        step = getattr(exc, "billing_step", step)
        publishing.record_failure(settings, day, run_id, step, one_line(exc), folder, started)
        raise
