"""The model step's entry checks: a Hugging Face config before `normalize` reads it, and the
`ModelSpec` it builds. Everything later trusts what passes here, so a bad value is a one-line error
naming the field and the fix, never a traceback or a plan built on a negative size.

Bounds are sanity limits far above any real model (hidden sizes are at most tens of thousands,
vocabularies a few hundred thousand, contexts ten million): values above them are typos or hostile.
"""

from __future__ import annotations

import math
from typing import Any

from planner.errors import PlannerError
from planner.models.spec import ModelSpec

MAX_DEPTH = 32
"""Nesting of JSON objects and lists; real configs nest 3-4 deep."""
MAX_NODES = 1_000_000
MAX_DIM = 2**20
MAX_LAYERS = 2**14
MAX_EXPERTS = 2**16
MAX_TOKENS = 2**31 - 1
"""Context lengths: vLLM indexes positions with int32 tensors."""

_FIX = "fix the config.json"
# field -> (minimum, maximum); a field that is absent or null keeps the family's default.
_DIMS = (
    "hidden_size",
    "d_model",
    "n_embd",
    "intermediate_size",
    "ffn_dim",
    "head_dim",
    "attention_head_dim",
    "moe_intermediate_size",
    "intermediate_size_mlp",
    "kv_lora_rank",
    "q_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "word_embed_proj_dim",
    "linear_key_head_dim",
    "linear_value_head_dim",
    "mamba_head_dim",
    "ssm_state_size",
    "mamba_d_state",
    "mamba_expand",
    "projector_input_dim",
    "projector_output_dim",
    "vision_output_dim",
    "embed_dim",
    "out_hidden_size",
    "patch_size",
    "image_size",
    "init_pos_emb_height",
    "init_pos_emb_width",
    "spatial_merge_size",
    "temporal_patch_size",
    "num_channels",
    "in_channels",
    "in_chans",
)
_HEADS = (
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
    "linear_num_key_heads",
    "linear_num_value_heads",
    "mamba_num_heads",
    "n_groups",
    "mamba_n_groups",
    "num_heads",
)
_LENGTHS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
    "original_max_position_embeddings",
    "sliding_window",
    "attention_chunk_size",
    "mamba_chunk_size",
    "chunk_size",
)
_KERNELS = ("linear_conv_kernel_dim", "conv_kernel", "mamba_d_conv")
_STEPS = (
    "decoder_sparse_step",
    "moe_layer_freq",
    "interleave_moe_layer_step",
    "full_attention_interval",
    "attn_layer_period",
    "sliding_window_pattern",
)
_COUNTS = (
    "num_nextn_predict_layers",
    "n_shared_experts",
    "first_k_dense_replace",
    "attn_layer_offset",
    "mm_tokens_per_image",
    "shared_expert_intermediate_size",
    "depth",
)
INT_FIELDS: dict[str, tuple[int, int]] = {
    **{k: (1, MAX_DIM) for k in _DIMS},
    **{k: (1, MAX_DIM) for k in _HEADS},
    **{k: (1, MAX_TOKENS) for k in _LENGTHS},
    **{k: (2, 1024) for k in _KERNELS},
    **{k: (1, MAX_LAYERS) for k in _STEPS},
    **{k: (0, MAX_DIM) for k in _COUNTS},
    "vocab_size": (1, 2**24),
    "num_hidden_layers": (1, MAX_LAYERS),
    "num_local_experts": (1, MAX_EXPERTS),
    "num_experts": (0, MAX_EXPERTS),
    "n_routed_experts": (0, MAX_EXPERTS),
    "num_experts_per_tok": (1, MAX_EXPERTS),
    "experts_per_token": (1, MAX_EXPERTS),
}
# field -> (exclusive minimum, inclusive maximum)
FLOAT_FIELDS: dict[str, tuple[float, float]] = {
    "partial_rotary_factor": (0.0, 1.0),
    "pixel_shuffle_ratio": (0.0, 1.0),
    "mlp_ratio": (0.0, 64.0),
}
BOOL_FIELDS = (
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "use_sliding_window",
    "use_qk_norm",
    "multimodal_projector_bias",
    "multi_modal_projector_bias",
)
INT_LIST_FIELDS = ("mlp_only_layers", "no_rope_layers")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _walk(config: Any) -> None:
    """Depth and size of the whole document, without recursion (a 200,000-deep list must not exhaust
    the stack). Non-finite numbers are refused only where they are read: Nemotron-H's config holds a
    legitimate `time_step_limit: [0.0, Infinity]`. Every value is counted once, when its container is
    opened; only containers go on the stack, each with a link to its parent and its key, and the path
    is spelled only for the error (a ModelOpt config can hold 90,000 values)."""
    if not isinstance(config, (dict, list)):
        return
    stack: list[tuple[Any, int, Any]] = [(config, 0, None)]
    nodes = 1
    while stack:
        value, depth, link = stack.pop()
        items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        nodes += len(items)
        if items and (depth + 1 > MAX_DEPTH or nodes > MAX_NODES):
            raise PlannerError(
                f"config.json nests deeper than {MAX_DEPTH} levels or holds over {MAX_NODES:,} values "
                f"(at {_path((link, items[0][0])) or 'the top'}): pass a Hugging Face config.json"
            )
        stack.extend((v, depth + 1, (link, k)) for k, v in items if isinstance(v, (dict, list)))


def _path(link: Any) -> str:
    """`a.b[3].c` from the (parent link, key) chain of `_walk`."""
    parts: list[str] = []
    while link is not None:
        link, key = link
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(reversed(parts)).lstrip(".")


def _check_fields(cfg: dict[str, Any], prefix: str) -> None:
    for key, value in cfg.items():
        if value is None:
            continue
        name = f"{prefix}{key}"
        if key == "moe_layer_freq" and isinstance(value, list):
            continue  # MiMo-V2: one 0/1 flag per layer, checked by its family module
        if key in INT_FIELDS:
            lo, hi = INT_FIELDS[key]
            if not _is_int(value) or not lo <= value <= hi:
                raise PlannerError(
                    f"config field {name!r} must be an integer from {lo} to {hi:,}, got {value!r}: {_FIX}"
                )
        elif key in FLOAT_FIELDS:
            lo, hi = FLOAT_FIELDS[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo < value <= hi:
                raise PlannerError(
                    f"config field {name!r} must be a number above {lo:g} and at most {hi:g}, got {value!r}: {_FIX}"
                )
        elif key in BOOL_FIELDS and not isinstance(value, bool):
            raise PlannerError(f"config field {name!r} must be true or false, got {value!r}: {_FIX}")
        elif key in INT_LIST_FIELDS and not (
            isinstance(value, list) and all(_is_int(i) and 0 <= i <= MAX_LAYERS for i in value)
        ):
            raise PlannerError(
                f"config field {name!r} must be a list of layer indices (integers >= 0), got {value!r}: {_FIX}"
            )


def _check_rope(rope: Any, prefix: str) -> None:
    if not isinstance(rope, dict):
        return  # normalize names a non-object rope_scaling itself
    factor = rope.get("factor")
    if factor is not None and (
        not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0 < factor <= 1024
    ):
        raise PlannerError(
            f"config field '{prefix}rope_scaling.factor' must be a number above 0 and at most 1024, "
            f"got {factor!r}: {_FIX}"
        )
    _check_fields({k: v for k, v in rope.items() if k == "original_max_position_embeddings"}, f"{prefix}rope_scaling.")


def check_config(config: Any) -> None:
    """The raw config (and its text_config / vision_config): shape, finite numbers, field types and bounds."""
    if not isinstance(config, dict):
        raise PlannerError("config.json must hold a JSON object: pass a Hugging Face config.json")
    _walk(config)
    if not isinstance(config.get("model_type", ""), str):
        raise PlannerError(f"config field 'model_type' must be a string, got {config['model_type']!r}: {_FIX}")
    archs = config.get("architectures")
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) and a for a in archs)):
        raise PlannerError(f"config field 'architectures' must be a list of class names, got {archs!r}: {_FIX}")
    for prefix, sub in (
        ("", config),
        ("text_config.", config.get("text_config")),
        ("vision_config.", config.get("vision_config")),
    ):
        if isinstance(sub, dict):
            if prefix and not isinstance(sub.get("model_type", ""), str):
                raise PlannerError(f"config field '{prefix}model_type' must be a string: {_FIX}")
            _check_fields(sub, prefix)
            _check_rope(sub.get("rope_scaling"), prefix)
            _check_ep_size(sub, prefix)
        elif sub is not None and prefix:
            raise PlannerError(f"config field {prefix[:-1]!r} must be a JSON object or null: {_FIX}")


def _check_ep_size(cfg: dict[str, Any], prefix: str) -> None:
    """DeepSeek-style configs carry the expert parallelism their own modeling code runs with: `ep_size`
    ranks of n_routed_experts // ep_size experts each. vLLM ignores the field (it places whole experts
    over --enable-expert-parallel's TP x DP ranks itself, unevenly if it must), but experts that
    `ep_size` does not divide contradict the config's own layout."""
    ep, experts = cfg.get("ep_size"), cfg.get("n_routed_experts")
    if ep is None or not _is_int(experts):
        return
    if not _is_int(ep) or ep <= 0 or experts % ep:
        raise PlannerError(
            f"config field '{prefix}ep_size' {ep!r} does not divide the {experts} routed experts "
            f"('{prefix}n_routed_experts'; its modeling code gives each rank n_routed_experts // ep_size): {_FIX}"
        )


def check_spec(spec: ModelSpec) -> None:
    """What the planner relies on in every normalized model, whatever its family."""
    sizes = {
        "hidden_size": spec.hidden_size,
        "vocab_size": spec.vocab_size,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "v_head_dim": spec.v_head_dim,
        "intermediate_size": spec.intermediate_size,
        "max_model_len": spec.max_model_len_default,
    }
    for name, value in sizes.items():
        if not _is_int(value) or value <= 0:
            raise PlannerError(f"the model's {name} comes out as {value!r}, it must be a positive integer: {_FIX}")
    if not 0 < spec.num_layers <= MAX_LAYERS:
        raise PlannerError(f"the model has {spec.num_layers} decoder layers, it needs 1 to {MAX_LAYERS:,}: {_FIX}")
    if spec.mla is None and spec.num_heads % spec.num_kv_heads:
        raise PlannerError(
            f"num_key_value_heads {spec.num_kv_heads} does not divide num_attention_heads {spec.num_heads} "
            f"(each KV head serves a whole group of query heads): {_FIX}"
        )
    if spec.max_model_len_default > MAX_TOKENS:
        raise PlannerError(
            f"the model's context comes out as {spec.max_model_len_default:,} tokens, above "
            f"{MAX_TOKENS:,}: {_FIX} (max_position_embeddings, rope_scaling.factor)"
        )
    if any(l.window is not None and not (_is_int(l.window) and l.window > 0) for l in spec.layers):
        raise PlannerError(
            f"a sliding-window or chunked layer has no positive window: {_FIX} (sliding_window, attention_chunk_size)"
        )
    _check_moe(spec)
    if spec.mamba is not None and any(d <= 0 for d in (*spec.mamba.conv_state_shape, *spec.mamba.ssm_state_shape)):
        raise PlannerError(
            f"the recurrent state shape {spec.mamba.conv_state_shape} / {spec.mamba.ssm_state_shape} "
            f"has an empty dimension: {_FIX}"
        )
    v = spec.vision
    # heads split the width of a tower vLLM shards by heads; a whole tower's family checks its own QKV width
    if v is not None and v.num_layers and ((v.tp_split and v.hidden_size % v.num_heads) or v.patch_size > v.image_size):
        raise PlannerError(
            f"vision_config: {v.num_heads} heads must divide hidden size {v.hidden_size} and the patch "
            f"({v.patch_size}) must not exceed the image ({v.image_size}): {_FIX}"
        )


def _check_moe(spec: ModelSpec) -> None:
    moe = spec.moe
    if moe is None:
        return
    if not 0 < moe.experts_per_token <= moe.num_experts:
        raise PlannerError(
            f"num_experts_per_tok {moe.experts_per_token} must be from 1 to the {moe.num_experts} routed "
            f"experts: {_FIX}"
        )
    if moe.expert_intermediate_size <= 0 or moe.shared_intermediate_size < 0 or moe.num_shared_experts < 0:
        raise PlannerError(
            f"a mixture-of-experts model needs a positive expert size (moe_intermediate_size), got "
            f"{moe.expert_intermediate_size}: {_FIX}"
        )


# ---- the model against the serving settings -----------------------------------------------------


def _divisors(n: int) -> str:
    return ", ".join(str(t) for t in range(1, n + 1) if n % t == 0)


def check_tp(spec: ModelSpec, tp: int) -> None:
    """Family TP rules beyond the heads' (`planner.inspection.check_parallel`): DeepSeek-V4's grouped
    output projection (vLLM's DeepseekV4Attention: `n_local_groups = o_groups // tp`, `wo_a` column-
    parallel over o_groups x o_lora_rank, run as a batched matmul over the local groups), so a TP
    that does not divide o_groups leaves a rank no whole group and vLLM fails building the layer."""
    groups = dict(spec.family_fields).get("o_groups", 0)
    if groups and groups % tp:
        ok = math.gcd(groups, spec.num_heads)
        raise PlannerError(
            f"--tp {tp} does not divide the model's {groups} output-projection groups (config field "
            f"'o_groups'; vLLM gives each rank o_groups // tp of them): valid TP sizes are {_divisors(ok)}"
        )


def check_kv_cache_dtype(spec: ModelSpec, kv_cache_dtype: str) -> None:
    """DeepSeek-V4's default CUDA attention (FlashMLA; FlashInfer's SM120 kernels on 12.x: vLLM's
    `_select_dsv4_attn_cls`) keeps the KV cache in the fp8_ds_mla format: `auto` becomes fp8_ds_mla,
    and `_resolve_dsv4_kv_cache_dtype` raises for a 16-bit request."""
    if spec.compress_ratios and kv_cache_dtype in ("bfloat16", "float16"):
        raise PlannerError(
            f"--kv-cache-dtype {kv_cache_dtype}: vLLM keeps DeepSeek-V4's KV cache in its fp8_ds_mla format "
            "(FlashMLA; FlashInfer on SM12) and refuses a 16-bit one: use --kv-cache-dtype auto or fp8"
        )


V4_BLOCK_TOKENS = 256
"""DeepSeek-V4's sparse attention and indexer kernels take 256-token blocks (vLLM 0.32
models/deepseek_v4/sparse_mla.py and nvidia/flashinfer_sparse.py get_supported_kernel_block_sizes)."""


def check_block_size(spec: ModelSpec, block_size: int | None, sparse_block: int | None) -> None:
    """A --block-size vLLM's sparse-attention backends refuse. DSA (DeepSeek-V3.2, GLM-5): the
    indexer's DeepseekV32IndexerBackend takes kernel blocks of `sparse_block` (64 on CUDA, release
    data) and a block size must be a multiple of it (`supports_block_size`); vLLM finds no attention
    backend otherwise. DeepSeek-V4: multiples of 256, of which the plan models 256 itself."""
    if block_size is None:
        return
    if spec.compress_ratios and block_size != V4_BLOCK_TOKENS:
        why = "vLLM's DeepSeek-V4 kernels take multiples of 256" if block_size % V4_BLOCK_TOKENS else "not modelled"
        raise PlannerError(
            f"--block-size {block_size} for DeepSeek-V4 ({why}): use --block-size {V4_BLOCK_TOKENS} or leave it out"
        )
    m = spec.mla
    if m is not None and m.index_head_dim and sparse_block and block_size % sparse_block:
        raise PlannerError(
            f"--block-size {block_size}: vLLM's sparse-attention indexer (config field 'index_topk') takes "
            f"blocks of a multiple of {sparse_block} tokens and finds no backend for {block_size}: use "
            f"--block-size {sparse_block} (or a multiple), or leave it out"
        )


def uses_sparse_attention(spec: ModelSpec) -> bool:
    """DeepSeek sparse attention: a lightning indexer beside MLA (V3.2, GLM-5) or DeepSeek-V4's compressed layers."""
    return bool(spec.compress_ratios) or (spec.mla is not None and spec.mla.index_n_heads > 0)


def sparse_attention_refusal(spec: ModelSpec, gpu_name: str, compute_capability: str | None) -> str | None:
    """Why vLLM cannot run this model's attention on the GPU, or None: DeepSeek sparse attention runs only
    on a sparse MLA backend, and vLLM has none below Hopper (profiles/gpu_families.yaml
    `sparse_attention_capabilities`)."""
    from planner.target import gpu_families

    families = gpu_families()
    if not uses_sparse_attention(spec) or families.has_sparse_attention(compute_capability):
        return None
    needs = " or ".join(f"{r.min}-{r.max}" for r in families.sparse_attention_capabilities)
    return (
        f"{spec.architecture} uses DeepSeek sparse attention, which vLLM runs only on a sparse MLA backend "
        f"(compute capability {needs}); {gpu_name} has compute capability "
        f"{compute_capability or families.default_compute_capability}: use a Hopper or Blackwell GPU (H100, H200, B200)"
    )
