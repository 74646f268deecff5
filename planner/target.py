"""What a memory budget is computed for: the target device (`Target`) and the `vllm serve` knobs
that change the budget (`Settings`), validated at construction.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, NamedTuple

from planner.errors import PlannerError
from planner.paths import profiles_dir
from planner.profile_data import convert, data_error, read_mapping


class Family(NamedTuple):
    """One GPU family: compute capabilities from `min_major` up to the next family's."""

    name: str
    min_major: int


class CapabilityRange(NamedTuple):
    """CUDA compute capabilities `min` ... `max`, both included ("10.0" ... "10.9")."""

    min: str
    max: str


class Families(NamedTuple):
    """`profiles/gpu_families.yaml`."""

    families: tuple[Family, ...]
    perf_families: tuple[Family, ...]
    """The families the performance coefficient sets are fitted and chosen by."""
    fp8_weight_only_min_capability: str
    """The lowest compute capability with FP8 weights on no FP8 tensor cores (FP8-Marlin W8A16)."""
    non_cuda: str
    default_compute_capability: str
    router_kernel_capabilities: tuple[CapabilityRange, ...] = ()
    """Where vLLM's MoE router kernels run (fp32 logits from 16-bit weights): elsewhere a router that
    computes in fp32 keeps its weight in fp32."""
    sparse_attention_capabilities: tuple[CapabilityRange, ...] = ()
    """Where vLLM has a sparse MLA backend (DeepSeek sparse attention: V3.2, GLM-5, V4)."""

    def of(self, compute_capability: str | None) -> str:
        """The backend family; a GPU with no compute capability plans as the default one."""
        return self._pick(self.families, compute_capability or self.default_compute_capability)

    def perf_of(self, compute_capability: str | None) -> str:
        """The performance family; a GPU with no compute capability is `non_cuda` (no set fits it)."""
        return self._pick(self.perf_families, compute_capability or "")

    def has_router_kernels(self, compute_capability: str | None) -> bool:
        """Whether the GPU is in `router_kernel_capabilities` (a GPU with no capability plans as the default)."""
        return self._within(compute_capability, self.router_kernel_capabilities) is True

    def has_sparse_attention(self, compute_capability: str | None) -> bool:
        """Whether the GPU is in `sparse_attention_capabilities`; a device that is not CUDA is not refused here."""
        return self._within(compute_capability, self.sparse_attention_capabilities) is not False

    def _within(self, compute_capability: str | None, ranges: tuple[CapabilityRange, ...]) -> bool | None:
        """Whether the capability (the default where None) lies in one of `ranges`; None for a non-CUDA one."""
        cc = _capability(compute_capability or self.default_compute_capability)
        return None if cc is None else any(_capability(r.min) <= cc <= _capability(r.max) for r in ranges)

    def _pick(self, families: tuple[Family, ...], compute_capability: str) -> str:
        major = compute_capability.split(".")[0]
        if not major.isdigit():
            return self.non_cuda
        return [f.name for f in families if int(major) >= f.min_major][-1]


def _capability(text: str) -> tuple[int, ...] | None:
    """ "9.0" -> (9, 0); None for a device that is not CUDA (gfx942, tpu-v5e)."""
    parts = text.split(".")
    return tuple(map(int, parts)) if all(p.isdigit() for p in parts) else None


@functools.cache
def gpu_families() -> Families:
    path = profiles_dir() / "gpu_families.yaml"
    table = convert(read_mapping(path, "GPU family table"), Families, "gpu_families", path)
    for key in ("families", "perf_families"):
        mins = [f.min_major for f in getattr(table, key)]
        if not mins or mins[0] != 0 or mins != sorted(set(mins)):
            raise data_error(path, f"{key} must start at min_major 0 and rise strictly")
    try:
        tuple(map(int, table.fp8_weight_only_min_capability.split(".")))
    except ValueError:
        raise data_error(path, "fp8_weight_only_min_capability must read like 7.5") from None
    for key in ("router_kernel_capabilities", "sparse_attention_capabilities"):
        if any(_capability(x) is None for r in getattr(table, key) for x in r):
            raise data_error(path, f"{key} must read like {{min: '9.0', max: '9.0'}}")
    return table


class Target(NamedTuple):
    """Where the model runs: a GPU (name and the total memory torch reports) or vLLM's CPU backend."""

    name: str
    memory_bytes: int
    """The GPU's total memory as torch reports it, the base of gpu_memory_utilization."""
    device: Literal["cuda", "cpu"] = "cuda"
    """cuda: a GPU; cpu: vLLM's CPU backend, its KV pool from VLLM_CPU_KVCACHE_SPACE."""
    cpu_kvcache_bytes: int | None = None
    """VLLM_CPU_KVCACHE_SPACE, the CPU backend's whole KV pool. In bytes here; vLLM reads whole GiB."""
    compute_capability: str | None = None
    """e.g. "9.0": picks the attention backend (MLA block size) and batch-default tier."""
    interconnect: str | None = None
    """How the TP ranks talk, which sizes vLLM's communication buffers in the non-torch memory.
    The class from profiles/gpus.yaml `interconnect_class`, or --interconnect; None: the set's default."""

    @property
    def arch_family(self) -> str:
        """The GPU family vLLM's MLA backend choice turns on: ampere, hopper, blackwell (10.x, 11.x),
        sm120 (12.x), other (not CUDA: gfx*, tpu-*, gaudi*); profiles/gpu_families.yaml."""
        return gpu_families().of(self.compute_capability)


@dataclass(frozen=True)
class Settings:
    """The `vllm serve` knobs that change the budget. None means vLLM's default for the release.

    The first sentence of each field's docstring is the help of its flag (planner/cli/fieldhelp.py)."""

    tp: int = 1
    """Tensor-parallel size, GPUs per pipeline stage."""
    pp: int = 1
    """Pipeline-parallel size, stages of whole layers."""
    max_model_len: int | Literal["auto"] | None = None
    """Context per request in tokens, or 'auto' for the longest that fits. None: the model's limit."""
    max_num_seqs: int | None = None
    """Requests vLLM schedules at once."""
    max_num_batched_tokens: int | None = None
    """Tokens per scheduler step, the profile run's size."""
    gpu_memory_utilization: float | None = None
    """Share of the GPU's total memory vLLM may use, above 0 and at most 1."""
    kv_cache_dtype: str = "auto"
    """KV-cache element type: auto, bfloat16, float16, fp8, fp8_e4m3, fp8_e5m2. auto: the model dtype
    or the checkpoint's KV scheme."""
    enforce_eager: bool = False
    """No CUDA graphs, so no graph memory."""
    kv_cache_memory_bytes: int | None = None
    """The KV pool per GPU pinned in bytes, skipping the measured terms as vLLM does."""
    block_size: int | None = None
    """Tokens per KV-cache block. None: the attention backend's, 16 for most models."""
    allow_long_max_model_len: bool = False
    """VLLM_ALLOW_LONG_MAX_MODEL_LEN=1: a max_model_len above the model's limit is accepted."""
    enable_prefix_caching: bool | None = None
    """--enable-prefix-caching / --no-enable-prefix-caching; None = the release default. Only the
    Mamba cache mode of hybrid models depends on it here."""
    model_runner: Literal["v1", "v2"] | None = None
    """VLLM_USE_V2_MODEL_RUNNER (1 -> "v2", 0 -> "v1"); None = the release's default for the model."""
    expert_parallel: bool | None = None
    """--enable-expert-parallel as asked (True) or refused (False); None: the launch step's default (on where
    the routed experts split evenly over TP > 1). Asked over a TP that does not divide the experts, the
    budget counts the busiest GPU (vLLM gives the first E % TP GPUs one expert more)."""

    def __post_init__(self) -> None:
        u = self.gpu_memory_utilization
        if u is not None and not (0 < u <= 1):
            raise PlannerError(f"--gpu-memory-utilization {u} is outside (0, 1]: pass a fraction such as 0.9")
        if isinstance(self.max_model_len, int) and self.max_model_len <= 0:
            raise PlannerError(f"--max-model-len {self.max_model_len} must be positive (or 'auto' to fit the memory)")
        for name in ("max_num_seqs", "max_num_batched_tokens", "kv_cache_memory_bytes", "block_size"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise PlannerError(f"--{name.replace('_', '-')} {v} must be positive")
