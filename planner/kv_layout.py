"""How vLLM carves one worker's KV-cache memory into blocks, and what a request needs: exact
rules of `vllm/v1/core/kv_cache_utils.py` (grouping, bytes per block, blocks per request, the
token count it logs, the max_model_len fit check). Pure functions: bytes in, blocks and tokens out.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from planner.kv_bytes import (
    V4_BLOCK,
    deepseek_v4_caches,
    has_indexer,
    indexer_bytes_per_token,
    kv_layer_bytes_per_token,
    mamba_layer_state_bytes,
)
from planner.models.spec import ModelSpec

MAMBA_KINDS = ("mamba", "linear")
"""Layer kinds that keep a per-sequence recurrent state (one MambaSpec per layer in vLLM)."""


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class KVGroup(NamedTuple):
    """One KV-cache group: up to `group_size` layers of one attention kind sharing block ids."""

    kind: str
    """full, sliding, chunked, mla, or mamba (Mamba / linear-attention state pages)."""
    window: int | None
    """Sliding window / attention chunk in tokens, None for full attention and MLA."""
    block_size: int = 0
    """Tokens per block of this group where vLLM raised it to even out the page sizes
    (`unify_kv_cache_spec_page_size`: Gemma 4's full layers); 0 = the layout's."""


class KVLayout(NamedTuple):
    """One worker's KV pool layout."""

    block_size: int
    """Tokens per block."""
    page_bytes: int
    """One layer's page: `block_size` tokens of one layer on this rank."""
    group_size: int
    """Layers per group (the pool's block holds one page per layer slot of a group)."""
    groups: tuple[KVGroup, ...]
    padding_layers: int
    """Layer slots left empty when a kind's layer count is not a multiple of group_size (wasted)."""
    mamba_state_bytes: int = 0
    """One Mamba layer's real state on this rank (before padding to `page_bytes`); 0 if none."""
    mamba_mode: str = "none"
    """vLLM's mamba_cache_mode: none, align (prefix caching, 0.15+) or all (0.15-0.31, some models)."""
    mamba_blocks: int = 1
    """Blocks per request of each Mamba group in modes none / align (spec and checkpoint blocks included)."""
    mamba_all_extra_blocks: int = 0
    """Mode all: blocks added to cdiv(max_model_len, block_size) (speculative tokens, 0.28+)."""
    indexer_block_bytes: int = 0
    """DSA: the indexer key-cache pages of this worker's layers that have one, in every block beside
    the latents (`UniformTypeKVCacheSpecs`: one group whose page is the sum of all its layers' pages)."""
    packed_block_bytes: int = 0
    """Block-outermost packing (DeepSeek-V4): every group's pages side by side in one block of the
    largest group's bytes (`_get_kv_cache_bytes_per_block`); 0 = group_size x page_bytes (+ indexers)."""

    @property
    def bytes_per_block(self) -> int:
        return self.packed_block_bytes or self.group_size * self.page_bytes + self.indexer_block_bytes


class LayoutRules(NamedTuple):
    """The release-dependent knobs of the layout (from `profiles/vllm`)."""

    hybrid_group_size_max_rule: bool = True
    """0.18+: use the largest kind's layer count as group size when max < 1.5 x min."""
    hybrid_kv_cache_manager: bool = True
    """Sliding-window layers get their own groups (off on CPU and with --disable-hybrid-kv-cache-manager)."""
    chunked_local_with_hybrid: bool = False
    """Llama 4's chunked layers stay chunked only with VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=1."""
    # ---- attention + Mamba hybrids (ignored for models without Mamba/linear layers)
    mamba_dtype_bytes: tuple[int, int] | None = None
    """(conv, ssm) state element bytes; None = the KV element size for both."""
    mamba_block_align: str = "backend_kernel_block"
    """Release fact hybrid_mamba_block_align: fixed_16, 16_or_mla_64 or backend_kernel_block."""
    kernel_block: int = 16
    """Smallest kernel block of the attention backend (FlashAttention / FlashInfer: 16)."""
    mamba_mode: str = "none"
    """mamba_cache_mode: none, align or all."""
    mamba_blocks: int = 1
    """Blocks per request of a Mamba group in modes none / align (from the release facts)."""
    mamba_all_extra_blocks: int = 0
    """Mode all: extra blocks per request beyond cdiv(max_model_len, block_size)."""
    mamba_checkpoint_alignment: int = 1
    """Align mode, 0.33+: tokens every Mamba layer's prefill checkpoint lands on (FlashInfer GDN: 64);
    the block size is made a multiple of it."""
    mamba_chunk_size: int = 2048
    """Mode all: the model's Mamba chunk size (`chunk_size` / `mamba_chunk_size`, vLLM default 2048)."""
    num_spec_tokens: int = 0
    """Speculative tokens: the conv state keeps that many extra columns (0.15+)."""
    dsa_token_bytes: int = 0
    """DSA latents in vLLM's fp8_ds_mla format (`dsa_token_bytes`): bytes per token per layer; 0 = plain."""


def _effective_kinds(spec: ModelSpec, layers: range, rules: LayoutRules) -> list[tuple[str, int | None]]:
    out = []
    for i in layers:
        layer = spec.layers[i]
        kind, window = layer.attention, layer.window
        if kind == "chunked" and not (rules.hybrid_kv_cache_manager and rules.chunked_local_with_hybrid):
            kind, window = "full", None
        if kind == "sliding" and not rules.hybrid_kv_cache_manager:
            kind, window = "full", None
        if kind in MAMBA_KINDS or kind == "none" or layer.kv_shared_with is not None:
            continue  # recurrent state (grouped separately), an MLP-only block or a KV-shared layer (no cache)
        out.append((kind, window))
    return out


def attention_page_per_token(spec: ModelSpec, tp: int, kv_dtype_bytes: int) -> int:
    """`FullAttentionSpec(block_size=1)` / `MLAAttentionSpec(block_size=1)` page of the model's
    attention: what `_align_hybrid_block_size` compares the Mamba page with."""
    return kv_layer_bytes_per_token(spec, "mla" if spec.mla is not None else "full", tp, kv_dtype_bytes)


def hybrid_block_size(
    attn_page_1_token: int, mamba_page: int, block_size: int, rules: LayoutRules, mla: bool = False
) -> int:
    """The attention block size vLLM settles on so an attention page holds one Mamba state
    (`HybridAttentionMambaModelConfig`, 0.20+ `Platform._align_hybrid_block_size`): the smallest
    multiple of the alignment whose page is >= the Mamba page (mode all: of lcm(chunk, alignment));
    a larger configured block size is kept."""
    if mamba_page <= 0:
        return block_size
    if rules.mamba_block_align == "fixed_16":
        align = 16
    elif rules.mamba_block_align == "16_or_mla_64":
        align = 64 if mla else 16
    else:
        align = max(rules.kernel_block, block_size)
    if rules.mamba_mode == "all":
        chunk = math.lcm(rules.mamba_chunk_size, align)
        attn_block = chunk * cdiv(cdiv(mamba_page, attn_page_1_token), chunk)
    else:
        if rules.mamba_mode == "align":
            align = math.lcm(align, rules.mamba_checkpoint_alignment)
        attn_block = align * cdiv(mamba_page, align * attn_page_1_token)
    return max(block_size, attn_block)


def _kind_counts(
    spec: ModelSpec, layers: range, kinds: list[tuple[str, int | None]], hybrid: bool
) -> dict[tuple[str, int | None], int]:
    """The worker's cache kinds in order of first appearance (vLLM's dict of same-spec layers), each
    with its number of layers; a hybrid's Mamba layers are one kind."""
    counts: dict[tuple[str, int | None], int] = {}
    it = iter(kinds)
    for i in layers:
        a = spec.layers[i].attention
        if a in MAMBA_KINDS and hybrid:
            k: tuple[str, int | None] = ("mamba", None)
        elif a in MAMBA_KINDS or a == "none" or spec.layers[i].kv_shared_with is not None:
            continue
        else:
            k = next(it)
        counts[k] = counts.get(k, 0) + 1
    if not counts:
        raise ValueError("no attention layer on this worker")
    return counts


def _page_per_token(spec: ModelSpec, kind: str, tp: int, kv_dtype_bytes: int, attn_1: int, rules: LayoutRules) -> int:
    """One layer's page per block token: a Mamba state padded to the attention page, a DSA latent in
    fp8_ds_mla where the backend takes it, else the layer's KV."""
    if kind == "mamba":
        return attn_1
    if kind == "mla" and rules.dsa_token_bytes:
        return rules.dsa_token_bytes
    return kv_layer_bytes_per_token(spec, kind, tp, kv_dtype_bytes)


def build_layout(
    spec: ModelSpec, layers: range, tp: int, kv_dtype_bytes: int, block_size: int, rules: LayoutRules = LayoutRules()
) -> KVLayout:
    """Group the cache layers of one worker (`_get_kv_cache_groups_uniform_page_size`).

    Hybrid attention + Mamba models: each Mamba/linear layer has one state page; the attention
    block size is raised so an attention page holds it (`hybrid_block_size`) and the state page is
    padded to the attention page, so every group has the same page size. The Mamba layers form one
    kind, split into groups like any other."""
    if spec.compress_ratios:
        return deepseek_v4_layout(spec, layers)
    kinds = _effective_kinds(spec, layers, rules)
    hybrid = spec.mamba is not None and any(l.attention in MAMBA_KINDS for l in spec.layers)
    mamba_state = 0
    attn_1 = kv_layer_bytes_per_token(spec, kinds[0][0], tp, kv_dtype_bytes) if kinds else 0
    if hybrid:
        conv_b, ssm_b = rules.mamba_dtype_bytes or (kv_dtype_bytes, kv_dtype_bytes)
        mamba_state = mamba_layer_state_bytes(spec, conv_b, ssm_b, tp, rules.num_spec_tokens)
        attn_1 = attention_page_per_token(spec, tp, kv_dtype_bytes)
        block_size = hybrid_block_size(attn_1, mamba_state, block_size, rules, spec.mla is not None)
    counts = _kind_counts(spec, layers, kinds, hybrid)
    page = {k: block_size * _page_per_token(spec, k[0], tp, kv_dtype_bytes, attn_1, rules) for k in counts}
    # unify_kv_cache_spec_page_size: a smaller attention page grows by its block size to the largest
    page_bytes = max(page.values())
    if any(page_bytes % p or k[0] == "mamba" for k, p in page.items() if p != page_bytes):
        raise ValueError("attention kinds whose page sizes do not divide each other are not modelled")
    scale = {k: page_bytes // p for k, p in page.items()}
    extra = (
        dict(
            mamba_state_bytes=mamba_state,
            mamba_mode=rules.mamba_mode,
            mamba_blocks=rules.mamba_blocks,
            mamba_all_extra_blocks=rules.mamba_all_extra_blocks,
        )
        if hybrid
        else {}
    )

    def group(k: tuple[str, int | None]) -> KVGroup:
        return KVGroup(*k, block_size * scale[k] if scale[k] > 1 else 0)

    if len(counts) == 1:
        ((kind, n),) = counts.items()
        # a DSA layer's indexer cache shares the latents' block ids (one uniform-type group): its pages add on
        indexers = sum(1 for i in layers if has_indexer(spec, i))
        extra["indexer_block_bytes"] = indexers * block_size * indexer_bytes_per_token(spec)
        return KVLayout(block_size, page_bytes, n, (group(kind),), 0, **extra)
    if any(has_indexer(spec, i) for i in layers):
        raise ValueError("an indexer beside attention kinds other than MLA is not modelled")
    lo, hi = min(counts.values()), max(counts.values())
    group_size = hi if rules.hybrid_group_size_max_rule and hi < 1.5 * lo else lo
    groups, padding = [], 0
    for kind, n in counts.items():
        g = cdiv(n, group_size)
        groups += [group(kind)] * g
        padding += g * group_size - n
    return KVLayout(block_size, page_bytes, group_size, tuple(groups), padding, **extra)


FP8_DS_MLA_TOKEN = 656
"""fp8_ds_mla for a DSA latent: 512 fp8 nope values, 4 fp32 scales and 64 bf16 rope values per token."""


def dsa_token_bytes(spec: ModelSpec, compute_capability: str | None, kv_cache_dtype: str) -> int:
    """Bytes per token of a DSA layer's latent where vLLM 0.32's sparse backend stores it as
    fp8_ds_mla (`_canonicalize_sparse_mla_kv_cache_dtype`), else 0 (the plain latent). The backend is
    cuda.py's first that takes the requested dtype: SM90 FLASH_ATTN_MLA_SPARSE (16-bit only), then
    FLASHMLA_SPARSE (`fp8`: fp8_ds_mla), then FLASHINFER_MLA_SPARSE_SM90 (`fp8_e4m3`: plain); SM100
    FLASHINFER_MLA_SPARSE for fp8 (plain) and FLASHMLA_SPARSE for 16-bit; SM12
    FLASHINFER_MLA_SPARSE_SM120, which serves auto / fp8 / fp8_e4m3 as fp8_ds_mla."""
    if spec.mla is None or not spec.mla.index_head_dim or not compute_capability:
        return 0
    major = compute_capability.split(".")[0]
    if (major == "9" and kv_cache_dtype == "fp8") or (major == "12" and kv_cache_dtype in ("auto", "fp8", "fp8_e4m3")):
        return FP8_DS_MLA_TOKEN
    return 0


# ---- DeepSeek-V4: five cache kinds per layer, packed block-outermost -------------------------------


def approximate_gcd(values: list[int], lower_bound: int) -> int:
    """vLLM's `_approximate_gcd`: the d >= lower_bound that pads the values least (ties: larger d)."""
    lo, hi = max(1, lower_bound), max(values)
    if lo > hi:
        return lo
    return min(range(lo, hi + 1), key=lambda d: (sum((d - x % d) % d for x in values), -d))


def deepseek_v4_layout(spec: ModelSpec, layers: range) -> KVLayout:
    """`_get_packed_kv_cache_groups` over `deepseek_v4_caches`: caches of one type (same class, block
    size and window) form a bucket; balanced buckets (as many layers of each page size) split into
    groups of about the same number of pattern repeats (`approximate_gcd`, at least the largest
    multi-size bucket's), the others stay whole; the block is the largest group's bytes."""
    buckets: dict[tuple[str, int | None, int], dict[int, int]] = {}
    for _, key, p in deepseek_v4_caches(spec, layers):
        counts = buckets.setdefault(key, {})
        counts[p] = counts.get(p, 0) + 1
    balanced = {k: len(set(c.values())) == 1 for k, c in buckets.items()}
    floor = max((max(c.values()) for k, c in buckets.items() if balanced[k] and len(c) > 1), default=0)
    repeats = approximate_gcd([max(c.values()) for k, c in buckets.items() if balanced[k]], floor) if floor else None

    def n_groups(k: tuple[str, int | None, int]) -> int:
        return cdiv(max(buckets[k].values()), repeats) if balanced[k] and repeats else 1

    def state(k: tuple[str, int | None, int]) -> bool:
        return repeats is None and k[0] == "sliding"

    def widest(k: tuple[str, int | None, int], n: int) -> int:
        return sum(cdiv(c, n) * p for p, c in buckets[k].items())

    anchor = max(widest(k, sum(c.values()) if state(k) else n_groups(k)) for k, c in buckets.items())
    groups: list[KVGroup] = []
    sizes: list[int] = []
    for k, c in buckets.items():
        n = n_groups(k)
        if anchor and state(k):
            n = max(n, cdiv(sum(c.values()), max(anchor // next(iter(c)), 1)))
        if n == 1:  # the whole bucket in one group
            groups.append(KVGroup(*k))
            sizes.append(sum(p * m for p, m in c.items()))
            continue
        reps = min(c.values())  # zip(*page_size_layers.values()): one layer of each page size per repeat
        for g in range(n):
            groups.append(KVGroup(*k))
            sizes.append(len(range(g, reps, n)) * sum(c))
    block = max(sizes)
    return KVLayout(V4_BLOCK, block, 1, tuple(groups), 0, packed_block_bytes=block)


def _group_blocks(layout: KVLayout, g: KVGroup, max_model_len: int, inflight_tokens: int) -> int:
    bs = g.block_size or layout.block_size
    if g.kind == "sliding" and g.window:
        return cdiv(min(g.window - 1 + inflight_tokens, max_model_len), bs) + 1
    if g.kind == "chunked" and g.window:
        return cdiv(min(g.window + inflight_tokens, max_model_len), bs)
    if g.kind == "mamba":
        # MambaSpec.max_memory_usage_bytes / page: mode all keeps a state per block of tokens
        if layout.mamba_mode == "all":
            return cdiv(max_model_len, bs) + layout.mamba_all_extra_blocks
        return layout.mamba_blocks
    return cdiv(max_model_len, bs)


def blocks_per_request(layout: KVLayout, max_model_len: int, inflight_tokens: int) -> int:
    """Σ over groups of the blocks one request of `max_model_len` tokens can hold (`max_memory_usage_bytes`).
    `inflight_tokens` bounds a window's extra tokens: max_num_batched_tokens, or from 0.26 the
    batches in flight x max_num_batched_tokens."""
    return sum(_group_blocks(layout, g, max_model_len, inflight_tokens) for g in layout.groups)


def needed_bytes(layout: KVLayout, max_model_len: int, inflight_tokens: int, rule: str = "all_groups_blocks") -> int:
    """KV memory vLLM's start-up check asks for one request of max_model_len. 0.14-0.18 counted only
    the first group's blocks (`group0_blocks`); other releases count every group (0.10-0.13 summed
    the layers' own needs, the same without padding layers)."""
    if rule == "group0_blocks":
        return layout.bytes_per_block * _group_blocks(layout, layout.groups[0], max_model_len, inflight_tokens)
    return layout.bytes_per_block * blocks_per_request(layout, max_model_len, inflight_tokens)


def logged_tokens(layout: KVLayout, num_blocks: int, max_concurrency: float, max_model_len: int, formula: str) -> int:
    """The "KV cache size: N tokens" figure: `num_blocks // groups x min block size` (to 0.20.0) or
    `int(max_concurrency x max_model_len)` (0.20.1 on). A Mamba group's block size is
    max_model_len in mode none (`mamba_block_size`), the attention block size otherwise."""
    if formula == "concurrency_x_max_model_len":
        return int(max_concurrency * max_model_len)
    min_block = layout.block_size
    if layout.mamba_mode == "none" and any(g.kind == "mamba" for g in layout.groups):
        min_block = min(min_block, max_model_len)
    return num_blocks // len(layout.groups) * min_block


def fits(
    layout: KVLayout,
    available_bytes: int,
    max_model_len: int,
    inflight_tokens: int,
    null_block: bool,
    rule: str = "all_groups_blocks",
) -> bool:
    """vLLM's start-up check: one request at max_model_len must fit in the available KV memory
    (0.29+: minus the null block)."""
    budget = available_bytes - (layout.bytes_per_block if null_block else 0)
    return needed_bytes(layout, max_model_len, inflight_tokens, rule) <= budget


def max_fitting_len(
    layout: KVLayout,
    available_bytes: int,
    upper: int,
    inflight_tokens: int,
    null_block: bool,
    concurrency: int = 1,
    rule: str = "all_groups_blocks",
) -> int:
    """Largest max_model_len (≤ upper) for which `concurrency` requests fit: vLLM's binary search
    for its "estimated maximum model length" (concurrency 1, the release's check `rule`) and its
    auto-fit. For several requests the blocks of every group count. 0 if none fits."""
    budget = available_bytes - (layout.bytes_per_block if null_block else 0)

    def ok(n: int) -> bool:
        if concurrency == 1:
            return needed_bytes(layout, n, inflight_tokens, rule) <= budget
        return layout.bytes_per_block * blocks_per_request(layout, n, inflight_tokens) * concurrency <= budget

    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
