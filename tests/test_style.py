"""The code is formatted and linted as pyproject.toml configures ruff (the test extra installs it)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PATHS = ["planner", "tests", "benchmarks"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    try:
        return subprocess.run([*cmd, *args, *PATHS], cwd=REPO, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        pytest.skip("ruff is not installed: pip install -e '.[test]'")


def test_the_code_is_formatted():
    out = _ruff("format", "--check")
    if "No module named ruff" in out.stderr:
        pytest.skip("ruff is not installed: pip install -e '.[test]'")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]


def test_the_linter_passes():
    out = _ruff("check")
    if "No module named ruff" in out.stderr:
        pytest.skip("ruff is not installed: pip install -e '.[test]'")
    assert out.returncode == 0, out.stdout[-3000:]
