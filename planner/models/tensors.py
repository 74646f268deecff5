"""The checkpoint's logical tensors, from a `ModelSpec` (the formula path) or named by a safetensors
header (the exact path), each tagged with its component, how tensor parallelism shards it and which
pipeline stage holds it. Accounting only ever sees this list, so both paths share every rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from planner.models.spec import ModelSpec

Shard = Literal["replicated", "column", "row", "q_heads", "kv_heads", "qkv_fused", "vocab", "experts", "heads"]
"""How vLLM splits a tensor over TP ranks:
- column / row: dimension 0 / 1 divided by TP (a row-parallel bias is replicated);
- q_heads / kv_heads: column-parallel over heads; KV heads are replicated when there are fewer than TP;
- qkv_fused: Phi-3's fused q,k,v with those two rules; vocab: rows padded to 64 then divided;
- experts: a routed-expert stack, divided by TP (or EP) either way; heads: a per-head vector."""

Stage = int | Literal["first", "last"]


@dataclass(frozen=True)
class Tensor:
    name: str
    """Checkpoint-style tensor name."""
    shape: tuple[int, ...]
    component: str
    """embeddings, attention, mlp, experts, router, norms, lm_head, vision, mtp, buffers."""
    shard: Shard
    stage: Stage
    """Decoder layer index, or `first` (embeddings, vision) / `last` (final norm, lm_head) for PP."""
    linear: bool = False
    """A linear layer's weight ([out, in], or [experts, out, in]) that a quantization scheme may compress."""
    loaded: bool = True
    """False for what the checkpoint stores but vLLM does not load (MTP layers, rotary buffers)."""
    runtime: bool = False
    """True for buffers vLLM creates at load time (rotary cache, MLA's decompressed copies): bytes, not parameters."""
    stored_dtype: str | None = None
    """The dtype stored in the checkpoint when a safetensors header says; None means the model dtype."""

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _mla_attention(spec: ModelSpec, p: str, i: int) -> list[Tensor]:
    """DeepSeek's multi-head latent attention: the query (through its latent when q_lora_rank is
    set), the KV latent with the shared rope key, and the per-head up-projection."""
    m, h = spec.mla, spec.hidden_size
    assert m is not None
    out: list[Tensor] = []
    qk = m.qk_nope_head_dim + m.qk_rope_head_dim
    if m.q_lora_rank:
        out += [
            Tensor(f"{p}.q_a_proj.weight", (m.q_lora_rank, h), "attention", "replicated", i, True),
            Tensor(f"{p}.q_a_layernorm.weight", (m.q_lora_rank,), "norms", "replicated", i),
            Tensor(f"{p}.q_b_proj.weight", (spec.num_heads * qk, m.q_lora_rank), "attention", "column", i, True),
        ]
    else:
        out.append(Tensor(f"{p}.q_proj.weight", (spec.num_heads * qk, h), "attention", "column", i, True))
    kv_a, kv_b = m.kv_lora_rank + m.qk_rope_head_dim, spec.num_heads * (m.qk_nope_head_dim + m.v_head_dim)
    out += [
        Tensor(f"{p}.kv_a_proj_with_mqa.weight", (kv_a, h), "attention", "replicated", i, True),
        Tensor(f"{p}.kv_a_layernorm.weight", (m.kv_lora_rank,), "norms", "replicated", i),
        Tensor(f"{p}.kv_b_proj.weight", (kv_b, m.kv_lora_rank), "attention", "column", i, True),
        Tensor(f"{p}.o_proj.weight", (h, spec.num_heads * m.v_head_dim), "attention", "row", i, True),
    ]
    return out


def _attention(spec: ModelSpec, p: str, i: int) -> list[Tensor]:
    if spec.mla is not None:
        return _mla_attention(spec, p, i)
    h, hd = spec.hidden_size, spec.head_dim
    q, kv = spec.num_heads * hd, spec.num_kv_heads * hd
    out: list[Tensor] = []
    if spec.fused_qkv:
        out.append(Tensor(f"{p}.qkv_proj.weight", (q + 2 * kv, h), "attention", "qkv_fused", i, True))
    else:
        out += [
            Tensor(f"{p}.q_proj.weight", (q, h), "attention", "q_heads", i, True),
            Tensor(f"{p}.k_proj.weight", (kv, h), "attention", "kv_heads", i, True),
            Tensor(f"{p}.v_proj.weight", (kv, h), "attention", "kv_heads", i, True),
        ]
    if spec.qkv_bias:
        out += [
            Tensor(f"{p}.q_proj.bias", (q,), "attention", "q_heads", i),
            Tensor(f"{p}.k_proj.bias", (kv,), "attention", "kv_heads", i),
            Tensor(f"{p}.v_proj.bias", (kv,), "attention", "kv_heads", i),
        ]
    out.append(Tensor(f"{p}.o_proj.weight", (h, q), "attention", "row", i, True))
    if spec.o_bias:
        out.append(Tensor(f"{p}.o_proj.bias", (h,), "attention", "replicated", i))
    if spec.qk_norm and spec.qk_norm_params:
        out += [
            Tensor(f"{p}.q_norm.weight", (hd,), "norms", "replicated", i),
            Tensor(f"{p}.k_norm.weight", (hd,), "norms", "replicated", i),
        ]
    if spec.model_type == "gpt_oss":
        out.append(Tensor(f"{p}.sinks", (spec.num_heads,), "attention", "heads", i))
    return out


def _ffn(
    spec: ModelSpec, p: str, i: Stage, inter: int, component: str, plain: tuple[str, str] = ("fc1", "fc2")
) -> list[Tensor]:
    """The MLP: gate/up/down, or a plain two-matrix one (`plain` names its column- and row-parallel
    linears: fc1/fc2, Nemotron-H's up_proj/down_proj)."""
    h = spec.hidden_size
    if not spec.gated_mlp:
        up, down = plain
        out = [
            Tensor(f"{p}.{up}.weight", (inter, h), component, "column", i, True),
            Tensor(f"{p}.{down}.weight", (h, inter), component, "row", i, True),
        ]
        if spec.mlp_bias:
            out += [
                Tensor(f"{p}.{up}.bias", (inter,), component, "column", i),
                Tensor(f"{p}.{down}.bias", (h,), component, "replicated", i),
            ]
        return out
    if spec.fused_gate_up:
        up = [Tensor(f"{p}.gate_up_proj.weight", (2 * inter, h), component, "column", i, True)]
    else:
        up = [
            Tensor(f"{p}.gate_proj.weight", (inter, h), component, "column", i, True),
            Tensor(f"{p}.up_proj.weight", (inter, h), component, "column", i, True),
        ]
    out = up + [Tensor(f"{p}.down_proj.weight", (h, inter), component, "row", i, True)]
    if spec.mlp_bias:
        out += [
            Tensor(f"{p}.gate_proj.bias", (inter,), component, "column", i),
            Tensor(f"{p}.up_proj.bias", (inter,), component, "column", i),
            Tensor(f"{p}.down_proj.bias", (h,), component, "replicated", i),
        ]
    return out


def _moe(spec: ModelSpec, p: str, i: int) -> list[Tensor]:
    moe, h = spec.moe, spec.hidden_size
    assert moe is not None
    e, inter = moe.num_experts, moe.expert_intermediate_size
    out = [Tensor(f"{p}.gate.weight", (e, h), "router", "replicated", i)]
    if moe.router_bias:
        out.append(Tensor(f"{p}.gate.bias", (e,), "router", "replicated", i))
    if moe.router_correction_bias:
        out.append(Tensor(f"{p}.gate.e_score_correction_bias", (e,), "router", "replicated", i))
    out += [
        Tensor(f"{p}.experts.gate_up_proj", (e, 2 * inter, h), "experts", "experts", i, True),
        Tensor(f"{p}.experts.down_proj", (e, h, inter), "experts", "experts", i, True),
    ]
    if moe.expert_bias:
        out += [
            Tensor(f"{p}.experts.gate_up_proj_bias", (e, 2 * inter), "experts", "experts", i),
            Tensor(f"{p}.experts.down_proj_bias", (e, h), "experts", "experts", i),
        ]
    if moe.num_shared_experts:
        # the checkpoint's own module name (ignore lists match it): Qwen-MoE / Llama 4 vs DeepSeek-style
        name = "shared_expert" if moe.shared_expert_gate or spec.model_type.startswith("llama4") else "shared_experts"
        out += _ffn(spec, f"{p}.{name}", i, moe.shared_intermediate_size, "shared_experts")
    if moe.shared_expert_gate:
        out.append(Tensor(f"{p}.shared_expert_gate.weight", (1, h), "router", "replicated", i))
    return out


def _decoder_layer(spec: ModelSpec, i: int, prefix: str = "model.layers") -> list[Tensor]:
    p = f"{prefix}.{i}"
    norm_shape = (spec.hidden_size,)
    out = []
    for k in range(spec.norms_per_layer):
        out.append(Tensor(f"{p}.norm{k}.weight", norm_shape, "norms", "replicated", i))
        if spec.norm == "layer":
            out.append(Tensor(f"{p}.norm{k}.bias", norm_shape, "norms", "replicated", i))
    out += _attention(spec, f"{p}.self_attn", i)
    if spec.layers[min(i, spec.num_layers - 1)].mlp == "moe" and spec.moe is not None:
        out += _moe(spec, f"{p}.mlp", i)
    else:
        out += _ffn(spec, f"{p}.mlp", i, spec.intermediate_size, "mlp")
    if spec.checkpoint_rotary_buffers:
        out.append(
            Tensor(
                f"{p}.self_attn.rotary_emb.inv_freq",
                (spec.rotary_dim // 2,),
                "buffers",
                "replicated",
                i,
                loaded=False,
                stored_dtype="float32",
            )
        )
    return out


def _mtp_layers(spec: ModelSpec) -> list[Tensor]:
    """DeepSeek-V3's multi-token-prediction module: a full decoder layer plus its own norms,
    projection, embedding and head copies, stored as `model.layers.{L}`; vLLM skips it unless a
    speculative-decoding drafter is configured."""
    out = []
    h, v = spec.hidden_size, spec.vocab_size
    for j in range(spec.num_mtp_layers):
        i = spec.num_layers + j
        p = f"model.layers.{i}"
        layer = [t for t in _decoder_layer(spec, spec.num_layers - 1) if t.stage == spec.num_layers - 1]
        layer = [
            Tensor(
                t.name.replace(f"layers.{spec.num_layers - 1}.", f"layers.{i}."),
                t.shape,
                "mtp",
                t.shard,
                "last",
                t.linear,
                loaded=False,
            )
            for t in layer
        ]
        layer += [
            Tensor(f"{p}.enorm.weight", (h,), "mtp", "replicated", "last", loaded=False),
            Tensor(f"{p}.hnorm.weight", (h,), "mtp", "replicated", "last", loaded=False),
            Tensor(
                f"{p}.eh_proj.weight", (h, 2 * h), "mtp", "replicated", "last", loaded=False
            ),  # kept bf16 in fp8 checkpoints
            Tensor(f"{p}.shared_head.norm.weight", (h,), "mtp", "replicated", "last", loaded=False),
            Tensor(f"{p}.embed_tokens.weight", (v, h), "mtp", "vocab", "last", loaded=False),
            Tensor(f"{p}.shared_head.head.weight", (v, h), "mtp", "vocab", "last", loaded=False),
        ]
        out += layer
    return out


def _vision(spec: ModelSpec) -> list[Tensor]:
    """A ViT (SigLIP, CLIP, Pixtral, MoonViT, Llama 4, Qwen2-VL): patch embedding, optional position table, pre-norm
    blocks, optional pre/post norms, then the projector. vLLM splits each block's attention and MLP
    across TP ranks (QKV/column/row-parallel layers; the row-parallel biases stay whole); embeddings
    and norms are replicated (mm_encoder_tp_mode "weights")."""
    v = spec.vision
    if v is None or v.num_layers == 0:
        return []
    h, inter, bias = v.hidden_size, v.intermediate_size, v.linear_bias
    norm = 2 * h if v.norm == "layer" else h
    mlp_in = 2 * inter if v.mlp_gated else inter  # column-parallel outputs of the MLP
    block_sharded = 4 * h * h + h * mlp_in + inter * h + ((3 * h + mlp_in) if bias else 0)
    block_replicated = 2 * norm + (2 * h if bias else 0)  # two norms; o_proj and fc2 biases
    sharded = v.num_layers * block_sharded + v.adapter_params
    replicated = (
        v.position_rows * h
        + v.num_layers * block_replicated
        + v.extra_params
        + (norm if v.pre_norm else 0)
        + (norm if v.post_norm else 0)
    )
    patch = v.num_channels * v.patch_frames * v.patch_size**2 * h
    if v.patch_linear:
        sharded += patch
    else:
        replicated += patch + (h if v.patch_bias else 0)
    out = [
        Tensor("vision_tower.sharded", (sharded,), "vision", "column", "first"),
        Tensor("vision_tower.replicated", (replicated,), "vision", "replicated", "first"),
    ]
    skipped = v.skipped_layers * (block_sharded + block_replicated) + (norm if v.skipped_post_norm else 0)
    if skipped:
        out.append(Tensor("vision_tower.not_built", (skipped,), "vision", "replicated", "first", loaded=False))
    if v.projector_column_params:
        out.append(Tensor("multi_modal_projector.sharded", (v.projector_column_params,), "vision", "column", "first"))
    if v.projector_replicated_params:
        out.append(
            Tensor(
                "multi_modal_projector.replicated", (v.projector_replicated_params,), "vision", "replicated", "first"
            )
        )
    return out


# ---- hybrid attention + Mamba / linear-attention models ------------------------------------------


def _gdn(spec: ModelSpec, p: str, i: int) -> list[Tensor]:
    """Qwen3-Next gated delta net (`layers/mamba/gdn/qwen_gdn_linear_attn.py`): in_proj_qkvz and
    in_proj_ba are column-parallel (one fused shard each, GQA-interleaved), conv1d [conv_dim, 1, k]
    column-parallel, dt_bias / A_log split by value head, the gated RMSNorm over one head
    replicated, out_proj row-parallel. vLLM keeps A_log in fp32 (counted here in the model dtype)."""
    m = spec.mamba
    assert m is not None
    h = spec.hidden_size
    v_heads, v_dim, k_dim = m.ssm_state_shape
    conv_dim, kernel = m.conv_state_shape[0], m.conv_state_shape[1] + 1
    value_dim = v_heads * v_dim
    key_dim = (conv_dim - value_dim) // 2
    return [
        Tensor(f"{p}.in_proj_qkvz.weight", (2 * key_dim + 2 * value_dim, h), "mamba", "column", i, True),
        Tensor(f"{p}.in_proj_ba.weight", (2 * v_heads, h), "mamba", "column", i, True),
        Tensor(f"{p}.conv1d.weight", (conv_dim, 1, kernel), "mamba", "column", i),
        Tensor(f"{p}.dt_bias", (v_heads,), "mamba", "heads", i),
        Tensor(f"{p}.A_log", (v_heads,), "mamba", "heads", i),
        Tensor(f"{p}.norm.weight", (v_dim,), "norms", "replicated", i),
        Tensor(f"{p}.out_proj.weight", (h, value_dim), "mamba", "row", i, True),
    ]


def _qwen3_next_layer(spec: ModelSpec, i: int, p: str, stage: Stage) -> list[Tensor]:
    """One Qwen3-Next decoder layer: GDN or gated full attention (q_proj doubled for the output
    gate, q/k norms), then the MoE block (router, experts, shared expert and its sigmoid gate)."""
    h, hd = spec.hidden_size, spec.head_dim
    out = [
        Tensor(f"{p}.input_layernorm.weight", (h,), "norms", "replicated", i),
        Tensor(f"{p}.post_attention_layernorm.weight", (h,), "norms", "replicated", i),
    ]
    if spec.layers[min(i, spec.num_layers - 1)].attention == "linear" and stage != "last":
        out += _gdn(spec, f"{p}.linear_attn", i)
    else:
        q, kv = spec.num_heads * hd, spec.num_kv_heads * hd
        a = f"{p}.self_attn"
        out += [
            Tensor(f"{a}.q_proj.weight", (2 * q, h), "attention", "q_heads", i, True),
            Tensor(f"{a}.k_proj.weight", (kv, h), "attention", "kv_heads", i, True),
            Tensor(f"{a}.v_proj.weight", (kv, h), "attention", "kv_heads", i, True),
            Tensor(f"{a}.o_proj.weight", (h, q), "attention", "row", i, True),
            Tensor(f"{a}.q_norm.weight", (hd,), "norms", "replicated", i),
            Tensor(f"{a}.k_norm.weight", (hd,), "norms", "replicated", i),
        ]
    if spec.moe is not None and (stage == "last" or spec.layers[i].mlp == "moe"):
        out += _moe(spec, f"{p}.mlp", i)
    else:
        out += _ffn(spec, f"{p}.mlp", i, spec.intermediate_size, "mlp")
    return out


def _qwen3_next(spec: ModelSpec) -> list[Tensor]:
    h, v = spec.hidden_size, spec.vocab_size
    out = [Tensor("model.embed_tokens.weight", (v, h), "embeddings", "vocab", "first")]
    for i in range(spec.num_layers):
        out += _qwen3_next_layer(spec, i, f"model.layers.{i}", i)
    out.append(Tensor("model.norm.weight", (h,), "norms", "replicated", "last"))
    if not spec.tie_word_embeddings:
        out.append(Tensor("lm_head.weight", (v, h), "lm_head", "vocab", "last"))
    # MTP block (`qwen3_next_mtp.py`): fc [h, 2h], pre-fc norms, one full-attention MoE layer, a
    # final norm; it shares embed_tokens and lm_head. Stored, loaded only for speculative decoding.
    for j in range(spec.num_mtp_layers):
        layer = _qwen3_next_layer(spec, spec.num_layers - 1, f"mtp.layers.{j}", "last")
        out += [Tensor(t.name, t.shape, "mtp", t.shard, "last", t.linear, loaded=False) for t in layer]
    if spec.num_mtp_layers:
        out += [Tensor("mtp.fc.weight", (h, 2 * h), "mtp", "replicated", "last", loaded=False)]
        out += [
            Tensor(f"mtp.{n}.weight", (h,), "mtp", "replicated", "last", loaded=False)
            for n in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm")
        ]
    return out


_HYBRID_BUILDERS = {"qwen3_next": _qwen3_next}  # Nemotron-H: families/nemotron_h.py


def from_spec(spec: ModelSpec) -> list[Tensor]:
    """Every tensor of the checkpoint the spec describes, in the model's dtype, before quantization."""
    from planner.models.families import tensor_builder  # families registered one module each

    builder = tensor_builder(spec.model_type)
    if builder is not None:
        return builder(spec)
    if spec.mamba is not None:
        if spec.model_type not in _HYBRID_BUILDERS:
            raise ValueError(f"weights of {spec.model_type} are not modelled by formula")
        return _HYBRID_BUILDERS[spec.model_type](spec)
    h, v = spec.hidden_size, spec.vocab_size
    out = [Tensor("model.embed_tokens.weight", (v, h), "embeddings", "vocab", "first")]
    if spec.learned_positions:
        out.append(
            Tensor("model.embed_positions.weight", (spec.learned_positions, h), "embeddings", "replicated", "first")
        )
    out += _vision(spec)
    for i in range(spec.num_layers):
        out += _decoder_layer(spec, i)
    out.append(Tensor("model.norm.weight", (h,), "norms", "replicated", "last"))
    if spec.norm == "layer":
        out.append(Tensor("model.norm.bias", (h,), "norms", "replicated", "last"))
    if not spec.tie_word_embeddings:
        out.append(Tensor("lm_head.weight", (v, h), "lm_head", "vocab", "last"))
    if spec.lm_head_bias:
        out.append(Tensor("lm_head.bias", (v,), "lm_head", "vocab", "last"))
    out += _mtp_layers(spec)
    return out


# ---- safetensors names -> the same tags -------------------------------------------------------

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_RULES: tuple[tuple[str, str, Shard, bool], ...] = (
    # (regex on the name, component, shard, is a linear weight)
    (
        r"(vision|visual|image|patch_embed|multi_modal_projector|mm_projector|mm_input_projection)",
        "vision",
        "replicated",
        False,
    ),
    (r"rotary_emb\.inv_freq$", "buffers", "replicated", False),
    (r"(embed_tokens|wte|word_embeddings|tok_embeddings)\.weight$", "embeddings", "vocab", False),
    (r"(embed_positions|wpe)\.weight$", "embeddings", "replicated", False),
    (r"lm_head\.(weight|bias)$", "lm_head", "vocab", False),
    # hybrid Mamba / GDN mixers (Nemotron-H, Qwen3-Next): TP splits channels and heads; the Mamba2
    # grouped norm is split too, the GDN per-head norm is not (matched by the norms rule below)
    (r"\.mixer\.norm\.weight$", "norms", "column", False),
    (r"\.in_proj(_qkvz|_ba)?\.", "mamba", "column", True),
    (r"\.conv1d\.(weight|bias)$", "mamba", "column", False),
    (r"\.(dt_bias|A_log|D)$", "mamba", "heads", False),
    (r"^backbone\.embeddings\.weight$", "embeddings", "vocab", False),
    (r"(norm|layernorm|ln_\w+)[^.]*\.(weight|bias)$", "norms", "replicated", False),
    (r"\.(gate|router)\.(weight|bias|e_score_correction_bias)$", "router", "replicated", False),
    (r"shared_expert_gate\.weight$", "router", "replicated", False),
    (r"\.experts\.", "experts", "experts", True),
    (r"shared_expert[s]?\.", "shared_experts", "column", True),
    (r"\.(q_a_proj|kv_a_proj_with_mqa)\.", "attention", "replicated", True),
    (r"\.(k_proj|v_proj)\.", "attention", "kv_heads", True),
    (r"\.(q_proj|q_b_proj|query)\.", "attention", "q_heads", True),
    (r"\.qkv_proj\.", "attention", "qkv_fused", True),
    (r"\.kv_b_proj\.", "attention", "column", True),
    (r"\.(o_proj|dense|out_proj)\.", "attention", "row", True),
    (r"\.sinks$", "attention", "heads", False),
    (r"\.(down_proj|fc2|w2)\.", "mlp", "row", True),
    (r"\.(gate_proj|up_proj|gate_up_proj|fc1|w1|w3)\.", "mlp", "column", True),
)
_COMPILED = tuple((re.compile(rx), c, s, lin) for rx, c, s, lin in _RULES)
_ROW_SHARDED = re.compile(r"\.(o_proj|dense|out_proj|down_proj|fc2|w2)\.")


def classify(name: str, shape: tuple[int, ...], dtype: str, num_layers: int) -> Tensor:
    """Tag one safetensors tensor with component, shard rule and stage, from its name alone."""
    m = _LAYER.search(name)
    layer = int(m.group(1)) if m else None
    stage: Stage = layer if layer is not None and layer < num_layers else ("last" if layer is not None else "first")
    component, shard, linear = "other", "replicated", False
    for rx, c, s, lin in _COMPILED:
        if rx.search(name):
            component, shard, linear = c, s, lin
            break
    if name.endswith(".bias") and _ROW_SHARDED.search(name):
        shard = "replicated"  # row-parallel biases are added once, whole, on every rank
    if component in ("norms", "lm_head") and layer is None:
        stage = "last" if not name.startswith("model.embed") else "first"
    loaded = component != "buffers" and not (layer is not None and layer >= num_layers)
    if layer is not None and layer >= num_layers:
        component = "mtp"
    if name.startswith("mtp."):  # Qwen3-Next's MTP block: stored, loaded only for speculative decoding
        component, stage, loaded = "mtp", "last", False
    linear = linear and name.endswith("weight") or (component == "experts" and len(shape) == 3)
    return Tensor(name, shape, component, shard, stage, linear, loaded=loaded, stored_dtype=dtype)
