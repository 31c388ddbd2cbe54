"""
### billing_monthly_close

On the 3rd of each month at 06:00 UTC, closes the previous month: one invoice per customer and
currency from the published days, with gapless numbers. Closing twice changes nothing; a month with
missing, failed or unpublished days is refused with the list of those days (the task fails and
says which). Later corrections to a closed month are booked as adjustments on the next open month
when the day is published again.

Owner: billing. Code: `billing_jobs.invoicing`. Runbook: README.md, "Monthly close".
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task


@dag(
    dag_id="billing_monthly_close",
    schedule=CronTriggerTimetable("0 6 3 * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["billing", "finance"],
    default_args={"owner": "billing", "retries": 2, "retry_delay": dt.timedelta(minutes=10)},
)
def billing_monthly_close():
    @task
    def close_previous_month() -> list[dict]:
        from billing_jobs.orchestration import close_previous_month

        return close_previous_month(get_current_context()["logical_date"])

    close_previous_month()


billing_monthly_close()
