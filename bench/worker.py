"""A stand-in for one LocalExecutor worker, so that the sharded bench pays per task what Airflow
pays. The worker is a long-lived process that has imported Airflow's SDK; for each task Airflow 3's
supervisor forks a child, which parses the DAG file and runs the task (executors/local_executor.py
and sdk/execution_time/supervisor.py of the installed Airflow). So does this process: it reads one
JSON line per task (`argv` for bench.task, `out` and `err` files), forks, and answers one JSON
line: the child's exit code and its own peak RSS (wait4). Our package is imported by each child,
as in Airflow; Airflow's SDK is not imported again.

    python -m bench.worker DAG_FILE     (then one task per line on stdin)
"""

from __future__ import annotations

import json
import os
import runpy
import sys
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


def main(dag_file: str) -> None:
    answers = os.fdopen(os.dup(1), "w")  # the answers only: anything else printed goes to stderr
    os.dup2(2, 1)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os._exit(_child(dag_file, job))
        _, status, usage = os.wait4(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status),
                          "maxrss_kib": usage.ru_maxrss}), file=answers, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
