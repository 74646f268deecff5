"""MiniMax-M3 (`minimax_m3` text config, `minimax_m3_vl` wrapper), as vLLM builds it
(vllm/models/minimax_m3/nvidia/model.py, MiniMaxM3SparseForCausalLM / ...ForConditionalGeneration,
0.32 to 0.34).

GQA attention on every layer (64 q / 4 kv heads of 128, per-head Gemma q/k RMSNorms, partial rotary
on `rotary_dim` channels). The layers `sparse_attention_freq` marks (57 of 60 in the release) are
MiniMax Sparse Attention: beside q/k/v their fused projection emits the lightning indexer's
`index_n_heads` query heads (sharded like the KV heads, so vLLM requires as many as KV heads) and
one replicated index-key head, each with a Gemma RMSNorm; the index value/output projections are
never built (`sparse_disable_index_value`). Such a layer caches its index keys on its own:
`MiniMaxM3IndexerCache`, an MLAAttentionSpec of one head of index_head_dim in bf16 (vLLM's
default `indexer_kv_dtype`) whatever the KV dtype, whole on every rank, grouped with the GQA pages
(one uniform-type group; `ModelSpec.index_key_layers`). The first layers (`moe_layer_freq` 0) have
a dense SwiGLU MLP of `dense_intermediate_size`; the others a sigmoid-routed MoE (router and
`e_score_correction_bias` in float32, as vLLM's GateLinear keeps them) with one shared expert.
The release checkpoint stores no MTP weights (its Hub total is met without them; vLLM skips `mtp.`
names anyway). The wrapper's vision tower is vLLM's MiniMaxVLVisionModel: a bias-free Conv3d patch
embedding over temporal_patch_size frames, a pre-LayerNorm, CLIP blocks (biased QKV, out_proj,
fc1/fc2, two LayerNorms), no post-norm (require_post_norm=False), then the two-layer projector
(vision -> projector_hidden_size -> text) and the patch merger (text x merge^2 -> projector ->
text), all biased.
"""

from __future__ import annotations

from typing import Any

from planner.errors import PlannerError
from planner.models import tensors as T
from planner.models.families import register, register_tensors
from planner.models.families.common import finish, int_field, text_config
from planner.models.families.minimax_m2 import fp32_router_twin
from planner.models.fields import common_fields
from planner.models.spec import LayerSpec, ModelSpec, MoESpec, VisionSpec

Config = dict[str, Any]
_FIX = "fix the config.json"
_LEGACY = {  # transformers' MiniMaxM3VLTextConfig: flat name -> sparse_attention_config name
    "index_n_heads": "sparse_num_index_heads",
    "index_head_dim": "sparse_index_dim",
    "index_block_size": "sparse_block_size",
    "index_topk_blocks": "sparse_topk_blocks",
}


def _flags(cfg: Config, name: str, where: str, n: int) -> list[bool]:
    flags = cfg.get(name)
    if not isinstance(flags, list) or len(flags) != n or any(f not in (0, 1) for f in flags):
        got = f"{len(flags)} entries" if isinstance(flags, list) else repr(flags)
        raise PlannerError(
            f"config field '{where}{name}' ({got}) must be one 0/1 per layer for num_hidden_layers {n}: {_FIX}"
        )
    return [bool(f) for f in flags]


def _sparse(text: Config, n: int) -> tuple[list[bool], dict[str, int]]:
    """Which layers are sparse, and the indexer's sizes (the legacy `sparse_attention_config` wins,
    as in transformers)."""
    sc = text.get("sparse_attention_config") or {}
    if not isinstance(sc, dict):
        raise PlannerError(f"config field 'sparse_attention_config' must be an object: {_FIX}")
    if "sparse_attention_freq" in sc:
        sparse = _flags(sc, "sparse_attention_freq", "sparse_attention_config.", n)
    elif isinstance(text.get("layer_types"), list):
        types = text["layer_types"]
        if len(types) != n or any(t not in ("minimax_m3_sparse", "full_attention") for t in types):
            raise PlannerError(
                f"config field 'layer_types' must name minimax_m3_sparse / full_attention for each of the "
                f"{n} layers: {_FIX}"
            )
        sparse = [t == "minimax_m3_sparse" for t in types]
    else:
        raise PlannerError(f"config.json has no 'sparse_attention_config.sparse_attention_freq': {_FIX}")
    sizes = {}
    for flat, legacy in _LEGACY.items():
        where = "sparse_attention_config." if legacy in sc else ""
        sizes[flat] = int_field(sc if where else text, legacy if where else flat, where)
    if "sparse_disable_index_value" in sc:
        off = _flags(sc, "sparse_disable_index_value", "sparse_attention_config.", n)
        if any(s and not d for s, d in zip(sparse, off)):
            raise PlannerError(
                "config field 'sparse_attention_config.sparse_disable_index_value' keeps an index value "
                "projection on a sparse layer: vLLM's MiniMax-M3 builds none; a config with 1 on every sparse layer"
            )
    return sparse, sizes


def _check_text(text: Config, n: int, sizes: dict[str, int]) -> None:
    kv = int_field(text, "num_key_value_heads")
    if sizes["index_n_heads"] != kv:
        raise PlannerError(
            f"config field 'index_n_heads' (sparse_num_index_heads) {sizes['index_n_heads']} must equal "
            f"num_key_value_heads {kv}: vLLM's fused indexer projection shards them alike"
        )
    head_dim, rotary = int_field(text, "head_dim"), int_field(text, "rotary_dim")
    factor = text.get("partial_rotary_factor")
    if rotary > head_dim or rotary % 2 or (factor is not None and rotary != int(head_dim * factor)):
        raise PlannerError(
            f"config field 'rotary_dim' {rotary} must be even, at most head_dim {head_dim} and head_dim x "
            f"partial_rotary_factor ({factor}): {_FIX}"
        )
    for key, want in (("qk_norm_type", "per_head"), ("attention_output_gate", False), ("use_qk_norm", True)):
        if text.get(key, want) != want:
            raise PlannerError(
                f"config field '{key}' {text.get(key)!r} is not modelled: vLLM's MiniMax-M3 has {want!r}"
            )
    if int(text.get("n_shared_experts", 1)) != 1:
        raise PlannerError(
            f"config field 'n_shared_experts' {text['n_shared_experts']!r}: vLLM's MiniMax-M3 builds one shared expert"
        )


def _vision(config: Config, text_hidden: int) -> VisionSpec | None:
    vcfg = config.get("vision_config")
    if config.get("model_type") != "minimax_m3_vl":
        return None
    if not isinstance(vcfg, dict):
        raise PlannerError(f"config.json (model_type 'minimax_m3_vl') has no vision_config object: {_FIX}")
    h = int_field(vcfg, "hidden_size", "vision_config.")
    heads = int_field(vcfg, "num_attention_heads", "vision_config.")
    if h % heads:
        raise PlannerError(
            f"config field 'vision_config.hidden_size' {h} is not divisible by num_attention_heads {heads}: {_FIX}"
        )
    comp = vcfg.get("img_token_compression_config") or config.get("img_token_compression_config") or {}
    merge = int(comp.get("spatial_merge_size") or vcfg.get("spatial_merge_size") or 2)
    frames = int(comp.get("temporal_patch_size") or vcfg.get("temporal_patch_size") or 2)
    mid = int(config.get("projector_hidden_size") or text_hidden)
    patch, edge = int_field(vcfg, "patch_size", "vision_config."), int_field(vcfg, "image_size", "vision_config.")
    wide = text_hidden * merge * merge
    # multi_modal_projector (h -> mid -> text) and patch_merge_mlp (text x merge^2 -> mid -> text):
    # column-parallel linear_1 weight and bias, row-parallel linear_2 weight; linear_2 biases whole
    column = h * mid + mid + mid * text_hidden + wide * mid + mid + mid * text_hidden
    return VisionSpec(
        model_type="minimax_vl",
        hidden_size=h,
        intermediate_size=int_field(vcfg, "intermediate_size", "vision_config."),
        num_layers=int_field(vcfg, "num_hidden_layers", "vision_config."),
        num_heads=heads,
        patch_size=patch,
        image_size=edge,
        num_channels=int(vcfg.get("num_channels") or 3),
        patch_frames=frames,
        tokens_per_image=(edge // patch // merge) ** 2,
        patch_bias=False,
        pre_norm=True,
        post_norm=False,
        projector_column_params=column,
        projector_replicated_params=2 * text_hidden,
    )


@register("minimax_m3", "minimax_m3_vl", name="minimax_m3")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    text = text_config(config, ("minimax_m3", "minimax_m3_vl_text"))
    text = {k: v for k, v in text.items() if v is not None}
    n = int_field(text, "num_hidden_layers")
    sparse, sizes = _sparse(text, n)
    moe_layers = _flags(text, "moe_layer_freq", "", n) if "moe_layer_freq" in text else [True] * n
    _check_text(text, n, sizes)
    experts, top_k = int_field(text, "num_local_experts"), int_field(text, "num_experts_per_tok")
    if top_k > experts:
        raise PlannerError(f"config field 'num_experts_per_tok' {top_k} exceeds num_local_experts {experts}: {_FIX}")
    fields = common_fields({**text, "model_type": "minimax_m3"})
    expert_size = int(text.get("moe_intermediate_size") or int_field(text, "intermediate_size"))
    fields.update(
        model_type="minimax_m3",
        layers=tuple(LayerSpec("full", mlp="moe" if m else "dense") for m in moe_layers),
        intermediate_size=int_field(text, "dense_intermediate_size") if not all(moe_layers) else expert_size,
        qk_norm=True,
        rotary_dim=int(text["rotary_dim"]),
        moe=MoESpec(
            experts,
            top_k,
            expert_size,
            num_shared_experts=1,
            shared_intermediate_size=int(text.get("shared_intermediate_size") or expert_size),
            router_correction_bias=bool(text.get("use_routing_bias", True)),
        ),
        index_key_layers=tuple(i for i, s in enumerate(sparse) if s),
        index_key_bytes=sizes["index_head_dim"] * 2,
        family_fields=(("index_n_heads", sizes["index_n_heads"]), ("index_head_dim", sizes["index_head_dim"])),
    )
    return finish(config, text, fields, quant_files, _vision(config, fields["hidden_size"]))


@register_tensors("minimax_m3")
def tensors(spec: ModelSpec) -> list[T.Tensor]:
    """Embeddings, the vision tower (wrapper), the decoder layers with their indexer projections on
    the sparse layers, the final norm and lm_head; the float32 routers' runtime twins."""
    h, v = spec.hidden_size, spec.vocab_size
    f = dict(spec.family_fields)
    iq, ik = f["index_n_heads"] * f["index_head_dim"], f["index_head_dim"]
    out = [T.Tensor("model.embed_tokens.weight", (v, h), "embeddings", "vocab", "first"), *T._vision(spec)]
    for i, layer in enumerate(spec.layers):
        p = f"model.layers.{i}"
        out += [
            T.Tensor(f"{p}.input_layernorm.weight", (h,), "norms", "replicated", i),
            T.Tensor(f"{p}.post_attention_layernorm.weight", (h,), "norms", "replicated", i),
            *T._attention(spec, f"{p}.self_attn", i),
        ]
        if i in spec.index_key_layers:
            a = f"{p}.self_attn"
            out += [
                T.Tensor(f"{a}.index_q_proj.weight", (iq, h), "attention", "kv_heads", i, True),
                T.Tensor(f"{a}.index_k_proj.weight", (ik, h), "attention", "replicated", i, True),
                T.Tensor(f"{a}.index_q_norm.weight", (ik,), "norms", "replicated", i),
                T.Tensor(f"{a}.index_k_norm.weight", (ik,), "norms", "replicated", i),
            ]
        if layer.mlp == "moe":
            moe = T._moe(spec, f"{p}.block_sparse_moe", i)
            out += [
                t
                for t in moe
                for t in (
                    (t, fp32_router_twin(t)) if t.name.endswith(".gate.weight") and t.component == "router" else (t,)
                )
            ]
        else:
            out += T._ffn(spec, f"{p}.mlp", i, spec.intermediate_size, "mlp")
    out.append(T.Tensor("model.norm.weight", (h,), "norms", "replicated", "last"))
    if not spec.tie_word_embeddings:
        out.append(T.Tensor("lm_head.weight", (v, h), "lm_head", "vocab", "last"))
    return out
