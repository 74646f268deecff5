"""`vllm-planner calibrate LOG_OR_REPORT...`: your own start-ups as the measured terms of later plans
(planner/calibrate.py derives them, planner/calibrate_io.py reads and writes the files)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(p: argparse.ArgumentParser) -> None:
    from planner.hardware import INTERCONNECT_CLASSES

    p.add_argument(
        "inputs",
        nargs="*",
        metavar="LOG_OR_REPORT",
        help="vLLM start-up logs (plain or .gz) or `vllm-planner verify --report` JSON files",
    )
    p.add_argument("--show", action="store_true", help="list the calibration overlay's sets and write nothing")
    p.add_argument(
        "--overheads",
        metavar="FILE",
        help="the overlay to write or show (default: $XDG_CONFIG_HOME/vllm-planner/overheads.yaml, "
        "else ~/.config/vllm-planner/overheads.yaml)",
    )
    p.add_argument(
        "--gpu", help="catalogue GPU the start-ups ran on (default: the GPU the log names; a report names none)"
    )
    p.add_argument("--model", help="model id, for logs that name a local path (default: the log's or report's)")
    p.add_argument(
        "--interconnect",
        choices=INTERCONNECT_CLASSES,
        help="how the TP ranks talked (default: the GPU catalogue's interconnect_class)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing file that is not a calibration overlay (default: refuse)",
    )
    p.set_defaults(func=_run)


def _run(a: argparse.Namespace) -> int:
    from planner import calibrate_io
    from planner.errors import PlannerError

    out = Path(a.overheads) if a.overheads else None
    if a.show:
        if a.inputs:
            raise PlannerError("--show lists the overlay and takes no LOG_OR_REPORT: drop one or the other")
        print("\n".join(calibrate_io.show(out)))
        return 0
    if not a.inputs:
        raise PlannerError("calibrate needs at least one start-up log or verify report (or --show)")
    lines = calibrate_io.run([Path(x) for x in a.inputs], out, a.force, a.gpu, a.model, a.interconnect)
    print("\n".join(lines))
    return 0
