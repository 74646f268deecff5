"""What would meet a target that no layout of a GPU type meets, and the one-line reason a target
is out of reach everywhere: a looser target (the physical floor), a larger TP than the nodes
allow, fp8 weights, an fp8 KV cache, another GPU of the catalogue. Each is sized again, not
guessed. Pure, over `planner.perf.sizing`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from planner.hardware import Catalogue
from planner.perf.sizing import (
    GpuSizing,
    LayoutSizing,
    SizingResult,
    Targets,
    Traffic,
    Where,
    _key,
    size_gpu,
)
from planner.plan import DEFAULT_GPUS_PER_NODE, Request


def describe(x: LayoutSizing) -> str:
    cost = "" if x.cost_per_hour_usd is None else f", ${x.cost_per_hour_usd:,.2f}/h"
    return f"{x.gpu} TP {x.tp} x PP {x.pp} x {x.replicas} replica(s) ({x.gpus} GPUs{cost})"


def _looser(o: GpuSizing, targets: Targets) -> list[str]:
    f = o.floor
    if f is None:
        return []
    out = []
    if targets.ttft_ms is not None and targets.ttft_ms <= f.ttft_ms:
        out.append(f"--ttft-ms above {f.ttft_ms:.1f} (a lone request's TTFT on {o.gpu} {f.ttft_at}, the floor there)")
    if targets.tpot_ms is not None and f.tpot_ms is not None and targets.tpot_ms <= f.tpot_ms:
        out.append(f"--tpot-ms above {f.tpot_ms:.2f} (a lone request's TPOT on {o.gpu} {f.tpot_at}, the floor there)")
    return out


def _variants(req: Request, where: Where) -> list[tuple[str, Request, Where]]:
    """(change, request, where) for each change that could lower the floor or raise the capacity."""
    out = []
    widest = where.gpu.gpus_per_node_max or DEFAULT_GPUS_PER_NODE
    if where.gpus_per_node < widest:
        out.append((f"a larger TP (nodes of {widest} GPUs)", req, Where(where.gpu, widest)))
    if req.quantization is None and req.model.spec.quant is None and where.gpu.fp8_native:
        out.append(("fp8 weights (--quantization fp8)", dataclasses.replace(req, quantization="fp8"), where))
    if req.settings.kv_cache_dtype in ("auto", "bfloat16", "float16"):
        s = dataclasses.replace(req.settings, kv_cache_dtype="fp8")
        out.append(("fp8 KV cache (--kv-cache-dtype fp8)", dataclasses.replace(req, settings=s), where))
    return out


def _another_gpu(
    req: Request, o: GpuSizing, traffic: Traffic, targets: Targets, catalogue: Catalogue, objective: Any
) -> list[str]:
    found = []
    for gpu in catalogue:
        if gpu.name != o.gpu:
            x = size_gpu(req, Where.of_gpu(gpu), traffic, targets, objective).chosen
            if x is not None:
                found.append(x)
    if not found:
        return []
    return [f"another GPU: {describe(min(found, key=_key(objective)))}"]


def suggestions(
    req: Request,
    where: Where,
    o: GpuSizing,
    traffic: Traffic,
    targets: Targets,
    catalogue: Catalogue | None,
    objective: Any = "cost",
    quick: bool = False,
) -> list[str]:
    """What would meet the targets where no layout of this GPU type does, each sized again (`quick`:
    only the looser target and more nodes, where another GPU type of the request meets them)."""
    out = []
    for change, r, w in [] if quick else _variants(req, where):
        x = size_gpu(r, w, traffic, targets, objective).chosen
        if x is not None:
            out.append(f"{change}: {describe(x)}")
    if catalogue is not None and not quick:
        out += _another_gpu(req, o, traffic, targets, catalogue, objective)
    out += [f"a looser target: {t}" for t in _looser(o, targets)]
    if where.group is not None and not o.below_floor and o.floor is not None:
        out.append("more nodes than the inventory's " + str(where.group))
    return out


def unreachable_text(r: SizingResult) -> str:
    """One line: which target is out of reach, because of which floor, and what would meet it."""
    best = min((o for o in r.options if o.floor), key=lambda o: (o.floor.tpot_ms or 0, o.floor.ttft_ms))
    f, t = best.floor, r.targets
    parts = []
    if t.tpot_ms is not None and f.tpot_ms is not None and t.tpot_ms <= f.tpot_ms:
        parts.append(
            f"--tpot-ms {t.tpot_ms:g} is unreachable on {_where(r)}, because a lone request's decode step "
            f"already takes {f.tpot_ms:.2f} ms at its fastest layout ({f.tpot_at}: the weights and KV read at "
            "the achievable bandwidth, plus the per-step floor, whatever the replica count)"
        )
    if t.ttft_ms is not None and t.ttft_ms <= f.ttft_ms:
        parts.append(
            f"--ttft-ms {t.ttft_ms:g} is unreachable on {_where(r)}, because a lone request's "
            f"{r.traffic.input_len:,}-token prefill already takes {f.ttft_ms:.1f} ms at its fastest layout "
            f"({f.ttft_at}, with no queue)"
        )
    fixes = [s for o in r.options for s in o.suggestions]
    what = "; what would: " + "; ".join(dict.fromkeys(fixes)) if fixes else ""
    return "; ".join(parts) + what


def _where(r: SizingResult) -> str:
    names = [o.gpu for o in r.options]
    return names[0] if len(names) == 1 else f"any of {', '.join(names)}"
