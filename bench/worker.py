"""A stand-in for one LocalExecutor worker, so that the sharded bench pays per task what Airflow
pays. The worker is a long-lived process that has imported Airflow's SDK; for each task Airflow 3's
supervisor forks a child, which parses the DAG file and runs the task (executors/local_executor.py
and sdk/execution_time/supervisor.py of the installed Airflow). So does this process: it reads one
JSON line per task (`argv` for bench.task, `out` and `err` files), forks, and answers one JSON
line: the child's exit code and its peak RSS: the larger of its own (wait4) and the sum over it
and its descendants, sampled every 20 ms (the publish task's Great Expectations process runs
beside it, and a task is the memory of both). Our package is imported by each child, as in
Airflow; Airflow's SDK is not imported again.

    python -m bench.worker DAG_FILE     (then one task per line on stdin)
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import threading
import traceback

import airflow.sdk  # noqa: F401 - loaded in a worker before it forks a task


def _child(dag_file: str, job: dict) -> int:
    for fd, name in ((1, "out"), (2, "err")):  # what the task prints, at the descriptor level
        target = os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    try:
        runpy.run_path(dag_file)  # the task runner parses the task's DAG file first
        from bench import task

        task.main(*job["argv"])
        return 0
    except BaseException:  # noqa: BLE001 - reported to the parent as the task's failure
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _descendants(pid: int) -> set[int]:
    """`pid` and the processes below it now (a scan of /proc: ~10 ms, so not every sample)."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, more = {pid}, {pid}
    while more:
        more = {p for p, up in parent.items() if up in more} - tree
        tree |= more
    return tree


def _rss_kib(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KIB
        except (OSError, ValueError, IndexError):
            continue  # a process gone counts nothing
    return total


class _TreePeak(threading.Thread):
    """The largest resident size of a process and its descendants together, sampled every
    20 ms (the descendants looked up every 0.2 s), until `stop()`."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kib, self._stopped = pid, 0, threading.Event()

    def run(self) -> None:
        tree, samples = {self.pid}, 0
        while not self._stopped.wait(0.02):
            if samples % 10 == 0:
                tree = _descendants(self.pid)
            samples += 1
            self.peak_kib = max(self.peak_kib, _rss_kib(tree))

    def stop(self) -> int:
        self._stopped.set()
        self.join()
        return self.peak_kib


def main(dag_file: str) -> None:
    answers = os.fdopen(os.dup(1), "w")  # the answers only: anything else printed goes to stderr
    os.dup2(2, 1)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os._exit(_child(dag_file, job))
        tree = _TreePeak(pid)
        tree.start()
        _, status, usage = os.wait4(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status),
                          "maxrss_kib": max(usage.ru_maxrss, tree.stop())}),
              file=answers, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
