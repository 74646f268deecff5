"""The default-batch table of one vLLM release (engine/arg_utils.py): `max_num_batched_tokens` and
`max_num_seqs` by GPU tier and entry point, and the CPU backend's per-rank defaults. A typed schema
that `releases.yaml`'s `batch_defaults` fact is read into.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchTier:
    """One GPU tier of the default max_num_batched_tokens / max_num_seqs table."""

    label: str
    """Human-readable name of the tier, e.g. '>=70GiB non-A100'."""
    min_total_gib: float
    """The tier applies when torch total device memory (GiB = 2**30 B) is at least this."""
    exclude_name_substrings: tuple[str, ...]
    """Lower-cased device-name substrings that rule the tier out (vLLM: 'a100')."""
    exclude_compute_capabilities: tuple[str, ...]
    """Compute capabilities ('12.1' = GB10) that rule the tier out."""
    llm_max_num_batched_tokens: int
    """Default max_num_batched_tokens for the offline `LLM` class."""
    llm_max_num_seqs: int
    """Default max_num_seqs for the offline `LLM` class."""
    serve_max_num_batched_tokens: int
    """Default max_num_batched_tokens for `vllm serve` (OpenAI server)."""
    serve_max_num_seqs: int
    """Default max_num_seqs for `vllm serve` (OpenAI server)."""

    def matches(self, total_gib: float, device_name: str, compute_capability: str | None) -> bool:
        """Whether a device with these properties falls in this tier."""
        name = device_name.lower()
        if total_gib < self.min_total_gib:
            return False
        if any(s in name for s in self.exclude_name_substrings):
            return False
        return not (compute_capability and compute_capability in self.exclude_compute_capabilities)


@dataclass(frozen=True)
class CpuBatchDefaults:
    """Default batch limits on the CPU backend, per rank (multiplied by TP x PP)."""

    llm_max_num_batched_tokens_per_rank: int
    """`LLM` class max_num_batched_tokens per rank."""
    llm_max_num_seqs_per_rank: int
    """`LLM` class max_num_seqs per rank."""
    serve_max_num_batched_tokens_per_rank: int
    """`vllm serve` max_num_batched_tokens per rank."""
    serve_max_num_seqs_per_rank: int
    """`vllm serve` max_num_seqs per rank."""


@dataclass(frozen=True)
class BatchDefaults:
    """The whole default-batch table of one release (engine/arg_utils.py)."""

    tiers: tuple[BatchTier, ...]
    """GPU tiers in the order vLLM tests them; the first match wins, the last always matches."""
    cpu: CpuBatchDefaults
    """CPU backend defaults."""
    fallback_max_num_batched_tokens: int
    """SchedulerConfig default when there is no usage context (neither LLM nor serve)."""
    fallback_max_num_seqs: int
    """SchedulerConfig default max_num_seqs when there is no usage context."""
