"""
### provider_reconciliation

Compares WhatsApp's own conversations (`provider_conversations/` in the landing zone) with the
conversation starts `billing_daily` published, per UTC day: pairs them as billing-rules.md
("Provider reconciliation") specifies and publishes the pairs, every difference with its
explanation, and per customer, country and type the counts that close
(`our_starts = matched + ours_only + type_mismatch`,
`provider_conversations = matched + provider_only + type_mismatch`). It never changes what we bill.

*When it runs*: whenever `billing_daily` publishes invoice lines (the asset
`billing_invoice_lines`) it reconciles that day and the published days beside it (a day's
pairing reaches its neighbours' starts); and daily at 06:00 UTC for the previous day, since WhatsApp's
side often lands later than our log. Both wait for the provider partition's `_SUCCESS` (up to a
day, then skip: the next trigger or a backfill catches up). A manual run reconciles the date of
the trigger form (or the `billing_date` param); backfills from the UI as for `billing_daily`
(Trigger → Backfill, a Date Range). A re-run replaces the day.

Owner: billing. Code: `billing_jobs.provider_reconcile`. Runbook: README.md, "Provider
reconciliation".
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronDataIntervalTimetable,
    Param,
    PokeReturnValue,
    dag,
    get_current_context,
    task,
)

INVOICE_LINES = Asset(name="billing_invoice_lines", uri="billing://warehouse/invoice_lines")


@dag(
    dag_id="provider_reconciliation",
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"), assets=INVOICE_LINES),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=3,
    doc_md=__doc__,
    tags=["billing", "finance", "provider"],
    default_args={
        "owner": "billing",
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
        "execution_timeout": dt.timedelta(hours=1),
    },
    params={
        "billing_date": Param(None, type=["null", "string"], format="date",
                              description="Reconcile this UTC date instead of the logical date."),
        "tolerance_minutes": Param(10, type="integer", minimum=1, maximum=24 * 60,
                                   description="How long after a template WhatsApp may open its "
                                               "conversation."),
    },
)
def provider_reconciliation():
    @task
    def billing_dates() -> dict[str, list[str]]:
        from billing_jobs.orchestration import provider_dates

        context = get_current_context()
        run_type = context["dag_run"].run_type
        published = []
        if run_type == "asset_triggered":
            published = [e.extra["billing_date"] for e in
                         context["triggering_asset_events"][INVOICE_LINES]
                         if (e.extra or {}).get("billing_date")]
        return provider_dates(context["params"], context.get("logical_date"), run_type, published)

    @task.sensor(poke_interval=600, timeout=24 * 3600, mode="reschedule", soft_fail=True)
    def wait_for_provider_partition(days: dict[str, list[str]]) -> PokeReturnValue:
        from billing_jobs.orchestration import provider_partition_ready

        run_type = get_current_context()["dag_run"].run_type
        done = all(provider_partition_ready(day, run_type) for day in days["wait"])
        todo = [{"day": d, "only_if_ready": False} for d in days["wait"]]
        todo += [{"day": d, "only_if_ready": True} for d in days["also"]]
        return PokeReturnValue(is_done=done, xcom_value=todo)

    @task(max_active_tis_per_dag=1, map_index_template="{{ label }}")
    def reconcile(day: str, only_if_ready: bool) -> dict:
        from billing_jobs.orchestration import reconcile_provider

        context = get_current_context()
        context["label"] = day
        return reconcile_provider(day, context["params"]["tolerance_minutes"], only_if_ready)

    reconcile.expand_kwargs(wait_for_provider_partition(billing_dates()))


provider_reconciliation()
