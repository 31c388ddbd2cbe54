"""`make bench`: reconcile throughput and peak memory, the engine next to a DuckDB SQL peer.

For each size, one day of traffic is generated once (fixed seed, cached under var/bench/) and each
implementation reconciles it in a fresh process, several times; we report the median wall time,
messages per second and the process's peak RSS, and check that both found the same starts.
`--what sharded` runs the day the way `billing_daily` does, every task in its own process, and
reports the largest task's peak; it fails if a day misses the targets in TARGETS.

    python -m bench.run 1000000 10000000 [--repeat 3] [--seed 42] [--what reconcile|job|sharded]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from billing_jobs import landing, window
from billing_jobs.config import DEFAULTS
from billing_jobs.run_folder import RunFolder

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "var" / "bench"
RESULTS = ROOT / "bench" / "results"
START = dt.date(2026, 3, 1)
# (kind, messages) -> (wall seconds, peak RSS MiB of any one process): the bench fails above them
TARGETS = {("sharded", 10_000_000): (60, 4096), ("sharded", 100_000_000): (900, 4096)}
PROVIDER_SHARE = 0.20  # provider reconciliation of a day: at most this share of billing it,
PROVIDER_SHARE_FROM = 10_000_000  # from this size on (below it, process start and imports rule)


def dataset(messages: int, seed: int, data: Path = DATA, days: int = 1) -> Path:
    """The cached input: `days` days of `messages` each (the last is billed; with 3 its window is
    full, as in a steady nightly run); a change to the generator makes a new one. Generated in a
    child process: a child forked from a large parent reports the parent's size as its peak."""
    import hashlib

    version = hashlib.sha256((ROOT / "billing_jobs" / "generate.py").read_bytes()).hexdigest()[:8]
    folder = data / (f"day-{messages}-seed{seed}-{version}" if days == 1
                     else f"days{days}-{messages}-seed{seed}-{version}")
    last = START + dt.timedelta(days=days - 1)
    if not (folder / "messages" / f"date={last}" / "_SUCCESS").exists():
        print(f"generating {days} x {messages:,} messages (seed {seed}) into {folder} ...",
              flush=True)
        subprocess.run([sys.executable, "-c", "import sys, datetime as dt; "
                        "from billing_jobs.generate import generate; "
                        "generate(sys.argv[1], dt.date.fromisoformat(sys.argv[2]), "
                        "days=int(sys.argv[3]), messages_per_day=int(sys.argv[4]), "
                        "seed=int(sys.argv[5]), provider=False)", str(folder), str(START), str(days),
                        str(messages), str(seed)], cwd=ROOT, check=True)
    return folder / "messages"


def provider_dataset(messages: int, seed: int, data: Path = DATA) -> Path:
    """Three days of `messages` each with WhatsApp's side (generate_provider.py), cached."""
    import hashlib

    code = b"".join((ROOT / "billing_jobs" / name).read_bytes()
                    for name in ("generate.py", "generate_provider.py"))
    folder = data / f"provider-days3-{messages}-seed{seed}-{hashlib.sha256(code).hexdigest()[:8]}"
    if not (folder / "provider_injected.json").exists():
        print(f"generating 3 x {messages:,} messages with WhatsApp's side (seed {seed}) into "
              f"{folder} ...", flush=True)
        subprocess.run([sys.executable, "-c", "import sys, datetime as dt; "
                        "from billing_jobs.generate import generate; "
                        "generate(sys.argv[1], dt.date.fromisoformat(sys.argv[2]), days=3, "
                        "messages_per_day=int(sys.argv[3]), seed=int(sys.argv[4]))",
                        str(folder), str(START), str(messages), str(seed)], cwd=ROOT, check=True)
    return folder


def provider(size: int, seed: int, data: Path, repeat: int) -> list[dict]:
    """The billing of the steady third day (`billing-jobs run`) and the provider reconciliation
    of the second (`billing-jobs reconcile-provider`, whose pairing reaches days 1 to 3), each in
    its own process, on the same warehouse; the reconciliation's share is the target."""
    source = provider_dataset(size, seed, data)
    days = [START + dt.timedelta(days=k) for k in range(3)]
    rows = {"billing": [], "provider": []}
    for _ in range(repeat):
        scratch = Path(tempfile.mkdtemp(prefix="bench-provider-"))
        env = {"BILLING_SOURCE": str(source), "BILLING_STAGING": str(scratch / "staging"),
               "BILLING_WAREHOUSE_URL": f"duckdb:///{scratch}/warehouse.duckdb",
               "BILLING_ALLOW_DEMO_SECRET": "1"}

        def timed(*args: str) -> dict:
            clock = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "billing_jobs.cli", *args], cwd=ROOT,
                                    env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status):
                raise SystemExit(f"bench: billing-jobs {' '.join(args)} failed: "
                                 f"{proc.stderr.read().strip()}")
            return {"seconds": time.perf_counter() - clock, "starts": None, "digest": None,
                    "peak_rss_mib": usage.ru_maxrss / 1024}

        timed("run", "--date", str(days[0]), "--to", str(days[1]))
        rows["billing"].append(timed("run", "--date", str(days[2])))
        rows["provider"].append(timed("reconcile-provider", "--date", str(days[1])))
        shutil.rmtree(scratch)
    return [_row("provider", size, "billing", rows["billing"]),
            _row("provider", size, "provider", rows["provider"])]


def _start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    """A child `python -m <args>` whose output goes to temporary files (read by _reap)."""
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=out, stderr=err,
                            env={**os.environ, **(env or {})})
    proc.files = (out, err)
    return proc


def _reap(proc: subprocess.Popen, status: int, usage) -> dict:
    """The child's last JSON line, with its own peak RSS (from wait4's rusage)."""
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.files
    out.seek(0)
    err.seek(0)
    if proc.returncode:
        lines = err.read().strip().splitlines()
        raise SystemExit(f"bench: {' '.join(proc.args[2:])} failed: "
                         f"{lines[-1] if lines else proc.returncode}")
    result = json.loads(out.read().strip().splitlines()[-1])
    out.close()
    err.close()
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def measure(impl: str, messages_dir: Path, scratch: Path | None = None) -> dict:
    """One run in a child process, reaped with wait4 to read that child's own peak RSS."""
    proc = _start(["bench.reconcile_one", impl, str(messages_dir),
                   *([str(scratch)] if scratch else [])])
    _, status, usage = os.wait4(proc.pid, 0)
    return _reap(proc, status, usage)


NIGHT_BEFORE = {"job-engine": "job-night-before", "job-duckdb": "job-duckdb-night-before"}


def measure_first(impl: str, messages_dir: Path) -> dict:
    """A job's first run of its day on a steady night: the night before (unmeasured, its own
    process) billed D-1 into the same warehouse, each implementation its own; the product's
    also prepared the files of D-1 and D-2 then, as the nightly schedule leaves them."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-first-"))
    try:
        if len(list(messages_dir.glob("date=*"))) > 1:
            measure(NIGHT_BEFORE[impl], messages_dir, scratch)
        return measure(impl, messages_dir, scratch)
    finally:
        shutil.rmtree(scratch)


def measure_rerun(impl: str, messages_dir: Path) -> dict:
    """A job run again on a warehouse that holds its day already (a restatement, an "All Runs"
    backfill): the first run in its own process, unmeasured, then the measured one."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-rerun-"))
    try:
        measure(impl, messages_dir, scratch)
        return measure(impl, messages_dir, scratch)
    finally:
        shutil.rmtree(scratch)


class Worker:
    """One `bench.worker` process (a LocalExecutor worker: Airflow's SDK loaded, a fork per
    task) and the files its tasks write their output to."""

    def __init__(self, env: dict, scratch: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", str(ROOT / "dags" / "billing_daily.py")],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, **env})
        self.out, self.err = (Path(tempfile.mkstemp(dir=scratch, suffix=f".{n}")[1])
                              for n in ("out", "err"))

    def task(self, *argv: str) -> dict:
        """Run one task (bench.task's arguments); its JSON line with its own peak RSS."""
        job = {"argv": argv, "out": str(self.out), "err": str(self.err)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if answer["code"]:
            lines = self.err.read_text().strip().splitlines()
            raise SystemExit(f"bench: {' '.join(argv)} failed: "
                             f"{lines[-1] if lines else answer['code']}")
        result = json.loads(self.out.read_text().strip().splitlines()[-1])
        result["peak_rss_mib"] = answer["maxrss_kib"] / 1024  # Linux reports KiB
        return result

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def measure_sharded(messages_dir: Path, rows_per_shard: int, parallel: int) -> dict:
    """The sharded day as `billing_daily` runs it on a steady night (the files of D-1 and D-2
    prepared by the nights before): plan (one shard per `rows_per_shard` rows of the D-2..D
    window, as the nightly run decides), the two small tasks listing the mapped ones, the split
    tasks (D's files) and then the shards, combine, and publish (which audits while it writes).
    Tasks run as a LocalExecutor with `parallel` workers runs them (bench/worker.py): `parallel`
    at a time, each a process forked from a worker that has Airflow loaded, which imports our
    package and parses the DAG file. Wall time counts all of that; the peak is the largest
    task's, a task's processes counted together (the publish task's and its audit's)."""
    day = max(p.name[5:] for p in messages_dir.glob("date=*"))
    scratch = Path(tempfile.mkdtemp(prefix="bench-sharded-"))
    env = {"BILLING_SOURCE": str(messages_dir.parent), "BILLING_STAGING": str(scratch / "staging"),
           "BILLING_WAREHOUSE_URL": f"duckdb:///{scratch}/warehouse.duckdb",
           "BILLING_ROWS_PER_SHARD": str(rows_per_shard)}
    workers = [Worker(env, scratch) for _ in range(parallel)]
    seconds, peaks = {}, {}

    def run(step: str, *args: str) -> dict:
        clock = time.perf_counter()
        result = workers[0].task(step, *args)
        seconds[step] = time.perf_counter() - clock
        peaks[step] = result["peak_rss_mib"]
        return result

    def mapped(step: str, tasks: list[tuple[str, ...]]) -> list[dict]:
        clock = time.perf_counter()
        with ThreadPoolExecutor(len(workers)) as pool:  # each thread drives one worker
            free = list(workers)
            lock = threading.Lock()

            def one(argv: tuple[str, ...]) -> dict:
                with lock:
                    worker = free.pop()
                try:
                    return worker.task(*argv)
                finally:
                    with lock:
                        free.append(worker)

            results = list(pool.map(one, tasks))
        seconds[step] = time.perf_counter() - clock
        peaks[step] = max(r["peak_rss_mib"] for r in results)
        return results

    try:
        # the night before prepared D-1's and D-2's files (prepared.py): its plan and split
        # tasks, unmeasured, so that the night measured is a steady one. At steady traffic that
        # night had as many shards (its window is three days too; here D-3 is missing).
        before = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        if (messages_dir / f"date={before}").is_dir():
            rows = landing.estimated_rows(window.listing(messages_dir.parent,
                                                         dt.date.fromisoformat(day)))
            warm = run("plan", before, str(window.shards_for(sum(rows), rows_per_shard)))["value"]
            mapped("split", [("split", warm, str(k))
                             for k in range(RunFolder(warm).plan.split_tasks)])
            seconds.clear()
            peaks.clear()
        started = time.perf_counter()
        folder = run("plan", day)["value"]
        parts, shards = (r["value"] for r in mapped(
            "list", [("split_numbers", folder), ("shard_numbers", folder)]))
        mapped("split", [("split", folder, str(k)) for k in parts])
        mapped("write_shard", [("write_shard", folder, str(k)) for k in shards])
        run("combine", folder)
        done = run("publish", folder)["value"]  # audits while it writes
        wall = time.perf_counter() - started
    finally:
        for worker in workers:
            worker.close()
        shutil.rmtree(scratch)
    return {"seconds": wall, "starts": done["starts"], "digest": done["amount"],
            "peak_rss_mib": max(peaks.values()),
            "stages": {"shards": len(shards), "parallel": parallel, "seconds": seconds,
                       "peak_rss_mib": peaks}}


def compare(kind: str, size: int, messages_dir: Path, repeat: int) -> list[dict]:
    """Engine and peer on the same input, `repeat` times each, alternating (the machine's speed
    drifts); fails if they disagree. `kind`: reconcile, job, or rerun (a job again on its day)."""
    impls = {"reconcile": ("engine", "duckdb"), "job": ("job-engine", "job-duckdb"),
             "rerun": ("job-engine", "job-duckdb")}[kind]
    runs: dict[str, list[dict]] = {impl: [] for impl in impls}
    for _ in range(repeat):
        for impl in impls:
            runs[impl].append(measure_rerun(impl, messages_dir) if kind == "rerun"
                              else measure_first(impl, messages_dir) if kind == "job"
                              else measure(impl, messages_dir))
    rows = [_row(kind, size, impl.removeprefix("job-"), runs[impl]) for impl in impls]
    if rows[0]["digest"] is None or rows[0]["digest"] != rows[1]["digest"]:
        raise SystemExit(f"bench: {kind} at {size:,}: the engine and the SQL peer disagree "
                         f"({rows[0]['digest']} vs {rows[1]['digest']})")
    return rows


def sharded(size: int, messages_dir: Path, repeat: int, rows_per_shard: int,
            parallel: int) -> list[dict]:
    runs = [measure_sharded(messages_dir, rows_per_shard, parallel) for _ in range(repeat)]
    return [_row("sharded", size, "sharded", runs)]


def _row(kind: str, size: int, impl: str, runs: list[dict]) -> dict:
    """The median run's time and stages, the largest peak, and the one digest all runs share."""
    digests = {(r["starts"], r["digest"]) for r in runs}
    median = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    row = {"kind": kind, "messages": size, "impl": impl, "seconds": round(median["seconds"], 2),
           "messages_per_s": round(size / median["seconds"]),
           "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs)),
           "starts": runs[0]["starts"], "digest": digests.pop() if len(digests) == 1 else None,
           "stages": median.get("stages") or {}}
    print(f"{kind:<9} {size:>12,}  {impl:<7} {row['seconds']:>7.2f} s  "
          f"{row['messages_per_s']:>10,} msg/s  {row['peak_rss_mib']:>6,} MiB", flush=True)
    return row


def missed_targets(rows: list[dict]) -> list[str]:
    """The targets these rows miss: the sharded day's, and provider reconciliation's share."""
    missed = []
    for r in rows:
        if r["kind"] == "provider" and r["impl"] == "provider" \
                and r["messages"] >= PROVIDER_SHARE_FROM:
            billing = next(b for b in rows if b["kind"] == "provider" and b["impl"] == "billing"
                           and b["messages"] == r["messages"])
            share = r["seconds"] / billing["seconds"]
            if share > PROVIDER_SHARE:
                missed.append(f"provider reconciliation {r['messages']:,}: {share:.0%} of the "
                              f"billing day's time > {PROVIDER_SHARE:.0%}")
    for r in rows:
        seconds, mib = TARGETS.get((r["kind"], r["messages"]), (None, None))
        if seconds is not None and r["seconds"] > seconds:
            missed.append(f"{r['kind']} {r['messages']:,}: {r['seconds']:.1f} s > {seconds} s")
        if mib is not None and r["peak_rss_mib"] > mib:
            missed.append(f"{r['kind']} {r['messages']:,}: peak {r['peak_rss_mib']:,} MiB per "
                          f"process > {mib:,} MiB")
    return missed


def table(rows: list[dict]) -> str:
    out = _provider_table([r for r in rows if r["kind"] == "provider"])
    rows = [r for r in rows if r["kind"] != "provider"]
    return "\n".join(filter(None, [out, _table(rows)]))


def _provider_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    out = ["| messages per day | `billing-jobs run` (day 3) | `reconcile-provider` (day 2) | share "
           f"(target <= {PROVIDER_SHARE:.0%} from {PROVIDER_SHARE_FROM:,}) | peak RSS |",
           "|---:|---:|---:|---:|---:|"]
    for b in [r for r in rows if r["impl"] == "billing"]:
        p = next(r for r in rows if r["impl"] == "provider" and r["messages"] == b["messages"])
        out.append(f"| {b['messages']:,} | {b['seconds']:.1f} s | {p['seconds']:.1f} s | "
                   f"{p['seconds'] / b['seconds']:.0%} | {p['peak_rss_mib']:,} MiB |")
    return "\n".join(out)


def _table(rows: list[dict]) -> str:
    compared = [r for r in rows if r["kind"] != "sharded"]
    out = ["| what | messages | implementation | wall time | messages/s | peak RSS | vs peer |",
           "|---|---:|---|---:|---:|---:|---:|"] if compared else []
    for r in rows:
        if r["kind"] == "sharded":
            continue
        peer = next(p for p in rows if p["kind"] == r["kind"] and p["messages"] == r["messages"]
                    and p["impl"] == "duckdb")
        name = "vectorised engine" if r["impl"] == "engine" else "DuckDB SQL peer"
        if r["kind"] in ("job", "rerun"):
            name = "`billing-jobs run`" if r["impl"] == "engine" else "DuckDB SQL peer of the job"
        out.append(f"| {r['kind']} | {r['messages']:,} | {name} | {r['seconds']:.2f} s | "
                   f"{r['messages_per_s']:,} | {r['peak_rss_mib']:,} MiB | "
                   f"{r['seconds'] / peer['seconds']:.2f}x |")
    stages = [r for r in rows if r["kind"] == "job" and r["impl"] == "engine" and r["stages"]]
    if stages:
        out += ["", "| `billing-jobs run` stage | " + " | ".join(f"{r['messages']:,}" for r in stages)
                + " |", "|---|" + "---:|" * len(stages)]
        for stage in stages[0]["stages"]:
            cells = []
            for r in stages:
                total = sum(r["stages"].values())
                cells.append(f"{r['stages'][stage]:.1f} s ({r['stages'][stage] / total:.0%})")
            out.append(f"| {stage} | " + " | ".join(cells) + " |")
    sharded = [r for r in rows if r["kind"] == "sharded"]
    if sharded:
        out += ["", "| sharded day | shards (side by side) | wall time | messages/s | peak RSS of "
                "the largest task | cost per 1M messages |", "|---:|---:|---:|---:|---:|---:|"]
        for r in sharded:
            out.append(f"| {r['messages']:,} | {r['stages']['shards']} "
                       f"({r['stages']['parallel']}) | {r['seconds']:.1f} s | "
                       f"{r['messages_per_s']:,} | {r['peak_rss_mib']:,} MiB | "
                       f"{r['seconds'] / (r['messages'] / 1e6):.2f} s |")
        out += ["", "| task (own process) | " + " | ".join(f"{r['messages']:,}" for r in sharded)
                + " |", "|---|" + "---:|" * len(sharded)]
        for task in sharded[0]["stages"]["seconds"]:
            cells = [f"{r['stages']['seconds'][task]:.1f} s, "
                     f"{r['stages']['peak_rss_mib'][task]:,.0f} MiB" for r in sharded]
            out.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--what", choices=["reconcile", "job", "rerun", "sharded", "provider",
                                           "all"],
                        default="all")
    parser.add_argument("--rows-per-shard", type=int,
                        default=int(float(DEFAULTS["rows_per_shard"])),
                        help="sharded: BILLING_ROWS_PER_SHARD, rows of D-2..D per shard")
    parser.add_argument("--days", type=int, default=1,
                        help="days generated, the last one billed (3: a full D-2..D window)")
    parser.add_argument("--parallel", type=int, default=2,
                        help="sharded: shards run side by side (this machine has 2 cores)")
    parser.add_argument("--data", type=Path, default=DATA, help="where generated days are cached")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in (("reconcile", "job", "sharded") if args.what == "all" else (args.what,)):
        for size in args.sizes:
            if kind == "provider":
                rows += provider(size, args.seed, args.data, args.repeat)
                continue
            messages_dir = dataset(size, args.seed, args.data, args.days)
            rows += (sharded(size, messages_dir, args.repeat, args.rows_per_shard, args.parallel)
                     if kind == "sharded" else compare(kind, size, messages_dir, args.repeat))
    name = args.what if args.days == 1 else f"{args.what}-days{args.days}"
    (args.results / f"bench-{name}.json").write_text(json.dumps(rows, indent=2))
    print()
    print(table(rows))
    missed = missed_targets(rows)
    if missed:
        raise SystemExit("bench: targets missed: " + "; ".join(missed))


if __name__ == "__main__":
    main()
