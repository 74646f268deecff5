"""`--plot FILE` on plan and perf: the option, and the target checked before any work (planner/plotting.py
draws; matplotlib is imported there, only when --plot is given)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable


def add_plot_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--plot",
        metavar="FILE",
        help=f"also draw {what} into FILE, .svg or .png (needs matplotlib: pip install 'vllm-planner[plot]'; "
        "an existing FILE is replaced only with --force) (default: no drawing)",
    )
    if "--force" not in p._option_string_actions:
        p.add_argument("--force", action="store_true", help="replace an existing --plot file (default: refuse)")


def plot_target(a: argparse.Namespace) -> tuple[Path, str] | None:
    """(path, format) of --plot, checked (name, folder, --force, matplotlib); None without --plot."""
    if not getattr(a, "plot", None):
        return None
    from planner.plotting import check_target

    return check_target(a.plot, a.force)


def draw(target: tuple[Path, str] | None, write: Callable[[Any, Path, str], Path], result: Any) -> None:
    if target is not None:
        print(f"plot: {write(result, *target)}", file=sys.stderr)
