"""Attention + Mamba/linear-attention hybrids (Qwen3-Next, Nemotron-H, Jamba): the layer pattern
and the recurrent state per sequence as vLLM's `MambaStateShapeCalculator` sizes it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from planner.errors import PlannerError
from planner.models.fields import Config, common_fields, positive_int, required
from planner.models.spec import LayerSpec, MambaSpec, MoESpec

_FIX = "fix the config.json"


def mamba_state(cfg: Config) -> MambaSpec:
    base = mamba_state_shapes(cfg)
    # vLLM's ModelConfig.get_mamba_chunk_size: mamba_chunk_size, else chunk_size, else 2048
    chunk = int(cfg.get("mamba_chunk_size") or cfg.get("chunk_size") or 2048)
    return dataclasses.replace(base, chunk_size=chunk)


def mamba_state_shapes(cfg: Config) -> MambaSpec:
    """Per-sequence recurrent state of one Mamba/linear layer, unsharded, as vLLM's
    `MambaStateShapeCalculator` sizes it (`layers/mamba/mamba_utils.py`): GDN conv
    `(2·k_heads·k_dim + v_heads·v_dim, kernel − 1)`, ssm `(v_heads, v_dim, k_dim)`; Mamba1 conv
    `(inner, d_conv − 1)`, ssm `(inner, d_state)`; Mamba2 conv `(inner + 2·n_groups·d_state,
    kernel − 1)`, ssm `(n_heads, head_dim, d_state)`. The first dimension is the one TP splits
    (vLLM stores the conv state transposed, same bytes)."""
    mt = cfg["model_type"]
    if mt == "qwen3_next":
        k_heads, v_heads = positive_int(cfg, "linear_num_key_heads"), positive_int(cfg, "linear_num_value_heads")
        k_dim, v_dim = positive_int(cfg, "linear_key_head_dim"), positive_int(cfg, "linear_value_head_dim")
        kernel = positive_int(cfg, "linear_conv_kernel_dim")
        conv_dim = 2 * k_heads * k_dim + v_heads * v_dim
        return MambaSpec("gdn", (conv_dim, kernel - 1), (v_heads, v_dim, k_dim))
    if mt == "jamba":
        inner = positive_int(cfg, "mamba_expand") * positive_int(cfg, "hidden_size")
        return MambaSpec(
            "mamba1", (inner, positive_int(cfg, "mamba_d_conv") - 1), (inner, positive_int(cfg, "mamba_d_state"))
        )
    # nemotron_h / bamba style Mamba2
    n_heads, head_dim = positive_int(cfg, "mamba_num_heads"), positive_int(cfg, "mamba_head_dim")
    groups, d_state = (
        positive_int(cfg, "n_groups", "mamba_n_groups"),
        positive_int(cfg, "ssm_state_size", "mamba_d_state"),
    )
    inner = n_heads * head_dim
    kernel = positive_int(cfg, "conv_kernel", "mamba_d_conv")
    return MambaSpec("mamba2", (inner + 2 * groups * d_state, kernel - 1), (n_heads, head_dim, d_state))


# Nemotron-H `hybrid_override_pattern`: M = Mamba2 mixer, * = attention, - = MLP only, E = MoE only
# (no token mixer: attention kind "none", no KV and no state). Newer configs list `layers_block_type`.
NEMOTRON_H_BLOCKS = {"M": "mamba", "*": "full", "-": "none", "E": "none"}
_BLOCK_TYPES = {"mamba": "M", "attention": "*", "mlp": "-", "moe": "E"}


def nemotron_h_pattern(cfg: Config, n_layers: int, field: str = "hybrid_override_pattern") -> str:
    """The block pattern, one character per layer, from `hybrid_override_pattern` or the
    `layers_block_type` list (transformers 5); a wrong length or an unknown block is an error."""
    listed = cfg.get(field.replace("hybrid_override_pattern", "layers_block_type"))
    if cfg.get(field) is None and isinstance(listed, list):
        unknown = sorted({str(b) for b in listed} - set(_BLOCK_TYPES))
        if unknown:
            raise PlannerError(f"config field 'layers_block_type' has unknown block(s) {', '.join(unknown)}: {_FIX}")
        pattern = "".join(_BLOCK_TYPES[b] for b in listed)
        field = field.replace("hybrid_override_pattern", "layers_block_type")
    else:
        pattern = str(required(cfg, field))
    unknown = sorted(set(pattern) - set(NEMOTRON_H_BLOCKS))
    if unknown:
        raise PlannerError(
            f"config field {field!r} has block(s) {', '.join(map(repr, unknown))}: Nemotron-H blocks are M, *, - "
            f"and E; {_FIX}"
        )
    if n_layers and len(pattern) != n_layers:
        raise PlannerError(f"config field {field!r} has {len(pattern)} blocks for num_hidden_layers {n_layers}: {_FIX}")
    return pattern


def _nemotron_h(cfg: Config, spec: dict[str, Any], n_layers: int) -> tuple[LayerSpec, ...]:
    """Nemotron-H: one block per pattern character, each a layer of vLLM's `make_layers`
    (MLP- and MoE-only layers count in the layer total and the PP split)."""
    pattern = nemotron_h_pattern(cfg, n_layers)
    spec.update(
        gated_mlp=False,
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        qkv_bias=bool(cfg.get("attention_bias", False)),
        o_bias=bool(cfg.get("attention_bias", False)),
        norms_per_layer=1,
        rotary_dim=0,
        head_dim=int(cfg.get("head_dim") or cfg.get("attention_head_dim") or spec["head_dim"]),
    )
    spec["v_head_dim"] = spec["head_dim"]
    return tuple(
        LayerSpec(NEMOTRON_H_BLOCKS[c], mlp="moe" if c == "E" else "dense")  # type: ignore[arg-type]
        for c in pattern
    )


def _qwen3_next(cfg: Config, spec: dict[str, Any], n_layers: int) -> tuple[LayerSpec, ...]:
    """Qwen3-Next: gated delta net layers with every `full_attention_interval`-th layer gated full
    attention, MoE MLPs."""
    interval = int(cfg.get("full_attention_interval", 4))
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == n_layers:
        kinds = ["full" if t == "full_attention" else "linear" for t in types]
    else:
        kinds = ["full" if (i + 1) % interval == 0 else "linear" for i in range(n_layers)]
    dense_only = set(cfg.get("mlp_only_layers") or [])
    step = int(cfg.get("decoder_sparse_step", 1) or 1)
    n_experts = int(cfg.get("num_experts") or 0)
    is_moe = [n_experts > 0 and i not in dense_only and (i + 1) % step == 0 for i in range(n_layers)]
    shared = int(cfg.get("shared_expert_intermediate_size") or 0)
    if n_experts:
        spec["moe"] = MoESpec(
            n_experts,
            positive_int(cfg, "num_experts_per_tok"),
            positive_int(cfg, "moe_intermediate_size"),
            num_shared_experts=1 if shared else 0,
            shared_intermediate_size=shared,
            shared_expert_gate=bool(shared),
        )
    spec.update(
        rotary_dim=int(spec["head_dim"] * float(cfg.get("partial_rotary_factor", 1.0))),
        # the Hub checkpoint stores one MTP block (mtp.*) that vLLM loads only for speculative decoding
        num_mtp_layers=int(cfg.get("num_nextn_predict_layers", 1) or 0),
    )
    return tuple(LayerSpec(k, mlp="moe" if m else "dense") for k, m in zip(kinds, is_moe))


def hybrid_fields(cfg: Config) -> dict[str, Any]:
    """Attention + Mamba/linear-attention hybrids: Qwen3-Next, Nemotron-H, and Jamba (recognised for
    KV and state only)."""
    spec = common_fields(cfg)
    mt = cfg["model_type"]
    n_layers = positive_int(cfg, "num_hidden_layers")
    if mt == "qwen3_next":
        layers = _qwen3_next(cfg, spec, n_layers)
    elif mt == "jamba":
        period, offset = int(cfg.get("attn_layer_period", 8)), int(cfg.get("attn_layer_offset", 4))
        layers = tuple(LayerSpec("full" if i % period == offset else "mamba") for i in range(n_layers))
    else:
        layers = _nemotron_h(cfg, spec, n_layers)
    spec.update(layers=layers, mamba=mamba_state(cfg), qk_norm=mt == "qwen3_next")
    return spec
