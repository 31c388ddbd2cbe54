"""One measured reconcile in its own process, so the parent can read its peak RSS.

`python -m bench.reconcile_one engine|duckdb MESSAGES_DIR` prints one JSON line."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path


def run_engine(folder: Path):
    from billing_jobs import landing
    from billing_jobs.reconcile import reconcile

    return reconcile(landing.read_files(landing.message_files([folder]))).starts


def run_duckdb(folder: Path):
    import duckdb

    files = [str(p) for p in sorted(folder.rglob("*.parquet"))]
    sql = (Path(__file__).parent / "peer_reconcile.sql").read_text()
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    return con.sql(sql, params={"files": files}).to_arrow_table()


def main(impl: str, folder: str) -> None:
    started = time.perf_counter()
    starts = {"engine": run_engine, "duckdb": run_duckdb}[impl](Path(folder))
    seconds = time.perf_counter() - started
    ids = "\n".join(f"{m}|{t}" for m, t in zip(starts.column("message_id").to_pylist(),
                                               starts.column("conversation_type").to_pylist()))
    print(json.dumps({"impl": impl, "seconds": seconds, "starts": starts.num_rows,
                      "digest": hashlib.sha256(ids.encode()).hexdigest()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
