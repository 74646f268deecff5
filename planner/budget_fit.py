"""Step 3 of the budget: vLLM's fit check on the binding stage (or the layout a release compares),
the error it would raise, the KV capacity, the concurrency and the longest context that fits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from planner.budget_result import StageBudget
from planner.budget_rules import inflight_tokens
from planner.inspection import Model
from planner.kv_layout import KVLayout, blocks_per_request, build_layout, fits, max_fitting_len, needed_bytes
from planner.releases import ReleaseFacts
from planner.target import Settings, Target
from planner.units import GIB

if TYPE_CHECKING:
    from planner.budget import Resolved


class Fit(NamedTuple):
    """vLLM's fit check on the binding stage, and the KV capacity it leaves."""

    bind_index: int
    mml: int
    ok: bool
    error: str | None
    est_len: int
    per_request_blocks: int
    concurrency: float
    fit_len_concurrency: int | None
    inflight: int


def _pinned_pool_error(stages: tuple[StageBudget, ...], target: Target, pool: int) -> str | None:
    """With --kv-cache-memory-bytes vLLM checks nothing: a pool that does not fit beside the weights
    and the (estimated) activation, non-torch and graph memory runs out of memory at allocation."""
    for st in stages:
        need = (
            st.weights_bytes
            + pool
            + st.activation_bytes
            + st.non_torch_bytes
            + st.cudagraph_bytes
            + st.runner_buffers_bytes
        )
        if need > target.memory_bytes:
            return (
                f"weights {st.weights_bytes / GIB:.2f} GiB + KV pool {pool / GIB:.2f} GiB + estimated activation, "
                f"non-torch and CUDA-graph memory {(need - st.weights_bytes - pool) / GIB:.2f} GiB exceed the "
                f"GPU's {target.memory_bytes / GIB:.2f} GiB: vLLM would run out of memory allocating the KV cache"
            )
    return None


def _fit_check_layout(model: Model, bind: StageBudget, rel: ReleaseFacts, s: Settings, r: Resolved) -> KVLayout:
    """The layout vLLM's fit check uses: the binding worker's, except where a release compared the
    whole model's layers against one stage's memory under pipeline parallelism (vllm#34076)."""
    if s.pp > 1 and rel.fit_check_whole_model_under_pp:
        return build_layout(model.spec, range(model.spec.num_layers), s.tp, r.kv_elem, r.block, r.rules)
    return bind.layout


def _check(
    sts: tuple[StageBudget, ...], bind: StageBudget, check: KVLayout, mml: int, inflight: int, rel: ReleaseFacts
) -> bool:
    """vLLM's `check_enough_kv_cache_memory` on every stage (or on the layout the release compares)."""
    if mml <= 0:
        return False
    if check is bind.layout:
        return all(
            fits(st.layout, st.available_kv_bytes, mml, inflight, rel.null_block_in_fit_check, rel.fit_check)
            for st in sts
        )
    return fits(check, bind.available_kv_bytes, mml, inflight, rel.null_block_in_fit_check, rel.fit_check)


def _start_error(
    bind: StageBudget, check: KVLayout, mml: int, est_len: int, inflight: int, auto_len: bool, rel: ReleaseFacts
) -> str:
    if auto_len and mml <= 0:  # the same text in every release with auto-fit (0.14+)
        return (
            "Cannot auto-fit max_model_len: not enough GPU memory available to serve even a "
            "single token. Try increasing `gpu_memory_utilization`."
        )
    # vLLM's message shows the memory left after the null block (0.29+)
    shown = bind.available_kv_bytes - (bind.layout.bytes_per_block if rel.null_block_in_fit_check else 0)
    return rel.fit_error(mml, needed_bytes(check, max(mml, 1), inflight, rel.fit_check), shown, min(est_len, mml))


def _concurrency_error(concurrency: int, conc: float, per_req: int, num_blocks: int, mml: int, seqs: int) -> str | None:
    # vLLM's block pool keeps one block back (the null block) in every release: the requests that run
    # at once are (blocks - 1) // blocks per request, a little below the "maximum concurrency" it logs.
    if per_req * concurrency > num_blocks - 1:
        return (
            f"{concurrency} concurrent requests of {mml:,} tokens need {concurrency * per_req:,} blocks; the KV "
            f"cache holds {num_blocks:,}, one of them vLLM's null block (maximum concurrency {conc:.2f}x, "
            f"{max(num_blocks - 1, 0) // max(per_req, 1)} requests at once)"
        )
    if seqs < concurrency:
        return (
            f"max_num_seqs {seqs:,} caps the requests vLLM runs at once below the requested {concurrency}: "
            f"pass --max-num-seqs {concurrency}"
        )
    return None


def fit(
    model: Model,
    target: Target,
    rel: ReleaseFacts,
    s: Settings,
    r: Resolved,
    sts: tuple[StageBudget, ...],
    concurrency: int | None,
) -> Fit:
    bind_index = min(range(len(sts)), key=lambda i: sts[i].num_blocks)
    bind = sts[bind_index]
    inflight = inflight_tokens(rel, r.mnbt, s.pp, target.device, r.runner)
    check = _fit_check_layout(model, bind, rel, s, r)
    longest = r.limit if r.mml is None else max(r.mml, r.limit)
    est_len = max_fitting_len(
        check, bind.available_kv_bytes, longest, inflight, rel.null_block_in_fit_check, rule=rel.fit_check
    )
    auto_len = r.mml is None
    mml = min(est_len, r.limit) if auto_len else r.mml  # --max-model-len auto: the largest that fits
    ok = _check(sts, bind, check, mml, inflight, rel)
    error = None if ok else _start_error(bind, check, mml, est_len, inflight, auto_len, rel)
    if ok and s.kv_cache_memory_bytes is not None and target.device != "cpu":
        error = _pinned_pool_error(sts, target, s.kv_cache_memory_bytes)
        ok = error is None
    per_req = blocks_per_request(bind.layout, max(mml, 1), inflight)
    conc = bind.num_blocks / per_req if per_req else 0.0
    fit_c = None
    if concurrency:
        fit_c = max_fitting_len(bind.layout, bind.available_kv_bytes, max(mml, r.limit), inflight, True, concurrency)
        if ok:  # vLLM starts (at a lower concurrency): no start-up error; plan.why_not says what binds
            ok = _concurrency_error(concurrency, conc, per_req, bind.num_blocks, mml, r.seqs) is None
    return Fit(bind_index, mml, ok, error, est_len, per_req, conc, fit_c, inflight)
