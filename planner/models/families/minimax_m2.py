"""MiniMax-M2 / M2.1 / M2.5 / M2.7 (`minimax_m2`), as vLLM's minimax_m2.py builds them.

Every layer is full GQA attention (`attn_type_list` all 1: the M1 lightning-attention layers are
gone) with a partial rotary of `rotary_dim` channels, and a sigmoid-routed MoE block without a
shared expert (`shared_intermediate_size` 0): router `gate` [experts, hidden] plus, with
`use_routing_bias`, a per-expert `e_score_correction_bias`; experts stored as w1/w2/w3. The q/k norms
are RMSNorms over the whole projection (`MiniMaxText01RMSNormTP`: weights of heads x head_dim and
kv_heads x head_dim, split across TP ranks with the heads), not per head as in Qwen3. The
checkpoints store no MTP weights although the config names `num_mtp_modules` (the published totals
are the main model's). vLLM builds the router in float32 (`GateLinear(params_dtype=float32)`): each
router weight gets a runtime twin of its shape for the two bytes beyond bf16 (memory, no parameters).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from planner.errors import PlannerError
from planner.models import normalize as base
from planner.models import tensors as T
from planner.models.families import register, register_tensors
from planner.models.families.common import finish, int_field
from planner.models.spec import LayerSpec, ModelSpec, MoESpec

Config = dict[str, Any]
_FIX = "fix the config.json"


def _check(cfg: Config) -> int:
    n = int_field(cfg, "num_hidden_layers")
    types = cfg.get("attn_type_list")
    if types is not None:
        if not isinstance(types, list) or len(types) != n:
            got = len(types) if isinstance(types, list) else repr(types)
            raise PlannerError(f"config field 'attn_type_list' has {got} entries for num_hidden_layers {n}: {_FIX}")
        if any(t != 1 for t in types):
            raise PlannerError(
                "config field 'attn_type_list' has lightning-attention layers (0): MiniMax-M2 is full "
                "attention throughout; a MiniMax-M1-style hybrid is not modelled yet"
            )
    if cfg.get("shared_intermediate_size"):
        raise PlannerError(
            f"config field 'shared_intermediate_size' {cfg['shared_intermediate_size']!r}: vLLM's MiniMax-M2 "
            "builds no shared expert; use a config with 0"
        )
    head_dim = int_field(cfg, "head_dim")
    rotary = int_field(cfg, "rotary_dim")
    if rotary > head_dim or rotary % 2:
        raise PlannerError(f"config field 'rotary_dim' {rotary} must be even and at most head_dim {head_dim}: {_FIX}")
    return n


@register("minimax_m2", name="minimax_m2")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    n = _check(config)
    cfg = {k: v for k, v in config.items() if v is not None}
    cfg.pop("sliding_window", None)  # vLLM passes no window to MiniMax-M2's attention
    cfg["model_type"] = "mixtral"  # full attention on every layer, a MoE block on every layer
    experts = int_field(cfg, "num_local_experts")
    top_k = int_field(cfg, "num_experts_per_tok")
    if top_k > experts:
        raise PlannerError(f"config field 'num_experts_per_tok' {top_k} exceeds num_local_experts {experts}: {_FIX}")
    fields = base._llama_like(cfg)
    fields.update(
        model_type="minimax_m2",
        layers=tuple(LayerSpec("full", mlp="moe") for _ in range(n)),
        qk_norm=bool(config.get("use_qk_norm", True)),
        rotary_dim=int(config["rotary_dim"]),
        moe=MoESpec(
            experts,
            top_k,
            int_field(cfg, "intermediate_size"),
            router_correction_bias=bool(config.get("use_routing_bias", False)),
        ),
    )
    if config.get("qk_norm_type", "per_layer") != "per_layer":
        raise PlannerError(
            f"config field 'qk_norm_type' {config['qk_norm_type']!r} is not modelled: MiniMax-M2 normalizes "
            "q and k over the whole layer ('per_layer')"
        )
    return finish(config, config, fields, quant_files)


@register_tensors("minimax_m2")
def tensors(spec: ModelSpec) -> list[T.Tensor]:
    """Mixtral's tensors with MiniMax's whole-projection q/k norms (split across TP with the heads)."""
    q, kv = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    out = []
    for t in T.from_spec(dataclasses.replace(spec, model_type="mixtral")):
        if t.name.endswith(".q_norm.weight"):
            t = dataclasses.replace(t, shape=(q,), shard="q_heads")
        elif t.name.endswith(".k_norm.weight"):
            t = dataclasses.replace(t, shape=(kv,), shard="kv_heads")
        out.append(t)
        if t.name.endswith(".gate.weight") and t.component == "router":
            out.append(fp32_router_twin(t))
    return out


def fp32_router_twin(t: T.Tensor) -> T.Tensor:
    """The extra bytes of a router vLLM holds in float32 over its bf16 size: a runtime tensor of the
    same shape (counted in the model dtype), not a parameter."""
    return dataclasses.replace(t, name=t.name + ".fp32_upper_half", runtime=True, linear=False)
