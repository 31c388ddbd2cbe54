"""`make bench`: reconcile throughput and peak memory, the engine next to a DuckDB SQL peer.

For each size, one day of traffic is generated once (fixed seed, cached under var/bench/) and each
implementation reconciles it in a fresh process, several times; we report the median wall time,
messages per second and the process's peak RSS, and check that both found the same starts.

    python -m bench.run 1000000 10000000 [--repeat 3] [--seed 42]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "var" / "bench"
RESULTS = ROOT / "bench" / "results"
START = dt.date(2026, 3, 1)


def dataset(messages: int, seed: int) -> Path:
    """The cached input; a change to the generator makes a new one."""
    import hashlib

    version = hashlib.sha256((ROOT / "billing_jobs" / "generate.py").read_bytes()).hexdigest()[:8]
    folder = DATA / f"day-{messages}-seed{seed}-{version}"
    if not (folder / "messages" / f"date={START}" / "_SUCCESS").exists():
        from billing_jobs.generate import generate

        print(f"generating {messages:,} messages (seed {seed}) into {folder} ...", flush=True)
        generate(folder, START, days=1, messages_per_day=messages, seed=seed)
    return folder / "messages"


def measure(impl: str, messages_dir: Path) -> dict:
    """One run in a child process, reaped with wait4 to read that child's own peak RSS."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.reconcile_one", impl, str(messages_dir)],
            cwd=ROOT, stdout=out, stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            lines = err.read().strip().splitlines()
            raise SystemExit(f"bench: {impl} failed: {lines[-1] if lines else proc.returncode}")
        result = json.loads(out.read().strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        messages_dir = dataset(size, args.seed)
        for impl in ("engine", "duckdb"):
            runs = [measure(impl, messages_dir) for _ in range(args.repeat)]
            digests = {r["digest"] for r in runs}
            seconds = statistics.median(r["seconds"] for r in runs)
            rows.append({
                "messages": size, "impl": impl, "seconds": round(seconds, 2),
                "messages_per_s": round(size / seconds), "peak_rss_mib": round(
                    max(r["peak_rss_mib"] for r in runs)),
                "starts": runs[0]["starts"], "digest": digests.pop() if len(digests) == 1 else None,
            })
            print(f"{size:>12,}  {impl:<7} {rows[-1]['seconds']:>7.2f} s  "
                  f"{rows[-1]['messages_per_s']:>10,} msg/s  {rows[-1]['peak_rss_mib']:>6,} MiB  "
                  f"{rows[-1]['starts']:,} starts", flush=True)
        same = rows[-1]["digest"] is not None and rows[-1]["digest"] == rows[-2]["digest"]
        print(f"{'':>12}  engine and peer found {'the same' if same else 'DIFFERENT'} starts")
        if not same:
            raise SystemExit("bench: the engine and the SQL peer disagree")
    (RESULTS / "reconcile.json").write_text(json.dumps(rows, indent=2))
    print("\n| messages | implementation | wall time | messages/s | peak RSS |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        name = "vectorised engine" if r["impl"] == "engine" else "DuckDB SQL peer"
        print(f"| {r['messages']:,} | {name} | {r['seconds']:.2f} s | {r['messages_per_s']:,} | "
              f"{r['peak_rss_mib']:,} MiB |")


if __name__ == "__main__":
    main()
