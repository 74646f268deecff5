"""`vllm-planner emit`, and the launch options it shares with `vllm-planner plan ... --emit DIR`
(planner/launch/emit.py writes the files)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from planner.cli.args import int_range
from planner.cli.options import add_plan_options
from planner.errors import PlannerError
from planner.launch.deployment import MAX_REPLICAS
from planner.launch.emit import OPTION_KEYS, deployment_from, emit_all, out_file
from planner.launch.formats import FORMATS, render
from planner.output import write_files


def add_launch_options(p: argparse.ArgumentParser) -> None:
    """The options that shape a deployment beyond the memory plan (shared by `emit` and `plan --emit`);
    options the parser already has are left as they are."""
    if "--replicas" in p._option_string_actions:
        return
    p.add_argument(
        "--replicas",
        type=int_range(1, MAX_REPLICAS, "a replica count"),
        help="replicas to deploy (default: the inventory plan's, else 1)",
    )
    p.add_argument("--name", metavar="NAME", help="Kubernetes object name, a DNS label (default: vllm-<model>)")
    p.add_argument(
        "--model-ref",
        metavar="REF",
        help="the model argument written into the launch, e.g. a local path "
        "or mirror (default: the planned model's id)",
    )
    p.add_argument(
        "--multinode-backend",
        choices=("mp", "ray"),
        help="how a replica spans nodes: mp = vLLM's --nnodes flags, ray = a Ray cluster "
        "(default: mp from vLLM 0.11.1, ray before)",
    )
    p.add_argument(
        "--expert-parallel",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--enable-expert-parallel for MoE models (default: on when a MoE replica has TP > 1)",
    )
    p.add_argument(
        "--gpus-per-node",
        type=int_range(1, 1024, "a GPU count"),
        metavar="N",
        help="GPUs per node (default: the inventory's, else the GPU's typical count, 8 for most)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace files that already exist in the output folder (default: refuse and list them)",
    )


def launch_options(a: argparse.Namespace) -> dict[str, Any]:
    """The launch options given on the command line, as `emit_all` and `build` take them."""
    return {k: getattr(a, k) for k in OPTION_KEYS if getattr(a, k, None) is not None}


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
