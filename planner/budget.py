"""vLLM's per-GPU memory budget for one model, GPU, layout and release: requested memory minus
weights, activation peak, non-torch memory and (0.20+) the CUDA-graph estimate gives the KV-cache
memory; then blocks, the KV tokens vLLM logs, maximum concurrency, the largest context that fits,
and the error vLLM would raise. Pure: numbers in, a `Budget` out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from planner import model_runner
from planner import overheads as oh
from planner.accounting import pp_layer_ranges
from planner.inspection import Inspection, Model, kv_dtype_bytes
from planner.dtypes import torch_dtype_bytes
from planner.errors import PlannerError
from planner.kv_layout import (KVLayout, LayoutRules, blocks_per_request, build_layout, fits, logged_tokens,
                                max_fitting_len, needed_bytes)
from planner.models.normalize import scaled_max_len
from planner.models.quantization import ONLINE_SCHEMES
from planner.releases import ReleaseFacts

GIB = 2**30


@dataclass(frozen=True)
class Target:
    """Where the model runs: a GPU (name and the total memory torch reports) or vLLM's CPU backend."""

    name: str
    memory_bytes: int
    """Total device memory as torch reports it (the base of gpu_memory_utilization)."""
    device: Literal["cuda", "cpu"] = "cuda"
    cpu_kvcache_bytes: int | None = None
    """CPU backend: VLLM_CPU_KVCACHE_SPACE in bytes (the whole KV pool)."""
    compute_capability: str | None = None
    """e.g. "9.0": picks the attention backend (MLA block size) and batch-default tier."""

    @property
    def arch_family(self) -> str:
        """The GPU family vLLM's MLA backend choice turns on: ampere, hopper, blackwell (10.x, 11.x),
        sm120 (12.x), other (not CUDA: gfx*, tpu-*, gaudi*); see the MLA facts in releases.yaml."""
        major = (self.compute_capability or "9.0").split(".")[0]
        if not major.isdigit():
            return "other"
        n = int(major)
        return "sm120" if n >= 12 else "blackwell" if n >= 10 else "hopper" if n == 9 else "ampere"


@dataclass(frozen=True)
class Settings:
    """The `vllm serve` knobs that change the budget. None means vLLM's default for the release."""

    tp: int = 1
    pp: int = 1
    max_model_len: int | Literal["auto"] | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    kv_cache_dtype: str = "auto"
    enforce_eager: bool = False
    kv_cache_memory_bytes: int | None = None
    block_size: int | None = None
    allow_long_max_model_len: bool = False
    """VLLM_ALLOW_LONG_MAX_MODEL_LEN=1: a max_model_len above the model's limit is accepted."""
    enable_prefix_caching: bool | None = None
    """--enable-prefix-caching / --no-enable-prefix-caching; None = the release default. Only the
    Mamba cache mode of hybrid models depends on it here."""
    model_runner: Literal["v1", "v2"] | None = None
    """VLLM_USE_V2_MODEL_RUNNER (1 -> "v2", 0 -> "v1"); None = the release's default for the model."""

    def __post_init__(self) -> None:
        u = self.gpu_memory_utilization
        if u is not None and not (0 < u <= 1):
            raise PlannerError(f"--gpu-memory-utilization {u} is outside (0, 1]: pass a fraction such as 0.9")
        if isinstance(self.max_model_len, int) and self.max_model_len <= 0:
            raise PlannerError(f"--max-model-len {self.max_model_len} must be positive (or 'auto' to fit the memory)")
        for name in ("max_num_seqs", "max_num_batched_tokens", "kv_cache_memory_bytes", "block_size"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise PlannerError(f"--{name.replace('_', '-')} {v} must be positive")


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


@dataclass(frozen=True)
class Budget:
    """The figures vLLM prints at start-up, predicted; per GPU of the binding stage."""

    model: str
    gpu: str
    vllm_version: str
    tp: int
    pp: int
    total_gib: float
    gpu_memory_utilization: float
    requested_gib: float
    weights_gib: float
    activation_gib: float
    non_torch_gib: float
    cudagraph_gib: float
    """The CUDA-graph estimate subtracted from the budget (0 where the release or runner does not)."""
    kv_cache_gib: float
    """Available KV-cache memory ("Available KV cache memory: X GiB")."""
    kv_bytes_per_token: int
    block_size: int
    num_blocks: int
    kv_cache_tokens: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_concurrency: float
    max_model_len_fit: int
    """Largest max_model_len for which one request fits (vLLM's "estimated maximum model length")."""
    fits: bool
    error: str | None
    estimated: list[str]
    stages: tuple[StageBudget, ...] = field(repr=False, default=())
    max_model_len_fit_concurrency: int | None = None
    """Largest max_model_len at which `concurrency` requests fit together, when asked."""
    concurrency: int | None = None
    notes: list[str] = field(default_factory=list)
    model_runner: str = "v1"
    """The GPU model runner vLLM starts ("v1" or "v2"; "v1" on the CPU backend)."""
    runner_buffers_gib: float = 0.0
    """The V2 runner's penalty / bit-mask buffers where the release charges them to the budget (0.27+)."""


def block_size_for(model: Model, target: Target, rel: ReleaseFacts, requested: int | None, kv_cache_dtype: str = "auto") -> int:
    if target.device == "cpu":
        # the CPU MLA backend forces its block size (0.28+), whatever was asked
        if model.spec.mla is not None and rel.block_size_cpu_mla:
            return rel.block_size_cpu_mla
        return requested or rel.block_size_cpu_default
    if requested:
        return requested
    if model.spec.mla is not None:
        sizes = rel.mla_block_size_fp8_kv if kv_cache_dtype.startswith("fp8") else rel.mla_block_size_default
        return sizes[target.arch_family]
    return rel.block_size_default


def batch_defaults(target: Target, rel: ReleaseFacts, tp: int, pp: int) -> tuple[int, int]:
    """`vllm serve` defaults for (max_num_batched_tokens, max_num_seqs) by device memory and name."""
    return rel.default_batch("serve", total_gib=target.memory_bytes / GIB, device_name=target.name,
                             compute_capability=target.compute_capability, cpu=target.device == "cpu",
                             world_size=tp * pp)


def resolve_lengths(model: Model, s: Settings, target: Target, rel: ReleaseFacts) -> tuple[int | None, int, int]:
    limit = default_max_model_len(model, rel)
    mml = s.max_model_len
    if isinstance(mml, int) and mml > limit and not s.allow_long_max_model_len:
        raise PlannerError(
            f"--max-model-len {mml} exceeds the model's limit {limit}: lower it, or set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 as vLLM requires"
        )
    if mml == "auto" and not rel.max_model_len_auto_fit:
        raise PlannerError(f"--max-model-len auto needs vLLM 0.14 or newer (targeting {rel.version}): pass a number")
    mnbt_d, seqs_d = batch_defaults(target, rel, s.tp, s.pp)
    seqs = s.max_num_seqs or seqs_d
    mnbt = s.max_num_batched_tokens
    if mnbt is None:
        mnbt = mnbt_d
        if rel.mnbt_capped_by_seqs_x_len and isinstance(mml if mml != "auto" else limit, int):
            mnbt = min(seqs * (limit if mml in (None, "auto") else mml), mnbt)
    seqs = min(seqs, mnbt)
    resolved = limit if mml is None else None if mml == "auto" else mml
    return resolved, mnbt, seqs


def inflight_tokens(rel: ReleaseFacts, mnbt: int, pp: int, device: str = "cuda", runner: str = "v1") -> int:
    """Tokens a sliding-window layer may hold beyond its window (see kv_layout.blocks_per_request)."""
    if rel.sliding_window_inflight_tokens == "max_num_batched_tokens":
        return mnbt
    # VllmConfig.max_concurrent_batches: with async scheduling, PP + 1 on the V2 runner, 2 on V1 without
    # PP (V1 does not overlap PP stages); else PP. The CPU backend turns async scheduling off.
    async_on = rel.async_scheduling_default and device != "cpu"
    if async_on and runner == "v2":
        batches = pp + 1
    elif async_on and pp == 1:
        batches = 2
    else:
        batches = pp
    return batches * mnbt


# ---- attention + Mamba hybrids --------------------------------------------------------------------
# Qwen3-Next's FlashInfer GDN prefill aligns blocks to FLASHINFER_GDN_CHECKPOINT_ALIGNMENT
# (v1/attention/backends/gdn_attn.py); which releases add the checkpoint block is release data.
_GDN_FLASHINFER_CHECKPOINT_ALIGNMENT = 64


def mamba_cache_mode(model: Model, rel: ReleaseFacts, s: Settings) -> str:
    """vLLM's mamba_cache_mode for a hybrid model: "none" without prefix caching; with it (on by
    default for hybrids from 0.26) "all" for the release's SupportsMambaPrefixCaching models
    (0.15-0.31), else "align"."""
    prefix = rel.hybrid_prefix_caching_default if s.enable_prefix_caching is None else s.enable_prefix_caching
    if not prefix or rel.mamba_prefix_caching_mode == "unsupported" or rel.mamba_blocks_align_mode is None:
        return "none"
    if rel.mamba_prefix_caching_mode == "all_if_supported_else_align" and model.spec.architecture in rel.mamba_all_mode_architectures:
        return "all"
    return "align"


def _hybrid_rules(model: Model, target: Target, rel: ReleaseFacts, s: Settings, model_dtype_bytes: int) -> dict:
    """The Mamba part of `LayoutRules` for this release, GPU and model."""
    spec = model.spec
    if spec.mamba is None or not any(l.attention in ("mamba", "linear") for l in spec.layers):
        return {}
    mode = mamba_cache_mode(model, rel, s)
    ssm = model_dtype_bytes
    if spec.model_type == "nemotron_h" and rel.mamba_ssm_cache_bytes_nemotron_h:
        ssm = rel.mamba_ssm_cache_bytes_nemotron_h
    num_spec = 0  # no speculative decoding is planned
    spec_blocks = num_spec if rel.mamba_blocks_add_spec_tokens else 0
    checkpoint, alignment = 0, 1
    flashinfer_gdn = spec.mamba.kind != "gdn" or (target.device == "cuda" and target.arch_family == "hopper")
    if mode == "align" and spec.mamba.kind in rel.mamba_align_prefill_checkpoint_blocks and flashinfer_gdn:
        checkpoint = 1
        if spec.mamba.kind == "gdn":
            alignment = _GDN_FLASHINFER_CHECKPOINT_ALIGNMENT
    if mode == "align":
        blocks = int(rel.mamba_blocks_align_mode or 2) + spec_blocks + checkpoint
    else:
        blocks = rel.mamba_blocks_none_mode + spec_blocks
    return dict(
        mamba_dtype_bytes=(model_dtype_bytes, ssm), mamba_block_align=rel.hybrid_mamba_block_align, mamba_mode=mode,
        mamba_blocks=blocks, mamba_all_extra_blocks=num_spec if rel.mamba_all_mode_adds_spec_blocks else 0,
        mamba_checkpoint_alignment=alignment, mamba_chunk_size=spec.mamba.chunk_size,
        num_spec_tokens=num_spec if rel.mamba_blocks_add_spec_tokens else 0,
    )


def mla_workspace_bytes(model: Model, target: Target, rel: ReleaseFacts) -> int:
    """Workspaces that importing vLLM's MLA backend modules allocates during model loading, which
    vLLM's "Model loading took" counts with the weights (release data: mla_import_workspace_mib)."""
    if model.spec.mla is None or target.device != "cuda":
        return 0
    return rel.mla_import_workspace_mib[target.arch_family] * 2**20


def mm_dummy_length(rel: ReleaseFacts, max_model_len: int, max_num_batched_tokens: int) -> int:
    """The length the profile's dummy multimodal items must fit (release data: mm_dummy_length); with
    an auto max_model_len, the model's limit: vLLM profiles before it fits the context."""
    return max_num_batched_tokens if rel.mm_dummy_length == "max_num_batched_tokens" else max_model_len


def unsplit_vision_bytes(model: Model, insp: Inspection, rel: ReleaseFacts, tp: int) -> int:
    """A vision tower this release keeps whole on every TP rank (release data: vision_towers_replicated):
    the share of it the inspection split across ranks comes back on each."""
    v = model.spec.vision
    if v is None or tp == 1 or v.model_type not in rel.vision_towers_replicated:
        return 0
    split = sum(t.numel for t in model.tensors if t.component == "vision" and t.shard == "column")
    return (split - split // tp) * torch_dtype_bytes(insp.dtype)


def _stage(model: Model, insp: Inspection, stage: int, layers: range, target: Target, rel: ReleaseFacts,
           s: Settings, util: float, mnbt: int, seqs: int, kv_bytes: int, block: int, rules: LayoutRules,
           runner: str, dummy_len: int, load_extra: int) -> StageBudget:
    """`load_extra`: what this release allocates while loading beyond the inspected weights (MLA
    workspaces, a vision tower it does not split), on every stage."""
    spec = model.spec
    weights = insp.weight_bytes_per_stage[stage] + load_extra
    layout = build_layout(spec, layers, s.tp, kv_bytes, block, rules)
    if target.device == "cpu":  # the KV pool is VLLM_CPU_KVCACHE_SPACE (or --kv-cache-memory-bytes)
        avail = s.kv_cache_memory_bytes if s.kv_cache_memory_bytes is not None else int(target.cpu_kvcache_bytes or 0)
        return StageBudget(weights, 0, 0, 0, avail, layout, max(avail // layout.bytes_per_block, 0))
    c = oh.coefficients(rel.version, runner)
    # the V2 runner's profile run skips the multimodal encoder before 0.27, and runs it on the first stage after
    encoder = runner == "v1" or (rel.v2_model_runner_profiles_mm_encoder and stage == 0)
    shape = oh.ProfileShape.of(mnbt, seqs, s.tp, torch_dtype_bytes(insp.dtype), last_stage=stage == s.pp - 1,
                               encoder_profiled=encoder, max_model_len=dummy_len,
                               video_frames=rel.qwen2_vl_max_frames_per_video)
    features = oh.features(spec, shape)
    act = oh.activation_peak_bytes(features, c)
    non_torch = oh.non_torch_bytes(s.tp, s.pp, c)
    graphs = 0
    # the V2 runner's profile_cudagraph_memory() returned 0 until 0.29
    subtracted = rel.cudagraph_estimate_subtracted and (runner == "v1" or rel.v2_model_runner_profiles_cudagraphs)
    if (subtracted or s.kv_cache_memory_bytes is not None) and not s.enforce_eager:
        graphs = oh.cudagraph_estimate_bytes(len(layers), c)
    buffers = 0
    # the sampler (and its buffers) lives on the last PP stage; allocated before profiling, charged from 0.27
    if runner == "v2" and rel.budget_formula == "total_consumed" and stage == s.pp - 1:
        buffers = oh.v2_runner_buffer_bytes(seqs, spec.vocab_size)
    if s.kv_cache_memory_bytes is not None:
        # vLLM skips the measured terms: the pool is exactly the configured size (they still use memory).
        avail = s.kv_cache_memory_bytes
    else:
        avail = math.ceil(target.memory_bytes * util) - weights - act - non_torch - graphs - buffers
    return StageBudget(weights, act, non_torch, graphs, avail, layout, max(avail // layout.bytes_per_block, 0), buffers,
                       encoder_bound=oh.encoder_binds(features, c))


def _headroom_notes(model: Model, target: Target, rel: ReleaseFacts, s: Settings, runner: str, util: float,
                    seqs: int, bind: StageBudget) -> list[str]:
    """What the release allocates outside the budget, from the 1 - utilization headroom."""
    if target.device == "cpu" or runner != "v2" or s.kv_cache_memory_bytes is not None:
        return []
    headroom = target.memory_bytes - math.ceil(target.memory_bytes * util)
    outside = []
    if rel.budget_formula != "total_consumed":  # before 0.27 the sampler buffers are not charged
        outside.append(f"its sampler buffers ({oh.v2_runner_buffer_bytes(seqs, model.spec.vocab_size) / GIB:.2f} GiB)")
    if not bind.cudagraph_bytes and not s.enforce_eager:
        outside.append("its CUDA graphs (1.00 GiB measured for Qwen3-8B on an H200, vLLM 0.26)")
    if not outside:
        return []
    return [f"V2 model runner: {' and '.join(outside)} are not in vLLM's budget; they come from the "
            f"1 - gpu_memory_utilization headroom ({headroom / GIB:.2f} GiB here)"]


def default_max_model_len(model: Model, rel: ReleaseFacts) -> int:
    """The model's context limit under this release's RoPE rules (`_get_and_verify_max_len`)."""
    spec = model.spec
    return scaled_max_len(spec.max_len_base, spec.rope_scaling, spec.model_type, spec.original_max_position_embeddings,
                          not_multiplied=tuple(rel.rope_scaling_types_not_multiplied),
                          yarn_uses_original=rel.yarn_uses_original_max_position,
                          longrope_original=rel.longrope_defaults_to_original,
                          skipped_types=tuple(rel.rope_scaling_skipped_model_types))


def check_release_support(insp: Inspection, rel: ReleaseFacts) -> None:
    """Flags the targeted release does not have are errors, not silent plans."""
    kv = insp.kv_cache_dtype
    if kv != "auto" and kv not in rel.kv_cache_dtypes:
        raise PlannerError(f"vLLM {rel.version} has no --kv-cache-dtype {kv}: use one of {', '.join(rel.kv_cache_dtypes)}")
    q = insp.quantization
    if q in rel.quantizations_removed:
        raise PlannerError(f"vLLM {rel.version} no longer has {q} quantization: target an older release or use another checkpoint")
    if q in ONLINE_SCHEMES and q not in ("fp8", "bitsandbytes") and q not in rel.online_quant_shorthands:
        raise PlannerError(f"vLLM {rel.version} has no --quantization {q}: use fp8, or target vLLM 0.20 or newer")


def _pinned_pool_error(stages: tuple[StageBudget, ...], target: Target, pool: int) -> str | None:
    """With --kv-cache-memory-bytes vLLM checks nothing: a pool that does not fit beside the weights
    and the (estimated) activation, non-torch and graph memory runs out of memory at allocation."""
    for st in stages:
        need = st.weights_bytes + pool + st.activation_bytes + st.non_torch_bytes + st.cudagraph_bytes + st.runner_buffers_bytes
        if need > target.memory_bytes:
            return (f"weights {st.weights_bytes / GIB:.2f} GiB + KV pool {pool / GIB:.2f} GiB + estimated activation, "
                    f"non-torch and CUDA-graph memory {(need - st.weights_bytes - pool) / GIB:.2f} GiB exceed the "
                    f"GPU's {target.memory_bytes / GIB:.2f} GiB: vLLM would run out of memory allocating the KV cache")
    return None


def _estimated(s: Settings, target: Target, insp: Inspection, auto_len: bool, concurrency: int | None) -> list[str]:
    if target.device == "cpu":
        out = []
    elif s.kv_cache_memory_bytes is not None:  # the KV figures are exact; the overheads only check the fit
        out = ["activation_gib", "non_torch_gib", "cudagraph_gib"]
    else:
        out = ["activation_gib", "non_torch_gib", "cudagraph_gib", "kv_cache_gib", "num_blocks", "kv_cache_tokens",
               "max_concurrency", "max_model_len_fit"]
        if auto_len:
            out.append("max_model_len")
        if concurrency:
            out.append("max_model_len_fit_concurrency")
    if "weight_bytes_per_gpu" in insp.estimated:
        out.append("weights_gib")
    return out


def _fit_check_layout(model: Model, stages: tuple[StageBudget, ...], bind: StageBudget, rel: ReleaseFacts,
                      s: Settings, kv_elem: int, block: int, rules: LayoutRules) -> KVLayout:
    """The layout vLLM's fit check uses: the binding worker's, except where a release compared the
    whole model's layers against one stage's memory under pipeline parallelism (vllm#34076)."""
    if s.pp > 1 and rel.fit_check_whole_model_under_pp:
        return build_layout(model.spec, range(model.spec.num_layers), s.tp, kv_elem, block, rules)
    return bind.layout


def compute(model: Model, insp: Inspection, target: Target, rel: ReleaseFacts, s: Settings,
            concurrency: int | None = None) -> Budget:
    """The budget of one replica's binding worker, as vLLM computes it at start-up."""
    spec = model.spec
    if model.tensor_source == "none":
        raise PlannerError(f"weights of {spec.model_type} are not modelled yet: pass a checkpoint folder with safetensors "
                           "(its tensors are read from the headers)")
    if target.device == "cpu" and not target.cpu_kvcache_bytes and s.kv_cache_memory_bytes is None:
        raise PlannerError("the CPU backend sizes its KV cache from VLLM_CPU_KVCACHE_SPACE: pass --cpu-kvcache-gib")
    if s.kv_cache_memory_bytes is not None and not rel.kv_cache_memory_bytes_flag:
        raise PlannerError(f"--kv-cache-memory-bytes needs vLLM 0.10.2 or newer (targeting {rel.version})")
    check_release_support(insp, rel)
    util = s.gpu_memory_utilization if s.gpu_memory_utilization is not None else rel.gpu_memory_utilization_default
    limit = default_max_model_len(model, rel)
    mml, mnbt, seqs = resolve_lengths(model, s, target, rel)
    block = block_size_for(model, target, rel, s.block_size, insp.kv_cache_dtype)
    rules = LayoutRules(hybrid_group_size_max_rule=rel.hybrid_group_size_rule == "max_if_under_1.5x_min",
                        hybrid_kv_cache_manager=target.device != "cpu" or rel.cpu_hybrid_kv_cache_manager,
                        **_hybrid_rules(model, target, rel, s, torch_dtype_bytes(insp.dtype)))
    kv_elem = kv_dtype_bytes(insp.kv_cache_dtype, insp.dtype)
    runner = model_runner.resolve(rel, model_runner.traits(spec), s.model_runner, target.device)
    if (s.model_runner == "v2" and runner == "v2" and rel.v2_model_runner_rejects_align_mode and spec.mamba is not None
            and mamba_cache_mode(model, rel, s) == "align"):
        raise PlannerError(f"vLLM {rel.version} refuses VLLM_USE_V2_MODEL_RUNNER=1 with prefix caching on {spec.architecture} "
                           "(\"Model Runner V2 has not yet supported mamba_cache_mode='align'\"): unset it or turn "
                           "prefix caching off")
    dummy_len = mm_dummy_length(rel, mml if mml is not None else limit, mnbt)
    workspace, unsplit = mla_workspace_bytes(model, target, rel), unsplit_vision_bytes(model, insp, rel, s.tp)
    stages = tuple(_stage(model, insp, i, r, target, rel, s, util, mnbt, seqs, kv_elem, block, rules, runner,
                          dummy_len, workspace + unsplit) for i, r in enumerate(pp_layer_ranges(spec.num_layers, s.pp)))
    bind_index = min(range(len(stages)), key=lambda i: stages[i].num_blocks)
    bind = stages[bind_index]
    lay, num_blocks = bind.layout, bind.num_blocks
    inflight = inflight_tokens(rel, mnbt, s.pp, target.device, runner)
    null_block = rel.null_block_in_fit_check
    rule = rel.fit_check
    check = _fit_check_layout(model, stages, bind, rel, s, kv_elem, block, rules)
    est_len = max_fitting_len(check, bind.available_kv_bytes, limit if mml is None else max(mml, limit), inflight, null_block, rule=rule)
    notes = list(dict.fromkeys(insp.warnings))
    auto_len = mml is None
    if auto_len:  # --max-model-len auto: the largest that fits, capped at the model's limit
        mml = min(est_len, limit)
        notes.append(f"auto-fit max_model_len: {mml:,}")
    error = None
    if check is lay:
        ok = mml > 0 and all(fits(st.layout, st.available_kv_bytes, mml, inflight, null_block, rule) for st in stages)
    else:
        ok = mml > 0 and fits(check, bind.available_kv_bytes, mml, inflight, null_block, rule)
    per_req = blocks_per_request(lay, max(mml, 1), inflight)
    if not ok and auto_len and mml <= 0:  # the same text in every release with auto-fit (0.14+)
        error = ("Cannot auto-fit max_model_len: not enough GPU memory available to serve even a "
                 "single token. Try increasing `gpu_memory_utilization`.")
    elif not ok:
        # vLLM's message shows the memory left after the null block (0.29+)
        shown = bind.available_kv_bytes - (lay.bytes_per_block if null_block else 0)
        error = rel.fit_error(mml, needed_bytes(check, max(mml, 1), inflight, rule), shown, min(est_len, mml))
    if ok and s.kv_cache_memory_bytes is not None and target.device != "cpu":
        error = _pinned_pool_error(stages, target, s.kv_cache_memory_bytes)
        ok = error is None
    conc = num_blocks / per_req if per_req else 0.0
    tokens = logged_tokens(lay, num_blocks, conc, mml, rel.kv_tokens_formula)
    fit_c = None
    if concurrency:
        fit_c = max_fitting_len(lay, bind.available_kv_bytes, max(mml, limit), inflight, null_block, concurrency)
        if ok and conc < concurrency:
            ok = False
            error = f"{concurrency} concurrent requests of {mml:,} tokens need {concurrency * per_req:,} blocks; the KV cache holds {num_blocks:,} (maximum concurrency {conc:.2f}x)"
        elif ok and seqs < concurrency:
            ok = False
            error = f"max_num_seqs {seqs:,} caps the requests vLLM runs at once below the requested {concurrency}: pass --max-num-seqs {concurrency}"
    notes += _headroom_notes(model, target, rel, s, runner, util, seqs, bind)
    if lay.mamba_state_bytes:
        mamba_groups = sum(1 for g in lay.groups if g.kind == "mamba")
        notes.append(f"hybrid: attention block size {lay.block_size} tokens (page {lay.page_bytes:,} B >= Mamba state "
                     f"{lay.mamba_state_bytes:,} B, padded by {100 * (lay.page_bytes - lay.mamba_state_bytes) / lay.mamba_state_bytes:.2f}%); "
                     f"{len(lay.groups)} groups of {lay.group_size} layers ({mamba_groups} Mamba, "
                     f"{lay.padding_layers} padding layers); mamba_cache_mode {lay.mamba_mode}")
    if workspace:
        notes.append(f"weights include the {workspace // 2**20} MiB workspace(s) that vLLM "
                     f"{rel.version} allocates when it imports its MLA attention backends ({target.arch_family})")
    if unsplit:
        notes.append(f"vLLM {rel.version} keeps the {model.spec.vision.model_type} vision tower whole on every TP rank "
                     f"(+{unsplit / GIB:.2f} GiB of weights per GPU)")
    if bind.encoder_bound and s.kv_cache_memory_bytes is None:
        v = model.spec.vision
        patches, item_tokens = oh.largest_dummy_item(v, dummy_len, rel.qwen2_vl_max_frames_per_video)
        items = max(1, mnbt // item_tokens)
        kind = "video" if patches > (v.image_size // v.patch_size) ** 2 else "image"
        video = (" A smaller max_model_len shrinks the dummy video; --limit-mm-per-prompt '{\"video\": 0}' "
                 "drops it (not modelled)." if kind == "video" else "")
        checked = ("an estimate that public start-ups of Qwen2.5-VL (0.11, 0.23) exceeded by 0.9-1.0 GiB" if v.takes_video
                   else "an estimate no start-up has checked for this tower")
        notes.append(f"the activation peak is the vision encoder's profile pass over vLLM's dummy {kind}s ({items} x "
                     f"{patches:,} ViT patches), modelled from its input, hidden and MLP tensors: {checked}.{video}")
    if target.device != "cpu" and s.kv_cache_memory_bytes is None:
        c = oh.coefficients(rel.version, runner)
        if not c.validated:
            notes.append(f"activation, non-torch and CUDA-graph terms for vLLM {rel.version} ({runner.upper()} runner) mix fitted "
                         "coefficients with terms read from vLLM's source that no start-up has checked yet")
        elif rel.version not in c.validated:
            notes.append(f"activation, non-torch and CUDA-graph terms come from start-ups of vLLM {', '.join(c.validated)}; "
                         f"for {rel.version} they are an extrapolation")
    return Budget(
        model=model.id, gpu=target.name, vllm_version=rel.version, tp=s.tp, pp=s.pp,
        total_gib=round(target.memory_bytes / GIB, 2), gpu_memory_utilization=util,
        requested_gib=round(math.ceil(target.memory_bytes * util) / GIB, 2),
        weights_gib=round(bind.weights_bytes / GIB, 2), activation_gib=round(bind.activation_bytes / GIB, 2),
        non_torch_gib=round(bind.non_torch_bytes / GIB, 2), cudagraph_gib=round(bind.cudagraph_bytes / GIB, 2),
        kv_cache_gib=round(bind.available_kv_bytes / GIB, 2),
        kv_bytes_per_token=insp.kv_bytes_per_token_per_stage[bind_index], block_size=lay.block_size, num_blocks=num_blocks,
        kv_cache_tokens=tokens, max_model_len=mml, max_num_seqs=seqs, max_num_batched_tokens=mnbt,
        max_concurrency=round(conc, 2), max_model_len_fit=est_len, fits=ok, error=error,
        estimated=_estimated(s, target, insp, auto_len, concurrency),
        stages=stages, max_model_len_fit_concurrency=fit_c, concurrency=concurrency, notes=notes,
        model_runner=runner, runner_buffers_gib=round(bind.runner_buffers_bytes / GIB, 2),
    )
