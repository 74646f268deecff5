"""The release's rules that shape one budget before any memory is measured: block size, the
`vllm serve` batch defaults, the context limit and lengths, in-flight tokens of sliding windows, the
Mamba cache mode and layout rules of hybrids, what loading allocates beyond the inspected weights
(MLA workspaces, an unsplit vision tower), the dummy multimodal length, and the flags a release
lacks. Pure: release facts and the model in, numbers out.
"""

from __future__ import annotations

from planner.dtypes import torch_dtype_bytes
from planner.errors import PlannerError
from planner.inspection import Inspection, Model
from planner.models.checks import check_block_size
from planner.models.fields import scaled_max_len
from planner.models.quantization import ONLINE_SCHEMES
from planner.releases import ReleaseFacts
from planner.target import Settings, Target
from planner.units import GIB


def block_size_for(
    model: Model, target: Target, rel: ReleaseFacts, requested: int | None, kv_cache_dtype: str = "auto"
) -> int:
    if target.device == "cpu":
        # the CPU MLA backend forces its block size (0.28+), whatever was asked
        if model.spec.mla is not None and rel.block_size_cpu_mla:
            return rel.block_size_cpu_mla
        return requested or rel.block_size_cpu_default
    if target.arch_family != "other":  # CUDA: the sparse-attention backends' block sizes
        check_block_size(model.spec, requested, rel.sparse_mla_block_size)
    if requested:
        return requested
    if model.spec.mla is not None and model.spec.mla.index_head_dim and rel.sparse_mla_block_size:
        return rel.sparse_mla_block_size  # DSA: the indexer's kernel block (lcm with the sparse MLA backend's)
    if model.spec.mla is not None:
        sizes = rel.mla_block_size_fp8_kv if kv_cache_dtype.startswith("fp8") else rel.mla_block_size_default
        return sizes[target.arch_family]
    return rel.block_size_default


def batch_defaults(target: Target, rel: ReleaseFacts, tp: int, pp: int) -> tuple[int, int]:
    """`vllm serve` defaults for (max_num_batched_tokens, max_num_seqs) by device memory and name."""
    return rel.default_batch(
        "serve",
        total_gib=target.memory_bytes / GIB,
        device_name=target.name,
        compute_capability=target.compute_capability,
        cpu=target.device == "cpu",
        world_size=tp * pp,
    )


def resolve_lengths(model: Model, s: Settings, target: Target, rel: ReleaseFacts) -> tuple[int | None, int, int]:
    limit = default_max_model_len(model, rel)
    mml = s.max_model_len
    if isinstance(mml, int) and mml > limit and not s.allow_long_max_model_len:
        raise PlannerError(
            f"--max-model-len {mml} exceeds the model's limit {limit}: lower it, or set "
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 as vLLM requires"
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
    if s.max_num_seqs and s.max_num_seqs > mnbt:  # vLLM caps only its own default (SchedulerConfig._verify_args)
        raise PlannerError(
            f"max_num_batched_tokens ({mnbt}) must be greater than or equal to max_num_seqs "
            f"({s.max_num_seqs}), as vLLM requires: raise --max-num-batched-tokens or lower --max-num-seqs"
        )
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
    if (
        rel.mamba_prefix_caching_mode == "all_if_supported_else_align"
        and model.spec.architecture in rel.mamba_all_mode_architectures
    ):
        return "all"
    return "align"


def hybrid_rules(model: Model, target: Target, rel: ReleaseFacts, s: Settings, model_dtype_bytes: int) -> dict:
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
        mamba_dtype_bytes=(model_dtype_bytes, ssm),
        mamba_block_align=rel.hybrid_mamba_block_align,
        mamba_mode=mode,
        mamba_blocks=blocks,
        mamba_all_extra_blocks=num_spec if rel.mamba_all_mode_adds_spec_blocks else 0,
        mamba_checkpoint_alignment=alignment,
        mamba_chunk_size=spec.mamba.chunk_size,
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


def default_max_model_len(model: Model, rel: ReleaseFacts) -> int:
    """The model's context limit under this release's RoPE rules (`_get_and_verify_max_len`)."""
    spec = model.spec
    return scaled_max_len(
        spec.max_len_base,
        spec.rope_scaling,
        spec.model_type,
        spec.original_max_position_embeddings,
        not_multiplied=tuple(rel.rope_scaling_types_not_multiplied),
        yarn_uses_original=rel.yarn_uses_original_max_position,
        longrope_original=rel.longrope_defaults_to_original,
        skipped_types=tuple(rel.rope_scaling_skipped_model_types),
    )


def check_release_support(insp: Inspection, rel: ReleaseFacts) -> None:
    """Flags the targeted release does not have are errors, not silent plans."""
    kv = insp.kv_cache_dtype
    if kv != "auto" and kv not in rel.kv_cache_dtypes:
        raise PlannerError(
            f"vLLM {rel.version} has no --kv-cache-dtype {kv}: use one of {', '.join(rel.kv_cache_dtypes)}"
        )
    q = insp.quantization
    if q in rel.quantizations_removed:
        raise PlannerError(
            f"vLLM {rel.version} no longer has {q} quantization: target an older release or use another checkpoint"
        )
    if q in ONLINE_SCHEMES and q not in ("fp8", "bitsandbytes") and q not in rel.online_quant_shorthands:
        raise PlannerError(f"vLLM {rel.version} has no --quantization {q}: use fp8, or target vLLM 0.20 or newer")
