"""Restatement of late data: re-bill published days whose inputs changed since they were billed.

Every published run records the fingerprints of the partitions it read (D-2..D). A day whose
partitions now hash differently is re-billed, and so are the published days that read it (D+1 and
D+2: billing-rules.md, Days), through the same write-audit-publish path.
"""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa

from billing_jobs import landing, pipeline, warehouse
from billing_jobs.config import Settings


def published_days(settings: Settings, since: dt.date) -> dict[dt.date, dict]:
    """The latest published run's partition fingerprints, per billing date since `since`."""
    engine = warehouse.create_engine(settings.warehouse_url)
    with warehouse.connect(engine, settings.lock_wait_s) as conn:
        with conn.begin():
            warehouse.ensure_schema(conn, settings.schema)
        rows = conn.execute(sa.text(
            f"select billing_date, partitions, finished_at from {settings.schema}.billing_runs"
            " where status = 'published' and billing_date >= :since"
            " order by billing_date, finished_at"), {"since": since}).all()
    engine.dispose()
    latest = {}
    for day, partitions, _ in rows:  # ordered by finish time: the last one wins
        latest[dt.date.fromisoformat(str(day))] = json.loads(partitions or "{}")
    return latest


def stale_days(settings: Settings, since: dt.date) -> list[dt.date]:
    """Published days since `since` to re-bill: inputs changed, or a day they read changed."""
    published = published_days(settings, since)
    changed = set()
    for day, recorded in published.items():
        for part in pipeline.partitions_read(day):
            files = landing.partition_files(settings.source, part)
            now = pipeline.fingerprint(files) if files else None
            if recorded.get(part.isoformat()) != now:
                changed.add(day)
                break
    # a day's charges depend on the two days before it: re-bill its published dependents too
    dependents = {day + dt.timedelta(days=k) for day in changed for k in (1, 2)}
    return sorted(changed | (dependents & set(published)))


def restate(settings: Settings, since: dt.date) -> list[tuple[dt.date, dict]]:
    """Re-bill every stale day in date order; returns what each run published."""
    return [(day, pipeline.run_day(settings, day)) for day in stale_days(settings, since)]
