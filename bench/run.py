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


def compare(kind: str, size: int, messages_dir: Path, repeat: int) -> list[dict]:
    """Engine and peer on the same input, `repeat` times each; fails if they disagree.
    kind "sharded" runs the job through the sharded path only (no peer)."""
    rows = []
    for impl in (("sharded",) if kind == "sharded" else ("engine", "duckdb")):
        name = impl if kind == "reconcile" else f"job-{impl}"
        runs = [measure(name, messages_dir) for _ in range(repeat)]
        digests = {(r["starts"], r["digest"]) for r in runs}
        seconds = statistics.median(r["seconds"] for r in runs)
        rows.append({
            "kind": kind, "messages": size, "impl": impl, "seconds": round(seconds, 2),
            "messages_per_s": round(size / seconds),
            "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs)),
            "starts": runs[0]["starts"], "digest": digests.pop() if len(digests) == 1 else None,
            "stages": runs[len(runs) // 2].get("stages") or {},
        })
        print(f"{kind:<9} {size:>12,}  {impl:<7} {rows[-1]['seconds']:>7.2f} s  "
              f"{rows[-1]['messages_per_s']:>10,} msg/s  {rows[-1]['peak_rss_mib']:>6,} MiB",
              flush=True)
    if kind == "sharded":
        return rows
    if rows[0]["digest"] is None or rows[0]["digest"] != rows[1]["digest"]:
        raise SystemExit(f"bench: {kind} at {size:,}: the engine and the SQL peer disagree "
                         f"({rows[0]['digest']} vs {rows[1]['digest']})")
    return rows


def table(rows: list[dict]) -> str:
    compared = [r for r in rows if r["kind"] != "sharded"]
    out = ["| what | messages | implementation | wall time | messages/s | peak RSS | vs peer |",
           "|---|---:|---|---:|---:|---:|---:|"] if compared else []
    for r in rows:
        if r["kind"] == "sharded":
            continue
        peer = next(p for p in rows if p["kind"] == r["kind"] and p["messages"] == r["messages"]
                    and p["impl"] == "duckdb")
        name = "vectorised engine" if r["impl"] == "engine" else "DuckDB SQL peer"
        if r["kind"] == "job":
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
        out += ["", "| sharded job | shards | wall time | messages/s | peak RSS (one process) |"
                " cost per 1M messages |", "|---:|---:|---:|---:|---:|---:|"]
        for r in sharded:
            out.append(f"| {r['messages']:,} | {r['stages'].get('shards', 1)} | "
                       f"{r['seconds']:.1f} s | {r['messages_per_s']:,} | {r['peak_rss_mib']:,} MiB"
                       f" | {r['seconds'] / (r['messages'] / 1e6):.2f} s |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--what", choices=["reconcile", "job", "sharded", "all"], default="all")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in (("reconcile", "job", "sharded") if args.what == "all" else (args.what,)):
        for size in args.sizes:
            rows += compare(kind, size, dataset(size, args.seed), args.repeat)
    (RESULTS / f"bench-{args.what}.json").write_text(json.dumps(rows, indent=2))
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
