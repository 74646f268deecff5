"""vLLM release facts, loaded from `profiles/vllm/releases.yaml`.

Everything that changes between vLLM releases lives in that file as version ranges; this module only
parses versions, merges the ranges into one `ReleaseFacts` per version and checks the data. Callers
branch on the fields (`facts.budget_formula == "total_consumed"`), never on version numbers.

    from planner import releases
    facts = releases.get("0.19.0")        # or releases.get(None) for the newest release
    facts.gpu_memory_utilization_default  # 0.9
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from planner.batch_defaults import BatchDefaults, BatchTier, CpuBatchDefaults
from planner.errors import PlannerError
from planner.profile_data import FrozenMap, Version, format_version, lookup, parse_version
from planner.units import gib

if TYPE_CHECKING:
    from planner.release_loader import _Data

__all__ = [
    "BatchDefaults",
    "BatchTier",
    "CpuBatchDefaults",
    "FrozenMap",
    "ReleaseFacts",
    "Version",
    "format_version",
    "get",
    "known_versions",
    "load_data",
    "newest",
    "parse_version",
    "resolve",
    "supported_range",
]

DATA_FILE = "releases.yaml"


Entrypoint = Literal["serve", "llm"]


# --------------------------------------------------------------------------------------------------
# The facts


class ReleaseFacts(NamedTuple):
    """What the planner needs to know about one vLLM release. Built by `get()`; one field per fact."""

    version: str
    """The release these facts describe, canonical form ('0.19.0', '0.10.1.1')."""
    known_release: bool
    """True when `version` is a published release; False for a patch inside the range that was not read."""
    docker_image: str
    """Official OpenAI-server image for this release, e.g. 'vllm/vllm-openai:v0.19.0'."""

    # memory budget
    gpu_memory_utilization_default: float
    """Default --gpu-memory-utilization (0.9 up to 0.19.x, 0.92 from 0.20.0)."""
    budget_formula: Literal["peak_increase", "total_consumed"]
    """Non-KV memory: weights + torch peak increase + non-torch increase, or (0.27+) free-memory drop +
    transient peak headroom."""
    v1_graph_estimate_charges_gdn_context: bool
    """The V1 runner's CUDA-graph estimate on GDN hybrids charges its first FULL sample's transient (about
    128 KiB per batched context token, vllm#50780; 0.26+), which the planner does not model: a plan says so."""
    profile_skips_linear_attention_core: bool
    """The profile run builds no attention metadata, so GDN and Mamba2 layers skip their prefill kernels
    and their chunk tensors are not in the measured peak (planner.linear_prefill; vllm#52872)."""
    nccl_before_snapshot: bool
    """NCCL / custom all-reduce buffers are created before the memory snapshot (not charged to the budget)."""
    cublas_before_snapshot: bool
    """cuBLAS handles are created before the snapshot (0.33.0)."""
    cudagraph_estimate_profiled: bool
    """vLLM measures a CUDA-graph memory estimate during profiling (0.18+)."""
    cudagraph_estimate_subtracted: bool
    """That estimate is subtracted from the KV budget by default (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1, 0.20+)."""
    mm_ipc_reservation: bool
    """Multimodal IPC / video-decoder GPU reservations are subtracted from KV memory (0 for text models)."""

    # bytes -> blocks -> tokens
    bytes_per_block_rule: Literal["group_size_x_page", "largest_group_sum"]
    """How bytes per block are formed for hybrid models; both equal layers x page for uniform models."""
    hybrid_group_size_rule: Literal["min_layers", "max_if_under_1.5x_min"]
    """Hybrid KV group size: min layers per type, or (0.18+) max when max < 1.5 x min."""
    kv_tokens_formula: Literal["blocks_x_block_size", "concurrency_x_max_model_len"]
    """Logged 'KV cache size' tokens: num_blocks // num_groups x min_block_size, or
    int(max_concurrency x max_model_len)."""
    kv_tokens_cp_multiplier: Literal["none", "dcp", "pcp_x_dcp"]
    """Context-parallel factor applied to the logged token count (blocks_x_block_size formula only)."""
    kv_size_logged_per_worker: bool
    """KV-size lines are logged per worker before the min over workers (one pair per PP stage)."""
    fit_check: Literal["sum_of_layers", "group0_blocks", "all_groups_blocks", "bytes_per_block"]
    """How 'does one max_model_len request fit' computes the bytes needed."""
    fit_check_whole_model_under_pp: bool
    """Under PP the fit check compares every layer's KV against one stage's memory (0.14-0.16, vllm#34076)."""
    null_block_in_fit_check: bool
    """The fit check (and auto-fit) subtracts one block for the null block first (0.29+)."""
    sliding_window_inflight_tokens: Literal["max_num_batched_tokens", "max_concurrent_batches_x_mnbt"]
    """X in the sliding-window need cdiv(min(window - 1 + X, max_model_len), block) + 1."""
    async_scheduling_default: bool
    """Async scheduling is on by default (unless PP>1 or an incompatible option)."""
    v2_model_runner_env: bool
    """VLLM_USE_V2_MODEL_RUNNER exists (0.12+): an explicit value picks the runner."""
    v2_model_runner_default_architectures: tuple[str, ...]
    """Architectures that default to the V2 runner under the allow-list rules (0.22-0.28)."""
    v2_model_runner_rule: Literal[
        "none", "listed_dense_unquantized", "listed", "listed_or_dense_no_hybrid", "listed_or_dense", "all"
    ]
    """How _is_default_v2_model_runner_model decides (config/vllm.py), VLLM_USE_V2_MODEL_RUNNER unset:
    none; an allow-listed architecture that is neither MoE nor quantized (0.22-0.23); any allow-listed
    one (0.24); allow-listed or not MoE, never hybrid or attention-free (0.25-0.26); the same with
    allow-listed hybrids admitted (0.27-0.28); every model the runner supports (0.29+)."""
    v2_model_runner_rejects_stateful: bool
    """An explicit VLLM_USE_V2_MODEL_RUNNER=1 with a Mamba / linear-attention model is an error (0.20-0.22)."""
    v2_model_runner_rejects_align_mode: bool
    """An explicit VLLM_USE_V2_MODEL_RUNNER=1 with mamba_cache_mode "align" is an error (0.21-0.24)."""
    v2_model_runner_profiles_mm_encoder: bool
    """The V2 runner's profile run includes the multimodal encoder's dummy batch, on the first PP stage (0.27+)."""
    v2_model_runner_profiles_cudagraphs: bool
    """The V2 runner's profile_cudagraph_memory() measures an estimate (0.29+); before, it returns 0."""

    # hybrid / Mamba
    hybrid_prefix_caching_default: bool
    """Generative hybrid (attention + Mamba) models get prefix caching by default (0.26+)."""
    mamba_prefix_caching_mode: Literal["unsupported", "all_if_supported_else_align", "align"]
    """mamba_cache_mode chosen when prefix caching is on for a hybrid model."""
    mamba_all_mode_architectures: tuple[str, ...]
    """Architectures that get mamba_cache_mode 'all' (cdiv(max_model_len, block) Mamba blocks per request)."""
    mamba_blocks_none_mode: int
    """Mamba blocks per request in mode 'none' (before speculative tokens)."""
    mamba_blocks_align_mode: int | None
    """Mamba blocks per request in mode 'align' (before spec/checkpoint blocks); None where the mode does not exist."""
    mamba_blocks_add_spec_tokens: bool
    """Speculative tokens add one Mamba block each per request (0.15+)."""
    mamba_align_prefill_checkpoint_blocks: tuple[str, ...]
    """Mamba kinds whose layers add one prefill-checkpoint block per request in mode 'align':
    Mamba2 from 0.32, GDN (Qwen3-Next, FlashInfer prefill on Hopper only) from 0.33."""
    mamba_ssm_cache_bytes_nemotron_h: int | None
    """Bytes of Nemotron-H's SSM state element when --mamba-ssm-cache-dtype is auto (None: model dtype)."""
    router_fp32_nemotron_h: Literal["always", "without_router_kernels"]
    """Where Nemotron-H's router weight is float32: everywhere (0.12-0.16), or on GPUs without vLLM's
    router kernels (GateLinear, 0.17+; gpu_families.yaml router_kernel_capabilities)."""
    mamba_all_mode_adds_spec_blocks: bool
    """Mode 'all' adds the speculative blocks on top of cdiv(max_model_len, block) (0.28+)."""
    hybrid_mamba_block_align: Literal["fixed_16", "16_or_mla_64", "backend_kernel_block"]
    """Alignment used when raising the attention block size of a hybrid Mamba model."""

    # block size
    block_size_default: int
    """CacheConfig.DEFAULT_BLOCK_SIZE on CUDA for standard attention."""
    block_size_from_backend: bool
    """Without --block-size, the block size is the attention backend's preference (0.18+)."""
    mla_backend_default: FrozenMap
    """Default MLA backend by GPU generation: keys 'ampere', 'hopper', 'blackwell' (DeepSeek-style MLA)."""
    mla_block_size_default: FrozenMap
    """Block size forced for MLA models by GPU generation: keys 'ampere', 'hopper', 'blackwell'."""
    mla_block_size_fp8_kv: FrozenMap
    """MLA block size with an fp8 KV cache, by GPU family (Hopper falls back to FlashMLA, 64)."""
    mm_dummy_length: Literal["max_num_batched_tokens", "max_model_len"]
    """The length the profile's dummy multimodal items (a video's frames) must fit."""
    qwen2_vl_max_frames_per_video: int
    """Frames of Qwen2-VL's largest dummy video (_MAX_FRAMES_PER_VIDEO)."""
    vision_towers_replicated: tuple[str, ...]
    """Vision towers (by vision model_type) vLLM does not split across TP ranks in this release."""
    mla_import_workspace_mib: FrozenMap
    """MiB that importing MLA backend modules allocates on the GPU during model loading (FlashInfer-MLA,
    CUTLASS-MLA workspaces), by GPU family: counted in vLLM's weights figure for MLA models."""
    cpu_hybrid_kv_cache_manager: bool
    """The CPU backend keeps sliding-window layers in their own KV groups (0.10.2+)."""
    sparse_mla_block_size: int | None
    """Block size for sparse MLA (DeepSeek-V3.2); None before it was supported."""
    block_size_cpu_default: int
    """Default block size on the CPU backend."""
    block_size_cpu_without_ipex: int | None
    """CPU block size when intel_extension_for_pytorch is missing; None where IPEX no longer matters."""
    block_size_cpu_mla: int | None
    """Block size the CPU MLA backend forces; None where there is no CPU MLA backend."""

    # max_model_len
    max_model_len_fallback: int
    """max_model_len used when config.json has none of the length keys."""
    rope_scaling_types_not_multiplied: tuple[str, ...]
    """rope_type values whose factor does NOT multiply the derived max_model_len."""
    yarn_uses_original_max_position: bool
    """rope_type 'yarn' derives original_max_position_embeddings x factor (0.10-0.29)."""
    longrope_defaults_to_original: bool
    """LongRoPE models default max_model_len to original_max_position_embeddings (0.11.1+)."""
    rope_scaling_skipped_model_types: tuple[str, ...]
    """model_type substrings whose max_model_len is taken as already scaled."""
    max_model_len_auto_fit: bool
    """--max-model-len -1 / auto fits the length to the KV memory (0.14+)."""

    # batch defaults
    batch_defaults: BatchDefaults
    """Default max_num_batched_tokens / max_num_seqs table; see `default_batch()`."""
    mnbt_capped_by_seqs_x_len: bool
    """A defaulted mnbt becomes min(max_num_seqs x max_model_len, mnbt) and max_num_seqs min(seqs, mnbt) (0.11.1+)."""

    # CLI flags
    kv_cache_memory_bytes_flag: bool
    """--kv-cache-memory-bytes exists (0.10.2+)."""
    swap_space_flag: bool
    """--swap-space exists (removed in 0.18.0; V1 never used it)."""
    max_seq_len_to_capture_flag: bool
    """--max-seq-len-to-capture exists (0.10.x only)."""
    cuda_graph_sizes_flag: bool
    """--cuda-graph-sizes exists (0.10.0-0.12.0)."""
    max_cudagraph_capture_size_flag: bool
    """--max-cudagraph-capture-size exists (0.11.1+)."""
    performance_mode_flag: bool
    """--performance-mode exists; 'throughput' doubles the defaulted batch limits (0.17+)."""
    device_memory_utilization_alias: bool
    """--device-memory-utilization is accepted as an alias of --gpu-memory-utilization (0.31+)."""
    calculate_kv_scales_flag: bool
    """--calculate-kv-scales exists (up to 0.27.1)."""
    kv_offloading_size_flag: bool
    """--kv-offloading-size exists (0.11.1+; CPU offload buffer, not GPU KV)."""

    # multi-node
    native_multinode_flags: bool
    """--nnodes / --node-rank / --master-addr / --master-port (mp backend, no Ray) exist (0.11.1+)."""
    multinode_backends: tuple[str, ...]
    """Executor backends that can span nodes: ('ray',) or ('ray', 'mp')."""

    # dtypes and quantization
    kv_cache_dtypes: tuple[str, ...]
    """Values --kv-cache-dtype accepts (CacheDType)."""
    kv_cache_dtype_auto_from_checkpoint: bool
    """`--kv-cache-dtype auto` takes a ModelOpt checkpoint's kv_cache_quant_algo (e.g. fp8) (0.14+)."""
    quantizations_removed: tuple[str, ...]
    """Quantization methods no longer in the in-tree registry (gguf 0.24+, bitsandbytes 0.28+)."""
    online_quant_shorthands: tuple[str, ...]
    """--quantization shorthands for online quantization of an unquantized checkpoint."""
    fp8_online_requires_serialized: bool
    """Fp8Config needs an fp8 checkpoint; --quantization fp8 on bf16 maps to fp8_per_tensor (0.31+)."""
    encoder_decoder_supported: bool
    """Encoder-decoder (cross-attention) models run on the V1 engine (0.10.2+)."""

    # fit-check error text
    fit_error_template: str
    """str.format template of vLLM's 'max_model_len does not fit' error; use `fit_error()`."""
    fit_error_estimate_template: str
    """str.format template of its 'estimated maximum model length' sentence ({estimated_max_len})."""
    no_kv_memory_error: str
    """vLLM's error text when no memory at all is left for KV blocks."""

    # log lines
    log_kv_cache_size_style: Literal["two_lines", "one_line", "one_line_device"]
    """Shape of the KV-size log: two lines, one line, or one line starting with the device name (0.30+)."""
    log_kv_cache_size_formats: tuple[str, ...]
    """printf formats of the KV-size / max-concurrency line(s), exactly as in vLLM."""
    log_available_kv_format: str
    """printf format of 'Available KV cache memory' (%.2f up to 0.13, %s = round(GiB, 2) from 0.14)."""
    log_model_loading_format: str
    """printf format of 'Model loading took' from the V1 model runner."""
    log_model_loading_format_v2_runner: str | None
    """printf format of 'Model loading took' from the V2 model runner; None before it existed."""

    # benchmarking
    bench_serve_module: str | None
    """The module behind `vllm bench serve` (its add_cli_args and main), which verify's vllm-bench load
    driver runs with vLLM's python; None where the release has none."""

    def fit_error(self, max_model_len: int, needed_bytes: int, available_bytes: int, estimated_max_len: int) -> str:
        """The ValueError text vLLM raises when one max_model_len request does not fit (or, with
        available_bytes <= 0, the 'no available memory' text)."""
        if available_bytes <= 0:
            return self.no_kv_memory_error
        estimate = (
            self.fit_error_estimate_template.format(estimated_max_len=estimated_max_len)
            if estimated_max_len > 0
            else ""
        )
        return self.fit_error_template.format(
            max_model_len=max_model_len,
            needed_gib=gib(needed_bytes),
            available_gib=gib(available_bytes),
            estimate=estimate,
        )

    def default_batch(
        self,
        entrypoint: Entrypoint = "serve",
        *,
        total_gib: float | None = None,
        device_name: str = "",
        compute_capability: str | None = None,
        cpu: bool = False,
        world_size: int = 1,
    ) -> tuple[int, int]:
        """(max_num_batched_tokens, max_num_seqs) before the caps of `mnbt_capped_by_seqs_x_len` and
        `--performance-mode`. `total_gib` is torch total memory in GiB; None behaves like vLLM when
        it cannot query the device (lowest tier). `world_size` (TP x PP) matters only with cpu=True."""
        if entrypoint not in ("serve", "llm"):
            raise PlannerError(f"unknown entrypoint {entrypoint!r}; use 'serve' or 'llm'")
        table = self.batch_defaults
        if cpu:
            c = table.cpu
            if entrypoint == "llm":
                return c.llm_max_num_batched_tokens_per_rank * world_size, c.llm_max_num_seqs_per_rank * world_size
            return c.serve_max_num_batched_tokens_per_rank * world_size, c.serve_max_num_seqs_per_rank * world_size
        gib = 0.0 if total_gib is None else total_gib
        tier = next(t for t in table.tiers if t.matches(gib, device_name, compute_capability))
        if entrypoint == "llm":
            return tier.llm_max_num_batched_tokens, tier.llm_max_num_seqs
        return tier.serve_max_num_batched_tokens, tier.serve_max_num_seqs


_META_FIELDS = ("version", "known_release", "docker_image")
"""ReleaseFacts fields computed by this module, not read from the ranges."""
_DERIVED_FROM_DATA = {"docker_image": "docker_image_template"}
"""ReleaseFacts fields built from a data fact with a different name."""


def load_data(path: Path | None = None) -> _Data:
    """Read and validate the release data (the default file when `path` is None): release_loader.py."""
    from planner.release_loader import load_data as load

    return load(path)


@functools.cache
def _default_data() -> _Data:
    return load_data()


# --------------------------------------------------------------------------------------------------
# Public API


def known_versions() -> tuple[str, ...]:
    """Every published release the data covers, oldest first ('0.10.0' ... '0.33.0')."""
    return tuple(format_version(v) for v in _default_data().releases)


def newest() -> str:
    """The newest release the data covers."""
    return format_version(_default_data().newest)


def supported_range() -> tuple[str, str]:
    """(first, newest) release of the supported window, e.g. ('0.10.0', '0.33.0')."""
    data = _default_data()
    return format_version(data.first), format_version(data.newest)


def resolve(version: str | None, data: _Data | None = None) -> Version:
    """Parse `version` (None / 'latest' / 'newest' -> newest) and check it is supported."""
    data = data or _default_data()
    if version is None or (isinstance(version, str) and version.strip().lower() in ("latest", "newest")):
        return data.newest
    v = parse_version(version)
    if v < data.first or (v[0], v[1]) > data.last_minor:
        raise PlannerError(
            f"vLLM {version} is not supported; vllm-planner knows vLLM {format_version(data.first)} to "
            f"{format_version(data.newest)}: pick a version in that range"
        )
    return v


def facts_for(version: str | None, data: _Data) -> ReleaseFacts:
    """Merge the ranges of `data` for one version (uncached; `get()` is the cached entry point)."""
    v = resolve(version, data)
    canonical = format_version(v)
    values: dict[str, Any] = {}
    for name, ranges in data.facts.items():
        values[name] = lookup(ranges, v)
    template = values.pop("docker_image_template")
    return ReleaseFacts(
        version=canonical,
        known_release=v in data.releases,
        docker_image=template.format(version=canonical),
        **values,
    )


@functools.cache
def _get_cached(v: Version) -> ReleaseFacts:
    return facts_for(format_version(v), _default_data())


def get(version: str | None = None) -> ReleaseFacts:
    """Facts for `version` ('0.19', '0.19.0', 'v0.19.0', '0.10.1.1'; None -> newest release).

    Any x.y.z between 0.10.0 and 0.33.x gets the facts of the range it falls in; anything else, or
    text that is not a version, raises PlannerError."""
    return _get_cached(resolve(version))
