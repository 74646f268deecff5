"""Kimi-K3 (`kimi_k3`, KimiK3ForConditionalGeneration), as vLLM 0.32's models/kimi_k3 builds it:
"Kimi-K2.5 vision and KimiLinear text".

The language model (`text_config`, model_type kimi_linear) is Kimi-Linear's hybrid with every
Kimi-K3 addition, which planner.models.families.kimi_linear builds as spec type kimi_k3: the KDA
layers' full-rank output gate (g_proj [P, hidden] instead of g_a/g_b), q-LoRA MLA with an output
gate (g_proj [heads x v_head_dim, hidden]), the latent MoE (routed experts of
moe_intermediate_size in `routed_expert_hidden_size`, between replicated down/up projections and
an RMSNorm; `num_shared_experts` shared experts in the hidden width) and attention residuals
(`attn_res_block_size`: per layer two RMSNorms and two [1, hidden] pseudo-queries, one pair after
the last layer). SiTU, the activation, has no parameters.

The checkpoint's routed experts are compressed-tensors `mxfp4-pack-quantized`; vLLM's
KimiK3ForConditionalGenerationConfig hook turns that into its `mxfp4` method, which quantizes the
routed experts only (the Hub counts each MXFP4 value as one U8 parameter and leaves the e8m0
scales out). The vision tower is MoonViT3d (kimi_k25_vit.py) with K3's options: RMSNorm blocks
without biases, a bias-free patch conv, fused QKV of `qkv_hidden_size` (1536) over a 1024-wide
stream, a 64 x 64 position table; projector 'patchmergerv2': linear_1 [4h -> 4h] and linear_2
[4h -> text hidden], no biases, then an RMSNorm(text hidden); replicated. vLLM falls back to data
parallelism for the tower when TP does not divide its heads (12: TP 8), and splits it otherwise;
the tower is counted whole on every rank here (exact at TP 1 and 8, over by at most its share at
TP 2, 3, 4 and 6).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from planner.errors import PlannerError
from planner.models.families import kimi_linear, register
from planner.models.families.common import finish, int_field, text_config
from planner.models.spec import ModelSpec, QuantSpec, VisionSpec

Config = dict[str, Any]
_FIX = "fix the config.json"


def _vision(vcfg: Any, text_hidden: int) -> VisionSpec:
    if not isinstance(vcfg, dict):
        raise PlannerError(f"config.json (model_type 'kimi_k3') has no vision_config object: {_FIX}")
    h = int_field(vcfg, "vt_hidden_size", "vision_config.")
    heads = int_field(vcfg, "vt_num_attention_heads", "vision_config.")
    qkv = int(vcfg.get("qkv_hidden_size") or h)
    if qkv % heads:
        raise PlannerError(
            f"config field 'vision_config.qkv_hidden_size' {qkv} is not divisible by vt_num_attention_heads "
            f"{heads}: {_FIX}"
        )
    for key, want in (("mm_projector_type", "patchmergerv2"), ("norm_type", "rmsnorm"), ("mlp_type", "mlp2")):
        if vcfg.get(key) != want:
            raise PlannerError(f"config field 'vision_config.{key}' {vcfg.get(key)!r}: Kimi-K3's tower has {want!r}")
    for key in ("attn_bias", "linear_bias", "patch_embed_proj_bias"):
        if vcfg.get(key, True):
            raise PlannerError(f"config field 'vision_config.{key}': Kimi-K3's tower is bias-free (false)")
    if int(vcfg.get("text_hidden_size") or text_hidden) != text_hidden:
        raise PlannerError(
            f"config field 'vision_config.text_hidden_size' contradicts text_config.hidden_size {text_hidden}: {_FIX}"
        )
    kh, kw = (int(k) for k in vcfg.get("merge_kernel_size") or (2, 2))
    patch, layers = int(vcfg.get("patch_size") or 14), int_field(vcfg, "vt_num_hidden_layers", "vision_config.")
    merged = h * kh * kw
    # the profiling image as Kimi-VL's (1024 square, at most 4096 patches, padded to the kernel)
    edge = 1024
    if (edge // patch) ** 2 > 4096:
        edge = int(edge * math.sqrt(4096 / (edge // patch) ** 2))
    edge = -(-edge // (kh * patch)) * kh * patch
    return VisionSpec(
        model_type="moonvit3d",
        hidden_size=h,
        intermediate_size=int_field(vcfg, "vt_intermediate_size", "vision_config."),
        num_layers=layers,
        num_heads=heads,
        patch_size=patch,
        image_size=edge,
        tokens_per_image=(edge // patch // kh) * (edge // patch // kw),
        position_rows=int(vcfg.get("init_pos_emb_height") or 64) * int(vcfg.get("init_pos_emb_width") or 64),
        linear_bias=False,
        patch_bias=False,
        norm="rms",
        # the fused QKV and wo over qkv_hidden_size, beyond the ViT formula's 4 h^2
        extra_params=layers * 4 * h * (qkv - h),
        projector_replicated_params=merged * merged + merged * text_hidden + text_hidden,
        tp_split=False,
    )


def _mxfp4(config: Config, text: Config) -> QuantSpec | None:
    qc = text.get("quantization_config") or config.get("quantization_config")
    if not isinstance(qc, dict):
        return None
    if qc.get("quant_method") != "compressed-tensors" or qc.get("format") != "mxfp4-pack-quantized":
        raise PlannerError(
            f"Kimi-K3's quantization_config {qc.get('quant_method')!r} / {qc.get('format')!r} is not modelled: "
            "the release's is compressed-tensors mxfp4-pack-quantized"
        )
    return QuantSpec(
        "mxfp4",
        4,
        group_size=32,
        scale_granularity="group",
        ignored_modules=tuple(qc.get("ignore") or ()),
        vllm_name="mxfp4",
        source="config.json quantization_config (compressed-tensors mxfp4-pack-quantized, vLLM's mxfp4 method)",
    )


@register("kimi_k3", name="kimi_k3")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    text = text_config(config, ("kimi_linear",))
    if text.get("model_type") != "kimi_linear":
        raise PlannerError(
            f"config field 'text_config.model_type' {text.get('model_type')!r}: Kimi-K3's language model is "
            f"kimi_linear; {_FIX}"
        )
    fields = kimi_linear.text_fields(text, k3=True)
    vision = _vision(config.get("vision_config"), fields["hidden_size"])
    quant = _mxfp4(config, text)
    spec = finish(config, text, fields, quant_files, vision)
    return dataclasses.replace(spec, quant=quant)
