"""`vllm-planner emit`: a plan's launch configs, one format or all (planner/launch/emit.py writes the
files; planner/cli/launch_options.py holds the options it shares with `plan --emit`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from planner.cli.launch_options import add_launch_options, launch_options
from planner.cli.options import add_plan_options
from planner.errors import PlannerError
from planner.launch.emit import deployment_from, emit_all, out_file
from planner.launch.formats import FORMATS, render
from planner.output import write_files


def plan_for_launch(a: argparse.Namespace) -> tuple[Any, Any]:
    """(plan result, request) from the plan options: the plan on --gpu, or the best of --inventory."""
    from planner.api import make_plan
    from planner.cli.plan import build_request
    from planner.plan import plan_inventory

    req, gpu, catalogue = build_request(a)
    if not a.inventory:
        return make_plan(req, gpu, catalogue, a.tp, a.pp, pin_kv_cache=a.pin_kv_cache), req
    from planner.hardware import parse_inventory

    plans, _ = plan_inventory(req, parse_inventory(a.inventory, catalogue), a.objective)
    if not plans:
        raise PlannerError(f"no layout fits in the inventory {a.inventory}: run `vllm-planner plan` to see why")
    return plans[0], req


def _cmd_emit(a: argparse.Namespace) -> int:
    if a.format == "all" and not a.out:
        raise PlannerError("--format all writes several files: give --out DIR")
    result, req = plan_for_launch(a)
    fits = result.budget.fits  # a misfit is a result, exit 1 as for `plan`; 2 is bad input
    if a.format == "all":
        for name, where in emit_all(result, req, a.out, a.force, **launch_options(a)).items():
            print(f"{name}: {where}")
        return 0 if fits else 1
    if not fits:
        print(
            f"vllm-planner: error: the plan does not fit ({result.budget.error or result.binding}): vLLM would not "
            "serve it as asked; apply one of the changes `vllm-planner plan` lists, then emit",
            file=sys.stderr,
        )
        return 1
    d = deployment_from(result, req, **launch_options(a))
    text = render(a.format, d)
    if a.out:
        print(write_files(Path(a.out), [out_file(FORMATS[a.format].filename, text)], a.force)[0])
    else:
        print(text, end="")
    return 0


def register(p: argparse.ArgumentParser) -> None:
    add_plan_options(p)
    p.add_argument(
        "--format",
        "-f",
        required=True,
        choices=(*FORMATS, "all"),
        help="; ".join(f"{f.name}: {f.help}" for f in FORMATS.values()) + "; all: every format that fits (needs --out)",
    )
    p.add_argument("--out", "-o", metavar="DIR", help="write the file into this folder (default: print it)")
    add_launch_options(p)
    p.set_defaults(func=_cmd_emit)
