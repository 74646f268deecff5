"""`vllm-planner plan MODEL --request-rate R --input-len I --output-len O [--ttft-ms T] [--tpot-ms P]`:
SLO sizing, a thin layer over `planner.perf.sizing.size`. planner/cli/options.py defines the flags and
planner/cli/plan.py imports this module only when --request-rate is given (a plain `plan` never loads planner.perf).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from planner.cli.plan import build_request
from planner.errors import PlannerError
from planner.perf.sizing import (
    GpuSizing,
    LayoutSizing,
    SizingResult,
    Targets,
    Traffic,
    Where,
    size,
)


def _check(a: argparse.Namespace) -> None:
    if a.concurrency is not None:
        raise PlannerError(
            "--request-rate sizes an open-loop (Poisson) rate and --concurrency is a closed-loop load: "
            "drop one of them (`vllm-planner perf --concurrency C` estimates a closed loop)"
        )
    if a.input_len is None or a.output_len is None:
        raise PlannerError("--request-rate needs the request shape: give --input-len and --output-len (tokens)")
    if getattr(a, "replicas", None) is not None:
        raise PlannerError("--request-rate chooses the replica count: drop --replicas (or drop --request-rate)")
    if a.emit and a.inventory is None and a.gpu is None:
        raise PlannerError("--emit needs the GPU type the sizing chose: give --gpu or --inventory")
    if a.device == "cpu":
        raise PlannerError("--request-rate sizes GPUs only: drop --device cpu")
    if a.inventory and getattr(a, "gpus_per_node", None):
        raise PlannerError("--inventory gives each node's GPUs (NODESxGPUSxTYPE): drop --gpus-per-node")


def run(a: argparse.Namespace) -> int:
    """Size the traffic on --gpu or each GPU type of --inventory (only --tp/--pp layouts when given);
    exit 0 when some GPU type meets the targets, 1 when none does, 2 (PlannerError) on bad input or
    a target below every floor. --emit writes the launch files of the chosen replicas."""
    from planner.hardware import parse_inventory

    _check(a)
    traffic = Traffic(a.request_rate, a.input_len, a.output_len)
    targets = Targets(a.ttft_ms, a.tpot_ms)
    req, gpu, catalogue = build_request(a)
    wheres = (
        [Where.of_group(g) for g in parse_inventory(a.inventory, catalogue)]
        if a.inventory
        else [Where.of_gpu(gpu, getattr(a, "gpus_per_node", None))]
    )
    r = size(req, wheres, traffic, targets, a.objective or "cost", catalogue, a.tp, a.pp)
    reason = r.unreachable()
    if reason:
        raise PlannerError(reason)
    doc = r.to_json() | {"pin_kv_cache": bool(a.pin_kv_cache)}
    print(json.dumps(doc, indent=2) if a.json else text(r))
    if a.emit:
        _emit(a, r, req, catalogue, wheres)
    return 0 if r.best is not None else 1


def _emit(a: argparse.Namespace, r: SizingResult, req: Any, catalogue: Any, wheres: list[Where]) -> None:
    """The launch files of the chosen layout and replica count (planner/launch's emit path, written
    through planner/output.py: nothing is overwritten without --force)."""
    import sys

    from planner.api import make_plan
    from planner.cli.emit import launch_options
    from planner.launch.emit import emit_all

    x = r.best
    if x is None:
        raise PlannerError("--emit: no GPU type meets the targets, so there is nothing to launch (see above)")
    gpu = catalogue.get(x.gpu)
    result = make_plan(req, gpu, catalogue, x.tp, x.pp, pin_kv_cache=a.pin_kv_cache)
    options = launch_options(a) | {"replicas": x.replicas}
    if a.inventory and "gpus_per_node" not in options:
        options["gpus_per_node"] = next(w for w in wheres if w.gpu.name == x.gpu).gpus_per_node
    for name, path in emit_all(result, req, a.emit, a.force, **options).items():
        print(f"{name}: {path}", file=sys.stderr)


def _ms(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _usd(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"${v:,.{digits}f}"


def _row(o: GpuSizing) -> list[str]:
    x = o.chosen
    if x is None:
        why = o.unmet[-1].split(": ", 1)[-1] if o.unmet else "no layout fits"
        return [o.inventory or o.gpu, "-", "-", "-", "-", "-", "-", "-", "-", f"none: {why[:60]}"]
    f = x.figures
    pct = x.ttft_percentiles_ms
    tail = "" if pct is None else f" (p99 {pct['p99']:,.0f})"
    return [
        o.inventory or o.gpu,
        f"TP {x.tp} x PP {x.pp}",
        str(x.replicas),
        str(x.gpus),
        str(x.nodes),
        _usd(x.cost_per_hour_usd),
        _usd(x.cost_per_million_output_tokens_usd, 3),
        _ms(f.ttft_ms) + tail,
        _ms(f.tpot_ms, 2),
        x.binding,
    ]


def _detail(x: LayoutSizing, r: SizingResult) -> list[str]:
    f, j = x.figures, x.to_json()
    pct = x.ttft_percentiles_ms
    lines = [
        f"best: {x.replicas} replica(s) of TP {x.tp} x PP {x.pp} on {x.gpu}: {x.gpus} GPU(s) on {x.nodes} node(s)"
        + (
            ""
            if x.cost_per_hour_usd is None
            else f", {_usd(x.cost_per_hour_usd)}/h (catalogue price), "
            f"{_usd(x.cost_per_million_output_tokens_usd, 3)} per million output tokens"
        ),
        f"each replica at {x.request_rate_per_replica:,.3g} requests/s of a capacity of {x.capacity_rps:,.3g} "
        f"within the targets ({x.capacity_binding} binds above it); binding: {x.binding}",
        f"TTFT (estimated) {_ms(f.ttft_ms)} ms (range {j['ttft_ms_range'][0]:,.1f}-{j['ttft_ms_range'][1]:,.1f})"
        + (
            ""
            if pct is None
            else "; "
            + ", ".join(
                f"{k} {v:,.1f} (range {'-'.join(f'{b:,.1f}' for b in j['ttft_percentiles_ms_range'][k])})"
                for k, v in pct.items()
            )
            + " ms (Kingman prefill-queue tail, estimated; ranges: the mean's held-out error only, no measured "
            "TTFT p90/p99 bounds the tail's shape)"
        ),
        f"TPOT (estimated) {_ms(f.tpot_ms, 2)} ms"
        + ("" if j["tpot_ms_range"] is None else f" (range {j['tpot_ms_range'][0]:,.2f}-{j['tpot_ms_range'][1]:,.2f})"),
        f"floor (a lone request): TTFT {_ms(x.floor.ttft_ms)} ms, TPOT {_ms(x.floor.tpot_ms, 2)} ms; "
        f"KV pool {x.kv_cache_tokens:,} tokens, {x.max_concurrency_kv} requests of this shape at once",
        f"calibration: {x.choice.set.name}" + "".join(f"; extrapolated: {w}" for w in x.choice.extrapolated),
    ]
    return lines


def text(r: SizingResult) -> str:
    from tabulate import tabulate

    t, g = r.traffic, r.targets
    want = ", ".join(
        s for s in (g.ttft_ms and f"TTFT <= {g.ttft_ms:g} ms", g.tpot_ms and f"TPOT <= {g.tpot_ms:g} ms") if s
    )
    lines = [
        f"{r.model}, vLLM {r.vllm_version}: {t.request_rate:g} requests/s (Poisson) of {t.input_len:,} in / "
        f"{t.output_len:,} out tokens, {want or 'no latency target'}; ranked by {r.objective}",
        "",
    ]
    lines.append(
        tabulate(
            [_row(o) for o in r.options],
            disable_numparse=True,
            headers=["GPU", "layout", "replicas", "GPUs", "nodes", "$/h", "$/M out", "TTFT ms", "TPOT ms", "binding"],
        )
    )
    if r.best is not None:
        lines += [""] + _detail(r.best, r)
    for o in r.options:
        if o.chosen is None:
            lines += ["", f"{o.inventory or o.gpu}: no layout meets the targets"] + [f"  not {u}" for u in o.unmet]
            lines += [f"  would: {s}" for s in o.suggestions]
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)
