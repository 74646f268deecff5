"""The memory budget's result: nested values in bytes, every modelled figure an `Estimate` with its
range and source; the flat `--json` keys are properties that make GiB only where people read them.
Immutable named records (NamedTuple: a plan builds these on every start, and a class of them costs a
fraction of a frozen dataclass to define).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from planner.estimate import Estimate
from planner.kv_layout import KVLayout
from planner.units import gib


class StageBudget(NamedTuple):
    """One pipeline stage's worker (all its TP ranks hold the same)."""

    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cudagraph_bytes: int
    available_kv_bytes: int
    layout: KVLayout
    num_blocks: int
    runner_buffers_bytes: int = 0
    """V2 model runner's sampler buffers, charged from 0.27 (see overheads.v2_runner_buffer_bytes)."""
    encoder_bound: bool = False
    """The multimodal encoder's profile pass, not the decoder's, sets the activation peak."""
    cold_extra_bytes: int = 0
    """What a first start on an empty torch.compile cache adds to the profile peak (estimated; 0 eager)."""
    graphs_estimated: bool = False
    """The CUDA-graph term is vLLM's estimate (False: the release or runner subtracts none, exactly 0)."""


class MemoryTerms(NamedTuple):
    """vLLM's budget terms on one GPU of the binding stage, in bytes. The measured terms are estimates
    whose range is the cross-validated error of the three together (the KV range mirrors it)."""

    total_bytes: int
    """Total device memory as torch reports it."""
    requested_bytes: int
    """ceil(total x gpu_memory_utilization): what vLLM may use."""
    weights_bytes: int
    """"Model loading took": the weights as vLLM holds them, plus load-time workspaces."""
    activation: Estimate
    """Torch peak increase of the profile run, bytes."""
    non_torch: Estimate
    """Memory outside torch's allocator created after the start-up snapshot, bytes."""
    cudagraph: Estimate
    """The CUDA-graph estimate subtracted from the budget, bytes; exactly 0 where the release or runner
    subtracts none."""
    runner_buffers_bytes: int
    """The V2 runner's sampler and bit-mask buffers where the release charges them (0.27+)."""
    kv_cache: Estimate
    """"Available KV cache memory", bytes: requested minus every term above (exact: the pinned pool, the
    CPU backend's VLLM_CPU_KVCACHE_SPACE)."""
    kv_cache_cold: Estimate
    """The same on a first start with an empty torch.compile cache (the warm figure where exact)."""


class KVCapacity(NamedTuple):
    """What the KV pool holds: blocks, the tokens vLLM logs, concurrency, the longest context."""

    bytes_per_token: int
    """KV bytes per token on one GPU of the binding stage."""
    block_size: int
    """Tokens per block (attention block size; raised for hybrids)."""
    num_blocks: int
    tokens: Estimate
    """"GPU KV cache size: N tokens" as the release computes it, over the KV memory's range."""
    tokens_cold: int
    """The tokens of a first start on an empty torch.compile cache."""
    max_concurrency: Estimate
    """Requests of max_model_len tokens the blocks hold at once (unrounded), over the KV memory's range."""
    max_model_len_fit: int
    """Largest max_model_len for which one request fits (vLLM's "estimated maximum model length")."""
    max_model_len_fit_concurrency: int | None = None
    """Largest max_model_len at which the asked concurrency fits together; None when not asked."""


class ServeLimits(NamedTuple):
    """The resolved `vllm serve` settings the budget was computed for."""

    tp: int
    pp: int
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    model_runner: str
    """The GPU model runner vLLM starts ("v1" or "v2"; "v1" on the CPU backend)."""
    concurrency: int | None = None
    """The concurrency the plan was asked to hold, if any."""


class Verdict(NamedTuple):
    """Whether vLLM starts with this budget, and if not, vLLM's own message."""

    fits: bool
    error: str | None
    cold_fits: bool | None = None
    """Whether a first start on an empty torch.compile cache fits too; None where the KV is exact."""


class Provenance(NamedTuple):
    """What the budget is for and how far to trust it."""

    model: str
    gpu: str
    vllm_version: str
    estimated: tuple[str, ...]
    """The `--json` keys whose figures are modelled, not exact."""
    notes: tuple[str, ...]


def _gib_range(e: Estimate) -> list[float]:
    return [gib(e.low), gib(e.high)]


class Budget(NamedTuple):
    """The figures vLLM prints at start-up, predicted; per GPU of the binding stage. Nested values in
    bytes; the flat GiB properties below are the `--json` keys (rounded to 0.01 GiB)."""

    memory: MemoryTerms
    kv: KVCapacity
    limits: ServeLimits
    verdict: Verdict
    provenance: Provenance
    stages: tuple[StageBudget, ...] = ()

    # the --json keys, in their documented order
    JSON_KEYS = (
        "model",
        "gpu",
        "vllm_version",
        "tp",
        "pp",
        "total_gib",
        "gpu_memory_utilization",
        "requested_gib",
        "weights_gib",
        "activation_gib",
        "non_torch_gib",
        "cudagraph_gib",
        "kv_cache_gib",
        "kv_bytes_per_token",
        "block_size",
        "num_blocks",
        "kv_cache_tokens",
        "max_model_len",
        "max_num_seqs",
        "max_num_batched_tokens",
        "max_concurrency",
        "max_model_len_fit",
        "fits",
        "error",
        "estimated",
        "max_model_len_fit_concurrency",
        "concurrency",
        "notes",
        "model_runner",
        "runner_buffers_gib",
        "kv_cache_gib_cold",
        "kv_cache_tokens_cold",
        "kv_cache_gib_range",
        "kv_cache_tokens_range",
        "max_concurrency_range",
    )

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.JSON_KEYS}

    def __repr__(self) -> str:  # the stages are long and repeat the binding one's figures
        return f"Budget(memory={self.memory!r}, kv={self.kv!r}, limits={self.limits!r}, verdict={self.verdict!r})"

    model = property(lambda self: self.provenance.model)
    gpu = property(lambda self: self.provenance.gpu)
    vllm_version = property(lambda self: self.provenance.vllm_version)
    estimated = property(lambda self: list(self.provenance.estimated))
    notes = property(lambda self: list(self.provenance.notes))
    tp = property(lambda self: self.limits.tp)
    pp = property(lambda self: self.limits.pp)
    gpu_memory_utilization = property(lambda self: self.limits.gpu_memory_utilization)
    max_model_len = property(lambda self: self.limits.max_model_len)
    max_num_seqs = property(lambda self: self.limits.max_num_seqs)
    max_num_batched_tokens = property(lambda self: self.limits.max_num_batched_tokens)
    model_runner = property(lambda self: self.limits.model_runner)
    concurrency = property(lambda self: self.limits.concurrency)
    total_gib = property(lambda self: gib(self.memory.total_bytes))
    requested_gib = property(lambda self: gib(self.memory.requested_bytes))
    weights_gib = property(lambda self: gib(self.memory.weights_bytes))
    activation_gib = property(lambda self: gib(self.memory.activation.value))
    non_torch_gib = property(lambda self: gib(self.memory.non_torch.value))
    cudagraph_gib = property(lambda self: gib(self.memory.cudagraph.value))
    runner_buffers_gib = property(lambda self: gib(self.memory.runner_buffers_bytes))
    kv_cache_gib = property(lambda self: gib(self.memory.kv_cache.value))
    kv_bytes_per_token = property(lambda self: self.kv.bytes_per_token)
    block_size = property(lambda self: self.kv.block_size)
    num_blocks = property(lambda self: self.kv.num_blocks)
    kv_cache_tokens = property(lambda self: int(self.kv.tokens.value))
    max_concurrency = property(lambda self: round(self.kv.max_concurrency.value, 2))
    max_model_len_fit = property(lambda self: self.kv.max_model_len_fit)
    max_model_len_fit_concurrency = property(lambda self: self.kv.max_model_len_fit_concurrency)
    fits = property(lambda self: self.verdict.fits)
    error = property(lambda self: self.verdict.error)
    kv_cache_gib_cold = property(lambda self: gib(self.memory.kv_cache_cold.value))
    kv_cache_tokens_cold = property(lambda self: self.kv.tokens_cold)
    kv_cache_gib_range = property(lambda self: _gib_range(self.memory.kv_cache))
    kv_cache_tokens_range = property(lambda self: [int(x) for x in self.kv.tokens.range()])
    max_concurrency_range = property(lambda self: self.kv.max_concurrency.range(2))
