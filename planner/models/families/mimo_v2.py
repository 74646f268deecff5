"""MiMo-V2-Flash (`mimo_v2_flash`), as vLLM's mimo_v2.py builds it.

`hybrid_layer_pattern` marks the sliding-window layers (1: window `sliding_window_size`, heads
`swa_num_attention_heads` / `swa_num_key_value_heads`, key `swa_head_dim`, value `swa_v_head_dim`,
and with `add_swa_attention_sink_bias` a sink per head) beside the full GQA layers (0:
`num_key_value_heads`, `head_dim`, `v_head_dim`). Keys and values have different head sizes, which
vLLM caches as they are (`Attention(head_size_v=...)`: a page of heads x (k + v) per token), so
sliding and full layers have different pages: `unify_kv_cache_spec_page_size` raises the smaller
one's block size. `moe_layer_freq` marks the MoE layers (256 sigmoid-routed experts with an
`e_score_correction_bias`, no shared expert); the others have a dense gated MLP. No q/k norms.

The checkpoint also stores `mtp.layers.*` (vLLM skips every name with "mtp" unless speculative
decoding is on); their count is not in the config, so this module reads `num_nextn_predict_layers`
when a config names it and counts none otherwise. vLLM builds the router in float32
(`moe_router_dtype`): as for MiniMax-M2, a runtime twin holds the bytes beyond bf16.
"""

from __future__ import annotations

from typing import Any

from planner.errors import PlannerError
from planner.models import normalize as base
from planner.models import tensors as T
from planner.models.families import register, register_tensors
from planner.models.families.common import finish, int_field
from planner.models.families.minimax_m2 import fp32_router_twin
from planner.models.spec import LayerSpec, ModelSpec, MoESpec

Config = dict[str, Any]
_FIX = "fix the config.json"


def _pattern(cfg: Config, name: str, n: int) -> list[int]:
    values = cfg.get(name)
    if not isinstance(values, list) or len(values) != n or any(v not in (0, 1) for v in values):
        got = f"{len(values)} entries" if isinstance(values, list) else repr(values)
        raise PlannerError(
            f"config field {name!r} ({got}) must list 0 or 1 for each of the num_hidden_layers {n} layers: {_FIX}"
        )
    return values


def _layers(cfg: Config) -> tuple[LayerSpec, ...]:
    n = int_field(cfg, "num_hidden_layers")
    swa, moe = _pattern(cfg, "hybrid_layer_pattern", n), _pattern(cfg, "moe_layer_freq", n)
    window = int_field(cfg, "sliding_window_size") if any(swa) else 0
    k, v = int_field(cfg, "head_dim"), int(cfg.get("v_head_dim") or cfg["head_dim"])
    swa_k = int_field(cfg, "swa_head_dim") if any(swa) else k
    swa_v = int(cfg.get("swa_v_head_dim") or swa_k)
    swa_heads = int_field(cfg, "swa_num_key_value_heads") if any(swa) else 0
    if any(swa) and cfg.get("swa_num_attention_heads", cfg.get("num_attention_heads")) != cfg.get(
        "num_attention_heads"
    ):
        raise PlannerError("config field 'swa_num_attention_heads' differs from num_attention_heads: not modelled yet")
    return tuple(
        LayerSpec(
            "sliding", window=window, mlp="moe" if m else "dense", kv_heads=swa_heads, head_dim=swa_k, v_head_dim=swa_v
        )
        if s
        else LayerSpec(
            "full",
            mlp="moe" if m else "dense",
            kv_heads=int_field(cfg, "num_key_value_heads"),
            head_dim=k,
            v_head_dim=v,
        )
        for s, m in zip(swa, moe)
    )


@register("mimo_v2_flash", name="mimo_v2")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    cfg = {k: v for k, v in config.items() if v is not None}
    layers = _layers(cfg)
    cfg.update(model_type="mimo_v2_flash", rope_scaling=None)
    fields = base.common_fields(cfg)
    experts, top_k = int_field(cfg, "n_routed_experts"), int_field(cfg, "num_experts_per_tok")
    if top_k > experts:
        raise PlannerError(f"config field 'num_experts_per_tok' {top_k} exceeds n_routed_experts {experts}: {_FIX}")
    if cfg.get("n_shared_experts"):
        raise PlannerError(
            "config field 'n_shared_experts': vLLM's MiMo-V2 builds no shared expert; use a config with none"
        )
    rotary = int(fields["head_dim"] * float(cfg.get("partial_rotary_factor", 1.0)))
    fields.update(
        model_type="mimo_v2_flash",
        layers=layers,
        v_head_dim=int(cfg.get("v_head_dim") or fields["head_dim"]),
        rotary_dim=rotary - rotary % 2,
        num_mtp_layers=int(cfg.get("num_nextn_predict_layers") or 0),
        moe=MoESpec(experts, top_k, int_field(cfg, "moe_intermediate_size"), router_correction_bias=True),
    )
    return finish(config, config, fields, quant_files)


def _attention(spec: ModelSpec, p: str, layer: LayerSpec, stage: Any, loaded: bool, comp: str) -> list[T.Tensor]:
    h, heads = spec.hidden_size, spec.num_heads
    kv, k, v = layer.kv_heads, layer.head_dim, layer.v_head_dim or layer.head_dim
    out = [
        T.Tensor(f"{p}.q_proj.weight", (heads * k, h), comp, "q_heads", stage, True, loaded=loaded),
        T.Tensor(f"{p}.k_proj.weight", (kv * k, h), comp, "kv_heads", stage, True, loaded=loaded),
        T.Tensor(f"{p}.v_proj.weight", (kv * v, h), comp, "kv_heads", stage, True, loaded=loaded),
        T.Tensor(f"{p}.o_proj.weight", (h, heads * v), comp, "row", stage, True, loaded=loaded),
    ]
    if layer.attention == "sliding" and spec.model_type == "mimo_v2_flash":
        out.append(T.Tensor(f"{p}.attention_sink_bias", (heads,), comp, "heads", stage, loaded=loaded))
    return out


@register_tensors("mimo_v2_flash")
def tensors(spec: ModelSpec) -> list[T.Tensor]:
    """The checkpoint's tensors: decoder layers, then the MTP layers (sliding attention, dense MLP)."""
    h, v = spec.hidden_size, spec.vocab_size
    out = [T.Tensor("model.embed_tokens.weight", (v, h), "embeddings", "vocab", "first")]
    for i, layer in enumerate(spec.layers):
        p = f"model.layers.{i}"
        out += [T.Tensor(f"{p}.norm{k}.weight", (h,), "norms", "replicated", i) for k in range(2)]
        out += _attention(spec, f"{p}.self_attn", layer, i, True, "attention")
        if layer.mlp == "moe":
            moe = T._moe(spec, f"{p}.mlp", i)
            out += moe + [fp32_router_twin(t) for t in moe if t.name.endswith(".gate.weight")]
        else:
            out += T._ffn(spec, f"{p}.mlp", i, spec.intermediate_size, "mlp")
    out.append(T.Tensor("model.norm.weight", (h,), "norms", "replicated", "last"))
    if not spec.tie_word_embeddings:
        out.append(T.Tensor("lm_head.weight", (v, h), "lm_head", "vocab", "last"))
    swa = next((l for l in spec.layers if l.attention == "sliding"), spec.layers[0])
    for j in range(spec.num_mtp_layers):
        p = f"model.mtp.layers.{j}"
        mtp = [
            T.Tensor(f"{p}.{n}.weight", (h,), "mtp", "replicated", "last", loaded=False)
            for n in ("enorm", "hnorm", "input_layernorm", "pre_mlp_layernorm", "final_layernorm")
        ]
        mtp.append(T.Tensor(f"{p}.eh_proj.weight", (h, 2 * h), "mtp", "replicated", "last", loaded=False))
        mtp += _attention(spec, f"{p}.self_attn", swa, "last", False, "mtp")
        mtp += [
            T.Tensor(
                t.name.replace(f"model.layers.{spec.num_layers}", p),
                t.shape,
                "mtp",
                t.shard,
                "last",
                t.linear,
                loaded=False,
            )
            for t in T._ffn(
                spec, f"model.layers.{spec.num_layers}.mlp", spec.num_layers - 1, spec.intermediate_size, "mtp"
            )
        ]
        out += mtp
    return out
