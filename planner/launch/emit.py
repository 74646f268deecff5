"""Write a plan's launch configs: `emit_all` (every format that can express the plan, plus plan.json)
and the `Deployment` a plan and the launch options make."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from planner.launch.deployment import Deployment, build
from planner.launch.formats import FORMATS, render
from planner.output import OutFile, write_files

OPTION_KEYS = ("replicas", "name", "model_ref", "multinode_backend", "expert_parallel", "gpus_per_node", "pin_kv_cache")


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


def out_file(filename: str, text: str) -> OutFile:
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
            files[name] = out_file(fmt.filename, render(name, d))
        except PlannerError as e:
            skipped[name] = f"skipped: {e}"
    doc = plan_json(plan_result, d)
    doc["launch"]["formats"] = {k: files[k].name if k in files else skipped[k] for k in FORMATS}
    files["plan"] = out_file("plan.json", json.dumps(doc, indent=2) + "\n")
    written = write_files(out, list(files.values()), force)
    done = dict(zip(files, map(str, written)))
    return {k: done.get(k) or skipped[k] for k in [*FORMATS, "plan"]}
