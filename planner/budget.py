"""vLLM's per-GPU memory budget for one model, GPU, layout and release: requested memory minus
weights, activation peak, non-torch memory and (0.20+) the CUDA-graph estimate gives the KV-cache
memory; then blocks, the KV tokens vLLM logs, maximum concurrency, the largest context that fits,
and the error vLLM would raise. Pure: numbers in, a `Budget` out.

`compute` runs in four steps: `resolve` (the release's defaults and rules for this model, device
and settings), `stages` (each pipeline stage's memory terms), `fit` (vLLM's fit check, the KV
capacity, concurrency; `budget_fit`), and the notes (`budget_notes`). The result (`budget_result`)
keeps bytes, every modelled figure an `Estimate` with its range; GiB are made only where people
read them (`Budget.to_json`, the CLI).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from planner import model_runner, uncertainty
from planner import overheads as oh
from planner.accounting import pp_layer_ranges
from planner.budget_fit import Fit, fit
from planner.budget_notes import notes as budget_notes
from planner.budget_result import (
    Budget,
    KVCapacity,
    MemoryTerms,
    Provenance,
    ServeLimits,
    StageBudget,
    Verdict,
)
from planner.budget_rules import (
    batch_defaults,
    block_size_for,
    check_release_support,
    default_max_model_len,
    hybrid_rules,
    inflight_tokens,
    mamba_cache_mode,
    mla_workspace_bytes,
    mm_dummy_length,
    resolve_lengths,
    unsplit_vision_bytes,
)
from planner.dtypes import torch_dtype_bytes
from planner.errors import PlannerError
from planner.estimate import Estimate
from planner.inspection import Inspection, Model, kv_dtype_bytes
from planner.kv_layout import LayoutRules, build_layout, dsa_token_bytes, fits, logged_tokens
from planner.models.families.nemotron_h import router_fp32_extra_bytes
from planner.models.families.qwen3_vl import init_buffer_bytes
from planner.releases import ReleaseFacts
from planner.target import Settings, Target
from planner.units import GIB, gib

__all__ = [
    "GIB",
    "Budget",
    "KVCapacity",
    "MemoryTerms",
    "Provenance",
    "ServeLimits",
    "Settings",
    "StageBudget",
    "Target",
    "Verdict",
    "batch_defaults",
    "block_size_for",
    "compute",
    "default_max_model_len",
    "fit",
    "inflight_tokens",
    "mamba_cache_mode",
    "mm_dummy_length",
    "resolve_lengths",
]


# ---- step 1: resolve ------------------------------------------------------------------------------


class Resolved(NamedTuple):
    """The release's defaults and rules applied to this model, device and settings."""

    util: float
    limit: int
    """The model's context limit under the release's RoPE rules."""
    mml: int | None
    """max_model_len; None for --max-model-len auto (fitted in `fit`)."""
    mnbt: int
    seqs: int
    block: int
    rules: LayoutRules
    kv_elem: int
    runner: str
    dummy_len: int
    mla_workspace_bytes: int
    unsplit_vision_bytes: int


def _check_inputs(model: Model, insp: Inspection, target: Target, rel: ReleaseFacts, s: Settings) -> None:
    if model.tensor_source == "none":
        raise PlannerError(
            f"weights of {model.spec.model_type} are not modelled yet: pass a checkpoint folder with "
            "safetensors (its tensors are read from the headers)"
        )
    if target.device == "cpu" and not target.cpu_kvcache_bytes and s.kv_cache_memory_bytes is None:
        raise PlannerError("the CPU backend sizes its KV cache from VLLM_CPU_KVCACHE_SPACE: pass --cpu-kvcache-gib")
    if s.kv_cache_memory_bytes is not None and not rel.kv_cache_memory_bytes_flag:
        raise PlannerError(f"--kv-cache-memory-bytes needs vLLM 0.10.2 or newer (targeting {rel.version})")
    check_release_support(insp, rel)


def _check_runner(model: Model, rel: ReleaseFacts, s: Settings, runner: str) -> None:
    spec = model.spec
    if (
        s.model_runner == "v2"
        and runner == "v2"
        and rel.v2_model_runner_rejects_align_mode
        and spec.mamba is not None
        and mamba_cache_mode(model, rel, s) == "align"
    ):
        raise PlannerError(
            f"vLLM {rel.version} refuses VLLM_USE_V2_MODEL_RUNNER=1 with prefix caching on {spec.architecture} "
            "(\"Model Runner V2 has not yet supported mamba_cache_mode='align'\"): unset it or turn "
            "prefix caching off"
        )


def resolve(model: Model, insp: Inspection, target: Target, rel: ReleaseFacts, s: Settings) -> Resolved:
    _check_inputs(model, insp, target, rel, s)
    util = s.gpu_memory_utilization if s.gpu_memory_utilization is not None else rel.gpu_memory_utilization_default
    limit = default_max_model_len(model, rel)
    mml, mnbt, seqs = resolve_lengths(model, s, target, rel)
    rules = LayoutRules(
        hybrid_group_size_max_rule=rel.hybrid_group_size_rule == "max_if_under_1.5x_min",
        hybrid_kv_cache_manager=target.device != "cpu" or rel.cpu_hybrid_kv_cache_manager,
        **hybrid_rules(model, target, rel, s, torch_dtype_bytes(insp.dtype)),
        dsa_token_bytes=dsa_token_bytes(model.spec, target.compute_capability, insp.kv_cache_dtype)
        if target.device == "cuda"
        else 0,
    )
    runner = model_runner.resolve(rel, model_runner.traits(model.spec), s.model_runner, target.device)
    _check_runner(model, rel, s, runner)
    return Resolved(
        util=util,
        limit=limit,
        mml=mml,
        mnbt=mnbt,
        seqs=seqs,
        block=block_size_for(model, target, rel, s.block_size, insp.kv_cache_dtype),
        rules=rules,
        kv_elem=kv_dtype_bytes(insp.kv_cache_dtype, insp.dtype),
        runner=runner,
        dummy_len=mm_dummy_length(rel, mml if mml is not None else limit, mnbt),
        mla_workspace_bytes=mla_workspace_bytes(model, target, rel),
        unsplit_vision_bytes=unsplit_vision_bytes(model, insp, rel, s.tp),
    )


# ---- step 2: the stages ---------------------------------------------------------------------------


class StageInput(NamedTuple):
    """What one pipeline stage's terms are computed from."""

    model: Model
    insp: Inspection
    stage: int
    """Index of the stage (0: first)."""
    layers: range
    """The decoder layers it holds."""
    target: Target
    rel: ReleaseFacts
    s: Settings
    r: Resolved


def _measured(x: StageInput) -> tuple[int, int, int, int, bool, int]:
    """(activation, non-torch, CUDA graphs, runner buffers, encoder-bound, cold extra) of one GPU stage."""
    model, insp, stage, layers, target, rel, s, r = x
    spec, runner, mnbt, seqs = model.spec, r.runner, r.mnbt, r.seqs
    c = oh.coefficients_for(rel.version, runner, target.name, target.interconnect, s.tp)
    # the V2 runner's profile run skips the multimodal encoder before 0.27, and runs it on the first stage after
    encoder = runner == "v1" or (rel.v2_model_runner_profiles_mm_encoder and stage == 0)
    shape = oh.ProfileShape.of(
        mnbt,
        seqs,
        s.tp,
        torch_dtype_bytes(insp.dtype),
        last_stage=stage == s.pp - 1,
        encoder_profiled=encoder,
        max_model_len=r.dummy_len,
        video_frames=rel.qwen2_vl_max_frames_per_video,
    )
    features = oh.features(spec, shape, rel.version)
    act = oh.activation_peak_bytes(features, c)
    non_torch = oh.non_torch_bytes(s.tp, s.pp, c, target.interconnect)
    graphs = -1  # none subtracted
    # the V2 runner's profile_cudagraph_memory() returned 0 until 0.29
    subtracted = rel.cudagraph_estimate_subtracted and (runner == "v1" or rel.v2_model_runner_profiles_cudagraphs)
    if (subtracted or s.kv_cache_memory_bytes is not None) and not s.enforce_eager:
        captured = oh.GraphShape.of(seqs, mnbt, oh.capture_max_size(rel.version, target.arch_family))
        graphs = oh.cudagraph_estimate_bytes(len(layers), c, captured, spec.hidden_size)
    buffers = 0
    # the sampler (and its buffers) lives on the last PP stage; allocated before profiling, charged from 0.27
    if runner == "v2" and rel.budget_formula == "total_consumed" and stage == s.pp - 1:
        buffers = oh.v2_runner_buffer_bytes(seqs, spec.vocab_size)
    cold = 0 if s.enforce_eager else oh.cold_start_extra_bytes(mnbt, c)
    return act, non_torch, graphs, buffers, oh.encoder_binds(features, c), cold


def _stage(x: StageInput) -> StageBudget:
    """One stage's terms. Every stage also holds what the release allocates while loading beyond the
    inspected weights (MLA workspaces, a vision tower it does not split)."""
    model, insp, stage, layers, target, rel, s, r = x
    weights = insp.weight_bytes_per_stage[stage] + r.mla_workspace_bytes + r.unsplit_vision_bytes
    weights += init_buffer_bytes(model.spec, r.mnbt, torch_dtype_bytes(insp.dtype))  # DeepStack, Gemma 4 PLE
    weights += router_fp32_extra_bytes(model.spec, layers, torch_dtype_bytes(insp.dtype), rel, target)  # Nemotron-H
    layout = build_layout(model.spec, layers, s.tp, r.kv_elem, r.block, r.rules)
    if target.device == "cpu":  # the KV pool is VLLM_CPU_KVCACHE_SPACE (or --kv-cache-memory-bytes)
        avail = s.kv_cache_memory_bytes if s.kv_cache_memory_bytes is not None else int(target.cpu_kvcache_bytes or 0)
        return StageBudget(weights, 0, 0, 0, avail, layout, max(avail // layout.bytes_per_block, 0))
    act, non_torch, graphs, buffers, encoder_bound, cold = _measured(x)
    if s.kv_cache_memory_bytes is not None:
        # vLLM skips the measured terms: the pool is exactly the configured size (they still use memory).
        avail = s.kv_cache_memory_bytes
    else:
        avail = math.ceil(target.memory_bytes * r.util) - weights - act - non_torch - max(graphs, 0) - buffers
    return StageBudget(
        weights,
        act,
        non_torch,
        max(graphs, 0),
        avail,
        layout,
        max(avail // layout.bytes_per_block, 0),
        buffers,
        encoder_bound=encoder_bound,
        cold_extra_bytes=cold,
        graphs_estimated=graphs >= 0,
    )


def stages(
    model: Model, insp: Inspection, target: Target, rel: ReleaseFacts, s: Settings, r: Resolved
) -> tuple[StageBudget, ...]:
    return tuple(
        _stage(StageInput(model, insp, i, layers, target, rel, s, r))
        for i, layers in enumerate(pp_layer_ranges(model.spec.num_layers, s.pp))
    )


# ---- step 4: the estimates and the notes ---------------------------------------------------------


def _estimated(s: Settings, target: Target, insp: Inspection, auto_len: bool, concurrency: int | None) -> list[str]:
    if target.device == "cpu":
        out = []
    elif s.kv_cache_memory_bytes is not None:  # the KV figures are exact; the overheads only check the fit
        out = ["activation_gib", "non_torch_gib", "cudagraph_gib"]
    else:
        out = [
            "activation_gib",
            "non_torch_gib",
            "cudagraph_gib",
            "kv_cache_gib",
            "num_blocks",
            "kv_cache_tokens",
            "max_concurrency",
            "max_model_len_fit",
        ]
        if auto_len:
            out.append("max_model_len")
        if concurrency:
            out.append("max_model_len_fit_concurrency")
    if "weight_bytes_per_gpu" in insp.estimated:
        out.append("weights_gib")
    return out


TERM_SOURCE = "the KV range's error, the three measured terms together (no range of their own): "


def _kv_range(
    kv_bytes: int, target: Target, rel: ReleaseFacts, s: Settings, validated: bool, cold: bool = False
) -> uncertainty.KVRange:
    return uncertainty.kv_range(kv_bytes, rel.version, target.name, target.interconnect, s.tp, validated, cold)


def _memory(bind: StageBudget, target: Target, rel: ReleaseFacts, s: Settings, r: Resolved) -> MemoryTerms:
    """The terms, the measured ones with the KV range's error; the KV memory warm and cold, exact where
    the pool is (--kv-cache-memory-bytes, the CPU backend)."""
    requested = math.ceil(target.memory_bytes * r.util)
    kv = bind.available_kv_bytes
    if target.device == "cpu":
        zero, pool = Estimate.exact(0, "bytes"), Estimate.exact(kv, "bytes")
        return MemoryTerms(target.memory_bytes, requested, bind.weights_bytes, zero, zero, zero, 0, pool, pool)
    c = oh.coefficients_for(rel.version, r.runner, target.name, target.interconnect, s.tp)
    validated = rel.version in c.validated  # fitted or checked on start-ups of this release
    rng = _kv_range(kv, target, rel, s, validated)
    err, source = kv - rng.low_bytes, TERM_SOURCE + rng.source

    def term(v: int) -> Estimate:
        return Estimate.plus_minus(v, err, "bytes", source, rng.extrapolated, floor=0)

    if s.kv_cache_memory_bytes is not None:  # the pool is exact; the terms only check the fit
        warm = cold = Estimate.exact(kv, "bytes")
    else:
        warm = Estimate(kv, rng.low_bytes, rng.high_bytes, "bytes", rng.source, rng.extrapolated)
        cold_bytes = kv - bind.cold_extra_bytes
        cr = _kv_range(cold_bytes, target, rel, s, validated, cold=True)
        low, high = min(cr.low_bytes, cold_bytes), max(cr.high_bytes, cold_bytes)
        cold = Estimate(cold_bytes, low, high, "bytes", cr.source, cr.extrapolated)
    graphs = term(bind.cudagraph_bytes) if bind.graphs_estimated else Estimate.exact(0, "bytes")
    return MemoryTerms(
        target.memory_bytes,
        requested,
        bind.weights_bytes,
        term(bind.activation_bytes),
        term(bind.non_torch_bytes),
        graphs,
        bind.runner_buffers_bytes,
        warm,
        cold,
    )


def _capacity(bind: StageBudget, kv_bytes: float, f: Fit, rel: ReleaseFacts) -> tuple[int, float]:
    """(tokens, concurrency) that `kv_bytes` of KV memory on the binding stage would give."""
    blocks = max(int(kv_bytes), 0) // bind.layout.bytes_per_block
    conc = blocks / f.per_request_blocks if f.per_request_blocks else 0.0
    return logged_tokens(bind.layout, blocks, conc, f.mml, rel.kv_tokens_formula), conc


def _kv(bind: StageBudget, mem: MemoryTerms, insp: Inspection, rel: ReleaseFacts, f: Fit) -> KVCapacity:
    """Blocks, tokens and concurrency, over the KV memory's range."""
    kv = mem.kv_cache
    tokens = logged_tokens(bind.layout, bind.num_blocks, f.concurrency, f.mml, rel.kv_tokens_formula)
    (lo_t, lo_c), (hi_t, hi_c) = (_capacity(bind, x, f, rel) for x in (kv.low, kv.high))
    cold_tokens = _capacity(bind, mem.kv_cache_cold.value, f, rel)[0] if mem.kv_cache_cold is not kv else tokens
    return KVCapacity(
        insp.kv_bytes_per_token_per_stage[f.bind_index],
        bind.layout.block_size,
        bind.num_blocks,
        Estimate(tokens, lo_t, hi_t, "tokens", kv.source, kv.extrapolated),
        cold_tokens,
        Estimate(f.concurrency, lo_c, hi_c, "requests", kv.source, kv.extrapolated),
        f.est_len,
        f.fit_len_concurrency,
    )


def _cold_fits(bind: StageBudget, mem: MemoryTerms, rel: ReleaseFacts, f: Fit, exact: bool) -> bool | None:
    """vLLM's check on the first start's KV memory; None where the KV memory is exact."""
    if exact:
        return None
    cold = int(mem.kv_cache_cold.value)
    return f.mml > 0 and fits(bind.layout, cold, f.mml, f.inflight, rel.null_block_in_fit_check, rel.fit_check)


def _range_notes(mem: MemoryTerms, kv: KVCapacity, cold_fits: bool | None, warm_fits: bool) -> list[str]:
    if cold_fits is None:
        return []
    notes = []
    if mem.kv_cache.extrapolated:
        notes.append("KV range widened: no real start-up covers this plan's release, GPU or interconnect")
    if mem.kv_cache_cold.value < mem.kv_cache.value and warm_fits:  # the release has a cold-start term
        verdict = (
            "fits too" if cold_fits else "does NOT fit: keep the torch.compile cache (VLLM_CACHE_ROOT) on a volume"
        )
        notes.append(
            f"first start on an empty torch.compile cache: KV {gib(mem.kv_cache_cold.value):.2f} GiB, "
            f"{kv.tokens_cold:,} tokens ({verdict}); the fit verdict is the warm start's"
        )
    return notes


def compute(
    model: Model, insp: Inspection, target: Target, rel: ReleaseFacts, s: Settings, concurrency: int | None = None
) -> Budget:
    """The budget of one replica's binding worker, as vLLM computes it at start-up."""
    r = resolve(model, insp, target, rel, s)
    sts = stages(model, insp, target, rel, s, r)
    f = fit(model, target, rel, s, r, sts, concurrency)
    bind = sts[f.bind_index]
    notes = list(dict.fromkeys(insp.warnings)) + ([f"auto-fit max_model_len: {f.mml:,}"] if r.mml is None else [])
    notes += budget_notes(model, target, rel, s, r, bind)
    memory = _memory(bind, target, rel, s, r)
    kv = _kv(bind, memory, insp, rel, f)
    exact = s.kv_cache_memory_bytes is not None or target.device == "cpu"  # the pool is what it is set to
    cold_fits = _cold_fits(bind, memory, rel, f, exact)
    notes += _range_notes(memory, kv, cold_fits, f.ok)
    limits = ServeLimits(s.tp, s.pp, r.util, f.mml, r.seqs, r.mnbt, r.runner, concurrency)
    estimated = tuple(_estimated(s, target, insp, r.mml is None, concurrency))
    provenance = Provenance(model.id, target.name, rel.version, estimated, tuple(notes))
    return Budget(memory, kv, limits, Verdict(f.ok, f.error, cold_fits), provenance, sts)
