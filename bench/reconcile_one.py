"""One measured reconcile in its own process, so the parent can read its peak RSS.

`python -m bench.reconcile_one engine|duckdb|job-engine|job-duckdb|job-night-before|
job-duckdb-night-before MESSAGES_DIR [SCRATCH]` prints one JSON line. The jobs write into a
warehouse under SCRATCH (a new folder if not given): given one that holds the day already, the
job is a re-run that replaces it; the night-before ones leave there what the night before would
have (D-1 billed and published; for the job, D-1's and D-2's files prepared too)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
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


def job_engine(folder: Path, scratch: Path | None = None):
    """The product's daily job for the day, exactly as `billing-jobs run` does it, into the
    warehouse under `scratch` (a new one if not given; a given one may hold the day already)."""
    from billing_jobs import auditor

    auditor.start()  # as cmd_run does: Great Expectations warms up in its own process, first
    from billing_jobs import sequence
    from billing_jobs.config import Settings

    scratch = scratch or Path(tempfile.mkdtemp(prefix="bench-job-"))
    settings = Settings.resolve(source=str(folder.parent), staging=str(scratch / "staging"),
                                warehouse_url=f"duckdb:///{scratch}/warehouse.duckdb")
    try:
        done = sequence.run_day(settings, _day(folder), shards=1)  # unsharded: one process
    finally:
        auditor.stop()
    return done["starts_on_day"], str(done["amount"].normalize()), done["seconds"]


def night_before(folder: Path, scratch: Path):
    """What the night before left under `scratch`: D-1 billed and published by the job (its
    warehouse current and holding D-1's starts) and its split, which prepared the files of D-2
    and D-1 (prepared.py), as a steady night finds them. Its window is three days too (here D-3
    is missing, which a plan allows)."""
    import datetime as dt

    from billing_jobs import sequence
    from billing_jobs.config import Settings

    settings = Settings.resolve(source=str(folder.parent), staging=str(scratch / "staging"),
                                warehouse_url=f"duckdb:///{scratch}/warehouse.duckdb")
    sequence.run_day(settings, _day(folder) - dt.timedelta(days=1), shards=1)
    return 0, "", {}


def peer_night_before(folder: Path, scratch: Path):
    """The peer's night before: D-1 billed into its warehouse from the partitions up to D-1."""
    import datetime as dt

    return job_duckdb(folder, scratch, _day(folder) - dt.timedelta(days=1))


def job_duckdb(folder: Path, scratch: Path | None = None, day=None):
    """The peer of the job: reconcile and price in SQL, then replace the day's invoice lines in
    one transaction, as the product replaces a day (a first run finds no rows to delete). `day`:
    the last partition of the folder unless given (then the partitions up to it are read)."""
    import duckdb

    scratch = scratch or Path(tempfile.mkdtemp(prefix="bench-peer-"))
    day = day or _day(folder)
    con = duckdb.connect(str(scratch / "warehouse.duckdb"))
    con.execute("set timezone = 'UTC'")
    files = [str(p) for p in sorted(folder.rglob("*.parquet"))
             if p.relative_to(folder).parts[0] <= f"date={day}"]
    ref = folder.parent / "reference"
    # DDL cannot take prepared parameters: the values go in as SQL literals
    literal = {"$files": "[" + ", ".join(_quote(f) for f in files) + "]",
               "$day": _quote(str(day)), "$lines": _quote(str(ref / "lines.csv")),
               "$rates": _quote(str(ref / "rate_card.csv"))}
    reconcile_sql = (Path(__file__).parent / "peer_reconcile.sql").read_text().rsplit("order by", 1)[0]
    lines_sql = (Path(__file__).parent / "peer_job.sql").read_text()
    for name, value in literal.items():
        reconcile_sql = reconcile_sql.replace(name, value)
        lines_sql = lines_sql.replace(name, value)
    con.execute("create temp view starts as " + reconcile_sql)
    con.execute(f"create table if not exists invoice_lines as {lines_sql} limit 0")
    con.execute("begin")
    con.execute(f"delete from invoice_lines where billing_date = {literal['$day']}")
    con.execute(f"insert into invoice_lines {lines_sql}")
    con.execute("commit")
    quantity, amount = con.sql("select sum(quantity), sum(amount) from invoice_lines"
                               f" where billing_date = {literal['$day']}").fetchall()[0]
    return quantity, str(amount.normalize()), {}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _day(folder: Path):
    import datetime as dt

    return max(dt.date.fromisoformat(p.name[5:]) for p in folder.glob("date=*"))


def main(impl: str, folder: str, scratch: str | None = None) -> None:
    if impl.startswith("job-"):
        own = scratch is None  # a first run's warehouse and staging: removed once measured
        place = Path(tempfile.mkdtemp(prefix="bench-job-")) if own else Path(scratch)
        started = time.perf_counter()
        jobs = {"job-engine": job_engine, "job-duckdb": job_duckdb,
                "job-night-before": night_before, "job-duckdb-night-before": peer_night_before}
        starts, amount, stages = jobs[impl](Path(folder), place)
        print(json.dumps({"impl": impl, "seconds": time.perf_counter() - started,
                          "starts": starts, "digest": amount, "stages": stages}), flush=True)
        if own:
            shutil.rmtree(place)
        return
    started = time.perf_counter()
    starts = {"engine": run_engine, "duckdb": run_duckdb}[impl](Path(folder))
    seconds = time.perf_counter() - started
    ids = "\n".join(f"{m}|{t}" for m, t in zip(starts.column("message_id").to_pylist(),
                                               starts.column("conversation_type").to_pylist()))
    print(json.dumps({"impl": impl, "seconds": seconds, "starts": starts.num_rows,
                      "digest": hashlib.sha256(ids.encode()).hexdigest()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
