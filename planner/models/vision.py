"""Vision towers as vLLM builds them, one builder per multimodal wrapper (Gemma 3's SigLIP, Llama 4,
Pixtral for Mistral 3, CLIP/SigLIP for LLaVA and LLaVA-NeXT up to the deepest feature layer,
MoonViT for Kimi-VL, Qwen2-VL and Qwen2.5-VL), with the class defaults transformers fills in.
"""

from __future__ import annotations

import math
from typing import Any

from planner.errors import PlannerError
from planner.models.fields import Config
from planner.models.spec import VisionSpec

# A vision sub-config names only what differs from its class's defaults, which transformers (and so
# vLLM) fills in: PixtralVisionConfig's and CLIPVisionConfig's.
_VISION_DEFAULTS: dict[str, Config] = {
    "pixtral": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 1024,
        "patch_size": 16,
    },
    "clip_vision_model": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 32,
    },
}


def vision_spec(config: Config, vcfg: Config | None, text_hidden: int) -> VisionSpec | None:
    if vcfg:  # null means "the default", as in text configs
        vcfg = {k: v for k, v in vcfg.items() if v is not None}
        vcfg = {**_VISION_DEFAULTS.get(str(vcfg.get("model_type")), {}), **vcfg}
    if not vcfg or not vcfg.get("hidden_size"):
        return None
    h = int(vcfg["hidden_size"])
    layers = int(vcfg.get("num_hidden_layers", 0))
    patch, image = int(vcfg.get("patch_size", 14)), int(vcfg.get("image_size", 224))
    base = dict(
        model_type=str(vcfg.get("model_type", "vit")),
        hidden_size=h,
        intermediate_size=int(vcfg.get("intermediate_size", 4 * h)),
        num_layers=layers,
        num_heads=int(vcfg.get("num_attention_heads", 1)),
        patch_size=patch,
        image_size=image,
        num_channels=int(vcfg.get("num_channels", 3)),
        position_rows=(image // patch) ** 2,
    )
    builder = _VISION_BUILDERS.get(config.get("model_type", ""))
    return VisionSpec(**{**base, **(builder(config, vcfg, text_hidden, base) if builder else {})})


def _built_layers(feature: Any, num_layers: int) -> int:
    """Encoder blocks vLLM builds: up to the deepest `vision_feature_layer` (llava.py's
    `_get_num_hidden_layers`; a negative index i means num_layers + i + 1)."""
    layers = feature if isinstance(feature, list) else [feature]
    bad = [i for i in layers if not isinstance(i, int) or not -num_layers <= i <= num_layers or i == 0]
    if bad or not layers:
        raise PlannerError(
            f"vision_feature_layer {feature!r} does not name a layer of the {num_layers}-block vision "
            f"tower: use indices 1..{num_layers} or -{num_layers}..-1 as the model's config.json has them"
        )
    return max(num_layers + i + 1 if i < 0 else i for i in layers)


def _gemma3_vision(config: Config, vcfg: Config, text_hidden: int, base: dict) -> dict:
    """SigLIP; Gemma3MultiModalProjector: mm_input_projection_weight [v_hidden, text_hidden] + RMSNorm(v_hidden)."""
    h = base["hidden_size"]
    return dict(
        projector_replicated_params=h * text_hidden + h, tokens_per_image=int(config.get("mm_tokens_per_image") or 0)
    )


def _llama4_vision(config: Config, vcfg: Config, text_hidden: int, base: dict) -> dict:
    """Llama4VisionModel beyond the generic ViT (vLLM's mllama4.py): a class embedding, one more
    position row and a pre-norm (replicated); a bias-free column-parallel patch projection; the
    pixel-shuffle adapter (fc1 [intermediate -> projector_input_dim], fc2 [projector_input_dim ->
    projector_output_dim], biased when multi_modal_projector_bias: fc1's bias split, fc2's whole) and
    the bias-free projector [vision_output_dim -> text hidden], both split across TP. 871,932,416
    parameters for Llama-4-Scout: the gap between its published count and the text model's."""
    h, ratio = base["hidden_size"], float(vcfg.get("pixel_shuffle_ratio") or 0.5)
    p_in, p_out = int(vcfg.get("projector_input_dim") or 4096), int(vcfg.get("projector_output_dim") or 4096)
    bias = bool(vcfg.get("multi_modal_projector_bias"))
    adapter = base["intermediate_size"] * p_in + p_in * p_out + (p_in if bias else 0)
    return dict(
        position_rows=base["position_rows"] + 1,
        pre_norm=True,
        extra_params=h + (p_out if bias else 0),
        adapter_params=adapter,
        patch_linear=True,
        projector_column_params=int(vcfg.get("vision_output_dim") or p_out) * text_hidden,
        tokens_per_image=int(base["position_rows"] * ratio * ratio),
    )


def _mlp_projector(v_in: int, mid: int, out: int, bias: bool) -> dict:
    """A two-layer projector vLLM splits across TP: linear_1 [v_in -> mid] column-parallel (its bias
    split), linear_2 [mid -> out] row-parallel (its bias whole on every rank)."""
    return dict(
        projector_column_params=v_in * mid + mid * out + (mid if bias else 0),
        projector_replicated_params=out if bias else 0,
    )


# PixtralHFVisionModel: bias-free conv patches, RMSNorm ln_pre, gated bias-free blocks with 2-D
# rotary positions (no table), no post-norm.
_PIXTRAL_TOWER = dict(
    position_rows=0, mlp_gated=True, linear_bias=False, patch_bias=False, norm="rms", pre_norm=True, post_norm=False
)


def _mistral3_vision(config: Config, vcfg: Config, text_hidden: int, base: dict) -> dict:
    """The Pixtral tower; Mistral3MultiModalProjector: RMSNorm and the patch merger's nn.Linear
    [v_hidden x merge^2 -> v_hidden], replicated, then linear_1 / linear_2 [-> text hidden], biased
    when multimodal_projector_bias."""
    h, merge = base["hidden_size"], int(config.get("spatial_merge_size") or 2)
    proj = _mlp_projector(h, text_hidden, text_hidden, bool(config.get("multimodal_projector_bias", False)))
    proj["projector_replicated_params"] += h + h * merge * merge * h
    built = _built_layers(config.get("vision_feature_layer", -1), base["num_layers"])
    return dict(
        num_layers=built,
        skipped_layers=base["num_layers"] - built,
        **_PIXTRAL_TOWER,
        **proj,
        tokens_per_image=(base["image_size"] // base["patch_size"] // merge) ** 2,
    )


def _llava_vision(config: Config, vcfg: Config, text_hidden: int, base: dict) -> dict:
    """LLaVA and LLaVA-NeXT (vLLM's llava.py, llava_next.py): the CLIP, SigLIP or Pixtral tower up to the
    deepest feature layer and never its post-norm (require_post_norm=False); the features of every
    listed layer are concatenated into LlavaMultiModalProjector's linear_1 (column) and linear_2
    (row), biased when multimodal_projector_bias (default true); LLaVA-NeXT adds image_newline
    [text hidden], replicated."""
    h, next_ = base["hidden_size"], config.get("model_type") == "llava_next"
    feature = config.get("vision_feature_layer", -2)
    v_in = h * (len(feature) if isinstance(feature, list) and next_ else 1)
    proj = _mlp_projector(v_in, text_hidden, text_hidden, bool(config.get("multimodal_projector_bias", True)))
    proj["projector_replicated_params"] += text_hidden if next_ else 0  # image_newline
    built = _built_layers(feature, base["num_layers"])
    out = dict(
        num_layers=built, post_norm=False, skipped_layers=base["num_layers"] - built, skipped_post_norm=True, **proj
    )
    if base["model_type"] == "clip_vision_model":
        # CLIP: a class embedding and its position row, a bias-free patch conv, pre_layrnorm
        out.update(position_rows=base["position_rows"] + 1, extra_params=h, patch_bias=False, pre_norm=True)
    elif base["model_type"] == "pixtral":  # LLaVA over a Pixtral tower (pixtral-12b); it has no post-norm
        out.update(_PIXTRAL_TOWER, skipped_post_norm=False)
    return out


def _kimi_vl_vision(config: Config, vcfg: Config, text_hidden: int, base: dict) -> dict:
    """MoonViT (vLLM's moonvit.py): biased conv patches, a learned 2-D position table of
    init_pos_emb_height x init_pos_emb_width rows, biased LayerNorm blocks, a final LayerNorm.
    KimiVLMultiModalProjector, replicated: LayerNorm(v_hidden), linear_1 [v x k -> v x k] and
    linear_2 [v x k -> text hidden], both biased, where k is the merge kernel's area."""
    h, patch = base["hidden_size"], base["patch_size"]
    kh, kw = (int(k) for k in vcfg.get("merge_kernel_size") or (2, 2))
    merged = h * kh * kw
    rows = int(vcfg.get("init_pos_emb_height") or 64) * int(vcfg.get("init_pos_emb_width") or 64)
    # The profile's dummy image (kimi_vl.py's MaxImageTokenMeta, 1024 x 1024) is shrunk to the
    # processor's in_token_limit (4096 patches, preprocessor_config.json) and padded to the kernel.
    edge, limit = 1024, 4096
    if (edge // patch) ** 2 > limit:
        edge = int(edge * math.sqrt(limit / (edge // patch) ** 2))
    edge = -(-edge // (kh * patch)) * kh * patch
    return dict(
        position_rows=rows,
        image_size=edge,
        tokens_per_image=(edge // patch // kh) * (edge // patch // kw),
        projector_replicated_params=2 * h + merged * merged + merged + merged * text_hidden + text_hidden,
    )


def _qwen_vl_vision(config: Config, vcfg: Config, text_hidden: int, base: dict) -> dict:
    """Qwen2-VL / Qwen2.5-VL (vLLM's qwen2_vl.py, qwen2_5_vl.py): bias-free Conv3d patches over
    temporal_patch_size frames, rotary positions (no table, no pre/post norm), `depth` blocks with
    biased QKV/proj and MLP (Qwen2-VL: LayerNorm, fc1/fc2 of embed_dim x mlp_ratio; Qwen2.5-VL:
    RMSNorm, gated intermediate_size). The patch merger: ln_q replicated, mlp.0 [4d -> 4d] column,
    mlp.2 [4d -> out] row, both biased, where out is the text hidden size (Qwen2-VL's vision
    hidden_size, Qwen2.5-VL's out_hidden_size). vLLM profiles the encoder with the image of the most
    features: max_pixels as a square (12845056, the Qwen checkpoints' preprocessor_config.json; a
    --mm-processor-kwargs override is not modelled), or a video of up to 14 such frames."""
    v25 = config.get("model_type") == "qwen2_5_vl"
    d = int((vcfg.get("hidden_size") if v25 else vcfg.get("embed_dim")) or 1280)
    # transformers' Qwen2_5_VLVisionConfig / Qwen2VLVisionConfig defaults where the config is silent
    inter = int(vcfg.get("intermediate_size") or 3420) if v25 else int(d * float(vcfg.get("mlp_ratio") or 4))
    out = int((vcfg.get("out_hidden_size") if v25 else vcfg.get("hidden_size")) or text_hidden)
    patch, merge = int(vcfg.get("patch_size") or 14), int(vcfg.get("spatial_merge_size") or 2)
    edge = int(math.isqrt(12845056)) // (patch * merge) * patch * merge
    proj = _mlp_projector(d * merge * merge, d * merge * merge, out, True)
    proj["projector_replicated_params"] += d if v25 else 2 * d  # ln_q: RMSNorm / LayerNorm
    return dict(
        hidden_size=d,
        intermediate_size=inter,
        num_layers=int(vcfg.get("depth") or 0),
        num_heads=int(vcfg.get("num_heads") or 16),
        patch_size=patch,
        image_size=edge,
        num_channels=int(vcfg.get("in_channels") or vcfg.get("in_chans") or 3),
        patch_frames=int(vcfg.get("temporal_patch_size") or 2),
        takes_video=True,
        position_rows=0,
        mlp_gated=v25,
        norm="rms" if v25 else "layer",
        patch_bias=False,
        post_norm=False,
        **proj,
        tokens_per_image=(edge // patch // merge) ** 2,
    )


_VISION_BUILDERS = {
    "gemma3": _gemma3_vision,
    "llama4": _llama4_vision,
    "mistral3": _mistral3_vision,
    "llava_next": _llava_vision,
    "llava": _llava_vision,
    "kimi_vl": _kimi_vl_vision,
    "qwen2_vl": _qwen_vl_vision,
    "qwen2_5_vl": _qwen_vl_vision,
}
