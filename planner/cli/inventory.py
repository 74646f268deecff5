"""`vllm-planner plan --inventory`: the best layout per GPU type of an inventory, ranked."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from planner.cli.fmt import table
from planner.errors import PlannerError


def _unusable(rejected: list) -> bool:
    """planner.plan.plan_inventory marks a GPU vLLM cannot run the model on with one TP 0 x PP 0 entry."""
    return bool(rejected) and rejected[-1].tp == 0


def _inventory_entry(
    req: Any, catalogue: Any, group: Any, tp: int, pp: int, rejected: list, placed: Any
) -> dict[str, Any]:
    """One `plan --inventory --json` entry: the plan's keys (budget, serve command, binding, fixes) for
    the chosen layout, or for the largest layout tried where none fits, plus the inventory's keys."""
    from planner.api import make_plan

    r = make_plan(req, group.gpu, catalogue, tp, pp)
    d = r.to_json()
    d.update(
        inventory=str(group),
        replicas=placed.replicas if placed else 0,
        gpus_used=placed.gpus_used if placed else 0,
        nodes_used=placed.nodes_used if placed else 0,
        cost_per_hour=placed.cost_per_hour_usd if placed else None,
        rejected_layouts=[dataclasses.asdict(x) for x in rejected],
    )
    return d


def _unusable_entry(req: Any, group: Any, reason: str) -> dict[str, Any]:
    """The entry of a GPU type vLLM cannot run the model on: the keys of every other entry (the plan's
    figures null: there is no budget), the reason as `error` and `unusable`."""
    from planner.budget_result import Budget

    d: dict[str, Any] = dict.fromkeys(Budget.JSON_KEYS)
    d.update(model=req.model.id, gpu=group.gpu.name, vllm_version=req.release.version, fits=False, error=reason)
    d.update(estimated=[], notes=[reason], fixes=[], vllm_serve_command=None, inventory=str(group), unusable=reason)
    d.update(replicas=0, gpus_used=0, nodes_used=0, cost_per_hour=None, rejected_layouts=[], binding=None)
    return d


def _text(plans: list, misfits: list) -> str:
    rows = [
        [
            str(p.group),
            f"TP {p.budget.tp} x PP {p.budget.pp}",
            p.replicas,
            p.gpus_used,
            p.nodes_used,
            f"{p.budget.kv_cache_tokens:,}",
            f"{p.budget.max_concurrency:.2f}x",
            "-" if p.cost_per_hour_usd is None else f"${p.cost_per_hour_usd:,.2f}",
        ]
        for p in plans
    ]
    lines = [
        table(rows, ["inventory", "layout", "replicas", "GPUs", "nodes", "KV tokens/replica", "concurrency", "$/h"])
    ]
    for g, rej in misfits:
        if _unusable(rej):
            lines.append(f"{g}: cannot be used: {rej[-1].reason}")
            continue
        lines.append(
            f"{g}: no layout fits"
            + (f" (largest tried TP {rej[-1].tp} x PP {rej[-1].pp}: {rej[-1].reason})" if rej else "")
        )
    lines.append(
        "estimated: KV memory, tokens and concurrency use the modelled activation, non-torch and CUDA-graph terms"
    )
    return "\n".join(lines)


def run_inventory(a: argparse.Namespace, req: Any, catalogue: Any) -> int:
    from planner.hardware import parse_inventory
    from planner.plan import plan_inventory

    if a.tp or a.pp:
        raise PlannerError(
            "--inventory chooses TP and PP per GPU type: drop --tp/--pp, or plan one GPU type with --gpu"
        )
    groups = parse_inventory(a.inventory, catalogue)
    plans, misfits = plan_inventory(req, groups, a.objective or "gpus")
    if a.json:
        out = [_inventory_entry(req, catalogue, p.group, p.budget.tp, p.budget.pp, p.rejected, p) for p in plans]
        for g, rej in misfits:  # GPU types where no layout fits: the largest layout tried, with why and its fixes
            last = rej[-1] if rej else None
            if _unusable(rej):
                out.append(_unusable_entry(req, g, last.reason))
                continue
            out.append(_inventory_entry(req, catalogue, g, last.tp if last else 1, last.pp if last else 1, rej, None))
        print(json.dumps(out, indent=2))
    else:
        print(_text(plans, misfits))
    return 0 if plans else 1
