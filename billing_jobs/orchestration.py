"""What the Airflow tasks of `dags/billing_daily.py` do, kept out of the DAG file so the scheduler
parses it fast and the logic is testable without Airflow. Each task is one step of
`billing_jobs.sequence`, the same functions `billing-jobs run` calls in a row.

One rule for every kind of run: **a run bills the UTC date of its logical date.** Scheduled and
backfill runs have the daily data interval [D, D+1) and the logical date D; a manual run has the
logical date the operator picked (Airflow 3 infers its data interval as [D-1, D), so we never read
`data_interval_start`); a run without a logical date must name a `billing_date` param.

Failures: every step runs inside `step()`, which logs the one-line reason with the billing date
as the task's first ERROR line, and fails the task at once (no retry) unless the error is
transient (`errors.is_transient`). `record_task_failure` is the DAG's failure callback: whatever
ended the task (an error, a kill, a timeout), the date gets a `failed` row in `billing_runs`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path

from billing_jobs.config import Settings
from billing_jobs.errors import UsageError, is_transient, one_line

log = logging.getLogger("billing_jobs")

WAREHOUSE_CONNECTION = "billing_warehouse"
VARIABLES = {"source": "billing_source", "reference": "billing_reference",
             "warehouse_url": "billing_warehouse_url"}
WAITING_RUN_TYPES = ("scheduled",)  # only the nightly run waits for a partition to complete


class NoBillingDate(UsageError):
    pass


def billing_date_for(params: dict, logical_date: dt.datetime | None) -> dt.date:
    if params.get("billing_date"):
        return dt.date.fromisoformat(params["billing_date"])
    if logical_date is None:
        raise NoBillingDate("this run has no logical date: trigger it with a logical date or give "
                            "the billing_date param (YYYY-MM-DD)")
    return logical_date.astimezone(dt.timezone.utc).date()


def settings() -> Settings:
    """Airflow Variables and the `billing_warehouse` Connection, then the environment, then the
    embedded defaults."""
    flags = {}
    try:
        from airflow.sdk import Connection, Variable

        for key, name in VARIABLES.items():
            flags[key] = Variable.get(name, default=None)
        try:
            flags["warehouse_url"] = warehouse_url(Connection.get(WAREHOUSE_CONNECTION))
        except Exception:  # noqa: BLE001 - no such connection: fall back
            pass
    except ImportError:  # outside Airflow
        pass
    return Settings.resolve(**flags)


def warehouse_url(conn) -> str:
    """A SQLAlchemy URL from an Airflow Connection: `extra.url` if set, else a postgres
    connection's URI with the psycopg 3 driver."""
    extra = conn.extra_dejson or {}
    if extra.get("url"):
        return extra["url"]
    uri = conn.get_uri()
    for prefix in ("postgres://", "postgresql://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg://" + uri[len(prefix):]
    return uri


@contextlib.contextmanager
def step(name: str, day: str | dt.date):
    """Run one step of billing date `day`: a failure is logged as one ERROR line naming the date,
    the step and the reason, then fails the task at once unless retrying can help."""
    try:
        yield
    except Exception as exc:
        reason = one_line(exc)
        name = getattr(exc, "billing_step", name)  # e.g. the audit inside the publish task
        message = f"billing date {day}: {name} failed: {reason}"
        if is_transient(exc):
            log.error("%s (transient: retried if attempts are left)", message)
            raise
        log.error("%s", message)
        from airflow.sdk.exceptions import AirflowFailException

        failure = AirflowFailException(message)
        failure.billing_reason, failure.billing_step = reason, name
        raise failure from None


def billing_date(params: dict, logical_date: dt.datetime | None) -> str:
    day = params.get("billing_date") or (logical_date and logical_date.date()) or "?"
    with step("billing_date", day):
        day = billing_date_for(params, logical_date)
        log.info("this run bills %s (UTC)", day)
        return day.isoformat()


def partition_ready(day: str, run_type: str) -> bool:
    """The sensor's poke. The nightly (scheduled) run waits for the partition's `_SUCCESS`; a
    manual or backfill run does not wait: it bills what the partition holds, and a partition
    that does not exist fails it at once."""
    from billing_jobs import window
    from billing_jobs.landing import location

    with step("wait_for_partition", day):
        config = settings()
        config.check_source()
        folder = location(config.source) / "messages" / f"date={day}"
        if run_type not in WAITING_RUN_TYPES:
            window.require_partition(config.source, dt.date.fromisoformat(day))
            log.info("%s run: bills %s as it is now, without waiting for %s", run_type, folder,
                     folder / "_SUCCESS")
            return True
        done = (folder / "_SUCCESS").exists()
        log.info("waiting for %s: %s", folder / "_SUCCESS", "present" if done else "not yet")
        return done


def plan(day: str, shards: int | None) -> str:
    """The run folder; its plan says how many shards to map the split and the write over
    (None: one per `BILLING_ROWS_PER_SHARD` rows of the window)."""
    from billing_jobs import sequence

    with step("plan", day):
        config = settings()
        sequence.check(config)
        log.info("contact keys: %s", "the DEMO secret" if config.uses_demo_secret
                 else f"BILLING_CONTACT_KEY_SECRET, key id {config.key_id}")
        return str(sequence.plan(config, dt.date.fromisoformat(day), shards).path)


def _folder(folder: str):
    from billing_jobs.run_folder import RunFolder

    return RunFolder(folder)


def _day_of(folder: str) -> str:
    try:
        return _folder(folder).plan.billing_date.isoformat()
    except Exception:  # noqa: BLE001 - only for the message
        return Path(folder).parent.name


def shard_numbers(folder: str) -> list[int]:
    with step("shard_numbers", _day_of(folder)):
        return list(range(_folder(folder).plan.shards))


def split_numbers(folder: str) -> list[int]:
    with step("split_numbers", _day_of(folder)):
        return list(range(_folder(folder).plan.split_tasks))


def split(folder: str, part: int) -> list[int]:
    from billing_jobs import sequence

    with step("split", _day_of(folder)):
        return sequence.split(settings(), _folder(folder), part)


def write_shard(folder: str, shard: int) -> str:
    from billing_jobs import sequence

    with step("write_shard", _day_of(folder)):
        return str(sequence.write_shard(settings(), _folder(folder), shard))


def combine(folder: str) -> str:
    from billing_jobs import sequence

    with step("combine", _day_of(folder)):
        sequence.combine(settings(), _folder(folder))
        return folder


def publish(folder: str, dry_run: bool = False) -> dict | None:
    """Audit the staged run and publish it, as `billing-jobs run` ends: Great Expectations is
    imported in a process of its own from the task's first moment (`auditor`), on the other core,
    and audits while the day is written; the day is committed only once the audit passed. An
    audit failure fails this task as the step `audit`. `dry_run`: the audit alone (None)."""
    from billing_jobs import auditor, sequence

    day = _day_of(folder)
    with step("publish", day):  # the worker's start too: its failure is one line as well
        auditor.start()
        try:
            if dry_run:
                sequence.audit(settings(), _folder(folder))
                log.info("dry run: %s audited, nothing published", day)
                return None
            done = sequence.audit_and_publish(settings(), _folder(folder))
        finally:
            auditor.stop()
    log.info("published %s: %s starts, amount %s (run %s)", day,
             done["starts_on_day"], done["amount"], done["run_id"])
    _log_adjustments(done)
    return {"billing_date": day, "run_id": done["run_id"], "starts": done["starts_on_day"],
            "amount": str(done["amount"]), "adjustments": len(done["adjustments"])}


def _log_adjustments(done: dict) -> None:
    """A closed month's day published again: the corrections it booked, per customer."""
    from billing_jobs.invoicing import describe_adjustments

    for line in describe_adjustments(done.get("adjustments") or []):
        log.info("%s", line.strip())


def record_task_failure(context) -> None:
    """The failure callback of billing_daily's tasks: a `failed` row for the run's billing date
    with the task (step) and the one-line reason, whatever ended the task."""
    try:
        from billing_jobs.publish import record_failure

        ti = context["ti"]
        exc = context.get("exception")
        reason = getattr(exc, "billing_reason", None) or (
            one_line(exc) if exc is not None else
            "the task ended without an error of its own (killed, timed out or lost)")
        day = _callback_day(context)
        if day is None:
            log.error("no billing date for this run: failure of %s not recorded", ti.task_id)
            return
        folder = None
        with contextlib.suppress(Exception):
            folder = ti.xcom_pull(task_ids="plan")
        run = _folder(folder) if folder else None
        run_id = f"{day:%Y%m%d}-airflow-{_safe(context['dag_run'].run_id)}"
        if run is not None:
            with contextlib.suppress(Exception):
                run_id = run.plan.run_id
        step_name = getattr(exc, "billing_step", None) or ti.task_id
        record_failure(settings(), day, run_id, step_name, reason, run)
    except Exception as exc:  # noqa: BLE001 - a callback must never hide the task's own failure
        log.error("recording the failure in billing_runs failed: %s", one_line(exc))


def _callback_day(context) -> dt.date | None:
    with contextlib.suppress(Exception):
        day = context["ti"].xcom_pull(task_ids="billing_date")
        if day:
            return dt.date.fromisoformat(day)
    with contextlib.suppress(Exception):
        return billing_date_for(context.get("params") or {}, context.get("logical_date"))
    return None


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]


def restate(day: str, look_back_days: int) -> list[str]:
    from billing_jobs.restate import restate as rebill

    with step("restate_late_data", day):
        since = dt.date.fromisoformat(day) - dt.timedelta(days=look_back_days)
        done = rebill(settings(), since)
        for _, result in done:
            _log_adjustments(result)
        return [str(d) for d, _ in done]


def prune_staging() -> list[str]:
    """Remove staged runs older than the configured number of days, and prepared pieces unused
    for as long (staging.py)."""
    from billing_jobs.staging import prune

    config = settings()
    return [str(run.folder) for run in prune(config.staging, config.staging_keep_days)]


def close_previous_month(logical_date: dt.datetime) -> list[dict]:
    from billing_jobs.invoicing import close_month

    first = logical_date.astimezone(dt.timezone.utc).date().replace(day=1)
    previous = (first - dt.timedelta(days=1)).replace(day=1)
    with step("close", previous.strftime("%Y-%m")):
        return [{**inv, "exact_total": str(inv["exact_total"]), "total": str(inv["total"])}
                for inv in close_month(settings(), previous)]


def provider_dates(params: dict, logical_date: dt.datetime | None, run_type: str,
                   published_dates: list[str]) -> dict[str, list[str]]:
    """The billing dates a provider_reconciliation run reconciles: `wait` for their provider
    partition, `also` reconciled if ready. A trigger form or a schedule names one day (the start
    of the data interval); a run triggered by billing_daily's invoice lines takes the days those
    published, and `also` their neighbours: a day's pairing reaches the starts of the days beside
    it, so each day is reconciled again once both are published."""
    with step("billing_dates", str(logical_date.date()) if logical_date else "unknown"):
        if run_type == "asset_triggered":
            days = {dt.date.fromisoformat(d) for d in published_dates}
            beside = {d + dt.timedelta(days=k) for d in days for k in (-1, 1)} - days
            log.info("triggered by invoice lines of %s", ", ".join(sorted(published_dates)))
            return {"wait": sorted(d.isoformat() for d in days),
                    "also": sorted(d.isoformat() for d in beside)}
        return {"wait": [billing_date_for(params, logical_date).isoformat()], "also": []}


def provider_partition_ready(day: str, run_type: str) -> bool:
    """Scheduled and asset-triggered runs wait for WhatsApp's partition of the day (its
    `_SUCCESS`); a manual or backfill run reconciles what has landed."""
    from billing_jobs.provider_records import partition_complete

    with step("wait_for_provider_partition", day):
        if run_type not in (*WAITING_RUN_TYPES, "asset_triggered"):
            return True
        done = partition_complete(settings().source, dt.date.fromisoformat(day))
        log.info("waiting for WhatsApp's partition of %s: %s", day,
                 "complete" if done else "not yet")
        return done


def reconcile_provider(day: str, tolerance_minutes: int, only_if_ready: bool) -> dict:
    """One day of provider reconciliation. With `only_if_ready` (a neighbour of a day that was
    just published), a day not published yet or whose provider partition is not complete is
    skipped: its own events reconcile it; otherwise those are errors, as on the command line."""
    from billing_jobs.provider_reconcile import is_published, reconcile_day
    from billing_jobs.provider_records import partition_complete

    with step("reconcile_provider", day):
        config = settings()
        date = dt.date.fromisoformat(day)
        if only_if_ready:
            if not partition_complete(config.source, date) or not is_published(config, date):
                log.info("%s: not published or its provider partition not complete: skipped", day)
                return {"billing_date": day, "skipped": "not ready"}
        done = reconcile_day(config, date, tolerance_minutes)
        log.info("%s: our starts %s, matched %s, type mismatch %s, ours only %s, WhatsApp only "
                 "%s (run %s)", day, done["our_starts"], done["matched"], done["type_mismatch"],
                 done["ours_only"], done["provider_only"], done["run_id"])
        return {"billing_date": day, **done}
