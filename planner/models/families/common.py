"""What the family modules share: unwrapping a multimodal config, the final `ModelSpec`, and the
Qwen3-VL vision tower (Qwen3-VL and Qwen3.5/3.6 use the same one)."""

from __future__ import annotations

import math
from typing import Any

from planner.errors import PlannerError
from planner.models.checks import check_spec
from planner.models.quantization import parse_quantization
from planner.models.spec import ModelSpec, VisionSpec

Config = dict[str, Any]
_FIX = "fix the config.json"


def text_config(config: Config, text_types: tuple[str, ...]) -> Config:
    """The text model's config: `text_config` of a wrapper (with the wrapper's dtype, quantization and
    tie flag where the text part does not say), or the config itself when it is a text config."""
    if config.get("model_type") in text_types:
        return dict(config)
    nested = config.get("text_config")
    if not isinstance(nested, dict):
        raise PlannerError(
            f"config.json (model_type {config.get('model_type')!r}) has no text_config object: "
            "pass the model's complete config.json"
        )
    text = dict(nested)
    for key in ("torch_dtype", "dtype", "quantization_config", "tie_word_embeddings"):
        if key in config and key not in text:
            text[key] = config[key]
    text.setdefault("model_type", text_types[0])
    return text


def int_field(cfg: Config, name: str, where: str = "") -> int:
    value = cfg.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        what = "has no" if value is None else "needs a positive integer"
        got = "" if value is None else f", got {value!r}"
        raise PlannerError(f"config.json {what} {where}{name!r}{got}: {_FIX}")
    return value


def finish(
    config: Config,
    text: Config,
    fields: dict[str, Any],
    quant_files: dict[str, Config],
    vision: VisionSpec | None = None,
    notes: tuple[str, ...] = (),
) -> ModelSpec:
    """The `ModelSpec` from the family's fields, with the checks every spec passes."""
    archs = config.get("architectures") or [fields["model_type"]]
    dtype = str(
        config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype") or text.get("dtype") or "float32"
    )
    if not (config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype") or text.get("dtype")):
        notes += ("config has no torch_dtype: assumed float32, as transformers does",)
    spec = ModelSpec(
        architecture=str(archs[0]),
        dtype=dtype.replace("torch.", ""),
        vision=vision,
        quant=parse_quantization(config, quant_files),
        notes=notes,
        **fields,
    )
    check_spec(spec)
    return spec


def qwen3_vl_vision(vcfg: Any, text_hidden: int) -> VisionSpec | None:
    """Qwen3_VisionTransformer (vLLM's qwen3_vl.py), also Qwen3.5's: a biased Conv3d patch embedding
    over temporal_patch_size frames, a learned position table of num_position_embeddings rows
    (interpolated, no class row), `depth` pre-norm blocks with LayerNorms, biased QKV/proj and a
    biased fc1/fc2 MLP, no pre- or post-norm; then the patch merger (LayerNorm(hidden), linear_fc1
    [4h -> 4h] column-parallel, linear_fc2 [4h -> out_hidden_size] row-parallel, both biased) and one
    DeepStack merger per `deepstack_visual_indexes` entry (the same, with its LayerNorm over 4h).
    The profile's dummy image: a square of the processor's longest_edge (16,777,216 pixels)."""
    if not isinstance(vcfg, dict) or not vcfg.get("depth"):
        return None
    h = int_field(vcfg, "hidden_size", "vision_config.")
    out = int_field(vcfg, "out_hidden_size", "vision_config.") if vcfg.get("out_hidden_size") else text_hidden
    patch, merge = int(vcfg.get("patch_size") or 16), int(vcfg.get("spatial_merge_size") or 2)
    deepstack = vcfg.get("deepstack_visual_indexes") or []
    if not isinstance(deepstack, list):
        raise PlannerError(f"vision_config.deepstack_visual_indexes must be a list of block indices: {_FIX}")
    depth = int_field(vcfg, "depth", "vision_config.")
    if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < depth for i in deepstack):
        raise PlannerError(
            f"vision_config.deepstack_visual_indexes {deepstack!r} must name blocks 0..{depth - 1}: {_FIX}"
        )
    wide = h * merge * merge
    mergers = 1 + len(deepstack)
    column = mergers * (wide * wide + wide + wide * out)  # fc1 weight and bias, fc2 weight
    replicated = mergers * out + 2 * h + len(deepstack) * 2 * wide  # fc2 biases, the LayerNorms
    edge = math.isqrt(16777216) // (patch * merge) * patch * merge
    return VisionSpec(
        model_type=str(vcfg.get("model_type") or "qwen3_vl"),
        hidden_size=h,
        intermediate_size=int_field(vcfg, "intermediate_size", "vision_config."),
        num_layers=depth,
        num_heads=int_field(vcfg, "num_heads", "vision_config."),
        patch_size=patch,
        image_size=edge,
        num_channels=int(vcfg.get("in_channels") or 3),
        patch_frames=int(vcfg.get("temporal_patch_size") or 2),
        position_rows=int_field(vcfg, "num_position_embeddings", "vision_config."),
        mlp_gated=False,
        norm="layer",
        patch_bias=True,
        pre_norm=False,
        post_norm=False,
        projector_column_params=column,
        projector_replicated_params=replicated,
        tokens_per_image=(edge // patch // merge) ** 2,
    )
