"""The audit between write and publish: Great Expectations suites (`expectations/*.json`) run with
GX Core on pandas DataFrames of a staged run. A failed expectation stops the publish, and the error
says which expectation failed on which table and with what values.

Audit cost is kept in check by what is validated row by row: the day's conversation starts and
invoice lines (about one row per ten messages, and a few hundred), while the accepted messages
(up to 100M rows) are validated through a profile: one row per distinct (direction, type, status),
their counts, and the count of distinct message ids computed independently of the deduplication.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from billing_jobs.errors import AuditFailed

TABLES = ("conversation_starts", "invoice_lines", "accepted_messages", "run_totals")


def load_suite(name: str, suites: Path):
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    spec = json.loads((suites / f"{name}.json").read_text())
    suite = gx.ExpectationSuite(name=spec["name"])
    for e in spec["expectations"]:
        suite.add_expectation_configuration(ExpectationConfiguration(type=e["type"],
                                                                     kwargs=e["kwargs"]))
    return suite


def _context(project_root: Path | None):
    """A file-backed GX project (validation results kept, Data Docs buildable) when a root is
    given, else an ephemeral one."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if project_root is None:
        context = gx.get_context(mode="ephemeral")
    else:
        project_root.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=str(project_root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _checkpoint(context, name: str, suites: Path):
    """The checkpoint that validates one table, brought up to date with expectations/NAME.json
    on every audit (callers hold the project's lock, so nobody else rewrites it meanwhile)."""
    import great_expectations as gx

    source = context.data_sources.add_or_update_pandas("staged_run")
    try:
        asset = source.get_asset(name)
    except LookupError:
        asset = source.add_dataframe_asset(name)
    try:
        batch = asset.get_batch_definition(name)
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe(name)
    suite = context.suites.add_or_update(load_suite(name, suites))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite))
    return context.checkpoints.add_or_update(
        gx.Checkpoint(name=name, validation_definitions=[definition], actions=[],
                      result_format={"result_format": "SUMMARY"}))


def validate_frames(frames: dict[str, pd.DataFrame | Iterable[pd.DataFrame]], suites: Path,
                    run_name: str = "audit", project_root: Path | None = None
                    ) -> tuple[bool, list[str], dict]:
    """Run each table's suite on its frame, or on each frame of an iterable of chunks (so a large
    table is validated in bounded memory; checks across chunks belong in run_totals). Returns
    success, failure descriptions, and the GX results as JSON-able dicts (kept beside the run, and
    in the GX project if given)."""
    import great_expectations as gx

    failures, results = [], {}
    with _exclusive(project_root):
        context = _context(project_root)
        for name, frame_or_chunks in frames.items():
            checkpoint = _checkpoint(context, name, suites)
            chunks = [frame_or_chunks] if isinstance(frame_or_chunks, pd.DataFrame) \
                else frame_or_chunks
            for k, frame in enumerate(chunks):
                outcome = checkpoint.run(
                    batch_parameters={"dataframe": frame},
                    # run_time given: without it GX parses run_name as a date, and a run id such
                    # as 20260301-032011-73a4a09a reads as an offset of -73 h, which fails
                    run_id=gx.RunIdentifier(run_name=run_name if k == 0 else f"{run_name}-{k}",
                                            run_time=dt.datetime.now(dt.timezone.utc)))
                for result in outcome.run_results.values():
                    results[name if k == 0 else f"{name}-{k}"] = result.to_json_dict()
                    for r in result.results:
                        if not r.success:
                            failures.append(_describe(name, r))
    return not failures, failures, results


@contextlib.contextmanager
def _exclusive(project_root: Path | None):
    """One audit at a time per GX project: GX refuses to run a checkpoint whose configuration
    another process has just (re)created ("has changed since it has last been saved"), which is
    what days audited side by side in a backfill would otherwise do."""
    if project_root is None:
        yield
        return
    import fcntl

    project_root.mkdir(parents=True, exist_ok=True)
    with open(project_root / ".audit.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_docs(project_root: Path, suites: Path) -> Path:
    """Render GX Data Docs from the kept validation results; returns the index page."""
    context = _context(project_root)
    for name in TABLES:
        _checkpoint(context, name, suites)  # the suites' pages need them registered
    context.build_data_docs()
    return project_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


def _describe(table: str, r) -> str:
    cfg = r.expectation_config
    target = cfg.kwargs.get("column") or ", ".join(
        str(cfg.kwargs[k]) for k in ("column_A", "column_B", "column_list") if k in cfg.kwargs)
    detail = r.result or {}
    info = r.exception_info or {}
    # GX reports exceptions either flat or per metric: {metric: {"raised_exception": ...}}
    raised = [info] if "raised_exception" in info else [v for v in info.values()
                                                         if isinstance(v, dict)]
    raised = [e for e in raised if e.get("raised_exception")]
    if raised:
        what = "could not be evaluated: " + str(raised[0].get("exception_message", "?"))[:300]
    else:
        unexpected = detail.get("partial_unexpected_list") or detail.get("observed_value")
        what = f"{detail.get('unexpected_count', '?')} unexpected, e.g. {unexpected!r:.200}"
    return f"{table}: {cfg.type}({target}) failed: {what}"


def audit_frames(frames: dict[str, pd.DataFrame], suites: Path) -> None:
    """Validate in an ephemeral GX project (what is checked stays in the caller's run record);
    raise AuditFailed on any failure."""
    ok, failures, _ = validate_frames(frames, suites)
    if not ok:
        raise AuditFailed(f"{len(failures)} expectation(s) failed: " + "; ".join(failures))


def audit(frames: dict[str, pd.DataFrame], suites: Path, results_path: Path, run_name: str,
          project_root: Path | None = None) -> None:
    """Validate, keep the results as JSON at `results_path` (and in the GX project), raise
    AuditFailed on any failure."""
    ok, failures, results = validate_frames(frames, suites, run_name, project_root)
    results_path.write_text(json.dumps({"success": ok, "failures": failures, "results": results},
                                       indent=1, default=str))
    if not ok:
        raise AuditFailed(f"{len(failures)} expectation(s) failed: " + "; ".join(failures))
