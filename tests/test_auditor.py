"""Great Expectations' warm worker process (auditor.py): calls cross and come back, failures
come back as one line, a dead worker is named, and the command itself never imports GX."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from billing_jobs import auditor
from billing_jobs.errors import RunError


def test_without_a_worker_the_call_runs_here():
    assert auditor.run(os.getpid) == os.getpid()


def test_with_a_worker_the_call_runs_in_it_and_returns_its_value():
    with auditor.started():
        assert auditor.run(os.getpid) != os.getpid()
        assert auditor.run(sorted, [3, 1, 2]) == [1, 2, 3]  # one worker serves every call
    assert auditor.run(os.getpid) == os.getpid()  # stopped with the block


def test_an_exception_of_ours_crosses_as_itself_and_a_foreign_one_as_one_line():
    with auditor.started():
        with pytest.raises(ValueError, match="invalid literal"):
            auditor.run(int, "x")
        with pytest.raises(RunError, match=r"^JSONDecodeError: Expecting value") as caught:
            auditor.run(json.loads, "")  # json.decoder.JSONDecodeError: not ours, not builtin
        assert "\n" not in str(caught.value)
        with pytest.raises(TypeError, match=r"cannot pickle 'module' object"):
            auditor.run(__import__, "json")  # an answer that cannot cross
        assert auditor.run(os.getpid) != os.getpid()  # and the worker serves on


def test_a_submitted_call_runs_while_the_caller_goes_on(tmp_path):
    """What lets `run_day` write the day while GX audits it: `submit` returns at once, the
    answer is waited for at `result()` and kept; an answer nobody asked for is read by the next
    call and still given to its asker."""
    flag = tmp_path / "flag"
    wait_for_flag = ["sh", "-c", (f"for i in $(seq 1000); do [ -e '{flag}' ] && echo seen && exit;"
                                  f" sleep 0.01; done; echo 'not seen in 10 s'")]
    with auditor.started():
        pending = auditor.submit(subprocess.check_output, wait_for_flag)
        flag.touch()  # a submit that waited for its call would come here only after it gave up
        assert pending.result() == b"seen\n"
        assert pending.result() == b"seen\n"  # kept
        unread = auditor.submit(int, "x")
        assert auditor.submit(os.getpid).result() != os.getpid()
        with pytest.raises(ValueError, match="invalid literal"):
            unread.result()
    assert auditor.submit(os.getpid).result() == os.getpid()  # no worker: here, when asked


def test_a_worker_that_dies_is_named_not_waited_for():
    with auditor.started():
        with pytest.raises(RunError, match=r"the audit process ended without an answer "
                                           r"\(exit code 3\)"):
            auditor.run(os._exit, 3)


def test_the_command_leaves_great_expectations_to_the_worker():
    """The point of the worker: GX's import (3-4 s of Python holding the GIL) happens in the
    other process, and the audit still runs there."""
    code = ("import sys; from billing_jobs import auditor; auditor.start();"
            "auditor.run(exec, 'import great_expectations');"
            "print(auditor.run(eval, \"'great_expectations' in __import__('sys').modules\"),"
            " 'great_expectations' in sys.modules); auditor.stop()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False"]


def test_a_run_id_that_reads_like_a_date_does_not_break_the_audit(tmp_path):
    """GX parses a run name as a date when it is given no run time: this run id read as an
    offset of -73 h and failed a passing audit (seen once in CI)."""
    import pandas as pd

    from billing_jobs import audit
    from billing_jobs.config import Settings

    totals = pd.DataFrame([{
        "rows_read": 10, "accepted_plus_duplicates_plus_quarantined": 10, "our_starts": 3,
        "matched_plus_ours_only_plus_type_mismatch": 3, "duplicates": 1, "accepted": 8,
        "distinct_conversation_ids": 8}])
    ok, failures, _ = audit.validate_frames(
        {"provider_totals": totals}, Settings.resolve(staging=str(tmp_path)).suites,
        run_name="20260301-032011-73a4a09a", project_root=tmp_path / "gx")
    assert ok and not failures
