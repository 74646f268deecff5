"""NVIDIA's Neural-Architecture-Search Llamas (`nemotron-nas`, DeciLMForCausalLM): Llama-3.3-
Nemotron-Super-49B, Llama-3.1-Nemotron-Ultra-253B, Llama-3.1-Nemotron-51B, as vLLM's
nemotron_nas.py builds them.

A Llama whose `block_configs` describe each layer apart: attention `no_op` (no attention and no
input_layernorm: the layer keeps no KV cache, as vLLM's per-stage layer count of attention blocks
says) or Llama attention with num_attention_heads / `n_heads_in_group` KV heads; FFN `no_op` (no MLP
and no post_attention_layernorm) or a gated MLP of `ffn_mult` (intermediate = int(2 x ffn_mult x
hidden / 3) rounded up to a multiple of 256) or an explicit `intermediate_size`. The layers vLLM
replaces with a single linear (`replace_with_linear`) and KV head counts that differ between layers
(pages of different sizes) are refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from planner.errors import PlannerError
from planner.models import tensors as T
from planner.models.families import register, register_tensors
from planner.models.families.common import finish, int_field
from planner.models.fields import common_fields
from planner.models.spec import LayerSpec, ModelSpec

Config = dict[str, Any]
_FIX = "fix the config.json"


def _ffn_width(ffn: Config, hidden: int, i: int) -> int:
    if ffn.get("no_op"):
        return 0
    if ffn.get("ffn_mult") is not None:
        mult = ffn["ffn_mult"]
        if not isinstance(mult, (int, float)) or isinstance(mult, bool) or mult <= 0:
            raise PlannerError(f"config field 'block_configs[{i}].ffn.ffn_mult' must be positive, got {mult!r}: {_FIX}")
        n = int(2 * mult * hidden / 3)
        return -(-n // 256) * 256
    return int_field(ffn, "intermediate_size", f"block_configs[{i}].ffn.")


def _blocks(cfg: Config, heads: int) -> tuple[list[LayerSpec], list[int], int]:
    """Per layer: attention kind, FFN width; and the one KV head count of the attention layers."""
    blocks, n = cfg.get("block_configs"), int_field(cfg, "num_hidden_layers")
    if not isinstance(blocks, list) or len(blocks) != n:
        got = len(blocks) if isinstance(blocks, list) else "no"
        raise PlannerError(f"config field 'block_configs' has {got} entries for num_hidden_layers {n}: {_FIX}")
    layers, widths, groups = [], [], set()
    for i, b in enumerate(blocks):
        attn, ffn = (b or {}).get("attention"), (b or {}).get("ffn")
        if not isinstance(attn, dict) or not isinstance(ffn, dict):
            raise PlannerError(f"config field 'block_configs[{i}]' needs attention and ffn objects: {_FIX}")
        for part, d in (("attention", attn), ("ffn", ffn)):
            if d.get("replace_with_linear"):
                raise PlannerError(
                    f"config field 'block_configs[{i}].{part}.replace_with_linear' (a linear in place of the "
                    f"{part}) is not modelled yet: use a checkpoint without such layers"
                )
        if attn.get("no_op"):
            layers.append(LayerSpec("none"))
        else:
            g = int_field(attn, "n_heads_in_group", f"block_configs[{i}].attention.")
            if heads % g:
                raise PlannerError(
                    f"config field 'block_configs[{i}].attention.n_heads_in_group' {g} does not divide "
                    f"num_attention_heads {heads}: {_FIX}"
                )
            groups.add(g)
            layers.append(LayerSpec("full"))
        widths.append(_ffn_width(ffn, int_field(cfg, "hidden_size"), i))
    if len(groups) != 1:
        raise PlannerError(
            f"config field 'block_configs' gives the attention layers n_heads_in_group {sorted(groups) or 'none'}: "
            "one KV head count (one page size) is modelled"
        )
    return layers, widths, heads // groups.pop()


@register("nemotron-nas", name="nemotron_nas")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    cfg = {k: v for k, v in config.items() if v is not None}
    heads = int_field(cfg, "num_attention_heads")
    layers, widths, kv_heads = _blocks(cfg, heads)
    fields = common_fields({**cfg, "num_key_value_heads": kv_heads})
    fields.update(
        model_type="nemotron-nas",
        layers=tuple(layers),
        intermediate_size=max(widths),
        layer_intermediate_sizes=tuple(widths),
        qkv_bias=bool(cfg.get("attention_bias", False)),
        o_bias=bool(cfg.get("attention_bias", False)),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
    )
    return finish(config, config, fields, quant_files)


@register_tensors("nemotron-nas")
def tensors(spec: ModelSpec) -> list[T.Tensor]:
    h, v = spec.hidden_size, spec.vocab_size
    out = [T.Tensor("model.embed_tokens.weight", (v, h), "embeddings", "vocab", "first")]
    for i, (layer, width) in enumerate(zip(spec.layers, spec.layer_intermediate_sizes)):
        p = f"model.layers.{i}"
        if layer.attention != "none":
            out.append(T.Tensor(f"{p}.input_layernorm.weight", (h,), "norms", "replicated", i))
            out += T._attention(dataclasses.replace(spec, qk_norm=False), f"{p}.self_attn", i)
        if width:
            out.append(T.Tensor(f"{p}.post_attention_layernorm.weight", (h,), "norms", "replicated", i))
            out += T._ffn(spec, f"{p}.mlp", i, width, "mlp")
    out.append(T.Tensor("model.norm.weight", (h,), "norms", "replicated", "last"))
    if not spec.tie_word_embeddings:
        out.append(T.Tensor("lm_head.weight", (v, h), "lm_head", "vocab", "last"))
    return out
