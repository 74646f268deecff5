"""Kimi-K2.5 (`kimi_k25`, KimiK25ForConditionalGeneration), as vLLM's kimi_k25.py builds it.

The language model is Kimi-K2's (`text_config`, model_type kimi_k2), built by vLLM as
DeepseekV2ForCausalLM: DeepSeek-V3's MLA and MoE shapes, so its spec and tensors are the deepseek
builder's. The checkpoint's `quantization_config` sits in text_config (compressed-tensors W4A16,
int4 groups of 32 on the routed experts; attention, shared experts, the dense MLP and lm_head
ignored). The vision tower is MoonViT3d (kimi_k25_vit.py) under `vision_config`'s vt_* names:
biased Conv2d patches, a learned init_pos_emb_height x init_pos_emb_width position table (the time
table is a non-persistent buffer), LayerNorm blocks with biased fused QKV, output and a two-layer
MLP, a final LayerNorm; then KimiK25MultiModalProjector ('patchmerger': LayerNorm(vt_hidden),
linear_1 [4h -> 4h] and linear_2 [4h -> text hidden], biased, replicated) — Kimi-VL's MoonViT
layout, so the Kimi-VL vision builder sizes it. vLLM keeps the tower and projector unquantized
under compressed-tensors (`_maybe_ignore_quant_config`). The profiling image is Kimi-VL's rule
(an estimate: K2.5 profiles a video chunk or one MaxImageTokenMeta image, whichever is larger).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from planner.errors import PlannerError
from planner.models import normalize as base
from planner.models import tensors as T
from planner.models.families import register, register_tensors
from planner.models.families.common import finish, int_field, text_config
from planner.models.spec import ModelSpec, VisionSpec
from planner.models.vision import vision_spec

Config = dict[str, Any]
TEXT_TYPES = ("kimi_k2", "deepseek_v3")
_FIX = "fix the config.json"
# Kimi_K25VisionConfig's names for the MoonViT fields (vLLM transformers_utils/configs/kimi_k25.py)
_VT_FIELDS = {
    "hidden_size": "vt_hidden_size",
    "intermediate_size": "vt_intermediate_size",
    "num_hidden_layers": "vt_num_hidden_layers",
    "num_attention_heads": "vt_num_attention_heads",
}


def _vision(config: Config, text_hidden: int) -> VisionSpec:
    vcfg = config.get("vision_config")
    if not isinstance(vcfg, dict):
        raise PlannerError(
            f"config.json (model_type 'kimi_k25') has no vision_config object: pass the complete config.json; {_FIX}"
        )
    moon = {k: v for k, v in vcfg.items() if v is not None and k not in _VT_FIELDS.values()}
    for name, field in _VT_FIELDS.items():
        moon[name] = int_field(vcfg, field, "vision_config.")
    if moon["hidden_size"] % moon["num_attention_heads"]:
        raise PlannerError(
            f"config field 'vision_config.vt_num_attention_heads' {moon['num_attention_heads']} does not divide "
            f"vt_hidden_size {moon['hidden_size']}: {_FIX}"
        )
    projector = vcfg.get("mm_projector_type", "patchmerger")
    if projector != "patchmerger":
        raise PlannerError(
            f"config field 'vision_config.mm_projector_type' {projector!r} is not modelled for kimi_k25 "
            "(vLLM's K2.5 projector is 'patchmerger')"
        )
    if vcfg.get("pos_emb_type", "divided_fixed") != "divided_fixed":
        raise PlannerError(
            f"config field 'vision_config.pos_emb_type' {vcfg['pos_emb_type']!r}: vLLM builds only 'divided_fixed'"
        )
    merge = vcfg.get("merge_kernel_size") or [2, 2]
    if not (isinstance(merge, list) and len(merge) == 2 and all(isinstance(k, int) and k > 0 for k in merge)):
        raise PlannerError(f"config field 'vision_config.merge_kernel_size' must be two positive integers: {_FIX}")
    out = int(vcfg.get("text_hidden_size") or text_hidden)
    if out != text_hidden:
        raise PlannerError(
            f"config field 'vision_config.text_hidden_size' {out} contradicts text_config.hidden_size {text_hidden}: "
            f"{_FIX}"
        )
    spec = vision_spec({"model_type": "kimi_vl"}, {**moon, "model_type": "moonvit3d"}, text_hidden)
    assert spec is not None
    return spec


@register("kimi_k25", name="kimi_k25")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    if config.get("model_type") in TEXT_TYPES:
        raise PlannerError("kimi_k25 needs the wrapper config.json (model_type 'kimi_k25' with text_config)")
    text = text_config(config, TEXT_TYPES)
    if text.get("model_type") not in TEXT_TYPES:
        raise PlannerError(
            f"config field 'text_config.model_type' {text.get('model_type')!r}: Kimi-K2.5's language model is "
            f"kimi_k2; {_FIX}"
        )
    cfg = {k: v for k, v in text.items() if v is not None}
    cfg["model_type"] = "deepseek_v3"
    for key in ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size"):
        int_field(cfg, key, "text_config.")
    if cfg["num_experts_per_tok"] > cfg["n_routed_experts"]:
        raise PlannerError(
            f"config field 'text_config.num_experts_per_tok' {cfg['num_experts_per_tok']} exceeds n_routed_experts "
            f"{cfg['n_routed_experts']}: {_FIX}"
        )
    fields = base._deepseek(cfg)
    fields["model_type"] = "kimi_k25"
    return finish(config, text, fields, quant_files, _vision(config, fields["hidden_size"]))


@register_tensors("kimi_k25")
def tensors(spec: ModelSpec) -> list[T.Tensor]:
    """The vision tower, then DeepSeek-V3's tensors under the checkpoint's names
    (`language_model.` + the text model's, the shared expert as `mlp.shared_experts.*`), which the
    ignore lists match (compressed-tensors regexes, ModelOpt's `language_model.model.layers.1.self_attn*`)."""
    out = T._vision(spec)
    for t in T.from_spec(dataclasses.replace(spec, model_type="deepseek_v3", vision=None)):
        name = "language_model." + t.name.replace(".mlp.shared_expert.", ".mlp.shared_experts.")
        out.append(dataclasses.replace(t, name=name))
    return out
