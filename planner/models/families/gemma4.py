"""Gemma 4 (`gemma4`, text `gemma4_text`), dense and MoE, as vLLM's gemma4.py / gemma4_mm.py build them.

Attention follows `layer_types`: sliding layers (window `sliding_window`) with `num_key_value_heads`
heads of `head_dim`, full layers with `num_global_key_value_heads` heads of `global_head_dim`. With
`attention_k_eq_v` a full layer's checkpoint has no v_proj: vLLM loads k_proj into both the K and
V shards of its qkv_proj, so the V copy is memory without parameters, and the cache still keeps
K and V. Each layer has q/k RMSNorms over its head size (v_norm has no weight), four layer norms
and a stored `layer_scalar`. Every layer has a gated GeLU MLP; `enable_moe_block` configs add,
beside it, a routed MoE (router: weightless norm, a `scale` per hidden channel, `proj` [experts,
hidden] and a `per_expert_scale`; experts of `moe_intermediate_size`) with three more norms.

The KV cache: sliding and full layers have different pages (vLLM's per-layer head size and KV
heads), which `unify_kv_cache_spec_page_size` evens out by raising the smaller page's block size.

The vision tower (`gemma4_vision`) is transformers' own module (`AutoModel.from_config`), not split
by TP: every rank holds it whole, like the `embed_vision` projection (`ReplicatedLinear`). Its
persistent `std_bias` / `std_scale` buffers and the layers' `layer_scalar` are in the Hub total.

Not modelled (a config with them is refused, naming the field): per-layer input embeddings
(`hidden_size_per_layer_input`, Gemma 4 E2B/E4B), KV-shared layers (`num_kv_shared_layers`), the
double-wide MLP, audio towers.

Rotary caches: the sliding layers' default RoPE (max positions x head_dim, the spec's rotary cache)
and the full layers' own (`Gemma4RotaryEmbedding`, proportional: a cos/sin cache as wide as
global_head_dim, the unrotated part zero-padded), counted once, on the pipeline stage of the first
full layer (another stage that holds full layers builds its own: not counted).
"""

from __future__ import annotations

import math
from typing import Any

from planner.errors import PlannerError
from planner.models import normalize as base
from planner.models import tensors as T
from planner.models.families import register, register_tensors
from planner.models.families.common import finish, int_field, text_config
from planner.models.spec import LayerSpec, ModelSpec, MoESpec, VisionSpec

Config = dict[str, Any]
TEXT_TYPES = ("gemma4_text",)
_FIX = "fix the config.json"
_KINDS = {"sliding_attention": "sliding", "full_attention": "full"}


def _refuse_unmodelled(config: Config, text: Config) -> None:
    # use_double_wide_mlp widens only KV-shared layers (vLLM), so it goes with num_kv_shared_layers
    for key in ("hidden_size_per_layer_input", "num_kv_shared_layers"):
        if text.get(key):
            raise PlannerError(
                f"config field {key!r} {text[key]!r} (Gemma 4 E2B/E4B) is not modelled yet: use a Gemma 4 "
                "config without per-layer inputs and KV-shared layers (26B-A4B, 31B)"
            )
    if config.get("audio_config"):
        raise PlannerError("config field 'audio_config': Gemma 4's audio tower is not modelled yet")


def _layers(text: Config, moe: bool) -> tuple[LayerSpec, ...]:
    n = int_field(text, "num_hidden_layers")
    types = text.get("layer_types")
    if not isinstance(types, list) or len(types) != n:
        got = len(types) if isinstance(types, list) else repr(types)
        raise PlannerError(f"config field 'layer_types' has {got} entries for num_hidden_layers {n}: {_FIX}")
    bad = sorted({str(t) for t in types} - set(_KINDS))
    if bad:
        raise PlannerError(
            f"config field 'layer_types' has {', '.join(bad)}: Gemma 4 layers are sliding_attention or "
            f"full_attention; {_FIX}"
        )
    window = int_field(text, "sliding_window")
    full_heads = int_field(text, "num_global_key_value_heads") if "full_attention" in types else 0
    full_dim = int_field(text, "global_head_dim") if "full_attention" in types else 0
    mlp = "moe" if moe else "dense"
    return tuple(
        LayerSpec("sliding", window=window, mlp=mlp)
        if t == "sliding_attention"
        else LayerSpec("full", mlp=mlp, kv_heads=full_heads, head_dim=full_dim)
        for t in types
    )


def _vision(config: Config, text_hidden: int) -> VisionSpec | None:
    v = config.get("vision_config")
    if not isinstance(v, dict):
        return None
    h, inter = int_field(v, "hidden_size", "vision_config."), int_field(v, "intermediate_size", "vision_config.")
    heads, layers = (
        int_field(v, "num_attention_heads", "vision_config."),
        int_field(v, "num_hidden_layers", "vision_config."),
    )
    hd, patch = int_field(v, "head_dim", "vision_config."), int_field(v, "patch_size", "vision_config.")
    if hd * heads != h:
        raise PlannerError(
            f"vision_config.head_dim {hd} x num_attention_heads {heads} must equal hidden_size {h}: {_FIX}"
        )
    tokens = int(config.get("vision_soft_tokens_per_image") or v.get("default_output_length") or 280)
    pool = int(v.get("pooling_kernel_size") or 3)
    # the extras beside the ViT formula: q/k norms per block, two more norms per block, the 2-D
    # position table, the standardization buffers
    extra = layers * (2 * hd + 2 * h) + (2 * h if v.get("standardize") else 0)
    return VisionSpec(
        model_type="gemma4_vision",
        hidden_size=h,
        intermediate_size=inter,
        num_layers=layers,
        num_heads=heads,
        patch_size=patch,
        image_size=patch * math.isqrt(tokens * pool * pool),
        tokens_per_image=tokens,
        position_rows=2 * int_field(v, "position_embedding_size", "vision_config."),
        mlp_gated=True,
        linear_bias=False,
        patch_bias=False,
        norm="rms",
        post_norm=False,
        extra_params=extra,
        projector_replicated_params=text_hidden * h,
    )


@register("gemma4", *TEXT_TYPES, name="gemma4")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    text = text_config(config, TEXT_TYPES)
    _refuse_unmodelled(config, text)
    moe = text.get("num_experts") is not None  # vLLM: enable_moe_block = num_experts is not None
    if bool(text.get("enable_moe_block", moe)) != moe:
        raise PlannerError(
            f"config fields 'enable_moe_block' {text.get('enable_moe_block')!r} and 'num_experts' "
            f"{text.get('num_experts')!r} contradict each other: {_FIX}"
        )
    cfg = {k: v for k, v in text.items() if v is not None and k != "layer_types"}
    cfg.update(model_type="gemma4_text", rope_scaling=None)
    fields = base.common_fields(cfg)
    fields.update(
        layers=_layers(text, moe),
        qk_norm=True,
        norms_per_layer=7 if moe else 4,
        tie_word_embeddings=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", True))),
    )
    if moe:
        experts, top_k = int_field(text, "num_experts"), int_field(text, "top_k_experts")
        if top_k > experts:
            raise PlannerError(f"config field 'top_k_experts' {top_k} exceeds num_experts {experts}: {_FIX}")
        size = text.get("moe_intermediate_size") or text.get("expert_intermediate_size")
        if not isinstance(size, int) or size <= 0:
            raise PlannerError(f"config.json (model_type 'gemma4_text') has no 'moe_intermediate_size': {_FIX}")
        fields["moe"] = MoESpec(experts, top_k, size)
    vision = _vision(config, fields["hidden_size"])
    notes = (
        ()
        if vision or config.get("model_type") in TEXT_TYPES
        else ("Gemma4ForConditionalGeneration without a vision_config: the vision tower's weights are not counted",)
    )
    # the spec type says whether full layers store a v_proj (tensors only: the cache keeps K and V either way)
    fields["model_type"] = "gemma4_text" if text.get("attention_k_eq_v") else "gemma4_text_v"
    return finish(config, text, fields, quant_files, vision, notes)


def _attention(spec: ModelSpec, p: str, i: int, k_eq_v: bool) -> list[T.Tensor]:
    layer, h = spec.layers[i], spec.hidden_size
    heads = layer.kv_heads or spec.num_kv_heads
    hd = layer.head_dim or spec.head_dim
    q, kv = spec.num_heads * hd, heads * hd
    out = [
        T.Tensor(f"{p}.q_proj.weight", (q, h), "attention", "q_heads", i, True),
        T.Tensor(f"{p}.k_proj.weight", (kv, h), "attention", "kv_heads", i, True),
        T.Tensor(f"{p}.o_proj.weight", (h, q), "attention", "row", i, True),
        T.Tensor(f"{p}.q_norm.weight", (hd,), "norms", "replicated", i),
        T.Tensor(f"{p}.k_norm.weight", (hd,), "norms", "replicated", i),
    ]
    # k_eq_v: K is loaded into the V shard too; the copy is memory, not a checkpoint parameter
    v = T.Tensor(
        f"{p}.v_proj.weight", (kv, h), "attention", "kv_heads", i, True, runtime=k_eq_v and layer.attention == "full"
    )
    return out + [v]


def _vision_tensors(spec: ModelSpec) -> list[T.Tensor]:
    v = spec.vision
    if v is None:
        return []
    h, inter = v.hidden_size, v.intermediate_size
    block = 4 * h * h + 3 * h * inter + 2 * h  # q/k/v/o, the gated MLP, two RMSNorms (the ViT formula's)
    total = v.num_layers * block + v.position_rows * h + v.extra_params + v.num_channels * v.patch_size**2 * h
    return [
        T.Tensor("model.vision_tower.weights", (total,), "vision", "replicated", "first"),
        T.Tensor(
            "model.embed_vision.embedding_projection.weight",
            (v.projector_replicated_params,),
            "vision",
            "replicated",
            "first",
        ),
    ]


@register_tensors("gemma4_text", "gemma4_text_v")
def tensors(spec: ModelSpec) -> list[T.Tensor]:
    """The checkpoint's tensors under its names; the vision tower as two replicated totals."""
    h, v = spec.hidden_size, spec.vocab_size
    k_eq_v = spec.model_type == "gemma4_text"
    out = [T.Tensor("model.language_model.embed_tokens.weight", (v, h), "embeddings", "vocab", "first")]
    out += _vision_tensors(spec)
    for i in range(spec.num_layers):
        p = f"model.language_model.layers.{i}"
        out += [T.Tensor(f"{p}.norm{k}.weight", (h,), "norms", "replicated", i) for k in range(spec.norms_per_layer)]
        out.append(T.Tensor(f"{p}.layer_scalar", (1,), "norms", "replicated", i))
        out += _attention(spec, f"{p}.self_attn", i, k_eq_v)
        out += T._ffn(spec, f"{p}.mlp", i, spec.intermediate_size, "mlp")
        if spec.moe is not None:
            e, size = spec.moe.num_experts, spec.moe.expert_intermediate_size
            out += [
                T.Tensor(f"{p}.router.proj.weight", (e, h), "router", "replicated", i),
                T.Tensor(f"{p}.router.scale", (h,), "router", "replicated", i),
                T.Tensor(f"{p}.router.per_expert_scale", (e,), "router", "replicated", i),
                T.Tensor(f"{p}.experts.gate_up_proj", (e, 2 * size, h), "experts", "experts", i, True),
                T.Tensor(f"{p}.experts.down_proj", (e, h, size), "experts", "experts", i, True),
            ]
    full = [i for i, layer in enumerate(spec.layers) if layer.attention == "full"]
    if full:  # the full layers' proportional RoPE cache (module doc)
        width = spec.layers[full[0]].head_dim or spec.head_dim
        rows = spec.max_position_embeddings
        out.append(T.Tensor("rope_cache.full_attention", (rows, width), "buffers", "replicated", full[0], runtime=True))
    out.append(T.Tensor("model.language_model.norm.weight", (h,), "norms", "replicated", "last"))
    if not spec.tie_word_embeddings:
        out.append(T.Tensor("lm_head.weight", (v, h), "lm_head", "vocab", "last"))
    return out
