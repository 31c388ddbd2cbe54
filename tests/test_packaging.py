"""Workers install the package, not the checkout: the wheel must carry the SQL and the
expectation suites, and a day must bill from the installed package alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_day_bills_from_the_wheel_alone(tmp_path):
    # built from a clean copy: setuptools would reuse a stale build/ folder of the checkout
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", ".pytest_cache",
        ".hypothesis"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                            "--wheel-dir", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("billing_jobs-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("sql/views", "sql/queries", "sql/roles"):
        expected = {f"billing_jobs/{folder}/{p.name}" for p in (ROOT / folder).glob("*.sql")}
        assert expected and expected <= names, folder
    assert {f"billing_jobs/expectations/{p.name}" for p in (ROOT / "expectations").glob("*.json")
            } <= names
    package = ROOT / "billing_jobs"
    for folder in ("statements", "migrations", "migrations/versions"):
        expected = {f"billing_jobs/{folder}/{p.name}"
                    for p in (package / folder).glob("*") if p.suffix in (".sql", ".py")}
        assert expected and expected <= names, folder

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"  # no checkout around: nothing can be found by accident
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    for key in [k for k in env if k.startswith("BILLING_")]:
        del env[key]

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "billing_jobs.cli", *args], cwd=work,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    where = subprocess.run([sys.executable, "-c", "import billing_jobs.warehouse as w, "
                            "billing_jobs.config as c; print(w.SQL_DIR); "
                            "print(c.Settings.resolve().suites)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.split() == [str(site / "billing_jobs" / "sql"),
                                    str(site / "billing_jobs" / "expectations")]
    cli("generate", "--out", "landing", "--start", "2026-03-01", "--days", "1",
        "--messages-per-day", "500")
    out = cli("run", "--date", "2026-03-01", "--source", "landing",
              "--warehouse", f"duckdb:///{work}/w.duckdb")
    assert "2026-03-01: published:" in out
