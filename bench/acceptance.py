"""`make bench`: the performance targets as one table (case, project, peer, ratio, peak RSS),
failing when one is missed. Each case is measured by `bench.run` (fresh processes, fixed seed,
median of repeats, peak RSS from wait4); a project and its peer are measured in the same run,
alternately, so their ratio does not depend on the machine's mood that hour.

    python -m bench.acceptance [--only job rerun ...] [--up-to 10000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from bench import run as bench
from billing_jobs.config import DEFAULTS

SEED = 42


@dataclass(frozen=True)
class Case:
    kind: str  # job | rerun | reconcile | sharded | provider (bench.run's kinds)
    messages: int  # per day
    what: str
    days: int = 3  # 3: a steady day, its D-2..D window full
    ratio: float | None = None  # project / peer at most
    seconds: float | None = None  # project's wall time at most
    mib: float | None = None  # peak RSS of any one process at most
    repeat: int | None = None  # None: --repeat


CASES = (
    Case("job", 1_000_000, "`billing-jobs run`, steady day, first run", ratio=1.0),
    Case("rerun", 1_000_000, "`billing-jobs run`, steady day already published", ratio=1.0),
    Case("job", 10_000_000, "`billing-jobs run`, steady day, first run", ratio=1.0),
    Case("reconcile", 10_000_000, "reconcile: read, validate, dedupe, rules", days=1, ratio=0.5),
    Case("sharded", 1_000_000, "steady day through the DAG's tasks", repeat=1),
    Case("sharded", 10_000_000, "steady day through the DAG's tasks", seconds=35, mib=4096,
         repeat=1),
    Case("sharded", 100_000_000, "steady day through the DAG's tasks", seconds=480, mib=4096,
         repeat=1),
    Case("provider", 10_000_000, "`reconcile-provider` of a day, next to billing it",
         ratio=bench.PROVIDER_SHARE),
)
# the DAG's cost per message may not grow with the day: a larger day's at most this times a
# smaller one's (the machine's noise between two single runs)
COST_SLACK = 1.10
PEERS = {"job": "DuckDB SQL job", "rerun": "DuckDB SQL job", "reconcile": "DuckDB SQL",
         "provider": "`billing-jobs run`", "sharded": "-"}


def measure(case: Case, repeat: int, data: Path) -> dict:
    """The case's project and peer rows (bench.run), as one result."""
    times = case.repeat or repeat
    if case.kind == "provider":
        peer, project = bench.provider(case.messages, SEED, data, times)
    elif case.kind == "sharded":
        messages = bench.dataset(case.messages, SEED, data, case.days)
        [project] = bench.sharded(case.messages, messages, times,
                                  int(float(DEFAULTS["rows_per_shard"])), 2)
        peer = None
    else:
        messages = bench.dataset(case.messages, SEED, data, case.days)
        project, peer = bench.compare(case.kind, case.messages, messages, times)
    return {"case": case, "project": project, "peer": peer}


def missed(results: list[dict]) -> list[str]:
    """Every target the results miss, worded for the failure message."""
    out = []
    for r in results:
        case, project, peer = r["case"], r["project"], r["peer"]
        name = f"{case.what} at {case.messages:,}"
        if case.ratio is not None and project["seconds"] / peer["seconds"] > case.ratio:
            out.append(f"{name}: {project['seconds'] / peer['seconds']:.2f}x its peer > "
                       f"{case.ratio:g}x")
        if case.seconds is not None and project["seconds"] > case.seconds:
            out.append(f"{name}: {project['seconds']:.1f} s > {case.seconds:g} s")
        if case.mib is not None and project["peak_rss_mib"] > case.mib:
            out.append(f"{name}: peak {project['peak_rss_mib']:,} MiB per process > "
                       f"{case.mib:,.0f} MiB")
    out += [f"cost per message through the DAG grows: {line}" for line in _cost_growth(results)]
    return out


def _cost(r: dict) -> float:
    """Seconds per 1M messages."""
    return r["project"]["seconds"] / (r["case"].messages / 1e6)


def _dag_days(results: list[dict]) -> list[dict]:
    return sorted((r for r in results if r["case"].kind == "sharded"),
                  key=lambda r: r["case"].messages)


def _cost_growth(results: list[dict]) -> list[str]:
    days = _dag_days(results)
    return [f"{_cost(b):.2f} s per 1M at {b['case'].messages:,} > {COST_SLACK:g} x "
            f"{_cost(a):.2f} s at {a['case'].messages:,}"
            for a, b in itertools.pairwise(days) if _cost(b) > COST_SLACK * _cost(a)]


def table(results: list[dict]) -> str:
    out = ["| case | messages/day | project | peer | ratio | peak RSS | target | met |",
           "|---|---:|---:|---:|---:|---:|---|:---:|"]
    for r in results:
        case, project, peer = r["case"], r["project"], r["peer"]
        targets = ([f"<= {case.ratio:g}x peer"] if case.ratio is not None else []) + \
                  ([f"<= {case.seconds:g} s"] if case.seconds is not None else []) + \
                  ([f"< {case.mib / 1024:g} GiB per task"] if case.mib is not None else [])
        met = "yes" if not missed([r]) else "**no**"
        out.append(
            f"| {case.what} | {case.messages:,} | {project['seconds']:.1f} s | "
            + (f"{peer['seconds']:.1f} s ({PEERS[case.kind]}) | "
               f"{project['seconds'] / peer['seconds']:.2f}x | " if peer else "- | - | ")
            + f"{project['peak_rss_mib']:,} MiB | {', '.join(targets) or '-'} | "
            + f"{met if targets else '-'} |")
    days = _dag_days(results)
    if len(days) > 1:
        costs = " -> ".join(f"{_cost(r):.2f} s" for r in days)
        sizes = " -> ".join(f"{r['case'].messages // 1_000_000:,}M" for r in days)
        out.append(f"| cost per 1M messages through the DAG's tasks | {sizes} | {costs} | - | - "
                   f"| - | falls or flat (<= +{COST_SLACK - 1:.0%}) | "
                   f"{'yes' if not _cost_growth(results) else '**no**'} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted({c.kind for c in CASES}),
                        help="only the cases of these kinds")
    parser.add_argument("--up-to", type=int, default=None, help="only days of at most this size")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=bench.DATA)
    parser.add_argument("--results", type=Path, default=bench.RESULTS)
    args = parser.parse_args()
    cases = [c for c in CASES if (not args.only or c.kind in args.only)
             and (args.up_to is None or c.messages <= args.up_to)]
    results = [measure(case, args.repeat, args.data) for case in cases]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "bench-acceptance.json").write_text(json.dumps(
        [{"case": r["case"].__dict__, "project": r["project"], "peer": r["peer"]}
         for r in results], indent=2))
    print()
    print(table(results))
    failures = missed(results)
    if failures:
        raise SystemExit("bench: targets missed: " + "; ".join(failures))


if __name__ == "__main__":
    main()
