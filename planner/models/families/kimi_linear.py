"""Kimi-Linear (`kimi_linear`, KimiLinearForCausalLM), as vLLM 0.32 builds it (models/kimi_k3/, the
class that also serves Kimi-K3's language model; the KDA layer is
layers/mamba/gdn/kimi_gdn_linear_attn.py).

`linear_attn_config` names the layers, 1-based: `kda_layers` are Kimi Delta Attention, a gated
delta rule with per-channel decay; `full_attn_layers` are MLA (NoPE: `mla_use_nope`), whose latent
cache per token is DeepSeek's (kv_lora_rank + qk_rope_head_dim). The two lists must cover every
layer once.

A KDA layer with `num_heads` H of `head_dim` d (P = H x d): q, k, v [P, hidden] and b [H, hidden]
column-parallel (vLLM fuses them with f_a into in_proj_qkvgfab, f_a replicated); the low-rank
decay f_a [d, hidden] (replicated) -> f_b [P, d] and output gate g_a [d, hidden] (replicated) ->
g_b [P, d], both column-parallel; three short convolutions [P, 1, kernel] (vLLM's packed conv1d,
float32), dt_bias [P] and A_log [H] (float32), the gated RMSNorm over one head (replicated), o_proj
row-parallel. vLLM's float32 parameters take two bytes more each than the model dtype: a runtime
twin per tensor (memory, not parameters).

The recurrent state per sequence (`MambaStateShapeCalculator.kda_state_shape`): one conv state of
(3P / TP, kernel - 1) in the model dtype and a recurrent state (H / TP, d, d) in float32
(`kda_state_dtype` with --mamba-ssm-cache-dtype auto). The MLP: dense on the first
`first_k_dense_replace` layers, else KimiMoE (router with a float32 e_score_correction_bias,
`num_experts` routed experts, `num_shared_experts` x moe_intermediate_size shared).

Kimi-K3's language model is this class too: its additions (the full-rank KDA gate, q-LoRA MLA with
an output gate, the latent MoE, attention residuals, SiTU) come all together under the kimi_k3
wrapper (planner.models.families.kimi_k3, spec type kimi_k3) and are refused in a kimi_linear
config, as are MTP layers. vLLM pads the routed experts' intermediate size to 256 per rank under
TP without expert parallelism (moe_intermediate_size / TP < 256); the weights here are unpadded
(the planned command enables expert parallelism for MoE models).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from planner.errors import PlannerError
from planner.models import normalize as base
from planner.models import tensors as T
from planner.models.families import register, register_tensors
from planner.models.families.common import finish, int_field
from planner.models.families.minimax_m2 import fp32_router_twin
from planner.models.spec import LayerSpec, MambaSpec, ModelSpec

Config = dict[str, Any]
_FIX = "fix the config.json"
# Kimi-K3's fields on the shared KimiLinearConfig: present and set, they change the shapes
_K3_FIELDS = ("attn_res_block_size", "routed_expert_hidden_size", "mla_use_output_gate")


def _layer_lists(cfg: Config, n: int, k3: bool) -> tuple[set[int], dict[str, Any]]:
    """The 0-based KDA layers, from the 1-based lists, which must split 1..n between them."""
    lin = cfg.get("linear_attn_config")
    if not isinstance(lin, dict):
        raise PlannerError(f"config.json (model_type 'kimi_linear') has no 'linear_attn_config' object: {_FIX}")
    lists = {}
    for key in ("kda_layers", "full_attn_layers"):
        v = lin.get(key)
        if not isinstance(v, list) or any(not isinstance(i, int) or isinstance(i, bool) for i in v):
            raise PlannerError(
                f"config field 'linear_attn_config.{key}' must be a list of 1-based layer numbers: {_FIX}"
            )
        lists[key] = v
    kda, full = lists["kda_layers"], lists["full_attn_layers"]
    if sorted(kda + full) != list(range(1, n + 1)):
        raise PlannerError(
            f"config fields 'linear_attn_config.kda_layers' ({len(kda)}) and 'full_attn_layers' ({len(full)}) must "
            f"name each of the num_hidden_layers {n} layers (1-based) exactly once: {_FIX}"
        )
    if bool(lin.get("use_full_rank_gate")) != k3:
        raise PlannerError(
            "config field 'linear_attn_config.use_full_rank_gate' must be "
            + (
                "true for Kimi-K3 (vLLM's KimiK3DeltaAttention)"
                if k3
                else "false: Kimi-K3's KDA needs the kimi_k3 config"
            )
        )
    return {i - 1 for i in kda}, lin


def _k3_fields(config: Config, k3: bool) -> None:
    """Kimi-K3's fields come all together (the kimi_k3 wrapper) or not at all (Kimi-Linear)."""
    for key in _K3_FIELDS:
        if bool(config.get(key)) != k3:
            raise PlannerError(
                f"config field {key!r} "
                + ("is missing: Kimi-K3's language model sets it" if k3 else "(Kimi-K3's) needs the kimi_k3 config")
            )
    if k3:
        int_field(config, "attn_res_block_size")
        int_field(config, "routed_expert_hidden_size")
        int_field(config, "q_lora_rank")
    acts = ("situ", "silu") if k3 else ("silu",)
    if config.get("hidden_act", "silu") not in acts:
        raise PlannerError(
            f"config field 'hidden_act' {config['hidden_act']!r}: vLLM's KimiMLP takes {', '.join(acts)}"
        )


def _checked(config: Config, k3: bool = False) -> tuple[Config, set[int], Config]:
    n = int_field(config, "num_hidden_layers")
    kda, lin = _layer_lists(config, n, k3)
    _k3_fields(config, k3)
    if config.get("num_nextn_predict_layers"):
        raise PlannerError("config field 'num_nextn_predict_layers': Kimi-Linear MTP layers are not modelled yet")
    if config.get("mla_use_nope") is not True and len(kda) < n:
        raise PlannerError("config field 'mla_use_nope' must be true: vLLM builds Kimi-Linear's MLA NoPE-only")
    for key in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
        int_field(config, key)
    experts, top_k = int_field(config, "num_experts"), int_field(config, "num_experts_per_token")
    if top_k > experts:
        raise PlannerError(f"config field 'num_experts_per_token' {top_k} exceeds num_experts {experts}: {_FIX}")
    heads = int_field(lin, "num_heads", "linear_attn_config.")
    dim = int_field(lin, "head_dim", "linear_attn_config.")
    kernel = int_field(lin, "short_conv_kernel_size", "linear_attn_config.")
    if kernel < 2:
        raise PlannerError(f"config field 'linear_attn_config.short_conv_kernel_size' must be at least 2: {_FIX}")
    cfg = {k: v for k, v in config.items() if v is not None}
    # vLLM reads max_position_embeddings, else model_max_length (the Hub config has only the latter)
    cfg.setdefault("max_position_embeddings", config.get("model_max_length") or 4096)
    cfg.setdefault("head_dim", cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"])  # MLA's; K3 gives none
    cfg.update(
        model_type="deepseek_v3",
        n_routed_experts=experts,
        num_experts_per_tok=top_k,
        n_shared_experts=int(config.get("num_shared_experts") or 0),
        topk_method="noaux_tc",  # KimiMoE always builds e_score_correction_bias
        num_nextn_predict_layers=0,
    )
    return cfg, kda, {"heads": heads, "dim": dim, "kernel": kernel}


def text_fields(config: Config, k3: bool = False) -> dict[str, Any]:
    """The ModelSpec fields of a Kimi-Linear text config (Kimi-K3's with `k3`: spec type kimi_k3,
    the routed experts in the latent width)."""
    cfg, kda, k = _checked(config, k3)
    fields = base._deepseek(cfg)
    proj = k["heads"] * k["dim"]
    fields.update(
        model_type="kimi_k3" if k3 else "kimi_linear",
        layers=tuple(
            LayerSpec("linear" if i in kda else "mla", mlp=layer.mlp) for i, layer in enumerate(fields["layers"])
        ),
        mamba=MambaSpec("kda", (3 * proj, k["kernel"] - 1), (k["heads"], k["dim"], k["dim"]), ssm_dtype="float32"),  # type: ignore[arg-type]
    )
    if k3:
        fields["moe"] = dataclasses.replace(fields["moe"], latent_size=int(config["routed_expert_hidden_size"]))
    return fields


@register("kimi_linear", name="kimi_linear")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    return finish(config, config, text_fields(config), quant_files)


def _kda(spec: ModelSpec, p: str, i: int) -> list[T.Tensor]:
    m = spec.mamba
    assert m is not None
    h = spec.hidden_size
    heads, dim = m.ssm_state_shape[0], m.ssm_state_shape[1]
    proj, kernel = heads * dim, m.conv_state_shape[1] + 1
    out = [T.Tensor(f"{p}.{x}_proj.weight", (proj, h), "mamba", "column", i, True) for x in "qkv"]
    if spec.model_type == "kimi_k3":  # KimiK3DeltaAttention: a full-rank output gate
        out.append(T.Tensor(f"{p}.g_proj.weight", (proj, h), "mamba", "column", i, True))
    else:
        out += [
            T.Tensor(f"{p}.g_a_proj.weight", (dim, h), "mamba", "replicated", i, True),
            T.Tensor(f"{p}.g_b_proj.weight", (proj, dim), "mamba", "column", i, True),
        ]
    out += [
        T.Tensor(f"{p}.b_proj.weight", (heads, h), "mamba", "column", i, True),
        T.Tensor(f"{p}.f_a_proj.weight", (dim, h), "mamba", "replicated", i, True),
        T.Tensor(f"{p}.f_b_proj.weight", (proj, dim), "mamba", "column", i, True),
        T.Tensor(f"{p}.o_norm.weight", (dim,), "norms", "replicated", i),
        T.Tensor(f"{p}.o_proj.weight", (h, proj), "mamba", "row", i, True),
    ]
    fp32 = [T.Tensor(f"{p}.{x}_conv1d.weight", (proj, 1, kernel), "mamba", "column", i) for x in "qkv"]
    fp32 += [
        # stored float32 in the checkpoint (A_log as [1, 1, H, 1])
        T.Tensor(f"{p}.dt_bias", (proj,), "mamba", "column", i, stored_dtype="float32"),
        T.Tensor(f"{p}.A_log", (heads,), "mamba", "heads", i, stored_dtype="float32"),
    ]
    # the twins hold the two bytes beyond the model dtype (in the model dtype, whatever is stored)
    return out + fp32 + [dataclasses.replace(fp32_router_twin(t), stored_dtype=None) for t in fp32]


def _mla(spec: ModelSpec, p: str, i: int) -> list[T.Tensor]:
    """DeepSeek's MLA (q through its latent when q_lora_rank is set); Kimi-K3's adds the output gate
    g_proj [heads x v_head_dim, hidden], column-parallel."""
    out = T._mla_attention(spec, p, i)
    if spec.model_type == "kimi_k3":
        assert spec.mla is not None
        gate = (spec.num_heads * spec.mla.v_head_dim, spec.hidden_size)
        out.append(T.Tensor(f"{p}.g_proj.weight", gate, "attention", "column", i, True))
    return out


def _moe(spec: ModelSpec, p: str, i: int) -> list[T.Tensor]:
    """KimiMoE: router, float32 e_score_correction_bias, routed and shared experts; with a latent
    width (Kimi-K3) the routed experts work between routed_expert_down_proj [latent, hidden], its
    RMSNorm and routed_expert_up_proj [hidden, latent], all replicated."""
    moe, h = spec.moe, spec.hidden_size
    assert moe is not None
    if not moe.latent_size:
        out = T._moe(spec, p, i)
    else:
        e, inter, lat = moe.num_experts, moe.expert_intermediate_size, moe.latent_size
        out = [
            T.Tensor(f"{p}.gate.weight", (e, h), "router", "replicated", i),
            T.Tensor(f"{p}.gate.e_score_correction_bias", (e,), "router", "replicated", i),
            T.Tensor(f"{p}.experts.gate_up_proj", (e, 2 * inter, lat), "experts", "experts", i, True),
            T.Tensor(f"{p}.experts.down_proj", (e, lat, inter), "experts", "experts", i, True),
            T.Tensor(f"{p}.routed_expert_down_proj.weight", (lat, h), "mlp", "replicated", i, True),
            T.Tensor(f"{p}.routed_expert_norm.weight", (lat,), "norms", "replicated", i),
            T.Tensor(f"{p}.routed_expert_up_proj.weight", (h, lat), "mlp", "replicated", i, True),
        ]
        out += T._ffn(spec, f"{p}.shared_experts", i, moe.shared_intermediate_size, "shared_experts")
    return out + [fp32_router_twin(t) for t in out if t.name.endswith("e_score_correction_bias")]


def _attn_res(p: str, h: int, stage: T.Stage, names: tuple[str, ...]) -> list[T.Tensor]:
    """Kimi-K3's attention residuals: an RMSNorm and a pseudo-query [1, hidden] per site."""
    out = []
    for n in names:
        out += [
            T.Tensor(f"{p}.{n}_res_norm.weight", (h,), "norms", "replicated", stage),
            T.Tensor(f"{p}.{n}_res_proj.weight", (1, h), "norms", "replicated", stage),
        ]
    return out


@register_tensors("kimi_linear", "kimi_k3")
def tensors(spec: ModelSpec) -> list[T.Tensor]:
    """The vision tower (Kimi-K3), embedding, per layer two RMSNorms (+ Kimi-K3's attention
    residuals), KDA or MLA, the dense MLP or KimiMoE, final norm and head."""
    h, v = spec.hidden_size, spec.vocab_size
    k3 = spec.model_type == "kimi_k3"
    out = T._vision(spec) + [T.Tensor("model.embed_tokens.weight", (v, h), "embeddings", "vocab", "first")]
    for i, layer in enumerate(spec.layers):
        p = f"model.layers.{i}"
        out += [
            T.Tensor(f"{p}.input_layernorm.weight", (h,), "norms", "replicated", i),
            T.Tensor(f"{p}.post_attention_layernorm.weight", (h,), "norms", "replicated", i),
        ]
        out += _attn_res(p, h, i, ("self_attention", "mlp")) if k3 else []
        out += _kda(spec, f"{p}.self_attn", i) if layer.attention == "linear" else _mla(spec, f"{p}.self_attn", i)
        if layer.mlp == "moe":
            out += _moe(spec, f"{p}.block_sparse_moe", i)
        else:
            out += T._ffn(spec, f"{p}.mlp", i, spec.intermediate_size, "mlp")
    out.append(T.Tensor("model.norm.weight", (h,), "norms", "replicated", "last"))
    out += _attn_res("model", h, "last", ("output_attn",)) if k3 else []
    if not spec.tie_word_embeddings:
        out.append(T.Tensor("lm_head.weight", (v, h), "lm_head", "vocab", "last"))
    return [dataclasses.replace(t, name=t.name.replace(".shared_expert.", ".shared_experts.")) for t in out]
