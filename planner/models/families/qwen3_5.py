"""Qwen3.5 and Qwen3.6, dense (`qwen3_5`) and MoE (`qwen3_5_moe`), as vLLM's qwen3_5.py builds them.

The text model is Qwen3-Next's hybrid (three Gated DeltaNet layers, then one gated full-attention
layer, as `layer_types` lists them), so its spec, recurrent state and tensors come from the
Qwen3-Next machinery: the GDN in_proj is stored split (in_proj_qkv, in_proj_z, in_proj_b,
in_proj_a; vLLM fuses them, same parameters), the MoE block is Qwen3-Next's (router, experts, a
shared expert behind a sigmoid gate), the dense model has a gated MLP on every layer. Each
checkpoint stores `mtp_num_hidden_layers` MTP blocks (mtp.*, loaded only for speculative decoding)
sharing the embedding unless `mtp_use_dedicated_embeddings`. The wrapper adds the Qwen3-VL vision
tower (`Qwen3_VisionTransformer`), built on every rank.

The recurrent state: conv in the model dtype, SSM in the config's `mamba_ssm_dtype` (float32 in
the Qwen checkpoints), which vLLM's Qwen3_5ForConditionalGenerationConfig applies while
`--mamba-ssm-cache-dtype` is auto.

The attention rope is M-RoPE over `partial_rotary_factor` of the head; vLLM 0.32 caches
max_position_embeddings rows for it (`mrope_positions_factor` is 1 unless video pruning is on).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from planner.errors import PlannerError
from planner.models import normalize as base
from planner.models import tensors as T
from planner.models.families import register, register_tensors
from planner.models.families.common import finish, qwen3_vl_vision, text_config
from planner.models.spec import ModelSpec

Config = dict[str, Any]
TEXT_TYPES = ("qwen3_5_text", "qwen3_5_moe_text")


def _layer_types(text: Config) -> None:
    n = base._int(text, "num_hidden_layers")
    types = text.get("layer_types")
    if types is None:
        interval = int(text.get("full_attention_interval") or 4)
        text["layer_types"] = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n)]
        return
    if not isinstance(types, list) or len(types) != n:
        got = len(types) if isinstance(types, list) else repr(types)
        raise PlannerError(
            f"config field 'layer_types' has {got} entries for num_hidden_layers {n}: fix the config.json"
        )
    bad = sorted({str(t) for t in types} - {"linear_attention", "full_attention"})
    if bad:
        raise PlannerError(
            f"config field 'layer_types' has {', '.join(bad)}: Qwen3.5 layers are linear_attention "
            "or full_attention; fix the config.json"
        )


@register("qwen3_5", "qwen3_5_moe", *TEXT_TYPES, name="qwen3_5")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    text = text_config(config, TEXT_TYPES)
    moe = text["model_type"] == "qwen3_5_moe_text" or config.get("model_type") == "qwen3_5_moe"
    text["model_type"] = "qwen3_5_moe_text" if moe else "qwen3_5_text"
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise PlannerError("config field 'rope_parameters' must be a JSON object: fix the config.json")
    _layer_types(text)
    if moe and not text.get("num_experts"):
        raise PlannerError("config.json (model_type 'qwen3_5_moe_text') has no 'num_experts': fix the config.json")
    # Qwen3-Next's builder reads the same fields; the rope's kind and factor set the context limit
    cfg = {k: v for k, v in text.items() if v is not None}
    cfg.update(
        model_type="qwen3_next",
        num_nextn_predict_layers=int(text.get("mtp_num_hidden_layers", 1) or 0),
        partial_rotary_factor=rope.get("partial_rotary_factor", text.get("partial_rotary_factor", 1.0)),
        rope_scaling={k: v for k, v in rope.items() if k not in ("mrope_section", "mrope_interleaved")} or None,
    )
    if not moe:
        cfg.pop("num_experts", None)
    fields = base._hybrid(cfg)
    fields["model_type"] = text["model_type"]
    ssm = text.get("mamba_ssm_dtype")
    if ssm is not None:
        if ssm not in ("float32", "bfloat16", "float16"):
            raise PlannerError(
                f"config field 'mamba_ssm_dtype' must be float32, bfloat16 or float16, got {ssm!r}: fix the config.json"
            )
        fields["mamba"] = dataclasses.replace(fields["mamba"], ssm_dtype=ssm)
    if text.get("mtp_use_dedicated_embeddings"):
        raise PlannerError(
            "mtp_use_dedicated_embeddings is not modelled yet: use a checkpoint whose MTP block shares the embedding"
        )
    vision = qwen3_vl_vision(config.get("vision_config"), fields["hidden_size"])
    notes = (
        ()
        if vision or config.get("model_type") in TEXT_TYPES
        else (
            f"{(config.get('architectures') or ['Qwen3.5'])[0]} is multimodal but config.json has no vision_config: "
            "the vision tower's weights are not counted (pass the complete config.json)",
        )
    )
    return finish(config, text, fields, quant_files, vision, notes)


@register_tensors(*TEXT_TYPES)
def tensors(spec: ModelSpec) -> list[T.Tensor]:
    """Qwen3-Next's tensors (in_proj fused as vLLM holds it) under the checkpoint's names, the
    vision tower first."""
    out = T._vision(spec)
    for t in T._qwen3_next(dataclasses.replace(spec, model_type="qwen3_next")):
        out.append(t)
    return out
