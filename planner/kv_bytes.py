"""KV-cache bytes per token per GPU and Mamba state bytes per sequence: pure functions over a
`ModelSpec` under vLLM's rules (KV heads replicated when fewer than TP ranks; MLA's latent whole on
every rank; a DSA layer's fp8 indexer keys beside the latent; layers split over PP stages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.accounting import kv_heads_per_rank, pp_layer_ranges
from planner.dtypes import torch_dtype_bytes
from planner.models.spec import ModelSpec


@dataclass(frozen=True)
class KVBytes:
    """KV-cache bytes per token on one GPU, as vLLM's page sizes add up."""

    per_stage: tuple[int, ...]
    """Per pipeline stage: sum over that stage's attention layers (what one token costs that GPU)."""
    by_kind_max_stage: dict[str, int]
    """The largest stage's bytes per token by attention kind (full, sliding, chunked, mla)."""
    per_layer: dict[str, int]
    """Bytes per token of one layer of each kind on one rank (page size / block size)."""
    head_size: int
    """vLLM's head size: `kv_lora_rank + qk_rope_head_dim` for MLA, else the attention head size."""
    kv_heads_per_rank: int
    """KV heads each rank stores (1 for MLA, whatever TP is)."""

    @property
    def max_per_gpu(self) -> int:
        return max(self.per_stage)


INDEXER_QUANT_BLOCK = 128  # vLLM's Indexer.quant_block_size: one fp32 scale per 128 fp8 key values


def has_indexer(spec: ModelSpec, layer: int) -> bool:
    """Whether decoder layer `layer` keeps an indexer key cache (DSA layers not marked shared)."""
    m = spec.mla
    if spec.index_key_layers:  # MiniMax-M3's key-only index cache beside GQA
        return layer in spec.index_key_layers
    return bool(m and m.index_head_dim) and spec.layers[layer].attention == "mla" and layer not in m.index_shared_layers


def indexer_bytes_per_token(spec: ModelSpec) -> int:
    """The lightning indexer's key cache of one MLA layer (DeepSeek-V3.2, GLM-5): vLLM's
    `DeepseekV32IndexerCache`, an MLAAttentionSpec of `index_head_dim + index_head_dim // 128 * 4`
    uint8 per token whatever the KV dtype, whole on every rank, in each layer that has one
    (`has_indexer`). It shares the latents' block ids (one uniform-type KV-cache group), so it adds
    to the bytes per token; 0 without an indexer."""
    m = spec.mla
    if spec.index_key_bytes:  # MiniMax-M3: MiniMaxM3IndexerCache, one bf16 key per token, whole on every rank
        return spec.index_key_bytes
    if m is None or not m.index_head_dim:
        return 0
    return m.index_head_dim + m.index_head_dim // INDEXER_QUANT_BLOCK * 4


# ---- DeepSeek-V4 ---------------------------------------------------------------------------------

V4_BLOCK = 256
"""Tokens per block: the V4 attention and indexer backends' only kernel block size."""
V4_SWA_BLOCK = 64
"""DeepseekV4SWACache's block size."""
FP8_DS_MLA_STATE, FP8_DS_MLA_ALIGN = 584, 576
"""fp8_ds_mla: 448 B nope + 128 B rope + 8 B scale per cached state; pages padded to 576 B."""


def deepseek_v4_caches(spec: ModelSpec, layers: range) -> list[tuple[str, tuple[str, int | None, int], int]]:
    """Each cache vLLM registers for these layers, as (role, (kind, window, block size), page bytes), in the
    FlashMLA fp8_ds_mla layout: the sliding window (every layer), the compressed KV
    (MLAAttentionSpec, block_size / ratio states), its compressor state (fp32 kv + score of coff x
    head_dim, `CompressorStateCache`: blocks of 4 (ratio 4) or 8 (ratio 128) tokens, a window of
    coff x ratio), and for ratio 4 the indexer keys (index_head_dim + a scale per 128) with their
    own compressor state. Every page rounds up to 576 B."""
    f = dict(spec.family_fields)
    window, hd, idim = spec.layers[0].window or 0, spec.head_dim, f.get("index_head_dim", 0)
    page = lambda n: -(-n // FP8_DS_MLA_ALIGN) * FP8_DS_MLA_ALIGN  # noqa: E731
    out: list[tuple[str, tuple[str, int | None, int], int]] = []
    for i in layers:
        r = spec.compress_ratios[i]
        out.append(("swa", ("sliding", window, V4_SWA_BLOCK), page(V4_SWA_BLOCK * FP8_DS_MLA_STATE)))
        if r == 1:
            continue
        coff, state_block = 1 + (r == 4), 4 if r == 4 else 8
        out.append(("compressed", ("mla", None, V4_BLOCK), page(V4_BLOCK // r * FP8_DS_MLA_STATE)))
        out.append(("compressor_state", ("sliding", coff * r, state_block), page(state_block * 2 * coff * hd * 4)))
        if r == 4:
            out.append(("indexer", ("mla", None, V4_BLOCK), page(V4_BLOCK // r * (idim + idim // 128 * 4))))
            out.append(("indexer_state", ("sliding", coff * r, state_block), page(state_block * 2 * coff * idim * 4)))
    return out


def deepseek_v4_block_pages(spec: ModelSpec, layers: range) -> dict[str, int]:
    """The pages of one 256-token block of the caches that grow with the sequence (compressed KV and
    indexer keys), by kind; the sliding-window and compressor-state caches are bounded per sequence
    and only in `planner.kv_layout`'s blocks."""
    out = {"compressed": 0, "indexer": 0}
    for role, _, page in deepseek_v4_caches(spec, layers):
        if role in out:
            out[role] += page
    return out


def attention_geometry(spec: ModelSpec, kind: str) -> tuple[int, int, int]:
    """(KV heads, key head size, value head size) of the model's `kind` attention layers: the
    layer's own where it names them (Gemma 4, MiMo-V2), else the model's."""
    layer = next((l for l in spec.layers if l.attention == kind), None)
    heads = (layer.kv_heads if layer else 0) or spec.num_kv_heads
    k = (layer.head_dim if layer else 0) or spec.head_dim
    return heads, k, (layer.v_head_dim if layer else 0) or k


def kv_layer_bytes_per_token(spec: ModelSpec, kind: str, tp: int, kv_dtype_bytes: int) -> int:
    """Page size / block size of one attention layer on one rank (`kv_cache_interface.py`)."""
    if kind == "mla":
        assert spec.mla is not None
        return (spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim) * kv_dtype_bytes  # no factor 2, not split by TP
    if kind in ("full", "sliding", "chunked"):
        heads, k, v = attention_geometry(spec, kind)
        return kv_heads_per_rank(heads, tp) * (k + v) * kv_dtype_bytes  # AttentionSpec: head_size + head_size_v
    return 0  # mamba / linear attention: per-sequence state, not per-token KV


def kv_bytes_per_token(spec: ModelSpec, kv_dtype_bytes: int, tp: int = 1, pp: int = 1) -> KVBytes:
    ranges = pp_layer_ranges(spec.num_layers, pp)
    if spec.compress_ratios:  # DeepSeek-V4: fp8_ds_mla whatever the KV dtype, whole on every rank
        pages = [deepseek_v4_block_pages(spec, r) for r in ranges]
        worst = max(range(pp), key=lambda s: sum(pages[s].values()))
        kinds = {k: v // V4_BLOCK for k, v in pages[worst].items()}
        return KVBytes(tuple(sum(p.values()) // V4_BLOCK for p in pages), kinds, kinds, spec.head_dim, 1)
    per_layer = {k: kv_layer_bytes_per_token(spec, k, tp, kv_dtype_bytes) for k in spec.layer_type_counts()}
    per_stage, by_kind = [], []
    for r in ranges:
        kinds: dict[str, int] = {}
        for i in r:
            k = spec.layers[i].attention
            if spec.layers[i].kv_shared_with is not None:
                continue  # reads an earlier layer's cache (vLLM builds no KV spec for it)
            kinds[k] = kinds.get(k, 0) + per_layer[k]
            if has_indexer(spec, i):
                kinds["indexer"] = kinds.get("indexer", 0) + indexer_bytes_per_token(spec)
        per_stage.append(sum(kinds.values()))
        by_kind.append(kinds)
    worst = max(range(pp), key=lambda s: per_stage[s])
    if spec.mla:
        head, heads = spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim, 1
    else:
        head, heads = spec.head_dim, kv_heads_per_rank(spec.num_kv_heads, tp)
    return KVBytes(tuple(per_stage), by_kind[worst], per_layer, head, heads)


def mamba_layer_state_shapes(
    spec: ModelSpec, tp: int = 1, num_spec: int = 0
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(conv, ssm) state shapes of one Mamba/linear layer on one TP rank, as
    `MambaStateShapeCalculator` returns them: the conv state keeps `kernel − 1 + num_spec` columns;
    Mamba2 with n_groups not divisible by TP first pads the groups to TP
    (`extra_groups_for_head_shards`). vLLM's `divide` asserts divisibility; this rounds up."""
    m = spec.mamba
    assert m is not None
    conv = list(m.conv_state_shape)
    ssm = list(m.ssm_state_shape)
    if m.kind == "mamba2":
        n_heads, head_dim, d_state = ssm
        groups = (conv[0] - n_heads * head_dim) // (2 * d_state)
        if groups % tp:
            conv[0] += 2 * (tp - groups) * d_state
    conv[1] += num_spec if m.kind != "mamba1" else 0
    conv[m.tp_dim_conv] = -(-conv[m.tp_dim_conv] // tp)
    ssm[m.tp_dim_ssm] = -(-ssm[m.tp_dim_ssm] // tp)
    return tuple(conv), tuple(ssm)


def mamba_layer_state_bytes(
    spec: ModelSpec, conv_dtype_bytes: int, ssm_dtype_bytes: int | None = None, tp: int = 1, num_spec: int = 0
) -> int:
    """One Mamba/linear layer's state for one sequence on one rank: vLLM's unpadded
    `MambaSpec.page_size_bytes` (Σ prod(shape) x dtype). The conv state uses the model dtype
    (`--mamba-cache-dtype auto`); the SSM state may differ (`--mamba-ssm-cache-dtype`; Nemotron-H
    defaults to float16 0.13-0.19 and float32 from 0.20)."""
    if spec.mamba is None:
        return 0
    conv, ssm = mamba_layer_state_shapes(spec, tp, num_spec)
    ssm_bytes = conv_dtype_bytes if ssm_dtype_bytes is None else ssm_dtype_bytes
    if spec.mamba.ssm_dtype:  # the checkpoint's mamba_ssm_dtype wins over --mamba-ssm-cache-dtype auto
        ssm_bytes = torch_dtype_bytes(spec.mamba.ssm_dtype)
    return math.prod(conv) * conv_dtype_bytes + math.prod(ssm) * ssm_bytes


def mamba_state_bytes_per_seq(
    spec: ModelSpec,
    state_dtype_bytes: int,
    tp: int = 1,
    ssm_dtype_bytes: int | None = None,
    layers: range | None = None,
) -> int:
    """Recurrent state of all Mamba/linear layers of one sequence on one rank (of the given
    layers, default all), before vLLM pads each layer's page to the attention page."""
    if spec.mamba is None:
        return 0
    idx = range(spec.num_layers) if layers is None else layers
    n = sum(1 for i in idx if spec.layers[i].attention in ("mamba", "linear"))
    return n * mamba_layer_state_bytes(spec, state_dtype_bytes, ssm_dtype_bytes, tp)
