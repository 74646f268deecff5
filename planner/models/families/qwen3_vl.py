"""Qwen3-VL (`qwen3_vl`, dense) and Qwen3-VL-MoE (`qwen3_vl_moe`), as vLLM's qwen3_vl.py and
qwen3_vl_moe.py build them.

The language model is Qwen3's (`Qwen3LLMForCausalLM`: GQA with per-head q/k RMSNorm, a gated MLP)
or Qwen3-MoE's (`Qwen3MoeLLMForCausalLM`: routed experts on the layers `decoder_sparse_step` and
`mlp_only_layers` say, no shared expert); the DeepStack features of the vision tower are added to
the hidden states of the first len(deepstack_visual_indexes) layers, which adds no weights. The
vision tower is `Qwen3_VisionTransformer` with one patch merger plus one DeepStack merger per
`deepstack_visual_indexes` entry (`common.qwen3_vl_vision`), built on every rank.

The rope is interleaved M-RoPE (`mrope_section`); vLLM 0.32 caches max_position_embeddings rows for
it (`mrope_positions_factor` is 1 unless video pruning is on), so the section is dropped from the
rope the spec keeps, as Qwen3.5 does.

DeepStack buffers: Qwen3VLForConditionalGeneration allocates, while the model is built, one
`deepstack_input_embeds` tensor per level of max_num_batched_tokens x text hidden in the default
dtype of the load (the model's) on the GPU, on every rank whose vision tower is built (every PP
stage). vLLM measures them as model-loading memory, before the profile run: the spec records their
width (`init_buffer_width` = levels x hidden) and `init_buffer_bytes` sizes them for a scheduler
budget (Qwen3-VL-8B at 8,192 tokens: 3 x 8,192 x 4,096 x 2 B = 0.1875 GiB).
"""

from __future__ import annotations

from typing import Any

from planner.errors import PlannerError
from planner.models import normalize as base
from planner.models.families import register
from planner.models.families.common import finish, qwen3_vl_vision, text_config
from planner.models.spec import ModelSpec

Config = dict[str, Any]
TEXT_TYPES = ("qwen3_vl_text", "qwen3_vl_moe_text")
_FIX = "fix the config.json"


def _rope(text: Config) -> dict | None:
    rope = text.get("rope_scaling") or text.get("rope_parameters")
    if rope is None:
        return None
    if not isinstance(rope, dict):
        raise PlannerError(f"config field 'rope_scaling' must be a JSON object: {_FIX}")
    section = rope.get("mrope_section")
    if section is not None:
        half = int(text.get("head_dim") or 0) // 2
        if not isinstance(section, list) or (half and sum(section) != half):
            raise PlannerError(
                f"config field 'mrope_section' {section!r} must split the {half} rotary frequencies "
                f"of head_dim {half * 2}: {_FIX}"
            )
    rest = {k: v for k, v in rope.items() if k not in ("mrope_section", "mrope_interleaved", "rope_theta")}
    return rest if rest.get("rope_type", rest.get("type")) not in (None, "default") else None


@register("qwen3_vl", "qwen3_vl_moe", *TEXT_TYPES, name="qwen3_vl")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    text = text_config(config, TEXT_TYPES)
    moe = text["model_type"] == "qwen3_vl_moe_text" or config.get("model_type") == "qwen3_vl_moe"
    cfg = {k: v for k, v in text.items() if v is not None}
    cfg.update(model_type="qwen3_moe" if moe else "qwen3", rope_scaling=_rope(text))
    cfg.pop("rope_parameters", None)
    if moe:
        for key in ("num_experts", "moe_intermediate_size"):
            if not text.get(key):
                raise PlannerError(f"config.json (model_type 'qwen3_vl_moe_text') has no {key!r}: {_FIX}")
        fields = base._qwen_moe(cfg)
    else:
        fields = base._llama_like(cfg)
    fields["model_type"] = cfg["model_type"]  # Qwen3's text model (its tensors, its qk norm)
    vcfg = config.get("vision_config")
    vision = qwen3_vl_vision(vcfg, fields["hidden_size"])
    if vision is not None and vision.projector_column_params and isinstance(vcfg, dict):
        out = vcfg.get("out_hidden_size")
        if out is not None and out != fields["hidden_size"]:
            raise PlannerError(
                f"config field 'vision_config.out_hidden_size' {out} must equal the text hidden_size "
                f"{fields['hidden_size']} (the merger's output is a text embedding): {_FIX}"
            )
    notes = (
        ()
        if vision or config.get("model_type") in TEXT_TYPES
        else (
            f"{(config.get('architectures') or ['Qwen3-VL'])[0]} is multimodal but config.json has no "
            "vision_config: the vision tower's weights are not counted (pass the complete config.json)",
        )
    )
    levels = len(vcfg.get("deepstack_visual_indexes") or []) if vision is not None and isinstance(vcfg, dict) else 0
    fields["init_buffer_width"] = levels * fields["hidden_size"]
    return finish(config, text, fields, quant_files, vision, notes)


def init_buffer_bytes(spec: ModelSpec, max_num_batched_tokens: int, dtype_bytes: int) -> int:
    """Bytes of the buffers the model allocates at start-up per GPU (`ModelSpec.init_buffer_width`:
    Qwen3-VL's DeepStack inputs, Gemma 4's per-layer embeddings), each max_num_batched_tokens rows
    of the dtype vLLM loads the model in (`dtype_bytes`); part of vLLM's model-loading memory."""
    return spec.init_buffer_width * max_num_batched_tokens * dtype_bytes
