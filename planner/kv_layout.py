"""How vLLM carves one worker's KV-cache memory into blocks, and what a request needs: exact
rules of `vllm/v1/core/kv_cache_utils.py` (grouping, bytes per block, blocks per request, the
token count it logs, the max_model_len fit check). Pure functions: bytes in, blocks and tokens out.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.accounting import kv_layer_bytes_per_token
from planner.models.spec import ModelSpec


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class KVGroup:
    """One KV-cache group: up to `group_size` layers of one attention kind sharing block ids."""

    kind: str
    """full, sliding, chunked or mla."""
    window: int | None
    """Sliding window / attention chunk in tokens, None for full attention and MLA."""


@dataclass(frozen=True)
class KVLayout:
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

    @property
    def bytes_per_block(self) -> int:
        return self.group_size * self.page_bytes


@dataclass(frozen=True)
class LayoutRules:
    """The release-dependent knobs of the layout (from `profiles/vllm`)."""

    hybrid_group_size_max_rule: bool = True
    """0.18+: use the largest kind's layer count as group size when max < 1.5 x min."""
    hybrid_kv_cache_manager: bool = True
    """Sliding-window layers get their own groups (off on CPU and with --disable-hybrid-kv-cache-manager)."""
    chunked_local_with_hybrid: bool = False
    """Llama 4's chunked layers stay chunked only with VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=1."""


def _effective_kinds(spec: ModelSpec, layers: range, rules: LayoutRules) -> list[tuple[str, int | None]]:
    out = []
    for i in layers:
        layer = spec.layers[i]
        kind, window = layer.attention, layer.window
        if kind == "chunked" and not (rules.hybrid_kv_cache_manager and rules.chunked_local_with_hybrid):
            kind, window = "full", None
        if kind == "sliding" and not rules.hybrid_kv_cache_manager:
            kind, window = "full", None
        if kind in ("mamba", "linear"):
            continue  # recurrent state: not in the token-indexed pool modelled here
        out.append((kind, window))
    return out


def build_layout(spec: ModelSpec, layers: range, tp: int, kv_dtype_bytes: int, block_size: int,
                 rules: LayoutRules = LayoutRules()) -> KVLayout:
    """Group the attention layers of one worker (`_get_kv_cache_groups_uniform_page_size`)."""
    kinds = _effective_kinds(spec, layers, rules)
    if not kinds:
        raise ValueError("no attention layer on this worker")
    counts: dict[tuple[str, int | None], int] = {}
    for k in kinds:
        counts[k] = counts.get(k, 0) + 1
    page = {k: block_size * kv_layer_bytes_per_token(spec, k[0], tp, kv_dtype_bytes) for k in counts}
    if len(set(page.values())) != 1:
        raise ValueError("attention kinds with different page sizes are not modelled")
    if len(counts) == 1:
        (kind, n), = counts.items()
        return KVLayout(block_size, page[kind], n, (KVGroup(*kind),), 0)
    lo, hi = min(counts.values()), max(counts.values())
    group_size = hi if rules.hybrid_group_size_max_rule and hi < 1.5 * lo else lo
    groups, padding = [], 0
    for kind, n in counts.items():
        g = cdiv(n, group_size)
        groups += [KVGroup(*kind)] * g
        padding += g * group_size - n
    return KVLayout(block_size, next(iter(page.values())), group_size, tuple(groups), padding)


def blocks_per_request(layout: KVLayout, max_model_len: int, inflight_tokens: int) -> int:
    """Σ over groups of the blocks one request of `max_model_len` tokens can hold (`max_memory_usage_bytes`).
    `inflight_tokens` bounds a window's extra tokens: max_num_batched_tokens, or from 0.26 the
    batches in flight x max_num_batched_tokens."""
    bs = layout.block_size
    total = 0
    for g in layout.groups:
        if g.kind == "sliding" and g.window:
            total += cdiv(min(g.window - 1 + inflight_tokens, max_model_len), bs) + 1
        elif g.kind == "chunked" and g.window:
            total += cdiv(min(g.window + inflight_tokens, max_model_len), bs)
        else:
            total += cdiv(max_model_len, bs)
    return total


def logged_tokens(layout: KVLayout, num_blocks: int, max_concurrency: float, max_model_len: int, formula: str) -> int:
    """The "KV cache size: N tokens" figure: `num_blocks // groups x block_size` (to 0.20.0) or
    `int(max_concurrency x max_model_len)` (0.20.1 on)."""
    if formula == "concurrency_x_max_model_len":
        return int(max_concurrency * max_model_len)
    return num_blocks // len(layout.groups) * layout.block_size


def fits(layout: KVLayout, available_bytes: int, max_model_len: int, inflight_tokens: int, null_block: bool) -> bool:
    """vLLM's start-up check: one request at max_model_len must fit in the available KV memory
    (0.29+: minus the null block)."""
    budget = available_bytes - (layout.bytes_per_block if null_block else 0)
    return layout.bytes_per_block * blocks_per_request(layout, max_model_len, inflight_tokens) <= budget


def max_fitting_len(layout: KVLayout, available_bytes: int, upper: int, inflight_tokens: int, null_block: bool,
                    concurrency: int = 1) -> int:
    """Largest max_model_len (≤ upper) for which `concurrency` requests fit: vLLM's binary search
    for its "estimated maximum model length" (concurrency 1) and its auto-fit. 0 if none fits."""
    budget = available_bytes - (layout.bytes_per_block if null_block else 0)
    per_block = layout.bytes_per_block

    def ok(n: int) -> bool:
        return per_block * blocks_per_request(layout, n, inflight_tokens) * concurrency <= budget

    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
