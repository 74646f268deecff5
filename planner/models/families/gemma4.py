"""Gemma 4 (`gemma4`, text `gemma4_text`), dense and MoE, E2B/E4B included, as vLLM's gemma4.py /
gemma4_mm.py build them.

Attention follows `layer_types`: sliding layers (window `sliding_window`) with `num_key_value_heads`
heads of `head_dim`, full layers with `num_global_key_value_heads` heads of `global_head_dim`. With
`attention_k_eq_v` a full layer's checkpoint has no v_proj: vLLM loads k_proj into both the K and
V shards of its qkv_proj, so the V copy is memory without parameters, and the cache still keeps
K and V. Each layer has q/k RMSNorms over its head size (v_norm has no weight), four layer norms
and a stored `layer_scalar`. Every layer has a gated GeLU MLP; `enable_moe_block` configs add,
beside it, a routed MoE (router: weightless norm, a `scale` per hidden channel, `proj` [experts,
hidden] and a `per_expert_scale`; experts of `moe_intermediate_size`) with three more norms.

KV sharing (E2B/E4B): the last `num_kv_shared_layers` layers read the cache of the last earlier
layer of their type (vLLM's `kv_sharing_target_layer_name`) and keep none of their own; they build
only q_proj, q_norm and o_proj: the k_proj / v_proj / k_norm the checkpoint still ships for them
are dropped (`_gemma4_layer_weights_mapper`), so they are counted as not loaded. vLLM refuses a
pipeline split that puts such a layer on another stage than its target. `use_double_wide_mlp`
doubles the MLP of the KV-shared layers.

Per-layer embeddings (E2B/E4B, `hidden_size_per_layer_input`): `embed_tokens_per_layer`
[vocab_size_per_layer_input, layers x width] is a VocabParallelEmbedding on the GPU (split over TP
like embed_tokens), `per_layer_model_projection` [layers x width, hidden] a column-parallel linear,
then per layer a replicated input gate [width, hidden], projection [hidden, width] and norm. Like
embed_tokens, the table is built on every pipeline stage. Gemma4ForConditionalGeneration also
allocates a max_num_batched_tokens x layers x width buffer of the model dtype at start-up
(`per_layer_embeddings`), counted by the budget as model-loading memory (`init_buffer_width`).

The vision tower (`gemma4_vision`) is transformers' own module (`AutoModel.from_config`, its linears
replaced by ReplicatedLinear), not split by TP: every rank holds it whole, like the `embed_vision`
projection. The audio tower (`gemma4_audio`, E2B/E4B) is the same kind of module: a two-layer
conv subsampler, conformer blocks (two macaron feed-forwards, attention with a relative-position
key projection and a per-dimension scale, a light conv module, norms) and a biased output
projection, then `embed_audio` [output_proj_dims -> hidden]; both are counted as the "vision"
component (the multimodal towers, on every rank and stage). The 26B/31B checkpoints store the
vision tower's `std_bias` / `std_scale`; the layers' `layer_scalar` are in every Hub total.

Rotary caches: the sliding layers' default RoPE (max positions x head_dim, the spec's rotary cache)
and the full layers' own (`Gemma4RotaryEmbedding`, proportional: a cos/sin cache as wide as
global_head_dim, the unrotated part zero-padded). `get_rope` caches instances per process, and a
pipeline stage builds only its own layers, so every stage that holds a full layer (a KV-shared one
too) holds one full-layer cache (`stage_buffers`).
"""

from __future__ import annotations

import math
from typing import Any

from planner.errors import PlannerError
from planner.models import normalize as base
from planner.models import tensors as T
from planner.models.families import register, register_stage_buffers, register_tensors
from planner.models.families.common import finish, int_field, text_config
from planner.models.spec import LayerSpec, ModelSpec, MoESpec, VisionSpec

Config = dict[str, Any]
TEXT_TYPES = ("gemma4_text",)
SPEC_TYPES = ("gemma4_text", "gemma4_text_v")
_FIX = "fix the config.json"
_KINDS = {"sliding_attention": "sliding", "full_attention": "full"}


def _kv_targets(text: Config, types: list, n: int) -> list[int | None]:
    """Per layer, the layer whose cache it reads (vLLM's Gemma4Attention), None for its own."""
    shared = text.get("num_kv_shared_layers") or 0
    if not isinstance(shared, int) or isinstance(shared, bool) or not 0 <= shared < n:
        raise PlannerError(
            f"config field 'num_kv_shared_layers' {shared!r} must be a whole number below num_hidden_layers {n} "
            f"(at least one layer keeps its own cache): {_FIX}"
        )
    first = n - shared
    out: list[int | None] = [None] * n
    for i in range(first, n):
        own = [j for j in range(first) if types[j] == types[i]]
        if not own:
            raise PlannerError(
                f"config field 'num_kv_shared_layers' {shared}: KV-shared layer {i} ({types[i]}) has no earlier "
                f"{types[i]} layer to read the cache of: {_FIX}"
            )
        out[i] = own[-1]
    return out


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
    full_heads = 0  # transformers' per_layer_config: num_global_key_value_heads only with attention_k_eq_v
    if "full_attention" in types and text.get("attention_k_eq_v"):
        full_heads = int_field(text, "num_global_key_value_heads")
    full_dim = int_field(text, "global_head_dim") if "full_attention" in types else 0
    mlp = "moe" if moe else "dense"
    return tuple(
        LayerSpec("sliding", window=window, mlp=mlp, kv_shared_with=src)
        if t == "sliding_attention"
        else LayerSpec("full", mlp=mlp, kv_heads=full_heads, head_dim=full_dim, kv_shared_with=src)
        for t, src in zip(types, _kv_targets(text, types, n))
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
        tp_split=False,
    )


def _audio(config: Config, text_hidden: int) -> tuple[int, int]:
    """(tower, projector) parameters of the `gemma4_audio` tower, as transformers' Gemma4AudioModel
    builds them (3x3 subsampling convolutions; per block 24 h^2 in the linears, the depthwise conv,
    nine norms and a per-dimension scale), and embed_audio [output_proj_dims -> hidden]."""
    a = config.get("audio_config")
    if not a:
        return (0, 0)
    if not isinstance(a, dict):
        raise PlannerError(f"config field 'audio_config' must be a JSON object: {_FIX}")
    w = "audio_config."
    h, n, heads = (
        int_field(a, "hidden_size", w),
        int_field(a, "num_hidden_layers", w),
        int_field(a, "num_attention_heads", w),
    )
    kernel, out = int_field(a, "conv_kernel_size", w), int_field(a, "output_proj_dims", w)
    ch = a.get("subsampling_conv_channels")
    if not (isinstance(ch, list) and len(ch) == 2 and all(isinstance(c, int) and c > 0 for c in ch)) or h % heads:
        raise PlannerError(
            f"config fields 'audio_config.subsampling_conv_channels' {ch!r} (two positive channel counts) and "
            f"'num_attention_heads' {heads} (dividing hidden_size {h}) do not describe a Gemma 4 audio tower: {_FIX}"
        )
    c0, c1 = ch
    block = 24 * h * h + h * kernel + 9 * h + h // heads
    subsample = 9 * c0 + c0 + 9 * c0 * c1 + c1 + (c0 // 4) * c1 * h
    return (n * block + subsample + out * h + out, out * text_hidden)


def _per_layer_inputs(text: Config, fields: dict) -> None:
    width = text.get("hidden_size_per_layer_input") or 0
    if not width:
        return
    fields["per_layer_input_size"] = int_field(text, "hidden_size_per_layer_input")
    fields["per_layer_input_vocab"] = int(text.get("vocab_size_per_layer_input") or fields["vocab_size"])


def _mlp_widths(text: Config, layers: tuple[LayerSpec, ...], inter: int) -> tuple[int, ...]:
    """vLLM: `use_double_wide_mlp` doubles the MLP of the KV-shared layers."""
    if not text.get("use_double_wide_mlp") or all(layer.kv_shared_with is None for layer in layers):
        return ()
    return tuple(inter * (2 if layer.kv_shared_with is not None else 1) for layer in layers)


@register("gemma4", *TEXT_TYPES, name="gemma4")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    text = text_config(config, TEXT_TYPES)
    moe = text.get("num_experts") is not None  # vLLM: enable_moe_block = num_experts is not None
    if bool(text.get("enable_moe_block", moe)) != moe:
        raise PlannerError(
            f"config fields 'enable_moe_block' {text.get('enable_moe_block')!r} and 'num_experts' "
            f"{text.get('num_experts')!r} contradict each other: {_FIX}"
        )
    cfg = {k: v for k, v in text.items() if v is not None and k != "layer_types"}
    cfg.update(model_type="gemma4_text", rope_scaling=None)
    fields = base.common_fields(cfg)
    layers = _layers(text, moe)
    widths = _mlp_widths(text, layers, fields["intermediate_size"])
    fields.update(
        layers=layers,
        qk_norm=True,
        norms_per_layer=7 if moe else 4,
        tie_word_embeddings=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", True))),
        layer_intermediate_sizes=widths,
        intermediate_size=max(widths, default=fields["intermediate_size"]),
    )
    _per_layer_inputs(text, fields)
    if moe:
        experts, top_k = int_field(text, "num_experts"), int_field(text, "top_k_experts")
        if top_k > experts:
            raise PlannerError(f"config field 'top_k_experts' {top_k} exceeds num_experts {experts}: {_FIX}")
        size = text.get("moe_intermediate_size") or text.get("expert_intermediate_size")
        if not isinstance(size, int) or size <= 0:
            raise PlannerError(f"config.json (model_type 'gemma4_text') has no 'moe_intermediate_size': {_FIX}")
        fields["moe"] = MoESpec(experts, top_k, size)
    vision = _vision(config, fields["hidden_size"])
    wrapper = config.get("model_type") not in TEXT_TYPES
    fields["audio_params"] = _audio(config, fields["hidden_size"]) if wrapper else (0, 0)
    if wrapper and fields.get("per_layer_input_size"):  # Gemma4ForConditionalGeneration's PLE buffer
        fields["init_buffer_width"] = len(layers) * fields["per_layer_input_size"]
    notes = (
        ()
        if vision or not wrapper
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
    own = layer.kv_shared_with is None  # a KV-shared layer's k/v projections and k_norm are not loaded
    out = [
        T.Tensor(f"{p}.q_proj.weight", (q, h), "attention", "q_heads", i, True),
        T.Tensor(f"{p}.k_proj.weight", (kv, h), "attention", "kv_heads", i, True, loaded=own),
        T.Tensor(f"{p}.o_proj.weight", (h, q), "attention", "row", i, True),
        T.Tensor(f"{p}.q_norm.weight", (hd,), "norms", "replicated", i),
        T.Tensor(f"{p}.k_norm.weight", (hd,), "norms", "replicated", i, loaded=own),
    ]
    # k_eq_v: K is loaded into the V shard too; the copy is memory, not a checkpoint parameter
    v_copy = k_eq_v and layer.attention == "full"
    if own or not v_copy:
        v = T.Tensor(f"{p}.v_proj.weight", (kv, h), "attention", "kv_heads", i, True, loaded=own, runtime=v_copy)
        out.append(v)
    return out


def _vision_tensors(spec: ModelSpec) -> list[T.Tensor]:
    v = spec.vision
    out: list[T.Tensor] = []
    if v is not None:
        h, inter = v.hidden_size, v.intermediate_size
        block = 4 * h * h + 3 * h * inter + 2 * h  # q/k/v/o, the gated MLP, two RMSNorms (the ViT formula's)
        total = v.num_layers * block + v.position_rows * h + v.extra_params + v.num_channels * v.patch_size**2 * h
        out += [
            T.Tensor("model.vision_tower.weights", (total,), "vision", "replicated", "first"),
            T.Tensor(
                "model.embed_vision.embedding_projection.weight",
                (v.projector_replicated_params,),
                "vision",
                "replicated",
                "first",
            ),
        ]
    tower, projector = spec.audio_params
    if tower:
        out += [
            T.Tensor("model.audio_tower.weights", (tower,), "vision", "replicated", "first"),
            T.Tensor("model.embed_audio.embedding_projection.weight", (projector,), "vision", "replicated", "first"),
        ]
    return out


def _per_layer_input_tensors(spec: ModelSpec) -> list[T.Tensor]:
    width, h = spec.per_layer_input_size, spec.hidden_size
    if not width:
        return []
    p, total = "model.language_model", spec.num_layers * width
    return [
        T.Tensor(
            f"{p}.embed_tokens_per_layer.weight", (spec.per_layer_input_vocab, total), "embeddings", "vocab", "first"
        ),
        T.Tensor(f"{p}.per_layer_model_projection.weight", (total, h), "per_layer_inputs", "column", "first", True),
        T.Tensor(f"{p}.per_layer_projection_norm.weight", (width,), "norms", "replicated", "first"),
    ]


def _layer_per_input(spec: ModelSpec, p: str, i: int) -> list[T.Tensor]:
    width, h = spec.per_layer_input_size, spec.hidden_size
    if not width:
        return []
    return [
        T.Tensor(f"{p}.per_layer_input_gate.weight", (width, h), "per_layer_inputs", "replicated", i, True),
        T.Tensor(f"{p}.per_layer_projection.weight", (h, width), "per_layer_inputs", "replicated", i, True),
        T.Tensor(f"{p}.post_per_layer_input_norm.weight", (h,), "norms", "replicated", i),
    ]


def _moe_tensors(spec: ModelSpec, p: str, i: int) -> list[T.Tensor]:
    if spec.moe is None:
        return []
    h, e, size = spec.hidden_size, spec.moe.num_experts, spec.moe.expert_intermediate_size
    return [
        T.Tensor(f"{p}.router.proj.weight", (e, h), "router", "replicated", i),
        T.Tensor(f"{p}.router.scale", (h,), "router", "replicated", i),
        T.Tensor(f"{p}.router.per_expert_scale", (e,), "router", "replicated", i),
        T.Tensor(f"{p}.experts.gate_up_proj", (e, 2 * size, h), "experts", "experts", i, True),
        T.Tensor(f"{p}.experts.down_proj", (e, h, size), "experts", "experts", i, True),
    ]


@register_tensors(*SPEC_TYPES)
def tensors(spec: ModelSpec) -> list[T.Tensor]:
    """The checkpoint's tensors under its names; the multimodal towers as replicated totals."""
    h, v = spec.hidden_size, spec.vocab_size
    k_eq_v = spec.model_type == "gemma4_text"
    out = [T.Tensor("model.language_model.embed_tokens.weight", (v, h), "embeddings", "vocab", "first")]
    out += _per_layer_input_tensors(spec) + _vision_tensors(spec)
    widths = spec.layer_intermediate_sizes or (spec.intermediate_size,) * spec.num_layers
    for i in range(spec.num_layers):
        p = f"model.language_model.layers.{i}"
        out += [T.Tensor(f"{p}.norm{k}.weight", (h,), "norms", "replicated", i) for k in range(spec.norms_per_layer)]
        out.append(T.Tensor(f"{p}.layer_scalar", (1,), "norms", "replicated", i))
        out += _attention(spec, f"{p}.self_attn", i, k_eq_v)
        out += T._ffn(spec, f"{p}.mlp", i, widths[i], "mlp")
        out += _moe_tensors(spec, p, i) + _layer_per_input(spec, p, i)
    out.append(T.Tensor("model.language_model.norm.weight", (h,), "norms", "replicated", "last"))
    if not spec.tie_word_embeddings:
        out.append(T.Tensor("lm_head.weight", (v, h), "lm_head", "vocab", "last"))
    return out


@register_stage_buffers(*SPEC_TYPES)
def stage_buffers(spec: ModelSpec, ranges: list[range]) -> list[T.Tensor]:
    """The full layers' proportional RoPE cache (module doc) on every stage that holds a full layer."""
    full = [i for i, layer in enumerate(spec.layers) if layer.attention == "full"]
    if not full:
        return []
    width = spec.layers[full[0]].head_dim or spec.head_dim
    rows = spec.max_position_embeddings
    return [
        T.Tensor(f"rope_cache.full_attention.{r.start}", (rows, width), "buffers", "replicated", r.start, runtime=True)
        for r in ranges
        if any(i in r for i in full)
    ]
