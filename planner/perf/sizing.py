"""SLO sizing: how many replicas of which layout on which GPU type serve a Poisson request rate
within TTFT and TPOT targets, at the lowest cost (or the fewest GPUs). Pure over the plan's
layout search and the performance model; nothing here is a second model.

For each GPU type, every TP x PP layout of `planner.plan.candidate_layouts` that fits in memory
(PP only up to the first that fits: more stages add GPUs, not speed) gets its per-replica capacity:
the largest Poisson rate at which `service.open_loop` meets the targets, does not saturate, and
runs no more requests than the exact KV pool admits (`capacity.admission`). Replicas are then the
fewest n for which rate / n is served within them (checked at rate / n and rate / (n - 1), so a
model that is not monotone in the rate cannot round wrongly), and the figures reported are
`perf.api.estimate` at rate / n. A target at or below a layout's physical floor (a lone request's
TTFT or TPOT: no other load) is out of its reach at any replica count.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from planner.errors import PlannerError
from planner.hardware import GPU, Catalogue, NodeGroup
from planner.perf import coefficients as coef
from planner.perf.api import check_load
from planner.perf.capacity import KVAdmission, admission
from planner.perf.result import Figures
from planner.perf.service import Service, Workload, open_loop
from planner.perf.shape import step_shape
from planner.perf.ttft_percentiles import ttft_percentiles_ms
from planner.plan import (
    DEFAULT_GPUS_PER_NODE,
    Request,
    _inspect,
    candidate_layouts,
    evaluate,
    replicas_in,
    why_not,
)

MAX_REPLICAS = 100_000
"""Beyond this many replicas a target is treated as out of reach (it sits just above the floor)."""
_LONE_RATE = 1e-9  # requests/s: a replica with no other load
_BISECTIONS = 6  # log-bisection steps inside a factor of 4: capacity to within 2.2% (replicas are then exact)
Objective = Literal["gpus", "cost"]
BINDINGS = ("memory", "KV capacity", "TTFT", "TPOT", "throughput")


@dataclass(frozen=True)
class Traffic:
    request_rate: float
    """Poisson arrivals, requests per second, over all replicas."""
    input_len: int
    """Prompt tokens per request."""
    output_len: int
    """Output tokens per request."""


@dataclass(frozen=True)
class Targets:
    ttft_ms: float | None = None
    """Mean time to first token, ms (None: no target)."""
    tpot_ms: float | None = None
    """Mean time per output token after the first, ms (None: no target)."""


def check_inputs(traffic: Traffic, targets: Targets) -> None:
    """One-line errors for a rate or a target that means nothing."""
    check_load(traffic.input_len, traffic.output_len, None, traffic.request_rate)
    r = traffic.request_rate
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 0:
        raise PlannerError(f"--request-rate {r!r} must be a number of requests per second above 0")
    for name, v in (("--ttft-ms", targets.ttft_ms), ("--tpot-ms", targets.tpot_ms)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0):
            raise PlannerError(f"{name} {v!r} must be a number of milliseconds above 0 (or leave it out: no target)")
    if targets.tpot_ms is not None and traffic.output_len < 2:
        raise PlannerError("--tpot-ms needs --output-len 2 or more: one output token has no time per output token")


@dataclass(frozen=True)
class Floor:
    """A lone request's figures on one layout (no other load): no replica count goes below them."""

    ttft_ms: float
    tpot_ms: float | None
    ttft_at: str = ""
    """The layout with that TTFT floor ("TP 8 x PP 1")."""
    tpot_at: str = ""
    """The layout with that TPOT floor."""


@dataclass(frozen=True)
class LayoutSizing:
    """One layout on one GPU type, sized for the traffic (every figure estimated)."""

    gpu: str
    tp: int
    pp: int
    replicas: int
    gpus: int
    """replicas x TP x PP."""
    nodes: int
    cost_per_hour_usd: float | None
    """gpus x the catalogue's indicative price per GPU-hour (None where it has none)."""
    cost_per_million_output_tokens_usd: float | None
    """cost_per_hour_usd over the output tokens an hour of the traffic carries (rate x output_len x 3600)."""
    capacity_rps: float
    """Largest Poisson rate one replica serves within the targets (estimated)."""
    capacity_binding: str
    """What stops a replica above capacity_rps: TTFT, TPOT, KV capacity or throughput (prefill saturates)."""
    binding: str
    """What sets this deployment's size: memory (one replica, the smallest layout that holds the model, has headroom), else capacity_binding."""
    floor: Floor
    request_rate_per_replica: float
    figures: Figures
    """What each replica runs at request_rate / replicas: `perf.api.estimate`'s figures (same service model)."""
    choice: coef.Choice
    """The coefficient set (and why it is extrapolated, if it is)."""
    kv_cache_tokens: int
    max_concurrency_kv: int
    ttft_percentiles_ms: dict[str, float] | None = None
    """p50/p90/p99 TTFT from the M/D/1 waiting-time distribution of the model's prefill queue."""

    def to_json(self) -> dict[str, Any]:
        p = self.figures.to_json(self.choice, self.tp * self.pp)
        keep = (
            "ttft_ms",
            "ttft_ms_range",
            "tpot_ms",
            "tpot_ms_range",
            "e2e_latency_s",
            "output_tokens_per_s",
            "output_tokens_per_s_range",
            "kv_tokens_in_use",
            "running_requests",
        )
        return {
            "gpu": self.gpu,
            "tp": self.tp,
            "pp": self.pp,
            "replicas": self.replicas,
            "gpus_used": self.gpus,
            "nodes_used": self.nodes,
            "cost_per_hour_usd": _round(self.cost_per_hour_usd, 2),
            "cost_per_million_output_tokens_usd": _round(self.cost_per_million_output_tokens_usd, 4),
            "binding": self.binding,
            "capacity_binding": self.capacity_binding,
            "capacity_per_replica_rps": round(self.capacity_rps, 4),
            "request_rate_per_replica": round(self.request_rate_per_replica, 4),
            "utilization": round(self.request_rate_per_replica / self.capacity_rps, 3),
            "floor_ttft_ms": round(self.floor.ttft_ms, 1),
            "floor_tpot_ms": _round(self.floor.tpot_ms, 2),
            **{k: p[k] for k in keep},
            "ttft_percentiles_ms": self.ttft_percentiles_ms,
            "kv_cache_tokens": self.kv_cache_tokens,
            "max_concurrency_kv": self.max_concurrency_kv,
            "calibration": self.choice.set.name,
            "extrapolated": list(self.choice.extrapolated),
        }


@dataclass(frozen=True)
class GpuSizing:
    """One GPU type: the best layout and replica count, the others that meet the targets, and why
    the rest do not."""

    gpu: str
    inventory: str | None
    """The inventory group (NODESxGPUSxTYPE), None for --gpu (as many nodes as needed)."""
    price_per_gpu_hour_usd: float | None
    chosen: LayoutSizing | None
    layouts: tuple[LayoutSizing, ...]
    """Every layout that meets the targets, best first (chosen is the first)."""
    unmet: tuple[str, ...]
    """One line per layout that does not: memory, a target at or below its floor, too few GPUs."""
    floor: Floor | None
    """The lowest floor over the layouts that fit in memory (None: none fits)."""
    below_floor: bool = False
    """Every layout that fits has a target at or below its floor (the target is out of reach here)."""
    suggestions: tuple[str, ...] = ()
    """Where no layout meets the targets: what would (larger TP, fp8 weights or KV, another GPU, a looser target)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "inventory": self.inventory,
            "meets_targets": self.chosen is not None,
            "price_per_gpu_hour_usd": self.price_per_gpu_hour_usd,
            "chosen": None if self.chosen is None else self.chosen.to_json(),
            "alternatives": [x.to_json() for x in self.layouts[1:]],
            "not_meeting": list(self.unmet),
            "floor_ttft_ms": None if self.floor is None else round(self.floor.ttft_ms, 1),
            "floor_tpot_ms": None if self.floor is None else _round(self.floor.tpot_ms, 2),
            "target_below_floor": self.below_floor,
            "suggestions": list(self.suggestions),
        }


@dataclass(frozen=True)
class SizingResult:
    model: str
    vllm_version: str
    traffic: Traffic
    targets: Targets
    objective: Objective
    options: tuple[GpuSizing, ...]
    """One per GPU type, best first by the objective; GPU types that meet no target last."""
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> LayoutSizing | None:
        return self.options[0].chosen if self.options else None

    def unreachable(self) -> str | None:
        """The one-line reason when every GPU type has the targets at or below its physical floor."""
        if not self.options or self.best is not None or not all(o.below_floor for o in self.options):
            return None
        from planner.perf.advice import unreachable_text

        return unreachable_text(self)

    def to_json(self) -> dict[str, Any]:
        t = self.traffic
        return {
            "model": self.model,
            "vllm_version": self.vllm_version,
            "request_rate": t.request_rate,
            "input_len": t.input_len,
            "output_len": t.output_len,
            "ttft_ms_target": self.targets.ttft_ms,
            "tpot_ms_target": self.targets.tpot_ms,
            "objective": self.objective,
            "meets_targets": self.best is not None,
            "gpus": [o.to_json() for o in self.options],
            "estimated": [
                "replicas",
                "gpus_used",
                "nodes_used",
                "cost_per_hour_usd",
                "cost_per_million_output_tokens_usd",
                "capacity_per_replica_rps",
                "ttft_ms",
                "tpot_ms",
                "ttft_percentiles_ms",
                "floor_ttft_ms",
                "floor_tpot_ms",
            ],
            "notes": self.notes,
        }


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


# ---- one layout -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """One fitting layout as the search sees it: a replica's service at a rate, and its floor."""

    service: Callable[[float], Service]
    adm: KVAdmission
    floor: Floor
    choice: coef.Choice


@dataclass(frozen=True)
class Unmet:
    """A layout that fits in memory but does not meet the targets."""

    line: str
    floor: Floor
    below_floor: bool


def _violation(s: Service, adm: KVAdmission, targets: Targets, output_len: int) -> str | None:
    """The first constraint a replica at this load breaks (as `estimate` judges it), or None."""
    if s.saturated:
        return "throughput"
    if s.running > adm.steady:
        return "KV capacity"
    if targets.ttft_ms is not None and s.ttft_s * 1e3 > targets.ttft_ms:
        return "TTFT"
    if targets.tpot_ms is not None and output_len > 1 and s.tpot_s * 1e3 > targets.tpot_ms:
        return "TPOT"
    return None


def _layout(req: Request, gpu: GPU, b: Any, traffic: Traffic) -> _Layout:
    choice = coef.choose(coef.bundled(), req.release.version, gpu)
    # plan's memo of the GPU-independent accounting (what perf.shape.inspection_of computes afresh)
    insp = _inspect(req, b.tp, b.pp, req.quantization, req.settings.kv_cache_dtype)
    shape = step_shape(req.model.spec, insp, gpu)
    work = Workload(traffic.input_len, traffic.output_len, b.max_num_batched_tokens)
    c = choice.set.coefficients
    lone = open_loop(shape, c, work, _LONE_RATE)
    at = f"TP {b.tp} x PP {b.pp}"
    floor = Floor(lone.ttft_s * 1e3, lone.tpot_s * 1e3 if traffic.output_len > 1 else None, at, at)
    adm = admission(b.num_blocks, b.block_size, b.max_num_seqs, traffic.input_len, traffic.output_len)
    return _Layout(lambda rate: open_loop(shape, c, work, rate), adm, floor, choice)


def _below_floor(floor: Floor, targets: Targets) -> str | None:
    if targets.ttft_ms is not None and targets.ttft_ms <= floor.ttft_ms:
        return f"TTFT {targets.ttft_ms:g} ms is at or below a lone request's {floor.ttft_ms:.1f} ms"
    if targets.tpot_ms is not None and floor.tpot_ms is not None and targets.tpot_ms <= floor.tpot_ms:
        return f"TPOT {targets.tpot_ms:g} ms is at or below a lone request's {floor.tpot_ms:.2f} ms"
    return None


def capacity(check: Callable[[float], str | None], start: float) -> tuple[float, str]:
    """(largest rate `check` passes, the constraint that fails just above it), by bracketing in
    factors of 4 from `start` and log-bisection; (0, constraint) below start / 4**12."""
    lo, hi = start, start
    if check(start) is None:
        while check(hi) is None and hi < start * 4**12:
            lo, hi = hi, hi * 4
        if check(hi) is None:
            return hi, "throughput"
    else:
        while lo > start / 4**12 and check(lo) is not None:
            hi, lo = lo, lo / 4
        if check(lo) is not None:
            return 0.0, check(lo) or "throughput"
    for _ in range(_BISECTIONS):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if check(mid) is None else (lo, mid)
    return lo, check(hi) or "throughput"


def fewest_replicas(check: Callable[[float], str | None], rate: float, per_replica: float) -> int:
    """The fewest n with check(rate / n) passing, from the capacity estimate, checked both sides."""
    n = max(1, math.ceil(rate / per_replica))
    while n > 1 and check(rate / (n - 1)) is None:
        n -= 1
    while check(rate / n) is not None and n <= MAX_REPLICAS:
        n += 1
    return n


def nodes_for(replicas: int, tp: int, pp: int, gpus_per_node: int) -> int:
    """Nodes `replicas` take: whole replicas per node, or a replica's PP stages over several nodes."""
    if tp * pp <= gpus_per_node:
        return -(-replicas // (gpus_per_node // (tp * pp)))
    return replicas * -(-pp // max(1, gpus_per_node // tp))


def size_layout(
    req: Request, gpu: GPU, b: Any, traffic: Traffic, targets: Targets, gpus_per_node: int, smallest: bool
) -> LayoutSizing | Unmet:
    """The replicas one fitting layout needs, or why it cannot meet the targets."""
    lay = _layout(req, gpu, b, traffic)
    low = _below_floor(lay.floor, targets)
    if low:
        return Unmet(f"TP {b.tp} x PP {b.pp}: {low}", lay.floor, True)
    check = functools.lru_cache(maxsize=None)(
        lambda rate: _violation(lay.service(rate), lay.adm, targets, traffic.output_len)
    )
    per_replica, why = capacity(check, traffic.request_rate)
    if per_replica <= traffic.request_rate / MAX_REPLICAS:
        return Unmet(
            f"TP {b.tp} x PP {b.pp}: would need more than {MAX_REPLICAS:,} replicas ({why} binds)", lay.floor, False
        )
    n = fewest_replicas(check, traffic.request_rate, per_replica)
    rate = traffic.request_rate / n
    gpus, price = n * b.tp * b.pp, gpu.price_per_gpu_hour_usd
    cost = price * gpus if price else None
    per_m = cost / (traffic.request_rate * traffic.output_len * 3600 / 1e6) if cost else None
    return LayoutSizing(
        gpu.name,
        b.tp,
        b.pp,
        n,
        gpus,
        nodes_for(n, b.tp, b.pp, gpus_per_node),
        cost,
        per_m,
        per_replica,
        why,
        "memory" if n == 1 and smallest else why,
        lay.floor,
        rate,
        Figures.of(lay.service(rate), traffic.output_len),
        lay.choice,
        b.kv_cache_tokens,
        lay.adm.steady,
    )


def with_percentiles(req: Request, gpu: GPU, x: LayoutSizing, traffic: Traffic) -> LayoutSizing:
    """`x` with its p50/p90/p99 TTFT (only the chosen layouts pay for the M/D/1 tail)."""
    b = evaluate(req, gpu, x.tp, x.pp)
    lay = _layout(req, gpu, b, traffic)
    s = lay.service(traffic.request_rate / x.replicas)
    fixed_ms = lay.choice.set.coefficients.request_overhead_ms + s.tpot_s * 1e3 / 2
    return dataclasses.replace(
        x, ttft_percentiles_ms=ttft_percentiles_ms(s.ttft_s * 1e3, fixed_ms, s.prefill_utilization)
    )


def _key(objective: Objective) -> Callable[[LayoutSizing], tuple]:
    inf = math.inf
    if objective == "cost":
        return lambda x: (inf if x.cost_per_hour_usd is None else x.cost_per_hour_usd, x.gpus, x.tp * x.pp)
    return lambda x: (x.gpus, inf if x.cost_per_hour_usd is None else x.cost_per_hour_usd, x.tp * x.pp)


# ---- one GPU type, and all of them ------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a GPU type runs: nodes of gpus_per_node; an inventory group bounds the nodes."""

    gpu: GPU
    gpus_per_node: int
    group: NodeGroup | None = None

    @staticmethod
    def of_gpu(gpu: GPU) -> "Where":
        return Where(gpu, gpu.gpus_per_node_max or DEFAULT_GPUS_PER_NODE)

    @staticmethod
    def of_group(group: NodeGroup) -> "Where":
        return Where(group.gpu, group.gpus_per_node, group)


def size_gpu(
    req: Request, where: Where, traffic: Traffic, targets: Targets, objective: Objective = "cost"
) -> GpuSizing:
    """The layouts of one GPU type that meet the targets, best first, and why the others do not."""
    req = dataclasses.replace(req, concurrency=None)
    met: list[LayoutSizing] = []
    unmet: list[str] = []
    floors: list[Floor] = []
    fitted = below = 0
    g = where.group
    for tp, pp in candidate_layouts(req.model, where.gpus_per_node, g.nodes if g else None):
        limit = replicas_in(g, tp, pp)[0] if g else None
        if limit == 0 or met and tp * pp >= min(x.gpus for x in met):
            continue  # one replica of this layout already takes as many GPUs as a sizing found
        b = evaluate(req, where.gpu, tp, pp)
        if not b.fits:
            unmet.append(f"TP {tp} x PP {pp}: memory: {why_not(b)}")
            continue
        fitted += 1
        if traffic.input_len + traffic.output_len > b.max_model_len:
            raise PlannerError(
                f"--input-len {traffic.input_len} + --output-len {traffic.output_len} exceeds max_model_len "
                f"{b.max_model_len:,}: raise --max-model-len or shorten the request"
            )
        r = size_layout(req, where.gpu, b, traffic, targets, where.gpus_per_node, fitted == 1)
        floors.append(r.floor)
        if isinstance(r, Unmet):
            below += r.below_floor
            unmet.append(r.line)
        elif limit is not None and r.replicas > limit:
            unmet.append(f"TP {tp} x PP {pp}: needs {r.replicas} replicas, the inventory {g} holds {limit}")
        else:
            met.append(r)
        if pp > 1:
            break
    met.sort(key=_key(objective))
    if met:
        met[0] = with_percentiles(req, where.gpu, met[0], traffic)
    return GpuSizing(
        where.gpu.name,
        str(g) if g else None,
        where.gpu.price_per_gpu_hour_usd,
        met[0] if met else None,
        tuple(met),
        tuple(unmet),
        _lowest(floors),
        below_floor=bool(fitted) and below == fitted,
    )


def _lowest(floors: list[Floor]) -> Floor | None:
    if not floors:
        return None
    ttft = min(floors, key=lambda f: f.ttft_ms)
    tpot = min(floors, key=lambda f: math.inf if f.tpot_ms is None else f.tpot_ms)
    return Floor(ttft.ttft_ms, tpot.tpot_ms, ttft.ttft_at, tpot.tpot_at)


def _rank(objective: Objective) -> Callable[[GpuSizing], tuple]:
    key = _key(objective)
    return lambda o: (0, key(o.chosen)) if o.chosen else (1, ())


def size(
    req: Request,
    wheres: list[Where],
    traffic: Traffic,
    targets: Targets,
    objective: Objective = "cost",
    catalogue: Catalogue | None = None,
) -> SizingResult:
    """Size every GPU type of `wheres` for the traffic within the targets, best first by the
    objective; a GPU type that meets no target gets what would (with `catalogue`: another GPU)."""
    from planner.perf.advice import suggestions

    check_inputs(traffic, targets)
    options = [size_gpu(req, w, traffic, targets, objective) for w in wheres]
    quick = any(o.chosen for o in options)  # another GPU type meets the targets: no re-sizing of changes
    options = [
        o
        if o.chosen
        else dataclasses.replace(
            o, suggestions=tuple(suggestions(req, w, o, traffic, targets, catalogue, objective, quick))
        )
        for w, o in zip(wheres, options)
    ]
    options.sort(key=_rank(objective))
    notes = [
        "every figure is estimated by the performance model (see `vllm-planner perf`); replicas are the fewest "
        "whose per-replica rate the model serves within the targets, and the KV pool holds"
    ]
    if objective == "cost" and any(o.chosen and o.chosen.cost_per_hour_usd is None for o in options):
        notes.append("a GPU type without a catalogue price ranks after those with one under --objective cost")
    return SizingResult(req.model.id, req.release.version, traffic, targets, objective, tuple(options), notes)
