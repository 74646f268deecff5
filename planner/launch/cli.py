"""`vllm-planner emit`, and `emit_all` for `vllm-planner plan ... --emit DIR`.

Wiring (planner/cli.py): `from planner.launch.cli import register` and, in build_parser,
`register(sub, _add_plan_options, build_request)`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from planner.cliargs import int_range
from planner.errors import PlannerError
from planner.launch.deployment import MAX_REPLICAS, Deployment, build
from planner.launch.formats import FORMATS, render
from planner.output import OutFile, write_files


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


OPTION_KEYS = ("replicas", "name", "model_ref", "multinode_backend", "expert_parallel", "gpus_per_node", "pin_kv_cache")


def launch_options(a: argparse.Namespace) -> dict[str, Any]:
    """The launch options given on the command line, as `emit_all` and `build` take them."""
    return {k: getattr(a, k) for k in OPTION_KEYS if getattr(a, k, None) is not None}


def deployment_from(result: Any, req: Any, **options: Any) -> Deployment:
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise TypeError(f"unknown launch options: {', '.join(sorted(unknown))}")
    _check_name(options.get("name"))
    return build(result, req, **{k: v for k, v in options.items() if v is not None})


def _check_name(name: str | None) -> None:
    import re

    if name is not None and not re.fullmatch(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?", name):
        raise PlannerError(
            f"--name {name!r} must be a DNS label: lower-case letters, digits and '-', "
            "starting with a letter, at most 40 characters"
        )


def _out_file(filename: str, text: str) -> OutFile:
    return OutFile(filename, text, executable=filename.endswith(".sh"))


def plan_json(result: Any, d: Deployment) -> dict[str, Any]:
    if hasattr(result, "to_json"):
        out = result.to_json()
    else:
        out = result.budget.to_json()
    out["launch"] = {
        "model": d.model,
        "vllm_version": d.release.version,
        "image": d.release.docker_image,
        "replicas": d.replicas,
        "nodes_per_replica": d.nodes,
        "gpus_per_node": d.gpus_per_node,
        "multinode_backend": d.backend,
        "shm_gib": d.shm_gib,
        "cpu": d.cpu,
        "memory_gib": d.memory_gib,
        "startup_allowance_s": d.startup_s,
        "cache_gib": d.cache_gib,
        "serve_args": [[f, v, why] for f, v, why in d.config.args],
    }
    return out


def emit_all(
    plan_result: Any, request: Any, out_dir: str | os.PathLike[str], force: bool = False, **options: Any
) -> dict[str, str]:
    """Write every format that can express the plan, plus plan.json, into `out_dir`; without `force`
    nothing is written when any of those files exists.

    Returns {format: written path, or "skipped: <why>"}; options as `build` takes them (replicas,
    name, model_ref, multinode_backend, expert_parallel, gpus_per_node, pin_kv_cache)."""
    out = Path(out_dir)
    d = deployment_from(plan_result, request, **options)
    files: dict[str, OutFile] = {}
    skipped: dict[str, str] = {}
    for name, fmt in FORMATS.items():
        try:
            files[name] = _out_file(fmt.filename, render(name, d))
        except PlannerError as e:
            skipped[name] = f"skipped: {e}"
    doc = plan_json(plan_result, d)
    doc["launch"]["formats"] = {k: files[k].name if k in files else skipped[k] for k in FORMATS}
    files["plan"] = _out_file("plan.json", json.dumps(doc, indent=2) + "\n")
    written = write_files(out, list(files.values()), force)
    done = dict(zip(files, map(str, written)))
    return {k: done.get(k) or skipped[k] for k in [*FORMATS, "plan"]}


def _plan(a: argparse.Namespace, build_request: Callable[[argparse.Namespace], Any]) -> tuple[Any, Any]:
    from planner.api import make_plan
    from planner.plan import plan_inventory

    req, gpu, catalogue = build_request(a)
    if not a.inventory:
        return make_plan(req, gpu, catalogue, a.tp, a.pp, pin_kv_cache=a.pin_kv_cache), req
    from planner.hardware import parse_inventory

    plans, _ = plan_inventory(req, parse_inventory(a.inventory, catalogue), a.objective)
    if not plans:
        raise PlannerError(f"no layout fits in the inventory {a.inventory}: run `vllm-planner plan` to see why")
    return plans[0], req


def _cmd_emit(a: argparse.Namespace, build_request: Callable[[argparse.Namespace], Any]) -> int:
    if a.format == "all" and not a.out:
        raise PlannerError("--format all writes several files: give --out DIR")
    result, req = _plan(a, build_request)
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
        print(write_files(Path(a.out), [_out_file(FORMATS[a.format].filename, text)], a.force)[0])
    else:
        print(text, end="")
    return 0


def register(
    subparsers: Any,
    add_plan_options: Callable[[argparse.ArgumentParser], None],
    build_request: Callable[[argparse.Namespace], Any],
) -> argparse.ArgumentParser:
    """Add `emit` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "emit",
        help="launch configs from a plan: vllm serve, config YAML, python, docker, "
        "compose, Kubernetes, LeaderWorkerSet, Helm, KServe",
    )
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
    p.set_defaults(func=lambda a: _cmd_emit(a, build_request))
    return p
