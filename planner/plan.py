"""Layouts: choose TP x PP on a GPU type, explain why smaller layouts fail, list the smallest changes
that make a misfit fit, and plan replicas over a GPU inventory. Pure over the budget step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from planner import budget as bud
from planner.errors import PlannerError
from planner.hardware import GPU, Catalogue
from planner.inspection import Inspection, Model, check_parallel, inspect
from planner.inventory import nodes_per_replica
from planner.models.checks import sparse_attention_refusal
from planner.releases import ReleaseFacts

if TYPE_CHECKING:
    from planner.inventory import NodeGroup

DEFAULT_GPUS_PER_NODE = 8
PP_SIZES = (2, 3, 4, 6, 8, 12, 16)
"""Pipeline stages a layout search tries once TP fills a node."""


@dataclass(frozen=True)
class Request:
    """What the user asks for, apart from the layout."""

    model: Model
    """The inspected model (config, tensors, profile metadata)."""
    settings: bud.Settings
    """The vLLM settings asked for; a layout left open (tp/pp None) is searched."""
    release: ReleaseFacts
    """The facts of the target vLLM release."""
    dtype: str | None = None
    """Weight and activation dtype, as vLLM's --dtype: auto, bfloat16, float16, float32. None: auto, the
    checkpoint's; float32 checkpoints run in bfloat16."""
    quantization: str | None = None
    """vLLM's --quantization: fp8 (online), or the checkpoint's own scheme to confirm it. None: the
    checkpoint's scheme, else none."""
    concurrency: int | None = None
    """Requests that must fit at once at the full context. None: one request."""
    device: Literal["cuda", "cpu"] = "cuda"
    """Where vLLM runs: cuda (a GPU of the catalogue) or cpu (vLLM's CPU backend)."""
    cpu_kvcache_bytes: int | None = None
    """The CPU backend's KV pool (VLLM_CPU_KVCACHE_SPACE), bytes; only for device cpu."""


def target_for(gpu: GPU | None, req: Request) -> bud.Target:
    if req.device == "cpu":
        return bud.Target("cpu", memory_bytes=0, device="cpu", cpu_kvcache_bytes=req.cpu_kvcache_bytes)
    assert gpu is not None
    return bud.Target(
        gpu.name, gpu.memory_bytes, compute_capability=gpu.compute_capability, interconnect=gpu.interconnect_class
    )


_INSPECTIONS: dict[tuple, Inspection] = {}


def _inspect(req: Request, tp: int, pp: int, quant: str | None, kv: str) -> Inspection:
    """`inspect` does not depend on the GPU: a search over many GPUs and layouts reuses it."""
    key = (
        req.model.id,
        req.model.source,
        tp,
        pp,
        req.dtype,
        quant,
        kv,
        req.release.kv_cache_dtype_auto_from_checkpoint,
        req.settings.expert_parallel is True,
    )
    if key not in _INSPECTIONS:
        _INSPECTIONS[key] = inspect(
            req.model,
            tp=tp,
            pp=pp,
            dtype=req.dtype,
            quantization=quant,
            kv_cache_dtype=kv,
            kv_auto_from_checkpoint=req.release.kv_cache_dtype_auto_from_checkpoint,
            expert_parallel=req.settings.expert_parallel is True,
        )
    return _INSPECTIONS[key]


def evaluate(req: Request, gpu: GPU | None, tp: int, pp: int, **overrides: Any) -> bud.Budget:
    """The budget of one layout (settings overrides such as kv_cache_dtype or max_model_len apply)."""
    s = dataclasses.replace(req.settings, tp=tp, pp=pp, **{k: v for k, v in overrides.items() if k != "quantization"})
    insp = _inspect(req, tp, pp, overrides.get("quantization", req.quantization), s.kv_cache_dtype)
    return bud.compute(req.model, insp, target_for(gpu, req), req.release, s, req.concurrency)


def unusable(req: Request, gpu: GPU | None) -> str | None:
    """Why vLLM cannot run the model on this GPU at all (no layout helps), or None. Checked where a GPU
    enters (the asked-for one, each catalogue or inventory GPU a search tries), not in `evaluate`."""
    if gpu is None or req.device != "cuda":
        return None
    return sparse_attention_refusal(req.model.spec, gpu.name, gpu.compute_capability)


def valid_tps(model: Model, limit: int) -> list[int]:
    out = []
    for tp in range(1, limit + 1):
        try:
            check_parallel(model.spec, tp, 1)
            out.append(tp)
        except PlannerError:
            pass
    return out


def why_not(b: bud.Budget) -> str:
    """One line on what binds in a layout that does not fit."""
    if b.kv_cache_gib <= 0:
        buffers = f" + V2 runner buffers {b.runner_buffers_gib:.2f}" if b.runner_buffers_gib else ""
        return (
            f"weights {b.weights_gib:.2f} GiB + activation {b.activation_gib:.2f} + non-torch {b.non_torch_gib:.2f}"
            f" + CUDA graphs {b.cudagraph_gib:.2f}{buffers} leave no KV memory in the requested "
            f"{b.requested_gib:.2f} GiB"
        )
    if b.max_model_len_fit < b.max_model_len:
        return (
            f"max_model_len {b.max_model_len:,} does not fit: {b.kv_cache_gib:.2f} GiB of KV holds one request of "
            f"at most {b.max_model_len_fit:,} tokens"
        )
    if b.concurrency and b.max_num_seqs < b.concurrency <= b.max_concurrency:
        return (
            f"max_num_seqs {b.max_num_seqs:,} caps the requests vLLM runs at once below the requested {b.concurrency}: "
            f"pass --max-num-seqs {b.concurrency}"
        )
    return (
        f"maximum concurrency {b.max_concurrency:.2f}x at {b.max_model_len:,} tokens is below the requested "
        f"{b.concurrency}"
    )


@dataclass(frozen=True)
class Rejected:
    tp: int
    pp: int
    reason: str


def candidate_layouts(model: Model, gpus_per_node: int, max_nodes: int | None = None) -> list[tuple[int, int]]:
    """Valid (TP, PP) pairs, smallest first: TP grows inside a node; PP only spans nodes once TP
    fills one (vLLM's practice: TP over NVLink, PP across nodes)."""
    tps = valid_tps(model, gpus_per_node)
    out = [(t, 1) for t in tps]
    full = tps[-1]
    for p in PP_SIZES:
        if p <= model.spec.num_layers and (max_nodes is None or nodes_per_replica(full, p, gpus_per_node) <= max_nodes):
            out.append((full, p))
    return out


def choose_layout(
    req: Request, gpu: GPU | None, max_nodes: int | None = None
) -> tuple[bud.Budget | None, list[Rejected]]:
    """The smallest layout that fits, and why each smaller one does not."""
    gpn = gpu.gpus_per_node_max if gpu and gpu.gpus_per_node_max else DEFAULT_GPUS_PER_NODE
    rejected: list[Rejected] = []
    for tp, pp in candidate_layouts(req.model, gpn, max_nodes):
        b = evaluate(req, gpu, tp, pp)
        if b.fits:
            return b, rejected
        rejected.append(Rejected(tp, pp, why_not(b)))
    return None, rejected


class Fix(NamedTuple):
    """One change that makes a misfit fit, with the figures it gives."""

    change: str
    flags: dict[str, Any]
    budget: bud.Budget


def _shorter_dummy_video(req: Request, gpu: GPU, tp: int, pp: int, current_len: int) -> list[Fix]:
    """For video models the profile's dummy video, and so the activation peak, shrinks with
    max_model_len: try the longest context of each smaller video, then what that budget holds."""
    from planner.overheads import context_steps

    if req.release.mm_dummy_length != "max_model_len":  # the dummy does not follow the context
        return []
    for length in context_steps(req.model.spec.vision, current_len, req.release.qwen2_vl_max_frames_per_video):
        b = evaluate(req, gpu, tp, pp, max_model_len=length)
        fit = b.max_model_len_fit_concurrency if req.concurrency else b.max_model_len_fit
        if not b.fits and fit and 0 < fit < length:
            length, b = fit, evaluate(req, gpu, tp, pp, max_model_len=fit)
        if b.fits:
            return [
                Fix(
                    f"lower max_model_len to {length:,} (a shorter dummy video in vLLM's profile)",
                    {"max_model_len": length},
                    b,
                )
            ]
    return []


def _pipeline_across_nodes(req: Request, gpu: GPU, pp: int, gpn: int) -> list[Fix]:
    """When no TP inside one node fits: the node's largest TP in every stage and the fewest PP stages
    that fit, over as many nodes (vLLM's practice: TP over NVLink, PP across nodes)."""
    full = valid_tps(req.model, gpn)[-1]
    for p in PP_SIZES:
        if pp < p <= req.model.spec.num_layers:
            b = evaluate(req, gpu, full, p)
            if b.fits:
                nodes = nodes_per_replica(full, p, gpn)
                where = f"across {nodes} nodes of {gpn} GPUs" if nodes > 1 else f"in one node of {gpn} GPUs"
                return [Fix(f"pipeline parallel {p} {where} (TP {full} per stage)", {"tp": full, "pp": p}, b)]
    return []


def fixes(req: Request, gpu: GPU, tp: int, pp: int, catalogue: Catalogue) -> list[Fix]:
    """The smallest changes that make this layout fit: fp8 KV cache, a shorter context, a larger TP
    (else pipeline stages across nodes), a quantized variant, a larger GPU. Each is checked by
    recomputing the budget."""
    out: list[Fix] = []
    base = evaluate(req, gpu, tp, pp)
    if req.settings.kv_cache_dtype in ("auto", "bfloat16", "float16"):
        b = evaluate(req, gpu, tp, pp, kv_cache_dtype="fp8")
        if b.fits:
            out.append(Fix("fp8 KV cache (halves KV bytes per token)", {"kv_cache_dtype": "fp8"}, b))
    shorter = base.max_model_len_fit_concurrency if req.concurrency else base.max_model_len_fit
    if shorter and shorter > 0 and shorter < base.max_model_len:
        b = evaluate(req, gpu, tp, pp, max_model_len=shorter)
        if b.fits:
            out.append(Fix(f"lower max_model_len to {shorter:,}", {"max_model_len": shorter}, b))
    if not out or "max_model_len" not in out[-1].flags:
        out += _shorter_dummy_video(req, gpu, tp, pp, base.max_model_len)
    gpn = gpu.gpus_per_node_max or DEFAULT_GPUS_PER_NODE
    for t in valid_tps(req.model, gpn):
        if t > tp:
            b = evaluate(req, gpu, t, pp)
            if b.fits:
                out.append(Fix(f"tensor parallel {t}", {"tp": t}, b))
                break
    if not any("tp" in f.flags for f in out):
        out += _pipeline_across_nodes(req, gpu, pp, gpn)
    if req.model.spec.quant is None and not req.quantization and gpu.fp8_native:
        b = evaluate(req, gpu, tp, pp, quantization="fp8")
        if b.fits:
            out.append(Fix("fp8 weights (--quantization fp8, online)", {"quantization": "fp8"}, b))
    for other in sorted(catalogue, key=lambda g: g.memory_gib):
        if other.memory_gib > gpu.memory_gib and other.vendor == gpu.vendor and unusable(req, other) is None:
            b = evaluate(req, other, tp, pp)
            if b.fits:
                out.append(Fix(f"a larger GPU: {other.name} ({other.memory_gib:.1f} GiB)", {"gpu": other.name}, b))
                break
    return out


# ---- inventory --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InventoryPlan:
    group: NodeGroup
    budget: bud.Budget
    replicas: int
    gpus_used: int
    nodes_used: int
    cost_per_hour_usd: float | None
    """Price of the GPUs used, from the catalogue's indicative price (None when unknown)."""
    rejected: list[Rejected] = field(default_factory=list)


def replicas_in(group: NodeGroup, tp: int, pp: int) -> tuple[int, int]:
    """(replicas, nodes used): a replica's TP group stays in one node; its PP stages span `nodes_per_replica`."""
    gpn = group.gpus_per_node
    if tp > gpn:
        return 0, 0
    if tp * pp <= gpn:
        per_node = gpn // (tp * pp)
        replicas = per_node * group.nodes
        return replicas, -(-replicas // per_node) if replicas else 0
    nodes = nodes_per_replica(tp, pp, gpn)
    replicas = group.nodes // nodes
    return replicas, replicas * nodes


def plan_inventory(
    req: Request, groups: list[NodeGroup], objective: Literal["gpus", "cost"] = "gpus"
) -> tuple[list[InventoryPlan], list[tuple[NodeGroup, list[Rejected]]]]:
    """For each GPU type of the inventory: the smallest fitting layout and how many replicas fit."""
    plans, misfits = [], []
    for g in groups:
        req_g = req
        rejected: list[Rejected] = []
        chosen = None
        why = unusable(req, g.gpu)
        if why is not None:  # no layout tried (TP 0 x PP 0), with why
            misfits.append((g, [Rejected(0, 0, why)]))
            continue
        for tp, pp in candidate_layouts(req.model, g.gpus_per_node):
            n, _ = replicas_in(g, tp, pp)
            if n == 0:
                continue
            b = evaluate(req_g, g.gpu, tp, pp)
            if b.fits:
                chosen = b
                break
            rejected.append(Rejected(tp, pp, why_not(b)))
        if chosen is None:
            misfits.append((g, rejected))
            continue
        replicas, nodes = replicas_in(g, chosen.tp, chosen.pp)
        gpus = replicas * chosen.tp * chosen.pp
        price = g.gpu.price_per_gpu_hour_usd
        plans.append(
            InventoryPlan(g, chosen, replicas, gpus, nodes, round(price * gpus, 2) if price else None, rejected)
        )
    if objective == "cost":
        key = lambda p: (p.cost_per_hour_usd / p.replicas if p.cost_per_hour_usd else float("inf"), -p.replicas)  # noqa: E731
    else:
        key = lambda p: (p.budget.tp * p.budget.pp, -p.replicas)  # noqa: E731
    return sorted(plans, key=key), misfits


# ---- one plan, end to end ---------------------------------------------------------------------


class PlanResult(NamedTuple):
    """A plan for one GPU type: the budget of the chosen layout, why smaller layouts fail, the
    fixes for a misfit. (The `vllm serve` command is the launch step's: `planner.api.make_plan`.)"""

    budget: bud.Budget
    gpu: GPU | None
    rejected: list[Rejected]
    fixes: list[Fix]
    binding: str
    """What limits the plan: the KV-cache memory, the model's context limit, or the layout."""
    pin_kv_cache: bool = False
    """Whether the launch pins the KV pool to the plan's figure (--kv-cache-memory-bytes)."""

    def to_json(self) -> dict[str, Any]:
        out = self.budget.to_json()
        out["binding"] = self.binding
        out["rejected_layouts"] = [dataclasses.asdict(r) for r in self.rejected]
        out["fixes"] = [
            {
                "change": f.change,
                "flags": f.flags,
                "kv_cache_tokens": f.budget.kv_cache_tokens,
                "max_concurrency": f.budget.max_concurrency,
                "max_model_len": f.budget.max_model_len,
                "tp": f.budget.tp,
                "pp": f.budget.pp,
                "gpu": f.budget.gpu,
            }
            for f in self.fixes
        ]
        return out


def binding_constraint(b: bud.Budget, model: Model) -> str:
    if not b.fits:
        return why_not(b)
    text = (
        f"KV-cache memory: {b.kv_cache_tokens:,} tokens, {b.max_concurrency:.2f} requests of "
        f"{b.max_model_len:,} tokens at once"
    )
    if b.max_model_len_fit >= model.spec.max_model_len_default:
        text += f"; a request of the model's full context ({model.spec.max_model_len_default:,}) fits"
    return text


def make_plan(
    req: Request,
    gpu: GPU | None,
    catalogue: Catalogue | None,
    tp: int | None = None,
    pp: int | None = None,
    pin_kv_cache: bool = False,
) -> PlanResult:
    """Plan on one GPU type: the given layout, or the smallest that fits."""
    why = unusable(req, gpu)
    if why is not None:
        raise PlannerError(why)
    rejected: list[Rejected] = []
    if tp is None and pp is None and req.device != "cpu":
        b, rejected = choose_layout(req, gpu)
        if b is None:  # nothing fits: report the largest layout tried, with its fixes
            last = rejected[-1]
            b = evaluate(req, gpu, last.tp, last.pp)
    else:
        b = evaluate(req, gpu, tp or 1, pp or 1)
    found = fixes(req, gpu, b.tp, b.pp, catalogue) if not b.fits and gpu is not None and catalogue is not None else []
    return PlanResult(b, gpu, rejected, found, binding_constraint(b, req.model), pin_kv_cache)
