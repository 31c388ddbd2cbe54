"""Every way a person or a script can get `billing-jobs` wrong ends the same way: a non-zero exit
and exactly one line on stderr that says what was wrong (and what to do), with no traceback, no
password and no phone number (data-contracts.md §4)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

BIN = Path(sys.executable).parent
PASSWORD = "s3cret-pw"
DAY = "2026-03-01"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from billing_jobs.generate import generate

    root = tmp_path_factory.mktemp("landing")
    generate(root, dt.date(2026, 3, 1), days=1, messages_per_day=500, seed=3)
    return root


@pytest.fixture(scope="module")
def phone_numbers(generated) -> set[str]:
    """Every contact of the landing zone in both spellings (with and without `+`)."""
    numbers = set()
    for path in (generated / "messages").rglob("*.parquet"):
        contacts = pq.read_table(path, columns=["contact_id"]).column(0).to_pylist()
        numbers |= {str(c) for c in contacts}
    return numbers | {n.lstrip("+") for n in numbers}


def run(args: list[str], env: dict, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300,
                          stdin=stdin)


def _prepare(case: str, root: Path, generated: Path, request) -> tuple[list[str], dict, str]:
    """The invocation of one case: (arguments after `billing-jobs`, environment, what stderr
    must say)."""
    landing = root / "landing"
    shutil.copytree(generated, landing)
    duck = f"duckdb:///{root}/wh.duckdb"
    env = {"BILLING_SOURCE": str(landing), "BILLING_STAGING": str(root / "staging"),
           "BILLING_WAREHOUSE_URL": duck, "BILLING_CONTACT_KEY_SECRET": "a-test-secret"}
    part = landing / "messages" / f"date={DAY}"
    cases = {
        "postgres_scheme": (["run", "--date", DAY, "--warehouse",
                             f"postgres://billing:{PASSWORD}@db.internal/billing"],
                            "write postgresql+psycopg://"),
        "unknown_dialect": (["run", "--date", DAY, "--warehouse",
                             f"oracle+nosuch://billing:{PASSWORD}@db/x"],
                            "no SQLAlchemy dialect 'oracle+nosuch' is installed"),
        "not_a_url": (["close", "--month", "2026-03", "--warehouse", "just words"],
                      "is not a SQLAlchemy URL"),
        "unreachable_warehouse": (["run", "--date", DAY, "--warehouse",
                                   f"postgresql+psycopg://billing:{PASSWORD}@127.0.0.1:9/x"],
                                  "cannot connect to the warehouse"),
        "missing_source": (["run", "--date", DAY, "--source", str(root / "nowhere")],
                           "does not exist"),
        "no_partition": (["run", "--date", "2026-03-09"], "no partition for 2026-03-09"),
        "range_backwards": (["run", "--date", "2026-03-02", "--to", DAY],
                            "--to 2026-03-01 is before --date 2026-03-02"),
        "not_a_date": (["run", "--date", "March"], "not a date (YYYY-MM-DD): 'March'"),
        "zero_shards": (["run", "--date", DAY, "--shards", "0"], "must be at least 1"),
        "rate_card_missing_a_country": (["run", "--date", DAY], "have no rate in rate_card.csv"),
        "broken_rate_card_row": (["run", "--date", DAY],
                                 "unit_price is not a decimal: 'cheap'"),
        "lock_wait_not_a_number": (["run", "--date", DAY], "BILLING_LOCK_WAIT_S"),
        "bad_schema_name": (["run", "--date", DAY], "schema name must be a lower-case identifier"),
        "unreadable_parquet": (["run", "--date", DAY], "broken.parquet: cannot read file"),
        "item_out_of_range": (["trace", "--invoice", "1", "--item", "99999999999"],
                              "at most 2**31 - 1"),
        "no_such_invoice": (["trace", "--invoice", "7"], "nothing was published there yet"),
        "no_such_invoice_item": (["trace", "--invoice", "1", "--item", "9"],
                                 "invoice 1 item 9: no such invoice item"),
        "not_a_month": (["close", "--month", "2026-13"], "not a month (YYYY-MM)"),
        "close_refused": (["close", "--month", "2026-03"], "cannot close 2026-03: 31 day(s)"),
        "close_by_a_read_only_role": (["close", "--month", "2026-03"],
                                      "the warehouse refused: InsufficientPrivilege: "
                                      "permission denied"),
        "nothing_to_export": (["export", "--month", "2026-02", "--out", str(root / "out")],
                              "no issued invoices for 2026-02"),
        "reconcile_missing_input": (["reconcile", "--messages", str(root / "nowhere"), "--out",
                                     str(root / "s.csv")], "nowhere does not exist"),
        "reconcile_unknown_output": (["reconcile", "--messages", str(part), "--out",
                                      str(root / "s.txt")], "output must end in .parquet or .csv"),
        "explain_missing_input": (["explain", "--line", "L0011", "--contact", "+1", "--messages",
                                   str(root / "nowhere")], "does not exist"),
        "prune_keep_zero": (["prune-staging", "--keep-days", "0"], "at least 1"),
        "prune_keep_not_a_number": (["prune-staging", "--keep-days", "soon"], "must be a number"),
        "audit_docs_before_any_run": (["audit-docs"], "no audit results under"),
        "unknown_command": (["bill-everything"], "invalid choice: 'bill-everything'"),
        "missing_required_flag": (["run"], "the following arguments are required: --date"),
    }
    args, says = cases[case]
    rates = landing / "reference" / "rate_card.csv"
    if case == "rate_card_missing_a_country":
        rates.write_text("\n".join(r for r in rates.read_text().splitlines()
                                   if not r.startswith("US,")) + "\n")
    elif case == "broken_rate_card_row":
        rates.write_text(rates.read_text() + "BR,user_initiated,cheap,USD,2026-01-01,\n")
    elif case == "lock_wait_not_a_number":
        env["BILLING_LOCK_WAIT_S"] = "a while"
    elif case == "bad_schema_name":
        env["BILLING_SCHEMA"] = "Billing-Schema"
    elif case == "unreadable_parquet":  # a row never stops a day; a file that cannot be opened does
        (part / "broken.parquet").write_bytes(b"PAR1 not really")
    elif case in ("no_such_invoice_item", "nothing_to_export"):  # a warehouse with a closed month
        _close_one_day_month(landing, env)
    elif case == "close_by_a_read_only_role":
        url = request.getfixturevalue("pg_url")
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        role = f"reader_{root.name[-8:].lower().replace('-', '_')}"
        with admin.connect() as conn:
            conn.execute(sa.text("create schema billing"))
            conn.execute(sa.text(f"drop role if exists {role}"))
            conn.execute(sa.text(f"create role {role} login"))
            conn.execute(sa.text(f"grant usage on schema billing to {role}"))
        admin.dispose()
        env["BILLING_WAREHOUSE_URL"] = sa.engine.make_url(url).set(username=role).render_as_string(
            hide_password=False)
        request.addfinalizer(lambda: _drop_role(url, role))
    return args, env, says


def _close_one_day_month(landing: Path, env: dict) -> None:
    """Publish 2026-03-01 and close March as if it had one day (the other days published empty)."""
    from billing_jobs import sequence
    from billing_jobs.config import Settings
    from billing_jobs.invoicing import close_month

    settings = Settings.resolve(source=env["BILLING_SOURCE"], staging=env["BILLING_STAGING"],
                                warehouse_url=env["BILLING_WAREHOUSE_URL"])
    for k in range(31):
        (landing / "messages" / f"date=2026-03-{k + 1:02d}").mkdir(exist_ok=True)
        sequence.run_day(settings, dt.date(2026, 3, k + 1))
    assert close_month(settings, dt.date(2026, 3, 1))


def _drop_role(url: str, role: str) -> None:
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("drop schema billing cascade"))
        conn.execute(sa.text(f"drop role if exists {role}"))
    admin.dispose()


CASES = ["postgres_scheme", "unknown_dialect", "not_a_url", "unreachable_warehouse",
         "missing_source", "no_partition", "range_backwards", "not_a_date", "zero_shards",
         "rate_card_missing_a_country", "broken_rate_card_row", "lock_wait_not_a_number",
         "bad_schema_name", "unreadable_parquet", "item_out_of_range", "no_such_invoice",
         "no_such_invoice_item", "not_a_month", "close_refused", "close_by_a_read_only_role",
         "nothing_to_export",
         "reconcile_missing_input", "reconcile_unknown_output", "explain_missing_input",
         "prune_keep_zero", "prune_keep_not_a_number", "audit_docs_before_any_run",
         "unknown_command", "missing_required_flag"]


@pytest.mark.parametrize("case", CASES)
def test_a_failing_invocation_says_why_in_one_line(case, tmp_path, generated, phone_numbers,
                                                    request):
    args, extra, says = _prepare(case, tmp_path, generated, request)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    proc = run([str(BIN / "billing-jobs"), *args], {**env, **extra})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert says in lines[0], lines[0]
    assert lines[0].startswith("billing-jobs"), lines[0]
    assert "Traceback" not in output
    assert PASSWORD not in output
    assert not [n for n in phone_numbers if n in output]


def test_the_battery_is_at_least_twenty_invocations():
    assert len(set(CASES)) >= 20


def test_the_summary_module_says_what_it_needs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    for args, says in (([], "the following arguments are required: query"),
                       (["no_such_query", f"duckdb:///{tmp_path}/w.duckdb"],
                        "no query 'no_such_query'")):
        proc = run([sys.executable, "-m", "billing_jobs.summary", *args], env)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode != 0 and len(lines) == 1 and says in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_explain_into_a_closed_pipe_ends_quietly(generated):
    """`billing-jobs explain … | head -1`: the reader stopped early; no traceback."""
    first = pq.read_table(next((generated / "messages").rglob("*.parquet"))).to_pylist()[0]
    line, contact = first["line_id"], first["contact_id"]
    shell = (f"{BIN / 'billing-jobs'} explain --line {line} --contact '{contact}' --messages "
             f"{generated / 'messages'} | head -c 10")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True,
                          text=True, timeout=300)
    assert len(proc.stdout) == 10
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_version_and_help_for_every_option():
    from billing_jobs.cli import parser

    proc = run([str(BIN / "billing-jobs"), "--version"], dict(os.environ))
    assert proc.returncode == 0 and proc.stdout.startswith("billing-jobs ")
    commands = parser()._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"billing-jobs {name} {action.option_strings}: no --help text"
