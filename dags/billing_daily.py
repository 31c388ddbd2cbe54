"""
### billing_daily

Bills one UTC day of WhatsApp conversation starts per run: waits for the day's `_SUCCESS` marker
in the landing zone, then **writes** (reconcile and price D from partitions D-2..D into a staged
run, in shards by line: mapped tasks that executors spread over workers; each file of the window
is prepared once (validated, contacts keyed, split by shard) by one split task per two shards'
rows and kept for the next nights, so a night prepares only D's files; each shard computed
alone, then combined; the `shards` param, or one per 4M rows of the window), then **audits and
publishes** in one task, as `billing-jobs run` does: D's rows are replaced in one transaction
while Great Expectations audits the day, and committed only if the audit passed (a failure names
the expectation, is recorded as the step `audit`, and publishes nothing). A
nightly run then **restates** published days of the last `restate_days` whose inputs changed
(late files) and **prunes** staged runs older than `BILLING_STAGING_KEEP_DAYS` (14), and prepared
files unused for as long.

*A run bills the UTC date of its logical date*: scheduled and backfill runs bill the start of
their data interval; a manual run bills the logical date picked in the trigger form (or the
`billing_date` param). Only the nightly run waits for `_SUCCESS`; a manual or backfill run bills
the partition as it is, and fails at once if it does not exist. Backfill from the UI: Trigger →
Backfill, pick the Date Range, Reprocess Behavior and Max Active Runs 3; days run side by side
while the publishing task runs one at a time (the DuckDB warehouse has one writer).

*Failures*: a data, reference, pricing or audit error fails its task at once (no retry); only
transient ones (warehouse locked, connection lost, storage unavailable) are retried. The first
ERROR line of the task log is the reason with the billing date; `billing_runs` gets a `failed`
row naming the step.

Owner: billing. Code: `billing_jobs.orchestration`. Runbook: README.md, "Airflow".
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import (
    Asset,
    CronDataIntervalTimetable,
    Param,
    PokeReturnValue,
    dag,
    get_current_context,
    task,
)

INVOICE_LINES = Asset(name="billing_invoice_lines", uri="billing://warehouse/invoice_lines")


def _record_failure(context) -> None:
    """Every task's failure callback: the billing date gets a `failed` row in billing_runs with
    the step and the one-line reason, also when the task was killed or timed out."""
    from billing_jobs.orchestration import record_task_failure

    record_task_failure(context)


@dag(
    dag_id="billing_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=3,
    doc_md=__doc__,
    tags=["billing", "finance"],
    default_args={
        "owner": "billing",
        # only transient errors reach a retry: the others fail the task at once (orchestration.step)
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(hours=3),
        "on_failure_callback": _record_failure,
    },
    params={
        "billing_date": Param(None, type=["null", "string"], format="date",
                              description="Bill this UTC date instead of the logical date."),
        "dry_run": Param(False, type="boolean",
                         description="Write and audit, but publish nothing."),
        "restate_days": Param(35, type="integer", minimum=0, maximum=366,
                              description="Scheduled runs re-bill changed days this far back."),
        "shards": Param(None, type=["null", "integer"], minimum=1, maximum=256,
                        description="Compute the day in this many pieces (by line); empty: one "
                                    "per BILLING_ROWS_PER_SHARD (4M) rows of D-2..D."),
    },
)
def billing_daily():
    @task
    def billing_date() -> str:
        from billing_jobs.orchestration import billing_date

        context = get_current_context()
        return billing_date(context["params"], context.get("logical_date"))

    @task.sensor(poke_interval=300, timeout=12 * 3600, mode="reschedule")
    def wait_for_partition(day: str) -> PokeReturnValue:
        from billing_jobs.orchestration import partition_ready

        run_type = get_current_context()["dag_run"].run_type
        return PokeReturnValue(is_done=partition_ready(day, run_type), xcom_value=day)

    @task
    def plan(day: str) -> str:
        from billing_jobs.orchestration import plan

        return plan(day, get_current_context()["params"]["shards"])

    @task
    def shard_numbers(folder: str) -> list[int]:
        from billing_jobs.orchestration import shard_numbers

        return shard_numbers(folder)

    @task
    def split_numbers(folder: str) -> list[int]:
        from billing_jobs.orchestration import split_numbers

        return split_numbers(folder)

    @task(map_index_template="{{ label }}")
    def split(folder: str, part: int) -> list[int]:
        from billing_jobs.orchestration import split

        get_current_context()["label"] = f"part {part}"
        return split(folder, part)

    @task(map_index_template="{{ label }}")
    def write_shard(folder: str, shard: int) -> str:
        from billing_jobs.orchestration import write_shard

        get_current_context()["label"] = f"shard {shard}"
        return write_shard(folder, shard)

    @task
    def combine(folder: str) -> str:
        from billing_jobs.orchestration import combine

        return combine(folder)

    @task(max_active_tis_per_dag=1, outlets=[INVOICE_LINES])
    def publish(folder: str) -> dict:
        """Audits (Great Expectations) while it writes the day; commits only if the audit passed."""
        from airflow.sdk.exceptions import AirflowSkipException

        from billing_jobs.orchestration import publish

        context = get_current_context()
        if context["params"]["dry_run"]:
            publish(folder, dry_run=True)
            raise AirflowSkipException("dry run: audited, nothing published")
        done = publish(folder)
        # provider_reconciliation is scheduled on this asset: it reads which day was published
        context["outlet_events"][INVOICE_LINES].extra = {"billing_date": done["billing_date"]}
        return done

    @task(max_active_tis_per_dag=1)
    def restate_late_data(day: str) -> list[str]:
        from airflow.sdk.exceptions import AirflowSkipException

        from billing_jobs.orchestration import restate

        context = get_current_context()
        if context["dag_run"].run_type != "scheduled" or context["params"]["dry_run"]:
            raise AirflowSkipException("restatement runs with the nightly schedule only")
        return restate(day, context["params"]["restate_days"])

    @task(max_active_tis_per_dag=1)
    def prune_staging() -> list[str]:
        from airflow.sdk.exceptions import AirflowSkipException

        from billing_jobs.orchestration import prune_staging

        if get_current_context()["dag_run"].run_type != "scheduled":
            raise AirflowSkipException("staging is pruned by the nightly schedule only")
        return prune_staging()

    day = wait_for_partition(billing_date())
    folder = plan(day)
    pieces = split.partial(folder=folder).expand(part=split_numbers(folder))
    written = write_shard.partial(folder=folder).expand(shard=shard_numbers(folder))
    combined = combine(folder)
    pieces >> written >> combined
    published = publish(combined)
    published >> [restate_late_data(day), prune_staging()]


billing_daily()
