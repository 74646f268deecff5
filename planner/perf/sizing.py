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
from dataclasses import dataclass
from typing import Any, Callable

from planner.errors import PlannerError
from planner.hardware import GPU, Catalogue, NodeGroup
from planner.inventory import nodes_per_replica
from planner.perf import coefficients as coef
from planner.perf.api import check_load
from planner.perf.capacity import KVAdmission, admission
from planner.perf.result import Figures
from planner.perf.service import Service, Workload, open_loop
from planner.perf.shape import step_shape
from planner.perf.sizing_result import (  # noqa: F401 (re-exported: the sizing API in one place)
    BINDINGS,
    Floor,
    GpuSizing,
    LayoutSizing,
    Objective,
    SizingResult,
    Targets,
    Traffic,
)
from planner.perf.ttft_percentiles import kingman_ttft_percentiles_ms
from planner.plan import (
    DEFAULT_GPUS_PER_NODE,
    Request,
    _inspect,
    candidate_layouts,
    evaluate,
    replicas_in,
    unusable,
    why_not,
)

MAX_REPLICAS = 100_000
"""Beyond this many replicas a target is treated as out of reach (it sits just above the floor)."""
_LONE_RATE = 1e-9  # requests/s: a replica with no other load
_BISECTIONS = 6  # log-bisection steps inside a factor of 4: capacity to within 2.2% (replicas are then exact)


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
    return replicas * nodes_per_replica(tp, pp, gpus_per_node)


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
    """`x` with its p50/p90/p99 TTFT (only the chosen layouts pay for the queue's tail)."""
    b = evaluate(req, gpu, x.tp, x.pp)
    lay = _layout(req, gpu, b, traffic)
    s = lay.service(traffic.request_rate / x.replicas)
    pct = kingman_ttft_percentiles_ms(s.ttft_s * 1e3, s.ttft_wait_s * 1e3, s.prefill_utilization)
    return dataclasses.replace(x, ttft_percentiles_ms=pct)


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
    def of_gpu(gpu: GPU, gpus_per_node: int | None = None) -> "Where":
        """As many nodes as needed, of `gpus_per_node` (--gpus-per-node), else the GPU's typical node."""
        return Where(gpu, gpus_per_node or gpu.gpus_per_node_max or DEFAULT_GPUS_PER_NODE)

    @staticmethod
    def of_group(group: NodeGroup) -> "Where":
        return Where(group.gpu, group.gpus_per_node, group)


def layouts_of(req: Request, where: Where, tp: int | None = None, pp: int | None = None) -> list[tuple[int, int]]:
    """The TP x PP layouts sizing tries on one GPU type: the plan's candidates, only those with the
    given TP and/or PP when they are given (that layout alone when the candidates do not hold it)."""
    g = where.group
    every = candidate_layouts(req.model, where.gpus_per_node, g.nodes if g else None)
    if tp is None and pp is None:
        return every
    chosen = [(t, p) for t, p in every if tp in (None, t) and pp in (None, p)]
    return chosen or ([(tp or 1, pp or 1)] if (tp or 1) <= where.gpus_per_node else [])


def size_gpu(
    req: Request,
    where: Where,
    traffic: Traffic,
    targets: Targets,
    objective: Objective = "cost",
    layout: tuple[int | None, int | None] = (None, None),
) -> GpuSizing:
    """The layouts of one GPU type that meet the targets, best first, and why the others do not;
    `layout` (TP, PP) restricts them to that TP and/or PP."""
    req = dataclasses.replace(req, concurrency=None)
    why = unusable(req, where.gpu)
    if why is not None:  # vLLM cannot run the model here: no layout tried
        name, group = where.gpu.name, str(where.group) if where.group else None
        return GpuSizing(name, group, where.gpu.price_per_gpu_hour_usd, None, (), (f"any layout: {why}",), None)
    met: list[LayoutSizing] = []
    unmet: list[str] = []
    floors: list[Floor] = []
    fitted = below = 0
    g = where.group
    for tp, pp in layouts_of(req, where, *layout):
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
        smallest = fitted == 1 and layout == (None, None)  # a --tp/--pp layout is the user's, not memory's
        r = size_layout(req, where.gpu, b, traffic, targets, where.gpus_per_node, smallest)
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
    tp: int | None = None,
    pp: int | None = None,
) -> SizingResult:
    """Size every GPU type of `wheres` for the traffic within the targets, best first by the
    objective (only layouts of the given TP and/or PP when given); a GPU type that meets no target
    gets what would (with `catalogue`: another GPU)."""
    from planner.perf.advice import suggestions

    check_inputs(traffic, targets)
    options = [size_gpu(req, w, traffic, targets, objective, (tp, pp)) for w in wheres]
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
