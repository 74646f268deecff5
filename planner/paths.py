"""Where the bundled data lives, in a source checkout and in an installed package alike."""

from __future__ import annotations

import functools
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _data_dir(name: str, package: str) -> Path:
    checkout = _REPO_ROOT / name
    if checkout.is_dir() and (_REPO_ROOT / "pyproject.toml").is_file():
        return checkout
    # Installed wheel: setuptools maps the top-level folder into the package (see pyproject.toml).
    installed = Path(__file__).resolve().parent / package.rsplit(".", 1)[-1]
    if installed.is_dir():
        return installed
    raise FileNotFoundError(f"bundled data folder {name!r} not found; reinstall vllm-planner")


def profiles_dir() -> Path:
    """The `profiles/` folder: model profiles, GPU catalogue, vLLM release facts."""
    return _data_dir("profiles", "planner._profiles")


def deploy_dir() -> Path:
    """The `deploy/` folder: deployment templates and rendered examples."""
    return _data_dir("deploy", "planner._deploy")
