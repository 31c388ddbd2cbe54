"""The job layer's structure: imports go one way (the layers in pyproject.toml), so no module
imports one that imports it back, and the entry points stay thin callers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_imports_follow_the_layers_without_a_cycle():
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_only_config_reads_the_billing_environment():
    """Configuration comes through `Settings` alone (cli.py's BILLING_DEBUG only shows a
    traceback)."""
    readers = [p.name for p in (ROOT / "billing_jobs").glob("*.py")
               if "os.environ" in p.read_text() and '"BILLING_' in p.read_text()]
    assert sorted(readers) == ["cli.py", "config.py"]
