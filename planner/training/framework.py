"""Training frameworks and the memory beside PyTorch's allocations: typed values (pure).

The values come from `profiles/training/frameworks.yaml` through `planner.training.profile` (the
only module here that reads files); everything in this module works on the loaded values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner.errors import PlannerError

LOSSES: tuple[str, ...] = ("full", "chunked", "fused")
BASE_DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp32")
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class Framework:
    """The defaults of one training framework that decide memory."""

    name: str
    label: str
    aliases: tuple[str, ...]
    lora_base_dtype: Literal["fp32", "bf16", "fp16", "model"]
    """The frozen base of LoRA ("model": the checkpoint's dtype)."""
    qlora_base_dtype: Literal["fp32", "bf16", "fp16", "model"]
    """QLoRA: the parts left out of NF4 (embeddings, norms, lm_head)."""
    adapter_dtype: Literal["fp32", "compute"]
    loss: Literal["full", "chunked", "fused"]
    losses: tuple[str, ...]
    """The loss implementations the framework can run."""
    base_dtypes: tuple[str, ...]
    sharding: Literal["deepspeed", "fsdp"]
    """What --zero N means here: DeepSpeed ZeRO, or FSDP (FULL_SHARD = 3, SHARD_GRAD_OP = 2)."""
    fused_optimizer: bool
    """AdamW with fused=True: no foreach temporary in the optimizer step."""
    mixed_precision: Literal["amp", "master"]
    """What bf16-mixed / fp16-mixed full fine-tuning means without a DeepSpeed or FSDP engine:
    "amp", torch.autocast over fp32 weights (fp32 gradients, no separate master copy); "master",
    16-bit weights beside an fp32 master copy (DeepSpeed / Megatron style)."""
    fsdp_root_resharded: bool
    """FSDP frees the root unit (what no decoder layer holds: embeddings, final norm, lm_head) after
    the forward pass; false where it stays gathered until the backward pass ends (FSDP1's root,
    FSDP2's default for the root)."""
    source: str


@dataclass(frozen=True)
class LossImpl:
    """What one cross-entropy implementation keeps and adds at the backward peak."""

    name: str
    kept_bytes_per_vocab: int
    transient_bytes_per_vocab: float
    transient_low_bytes_per_vocab: float
    source: str


INTERCONNECTS: tuple[str, ...] = ("nvls", "nvlink", "pcie_p2p", "pcie")
"""How the GPUs of one node talk: the GPU catalogue's interconnect classes (planner.hardware)."""


@dataclass(frozen=True)
class ReservedModel:
    """Memory beside PyTorch's allocations, and the framework default buffer sizes (estimates)."""

    cuda_context_gib: float
    cuda_context_low_gib: float
    cuda_context_high_gib: float
    fragmentation: float
    """Reserved over allocated, minus one: the caching allocator's cached free segments."""
    fragmentation_low: float
    fragmentation_high: float
    nccl_gib: float
    nccl_low_gib: float
    nccl_high_gib: float
    """NCCL's device memory where the interconnect is not known (no catalogue GPU)."""
    nccl_nvls_gib: float
    """NCCL's device memory per rank of a 2-rank communicator by interconnect class (see the YAML's source);
    each further rank adds `nccl_per_extra_gpu_gib`."""
    nccl_nvlink_gib: float
    nccl_pcie_p2p_gib: float
    nccl_pcie_gib: float
    nccl_per_extra_gpu_gib: float
    sharded_fragmentation: float
    """Reserved over allocated, minus one, where parameters are gathered and freed per unit (ZeRO-3,
    FSDP FULL_SHARD): the all-gather stream's cached pool beside the compute stream's."""
    sharded_fragmentation_low: float
    sharded_fragmentation_high: float
    deepspeed_reduce_bucket_elements: int
    deepspeed_allgather_bucket_elements: int
    deepspeed_prefetch_bucket_elements: int
    deepspeed_max_live_parameters: int
    fsdp_units_in_flight: int
    source: str

    def nccl_for(self, interconnect: str | None, gpus: int) -> tuple[float, float, float]:
        """NCCL's device memory (GiB: value, low, high) for `gpus` ranks over `interconnect`: the
        class's figure, from half to 1.5 times it (channel counts and NCCL versions differ); NVLS
        (NVSwitch multicast) from the nvlink figure (NVLS off or unsupported) up; unknown: the default."""
        if gpus < 2:
            return 0.0, 0.0, 0.0
        by_class = dict(
            zip(INTERCONNECTS, (self.nccl_nvls_gib, self.nccl_nvlink_gib, self.nccl_pcie_p2p_gib, self.nccl_pcie_gib))
        )
        if interconnect not in by_class:
            return self.nccl_gib, self.nccl_low_gib, self.nccl_high_gib
        extra = self.nccl_per_extra_gpu_gib * (gpus - 2)
        v = by_class[interconnect] + extra
        low = self.nccl_nvlink_gib + extra if interconnect == "nvls" else v / 2
        return v, min(low, v), v * 1.5


@dataclass(frozen=True)
class TrainingProfile:
    """Everything `profiles/training/frameworks.yaml` holds."""

    frameworks: tuple[Framework, ...]
    losses: tuple[LossImpl, ...]
    reserved: ReservedModel

    def framework(self, name: str) -> Framework:
        key = name.strip().lower()
        for f in self.frameworks:
            if key == f.name or key in f.aliases:
                return f
        names = ", ".join(f.name for f in self.frameworks)
        raise PlannerError(f"unknown --framework {name!r}: use one of {names}")

    def loss(self, name: str) -> LossImpl:
        return next(x for x in self.losses if x.name == name)


def check_framework_choice(fw: Framework, loss: str | None, base_dtype: str | None) -> None:
    """A loss or base dtype the framework cannot run is an error that names what it can."""
    if loss is not None and loss not in fw.losses:
        raise PlannerError(
            f"--loss {loss} is not available in {fw.label}: use one of {', '.join(fw.losses)}, or another --framework"
        )
    if base_dtype is not None and base_dtype not in fw.base_dtypes:
        raise PlannerError(
            f"--base-dtype {base_dtype} is not supported by {fw.label}: use one of {', '.join(fw.base_dtypes)}"
        )
