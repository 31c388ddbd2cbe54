"""Restatement of late data: re-bill published days whose inputs changed since they were billed.

Every published run records the fingerprints of the partitions it read (D-2..D). A day whose
partitions now hash differently is re-billed, and so are the published days that read it (D+1 and
D+2: billing-rules.md, Days), through the same sequence as any run. Days that are not published
(their last run failed, or they never ran) are not restatement's to bill; it names them."""

from __future__ import annotations

import datetime as dt
import json

from billing_jobs import landing, sequence, warehouse, window
from billing_jobs.config import Settings


def _latest(settings: Settings, query: str, since: dt.date) -> dict[dt.date, dict]:
    """Rows of a `sql/jobs` query keyed by billing date, partitions decoded; read only."""
    rows = warehouse.read_job_query(settings.warehouse_url, settings.schema, settings.lock_wait_s,
                                    query, "billing_runs", since=since)
    return {dt.date.fromisoformat(str(r["billing_date"])[:10]): {
        **r, "partitions": json.loads(r["partitions"] or "{}")} for r in rows}


def latest_runs(settings: Settings, since: dt.date) -> dict[dt.date, dict]:
    """The latest run of every billing date since `since`: its status, step, reason and the
    partition fingerprints it read."""
    return _latest(settings, "latest_runs", since)


def published_days(settings: Settings, since: dt.date) -> dict[dt.date, dict]:
    """The latest published run's partition fingerprints, per billing date since `since`."""
    return {day: r["partitions"]
            for day, r in _latest(settings, "latest_published_runs", since).items()}


def stale_days(settings: Settings, since: dt.date) -> list[dt.date]:
    return sorted(stale_reasons(settings, since))


def stale_reasons(settings: Settings, since: dt.date) -> dict[dt.date, str]:
    """Published days since `since` to re-bill, with why: a partition they read (D-2..D) changed
    since they were billed (a change to partition P so reaches exactly P, P+1 and P+2, the days
    that read it: billing-rules.md, Days), or a conflicting copy of one of their messages was
    found later by the run of another day (identity.py)."""
    published = published_days(settings, since)
    fingerprints: dict[dt.date, str | None] = {}  # each partition hashed once

    def now(part: dt.date) -> str | None:
        if part not in fingerprints:
            files = landing.partition_files(settings.source, part)
            fingerprints[part] = window.fingerprint(files) if files else None
        return fingerprints[part]

    reasons = {day: "a partition it read changed" for day, recorded in published.items()
               if any(recorded.get(part.isoformat()) != now(part)
                      for part in window.partitions_read(day))}
    for row in warehouse.read_job_query(settings.warehouse_url, settings.schema,
                                        settings.lock_wait_s, "conflict_stale_days",
                                        "identity_conflicts", since=since):
        day = dt.date.fromisoformat(str(row["billing_date"])[:10])
        reasons.setdefault(day, f"a conflicting copy of one of its messages was found by run "
                                f"{row['found_by_run']}")
    return reasons


def unbilled_days(settings: Settings, first: dt.date, last: dt.date) -> list[tuple[dt.date, str]]:
    """Days of [first, last] whose latest run is not a published one, with why: the step and
    reason of a failed run, or that the day never ran."""
    latest = latest_runs(settings, first)
    out = []
    for k in range((last - first).days + 1):
        day = first + dt.timedelta(days=k)
        run = latest.get(day)
        if run is None:
            out.append((day, "never billed"))
        elif run["status"] != "published":
            step = f" at {run['failed_step']}" if run.get("failed_step") else ""
            out.append((day, f"{run['status']}{step}: {run['error'] or 'no reason recorded'}"))
    return out


def last_landed_day(settings: Settings) -> dt.date | None:
    """The newest partition date in the landing zone."""
    root = landing.location(settings.source) / "messages"
    if not root.is_dir():
        return None
    days = [landing.PARTITION_RE.match(p.name) for p in root.iterdir()]
    return max((dt.date.fromisoformat(m.group(1)) for m in days if m), default=None)


def restate(settings: Settings, since: dt.date) -> list[tuple[dt.date, dict]]:
    """Re-bill every stale day in date order; returns what each run published, with why."""
    return [(day, {**sequence.run_day(settings, day), "why": why})
            for day, why in sorted(stale_reasons(settings, since).items())]
