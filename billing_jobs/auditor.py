"""Great Expectations in a process of its own, warmed while the run computes.

Importing GX costs 3-4 s of pure Python. In a thread beside the run it holds the GIL that the
run's own Arrow, NumPy and DuckDB calls need to start and finish: measured on a 10M-message
provider day, a preloading thread made the command no faster than importing GX at the audit. A
worker process started with the command imports it on the other core instead, and the audit is
sent to it when the run gets there: a module-level function and picklable arguments (Arrow
tables, paths, numbers; never a phone number, which never reaches an audit). `billing-jobs run`,
`restate` and `reconcile-provider` start one with the command, billing_daily's publish task with
the task. Without a worker (library calls, tests, other tasks), `run` calls the function here.

The worker answers one request at a time on its stdin and a private copy of its stdout (GX's own
prints go to stderr). The command stops it when it ends; it also ends by itself when the command's
end closes its stdin.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from billing_jobs.errors import RunError, one_line

_worker: _Worker | None = None


class _Worker:
    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "billing_jobs.auditor"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._lock = threading.RLock()  # one call at a time; submit may read the last answer
        self._pending: Pending | None = None

    def submit(self, fn: Callable, args: tuple) -> Pending:
        with self._lock:
            if self._pending is not None:  # an answer nobody asked for yet: read it first
                with contextlib.suppress(Exception):  # kept in its Pending for whoever asks
                    self._pending.result()
            try:
                pickle.dump((fn, args), self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self._proc.stdin.flush()
            except OSError:
                raise self._ended() from None
            self._pending = Pending(self._answer)
            return self._pending

    def _answer(self) -> Any:
        with self._lock:
            self._pending = None
            try:
                status, value = pickle.load(self._proc.stdout)
            except (EOFError, OSError, pickle.UnpicklingError):
                raise self._ended() from None
        if status == "error":
            raise value
        return value

    def _ended(self) -> RunError:
        return RunError(f"the audit process ended without an answer (exit code "
                        f"{self._proc.wait()})")

    def close(self) -> None:
        # no call is in flight (calls wait for their answer), so nothing is cut short; an
        # interpreter holding GX takes ~0.6 s to exit by itself, which the command need not wait
        self._proc.kill()
        self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


def start() -> None:
    """Start the worker (once per process) so that GX is imported by the time the audit runs."""
    global _worker
    if _worker is None:
        _worker = _Worker()


def stop() -> None:
    global _worker
    if _worker is not None:
        _worker, worker = None, _worker
        worker.close()


@contextlib.contextmanager
def started() -> Iterator[None]:
    """A worker for the duration of a command."""
    start()
    try:
        yield
    finally:
        stop()


def run(fn: Callable, *args) -> Any:
    """`fn(*args)` in the worker if one is started, else here. Its exception is raised here
    (as a one-line RunError if it cannot cross the process boundary)."""
    return submit(fn, *args).result()


class Pending:
    """A call on its way: `result()` waits for its answer once and keeps it (or its error)."""

    def __init__(self, answer: Callable[[], Any]) -> None:
        self._answer: Callable[[], Any] | None = answer
        self._value: Any = None
        self._error: BaseException | None = None

    def result(self) -> Any:
        if self._answer is not None:
            answer, self._answer = self._answer, None
            try:
                self._value = answer()
            except BaseException as exc:  # noqa: BLE001 - kept, raised to every asker
                self._error = exc
        if self._error is not None:
            raise self._error
        return self._value


def submit(fn: Callable, *args) -> Pending:
    """`fn(*args)` started in the worker while this process goes on; `.result()` waits for it.
    Without a worker it runs here, at `.result()`. An answer never asked for is read by the
    next call (or dropped with the worker)."""
    if _worker is None:
        return Pending(lambda: fn(*args))
    return _worker.submit(fn, args)


def _serve() -> None:
    # Ctrl-C reaches the whole process group: the command answers it and stops the worker, which
    # must not print a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever GX prints goes to stderr, never into an answer
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with contextlib.suppress(Exception):  # a broken install is reported by the call itself
        importlib.import_module("great_expectations")
    requests = sys.stdin.buffer
    while True:
        try:
            fn, args = pickle.load(requests)
        except EOFError:
            return
        try:
            answer = pickle.dumps(("ok", fn(*args)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            answer = pickle.dumps(("error", _portable(exc)), protocol=pickle.HIGHEST_PROTOCOL)
        answers.write(answer)
        answers.flush()


def _portable(exc: Exception) -> Exception:
    """The exception itself when it is ours or Python's and survives pickling; else its one-line
    message (unpickling GX's own exceptions would import GX into the command after all)."""
    if type(exc).__module__.split(".")[0] in ("billing_jobs", "builtins"):
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:  # noqa: BLE001
            pass
    return RunError(one_line(exc))


if __name__ == "__main__":
    _serve()
