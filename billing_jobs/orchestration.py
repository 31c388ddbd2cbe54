"""What the Airflow tasks of `dags/billing_daily.py` do, kept out of the DAG file so the scheduler
parses it fast and the logic is testable without Airflow.

One rule for every kind of run: **a run bills the UTC date of its logical date.** Scheduled and
backfill runs have the daily data interval [D, D+1) and the logical date D; a manual run has the
logical date the operator picked (Airflow 3 infers its data interval as [D-1, D), so we never read
`data_interval_start`); a run without a logical date must name a `billing_date` param.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from billing_jobs.config import Settings

WAREHOUSE_CONNECTION = "billing_warehouse"
VARIABLES = {"source": "billing_source", "reference": "billing_reference",
             "warehouse_url": "billing_warehouse_url"}


class NoBillingDate(Exception):
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


def partition_complete(day: str) -> bool:
    from billing_jobs.landing import location

    return (location(settings().source) / "messages" / f"date={day}" / "_SUCCESS").exists()


def plan(day: str, shards: int | None) -> str:
    """The run folder; its plan.json says how many shards to map the split and the write over
    (None: one per `BILLING_ROWS_PER_SHARD` rows of the window)."""
    from billing_jobs import pipeline

    return str(pipeline.plan_sharded(settings(), dt.date.fromisoformat(day), shards))


def _plan(folder: str) -> dict:
    import json

    return json.loads((Path(folder) / "plan.json").read_text())


def shard_numbers(folder: str) -> list[int]:
    return list(range(_plan(folder)["shards"]))


def split(folder: str, part: int) -> list[int]:
    from billing_jobs.shards import split as split_files

    return split_files(Path(folder), part)


def write_shard(folder: str, shard: int) -> str:
    from billing_jobs.shards import write_shard as compute_shard

    plan = _plan(folder)
    return str(compute_shard(settings(), dt.date.fromisoformat(plan["billing_date"]),
                             Path(folder), shard, plan["shards"]))


def combine(folder: str) -> str:
    from billing_jobs import pipeline

    return str(pipeline.combine_shards(settings(), Path(folder)))


def audit(folder: str) -> None:
    from billing_jobs import pipeline
    from billing_jobs.audit import AuditFailed

    try:
        pipeline.audit(Path(folder))
    except AuditFailed as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"audit failed, nothing published: {exc}") from None


def publish(folder: str) -> dict:
    from billing_jobs import pipeline

    done = pipeline.publish(settings(), Path(folder))
    return {"run_id": done["run_id"], "starts": done["starts_on_day"], "amount": str(done["amount"])}


def restate(day: str, look_back_days: int) -> list[str]:
    from billing_jobs.restate import restate as rebill

    since = dt.date.fromisoformat(day) - dt.timedelta(days=look_back_days)
    return [str(d) for d, _ in rebill(settings(), since)]


def prune_staging() -> list[str]:
    """Remove staged runs older than the configured number of days (staging.py)."""
    from billing_jobs.staging import prune

    config = settings()
    return [str(run.folder) for run in prune(config.staging, config.staging_keep_days)]


def close_previous_month(logical_date: dt.datetime) -> list[dict]:
    from billing_jobs.invoicing import close_month

    first = logical_date.astimezone(dt.timezone.utc).date().replace(day=1)
    previous = (first - dt.timedelta(days=1)).replace(day=1)
    return [{**inv, "exact_total": str(inv["exact_total"]), "total": str(inv["total"])}
            for inv in close_month(settings(), previous)]
