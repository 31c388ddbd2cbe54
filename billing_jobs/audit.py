"""The audit between write and publish: Great Expectations suites (`expectations/*.json`) run with
GX Core on pandas DataFrames of a staged run. A failed expectation stops the publish, and the error
says which expectation failed on which table and with what values.

Audit cost is kept in check by what is validated row by row: the day's conversation starts and
invoice lines (about one row per ten messages, and a few hundred), while the accepted messages
(up to 100M rows) are validated through a profile: one row per distinct (direction, type, status),
their counts, and the count of distinct message ids computed independently of the deduplication.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

SUITES = Path(__file__).resolve().parent.parent / "expectations"
TABLES = ("conversation_starts", "invoice_lines", "accepted_messages", "run_totals")


class AuditFailed(Exception):
    """At least one expectation failed; the message names them."""


def load_suite(name: str):
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    spec = json.loads((SUITES / f"{name}.json").read_text())
    suite = gx.ExpectationSuite(name=spec["name"])
    for e in spec["expectations"]:
        suite.add_expectation_configuration(ExpectationConfiguration(type=e["type"],
                                                                     kwargs=e["kwargs"]))
    return suite


def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def validate_frames(frames: dict[str, pd.DataFrame]) -> tuple[bool, list[str], dict]:
    """Run each table's suite on its frame. Returns success, failure descriptions, and the full
    GX results as JSON-able dicts (kept beside the run)."""
    import great_expectations as gx

    context = _context()
    source = context.data_sources.add_pandas("staged_run")
    failures, results = [], {}
    for name, frame in frames.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = context.suites.add(load_suite(name))
        definition = gx.ValidationDefinition(name=name, data=batch, suite=suite)
        result = definition.run(batch_parameters={"dataframe": frame},
                                result_format={"result_format": "SUMMARY"})
        results[name] = result.to_json_dict()
        for r in result.results:
            if not r.success:
                failures.append(_describe(name, r))
    return not failures, failures, results


def _describe(table: str, r) -> str:
    cfg = r.expectation_config
    target = cfg.kwargs.get("column") or ", ".join(
        str(cfg.kwargs[k]) for k in ("column_A", "column_B", "column_list") if k in cfg.kwargs)
    detail = r.result or {}
    if r.exception_info and r.exception_info.get("raised_exception"):
        what = r.exception_info.get("exception_message", "exception")
    else:
        unexpected = detail.get("partial_unexpected_list") or detail.get("observed_value")
        what = f"{detail.get('unexpected_count', '?')} unexpected, e.g. {unexpected!r:.200}"
    return f"{table}: {cfg.type}({target}) failed: {what}"


def audit(frames: dict[str, pd.DataFrame], results_path: Path) -> None:
    """Validate, keep the results as JSON at `results_path`, raise AuditFailed on any failure."""
    ok, failures, results = validate_frames(frames)
    results_path.write_text(json.dumps({"success": ok, "failures": failures, "results": results},
                                       indent=1, default=str))
    if not ok:
        raise AuditFailed(f"{len(failures)} expectation(s) failed: " + "; ".join(failures))
