"""vLLM's per-GPU memory budget for one model, GPU, layout and release: requested memory minus
weights, activation peak, non-torch memory and (0.20+) the CUDA-graph estimate gives the KV-cache
memory; then blocks, the KV tokens vLLM logs, maximum concurrency, the largest context that fits,
and the error vLLM would raise. Pure: numbers in, a `Budget` out.

`compute` runs in four steps: `resolve` (the release's defaults and rules for this model, device
and settings), `stages` (each pipeline stage's memory terms), `fit` (vLLM's fit check, the KV
capacity, concurrency), and the notes (`budget_notes`). The result keeps bytes; GiB are made only
where people read them (`Budget.to_json`, the CLI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from planner import model_runner, uncertainty
from planner import overheads as oh
from planner.accounting import pp_layer_ranges
from planner.budget_notes import notes as budget_notes
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
from planner.inspection import Inspection, Model, kv_dtype_bytes
from planner.kv_layout import (
    KVLayout,
    LayoutRules,
    blocks_per_request,
    build_layout,
    fits,
    logged_tokens,
    max_fitting_len,
    needed_bytes,
)
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
    "inflight_tokens",
    "mamba_cache_mode",
    "mm_dummy_length",
    "resolve_lengths",
]


# ---- the result ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageBudget:
    """One pipeline stage's worker (all its TP ranks hold the same)."""

    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cudagraph_bytes: int
    available_kv_bytes: int
    layout: KVLayout
    num_blocks: int
    runner_buffers_bytes: int = 0
    """V2 model runner's sampler buffers, charged from 0.27 (see overheads.v2_runner_buffer_bytes)."""
    encoder_bound: bool = False
    """The multimodal encoder's profile pass, not the decoder's, sets the activation peak."""
    cold_extra_bytes: int = 0
    """What a first start on an empty torch.compile cache adds to the profile peak (estimated; 0 eager)."""


@dataclass(frozen=True)
class MemoryTerms:
    """vLLM's budget terms on one GPU of the binding stage, in bytes."""

    total_bytes: int
    """Total device memory as torch reports it."""
    requested_bytes: int
    """ceil(total x gpu_memory_utilization): what vLLM may use."""
    weights_bytes: int
    """"Model loading took": the weights as vLLM holds them, plus load-time workspaces."""
    activation_bytes: int
    """Torch peak increase of the profile run (estimated)."""
    non_torch_bytes: int
    """Memory outside torch's allocator created after the start-up snapshot (estimated)."""
    cudagraph_bytes: int
    """The CUDA-graph estimate subtracted from the budget; 0 where the release or runner does not (estimated)."""
    runner_buffers_bytes: int
    """The V2 runner's sampler and bit-mask buffers where the release charges them (0.27+)."""
    kv_cache_bytes: int
    """"Available KV cache memory": requested minus every term above (or the pinned pool)."""


@dataclass(frozen=True)
class KVCapacity:
    """What the KV pool holds: blocks, the tokens vLLM logs, concurrency, the longest context."""

    bytes_per_token: int
    """KV bytes per token on one GPU of the binding stage."""
    block_size: int
    """Tokens per block (attention block size; raised for hybrids)."""
    num_blocks: int
    tokens: int
    """"GPU KV cache size: N tokens" as the release computes it."""
    max_concurrency: float
    """Requests of max_model_len tokens the blocks hold at once (unrounded)."""
    max_model_len_fit: int
    """Largest max_model_len for which one request fits (vLLM's "estimated maximum model length")."""
    max_model_len_fit_concurrency: int | None = None
    """Largest max_model_len at which the asked concurrency fits together; None when not asked."""


@dataclass(frozen=True)
class KVSpread:
    """How far the KV figures can be off, and the first boot's (issue #11): the range of the KV memory
    from cross-validated error on real start-ups (planner/uncertainty.py), with the tokens and the
    concurrency it implies, and the figures of a start on an empty torch.compile cache."""

    kv_bytes_range: tuple[int, int]
    tokens_range: tuple[int, int]
    concurrency_range: tuple[float, float]
    cold_kv_bytes: int
    cold_tokens: int
    cold_fits: bool
    extrapolated: bool
    """The plan lies outside what the start-ups cover (the range is widened)."""


@dataclass(frozen=True)
class ServeLimits:
    """The resolved `vllm serve` settings the budget was computed for."""

    tp: int
    pp: int
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    model_runner: str
    """The GPU model runner vLLM starts ("v1" or "v2"; "v1" on the CPU backend)."""
    concurrency: int | None = None
    """The concurrency the plan was asked to hold, if any."""


@dataclass(frozen=True)
class Verdict:
    """Whether vLLM starts with this budget, and if not, vLLM's own message."""

    fits: bool
    error: str | None


@dataclass(frozen=True)
class Provenance:
    """What the budget is for and how far to trust it."""

    model: str
    gpu: str
    vllm_version: str
    estimated: tuple[str, ...]
    """The `--json` keys whose figures are modelled, not exact."""
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Budget:
    """The figures vLLM prints at start-up, predicted; per GPU of the binding stage. Nested values in
    bytes; the flat GiB properties below are the `--json` keys (rounded to 0.01 GiB)."""

    memory: MemoryTerms
    kv: KVCapacity
    limits: ServeLimits
    verdict: Verdict
    provenance: Provenance
    stages: tuple[StageBudget, ...] = field(repr=False, default=())
    spread: KVSpread | None = None
    """None where the KV figures are exact (a pinned pool, the CPU backend)."""

    # the --json keys, in their documented order
    JSON_KEYS = (
        "model",
        "gpu",
        "vllm_version",
        "tp",
        "pp",
        "total_gib",
        "gpu_memory_utilization",
        "requested_gib",
        "weights_gib",
        "activation_gib",
        "non_torch_gib",
        "cudagraph_gib",
        "kv_cache_gib",
        "kv_bytes_per_token",
        "block_size",
        "num_blocks",
        "kv_cache_tokens",
        "max_model_len",
        "max_num_seqs",
        "max_num_batched_tokens",
        "max_concurrency",
        "max_model_len_fit",
        "fits",
        "error",
        "estimated",
        "max_model_len_fit_concurrency",
        "concurrency",
        "notes",
        "model_runner",
        "runner_buffers_gib",
        "kv_cache_gib_cold",
        "kv_cache_tokens_cold",
        "kv_cache_gib_range",
        "kv_cache_tokens_range",
        "max_concurrency_range",
    )

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.JSON_KEYS}

    model = property(lambda self: self.provenance.model)
    gpu = property(lambda self: self.provenance.gpu)
    vllm_version = property(lambda self: self.provenance.vllm_version)
    estimated = property(lambda self: list(self.provenance.estimated))
    notes = property(lambda self: list(self.provenance.notes))
    tp = property(lambda self: self.limits.tp)
    pp = property(lambda self: self.limits.pp)
    gpu_memory_utilization = property(lambda self: self.limits.gpu_memory_utilization)
    max_model_len = property(lambda self: self.limits.max_model_len)
    max_num_seqs = property(lambda self: self.limits.max_num_seqs)
    max_num_batched_tokens = property(lambda self: self.limits.max_num_batched_tokens)
    model_runner = property(lambda self: self.limits.model_runner)
    concurrency = property(lambda self: self.limits.concurrency)
    total_gib = property(lambda self: gib(self.memory.total_bytes))
    requested_gib = property(lambda self: gib(self.memory.requested_bytes))
    weights_gib = property(lambda self: gib(self.memory.weights_bytes))
    activation_gib = property(lambda self: gib(self.memory.activation_bytes))
    non_torch_gib = property(lambda self: gib(self.memory.non_torch_bytes))
    cudagraph_gib = property(lambda self: gib(self.memory.cudagraph_bytes))
    runner_buffers_gib = property(lambda self: gib(self.memory.runner_buffers_bytes))
    kv_cache_gib = property(lambda self: gib(self.memory.kv_cache_bytes))
    kv_bytes_per_token = property(lambda self: self.kv.bytes_per_token)
    block_size = property(lambda self: self.kv.block_size)
    num_blocks = property(lambda self: self.kv.num_blocks)
    kv_cache_tokens = property(lambda self: self.kv.tokens)
    max_concurrency = property(lambda self: round(self.kv.max_concurrency, 2))
    max_model_len_fit = property(lambda self: self.kv.max_model_len_fit)
    max_model_len_fit_concurrency = property(lambda self: self.kv.max_model_len_fit_concurrency)
    fits = property(lambda self: self.verdict.fits)
    error = property(lambda self: self.verdict.error)
    # exact figures (a pinned pool, the CPU backend): the cold figure is the warm one, the range a point
    kv_cache_gib_cold = property(lambda self: gib(self.spread.cold_kv_bytes) if self.spread else self.kv_cache_gib)
    kv_cache_tokens_cold = property(lambda self: self.spread.cold_tokens if self.spread else self.kv_cache_tokens)
    kv_cache_gib_range = property(
        lambda self: [gib(x) for x in self.spread.kv_bytes_range] if self.spread else [self.kv_cache_gib] * 2
    )
    kv_cache_tokens_range = property(
        lambda self: list(self.spread.tokens_range) if self.spread else [self.kv_cache_tokens] * 2
    )
    max_concurrency_range = property(
        lambda self: [round(x, 2) for x in self.spread.concurrency_range] if self.spread else [self.max_concurrency] * 2
    )


# ---- step 1: resolve ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
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


def _stage(
    model: Model,
    insp: Inspection,
    stage: int,
    layers: range,
    target: Target,
    rel: ReleaseFacts,
    s: Settings,
    r: Resolved,
) -> StageBudget:
    """One stage's terms. Every stage also holds what the release allocates while loading beyond the
    inspected weights (MLA workspaces, a vision tower it does not split)."""
    spec = model.spec
    util, mnbt, seqs, runner = r.util, r.mnbt, r.seqs, r.runner
    weights = insp.weight_bytes_per_stage[stage] + r.mla_workspace_bytes + r.unsplit_vision_bytes
    layout = build_layout(spec, layers, s.tp, r.kv_elem, r.block, r.rules)
    if target.device == "cpu":  # the KV pool is VLLM_CPU_KVCACHE_SPACE (or --kv-cache-memory-bytes)
        avail = s.kv_cache_memory_bytes if s.kv_cache_memory_bytes is not None else int(target.cpu_kvcache_bytes or 0)
        return StageBudget(weights, 0, 0, 0, avail, layout, max(avail // layout.bytes_per_block, 0))
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
    features = oh.features(spec, shape)
    act = oh.activation_peak_bytes(features, c)
    non_torch = oh.non_torch_bytes(s.tp, s.pp, c, target.interconnect)
    graphs = 0
    # the V2 runner's profile_cudagraph_memory() returned 0 until 0.29
    subtracted = rel.cudagraph_estimate_subtracted and (runner == "v1" or rel.v2_model_runner_profiles_cudagraphs)
    if (subtracted or s.kv_cache_memory_bytes is not None) and not s.enforce_eager:
        captured = oh.GraphShape.of(seqs, mnbt, oh.capture_max_size(rel.version, target.arch_family))
        graphs = oh.cudagraph_estimate_bytes(len(layers), c, captured, spec.hidden_size)
    buffers = 0
    # the sampler (and its buffers) lives on the last PP stage; allocated before profiling, charged from 0.27
    if runner == "v2" and rel.budget_formula == "total_consumed" and stage == s.pp - 1:
        buffers = oh.v2_runner_buffer_bytes(seqs, spec.vocab_size)
    if s.kv_cache_memory_bytes is not None:
        # vLLM skips the measured terms: the pool is exactly the configured size (they still use memory).
        avail = s.kv_cache_memory_bytes
    else:
        avail = math.ceil(target.memory_bytes * util) - weights - act - non_torch - graphs - buffers
    cold = 0 if s.enforce_eager else oh.cold_start_extra_bytes(mnbt, c)
    return StageBudget(
        weights,
        act,
        non_torch,
        graphs,
        avail,
        layout,
        max(avail // layout.bytes_per_block, 0),
        buffers,
        encoder_bound=oh.encoder_binds(features, c),
        cold_extra_bytes=cold,
    )


def stages(
    model: Model, insp: Inspection, target: Target, rel: ReleaseFacts, s: Settings, r: Resolved
) -> tuple[StageBudget, ...]:
    return tuple(
        _stage(model, insp, i, layers, target, rel, s, r)
        for i, layers in enumerate(pp_layer_ranges(model.spec.num_layers, s.pp))
    )


# ---- step 3: the fit ------------------------------------------------------------------------------


def _pinned_pool_error(stages: tuple[StageBudget, ...], target: Target, pool: int) -> str | None:
    """With --kv-cache-memory-bytes vLLM checks nothing: a pool that does not fit beside the weights
    and the (estimated) activation, non-torch and graph memory runs out of memory at allocation."""
    for st in stages:
        need = (
            st.weights_bytes
            + pool
            + st.activation_bytes
            + st.non_torch_bytes
            + st.cudagraph_bytes
            + st.runner_buffers_bytes
        )
        if need > target.memory_bytes:
            return (
                f"weights {st.weights_bytes / GIB:.2f} GiB + KV pool {pool / GIB:.2f} GiB + estimated activation, "
                f"non-torch and CUDA-graph memory {(need - st.weights_bytes - pool) / GIB:.2f} GiB exceed the "
                f"GPU's {target.memory_bytes / GIB:.2f} GiB: vLLM would run out of memory allocating the KV cache"
            )
    return None


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


def _fit_check_layout(model: Model, bind: StageBudget, rel: ReleaseFacts, s: Settings, r: Resolved) -> KVLayout:
    """The layout vLLM's fit check uses: the binding worker's, except where a release compared the
    whole model's layers against one stage's memory under pipeline parallelism (vllm#34076)."""
    if s.pp > 1 and rel.fit_check_whole_model_under_pp:
        return build_layout(model.spec, range(model.spec.num_layers), s.tp, r.kv_elem, r.block, r.rules)
    return bind.layout


@dataclass(frozen=True)
class Fit:
    """vLLM's fit check on the binding stage, and the KV capacity it leaves."""

    bind_index: int
    mml: int
    ok: bool
    error: str | None
    est_len: int
    per_request_blocks: int
    concurrency: float
    fit_len_concurrency: int | None


def _check(
    sts: tuple[StageBudget, ...], bind: StageBudget, check: KVLayout, mml: int, inflight: int, rel: ReleaseFacts
) -> bool:
    """vLLM's `check_enough_kv_cache_memory` on every stage (or on the layout the release compares)."""
    if mml <= 0:
        return False
    if check is bind.layout:
        return all(
            fits(st.layout, st.available_kv_bytes, mml, inflight, rel.null_block_in_fit_check, rel.fit_check)
            for st in sts
        )
    return fits(check, bind.available_kv_bytes, mml, inflight, rel.null_block_in_fit_check, rel.fit_check)


def _start_error(
    bind: StageBudget, check: KVLayout, mml: int, est_len: int, inflight: int, auto_len: bool, rel: ReleaseFacts
) -> str:
    if auto_len and mml <= 0:  # the same text in every release with auto-fit (0.14+)
        return (
            "Cannot auto-fit max_model_len: not enough GPU memory available to serve even a "
            "single token. Try increasing `gpu_memory_utilization`."
        )
    # vLLM's message shows the memory left after the null block (0.29+)
    shown = bind.available_kv_bytes - (bind.layout.bytes_per_block if rel.null_block_in_fit_check else 0)
    return rel.fit_error(mml, needed_bytes(check, max(mml, 1), inflight, rel.fit_check), shown, min(est_len, mml))


def _concurrency_error(concurrency: int, conc: float, per_req: int, num_blocks: int, mml: int, seqs: int) -> str | None:
    # vLLM's block pool keeps one block back (the null block) in every release: the requests that run
    # at once are (blocks - 1) // blocks per request, a little below the "maximum concurrency" it logs.
    if per_req * concurrency > num_blocks - 1:
        return (
            f"{concurrency} concurrent requests of {mml:,} tokens need {concurrency * per_req:,} blocks; the KV "
            f"cache holds {num_blocks:,}, one of them vLLM's null block (maximum concurrency {conc:.2f}x, "
            f"{max(num_blocks - 1, 0) // max(per_req, 1)} requests at once)"
        )
    if seqs < concurrency:
        return (
            f"max_num_seqs {seqs:,} caps the requests vLLM runs at once below the requested {concurrency}: "
            f"pass --max-num-seqs {concurrency}"
        )
    return None


def fit(
    model: Model,
    target: Target,
    rel: ReleaseFacts,
    s: Settings,
    r: Resolved,
    sts: tuple[StageBudget, ...],
    concurrency: int | None,
) -> Fit:
    bind_index = min(range(len(sts)), key=lambda i: sts[i].num_blocks)
    bind = sts[bind_index]
    inflight = inflight_tokens(rel, r.mnbt, s.pp, target.device, r.runner)
    check = _fit_check_layout(model, bind, rel, s, r)
    longest = r.limit if r.mml is None else max(r.mml, r.limit)
    est_len = max_fitting_len(
        check, bind.available_kv_bytes, longest, inflight, rel.null_block_in_fit_check, rule=rel.fit_check
    )
    auto_len = r.mml is None
    mml = min(est_len, r.limit) if auto_len else r.mml  # --max-model-len auto: the largest that fits
    ok = _check(sts, bind, check, mml, inflight, rel)
    error = None if ok else _start_error(bind, check, mml, est_len, inflight, auto_len, rel)
    if ok and s.kv_cache_memory_bytes is not None and target.device != "cpu":
        error = _pinned_pool_error(sts, target, s.kv_cache_memory_bytes)
        ok = error is None
    per_req = blocks_per_request(bind.layout, max(mml, 1), inflight)
    conc = bind.num_blocks / per_req if per_req else 0.0
    fit_c = None
    if concurrency:
        fit_c = max_fitting_len(bind.layout, bind.available_kv_bytes, max(mml, r.limit), inflight, True, concurrency)
        if ok:  # vLLM starts (at a lower concurrency): no start-up error; plan.why_not says what binds
            ok = _concurrency_error(concurrency, conc, per_req, bind.num_blocks, mml, r.seqs) is None
    return Fit(bind_index, mml, ok, error, est_len, per_req, conc, fit_c)


# ---- the budget -----------------------------------------------------------------------------------


def _capacity(bind: StageBudget, kv_bytes: int, per_req: int, mml: int, rel: ReleaseFacts) -> tuple[int, float]:
    """(tokens, concurrency) that `kv_bytes` of KV memory on the binding stage would give."""
    blocks = max(kv_bytes, 0) // bind.layout.bytes_per_block
    conc = blocks / per_req if per_req else 0.0
    return logged_tokens(bind.layout, blocks, conc, mml, rel.kv_tokens_formula), conc


def _spread(bind: StageBudget, target: Target, rel: ReleaseFacts, s: Settings, r: Resolved, f: Fit) -> KVSpread:
    """The KV range from cross-validated error, and the first boot's figures (the cold extra comes out
    of the KV memory; the cold fit is vLLM's check on that memory)."""
    c = oh.coefficients_for(rel.version, r.runner, target.name, target.interconnect, s.tp)
    rng = uncertainty.kv_range(
        bind.available_kv_bytes,
        rel.version,
        target.name,
        target.interconnect,
        s.tp,
        validated=rel.version in c.validated,
    )
    lo, hi = (_capacity(bind, x, f.per_request_blocks, f.mml, rel) for x in (rng.low_bytes, rng.high_bytes))
    cold_bytes = bind.available_kv_bytes - bind.cold_extra_bytes
    cold_tokens, _ = _capacity(bind, cold_bytes, f.per_request_blocks, f.mml, rel)
    inflight = inflight_tokens(rel, r.mnbt, s.pp, target.device, r.runner)
    cold_fits = f.mml > 0 and fits(bind.layout, cold_bytes, f.mml, inflight, rel.null_block_in_fit_check, rel.fit_check)
    return KVSpread(
        (rng.low_bytes, rng.high_bytes),
        (lo[0], hi[0]),
        (lo[1], hi[1]),
        cold_bytes,
        cold_tokens,
        cold_fits,
        rng.extrapolated,
    )


def _spread_notes(sp: KVSpread, warm_fits: bool) -> list[str]:
    notes = []
    if sp.extrapolated:
        notes.append("KV range widened: no real start-up covers this plan's release, GPU or interconnect")
    if sp.cold_kv_bytes != sp.kv_bytes_range[0] and warm_fits:
        verdict = (
            "fits too" if sp.cold_fits else "does NOT fit: keep the torch.compile cache (VLLM_CACHE_ROOT) on a volume"
        )
        notes.append(
            f"first start on an empty torch.compile cache: KV {gib(sp.cold_kv_bytes):.2f} GiB, "
            f"{sp.cold_tokens:,} tokens ({verdict}); the fit verdict is the warm start's"
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
    requested = math.ceil(target.memory_bytes * r.util)
    memory = MemoryTerms(
        target.memory_bytes,
        requested,
        bind.weights_bytes,
        bind.activation_bytes,
        bind.non_torch_bytes,
        bind.cudagraph_bytes,
        bind.runner_buffers_bytes,
        bind.available_kv_bytes,
    )
    tokens = logged_tokens(bind.layout, bind.num_blocks, f.concurrency, f.mml, rel.kv_tokens_formula)
    kv = KVCapacity(
        insp.kv_bytes_per_token_per_stage[f.bind_index],
        bind.layout.block_size,
        bind.num_blocks,
        tokens,
        f.concurrency,
        f.est_len,
        f.fit_len_concurrency,
    )
    limits = ServeLimits(s.tp, s.pp, r.util, f.mml, r.seqs, r.mnbt, r.runner, concurrency)
    spread = None
    if s.kv_cache_memory_bytes is None and target.device != "cpu":
        spread = _spread(bind, target, rel, s, r, f)
        notes += _spread_notes(spread, f.ok)
    provenance = Provenance(
        model.id, target.name, rel.version, tuple(_estimated(s, target, insp, r.mml is None, concurrency)), tuple(notes)
    )
    return Budget(memory, kv, limits, Verdict(f.ok, f.error), provenance, sts, spread)
