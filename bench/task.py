"""One task of `billing_daily`'s sharded path in its own process, through the very function the
Airflow task calls (`billing_jobs.orchestration`), so the parent reads that task's own peak RSS.

    python -m bench.task plan DAY [SHARDS]      (no SHARDS: as the nightly run decides)
    python -m bench.task split_numbers|shard_numbers FOLDER
    python -m bench.task split|write_shard FOLDER K
    python -m bench.task combine|publish FOLDER

Settings come from the environment (BILLING_SOURCE, BILLING_STAGING, BILLING_WAREHOUSE_URL,
BILLING_ROWS_PER_SHARD), as on a worker without Airflow Variables. Prints one JSON line: the
task's return value and seconds.
"""

from __future__ import annotations

import json
import sys
import time


def main(name: str, *args: str) -> None:
    started = time.perf_counter()
    from billing_jobs import orchestration

    task = {"plan": lambda day, shards=None: orchestration.plan(day, shards and int(shards)),
            "split_numbers": orchestration.split_numbers,
            "shard_numbers": orchestration.shard_numbers,
            "split": lambda folder, k: orchestration.split(folder, int(k)),
            "write_shard": lambda folder, k: orchestration.write_shard(folder, int(k)),
            "combine": orchestration.combine, "publish": orchestration.publish}[name]
    value = task(*args)
    print(json.dumps({"task": name, "value": value, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main(*sys.argv[1:])
