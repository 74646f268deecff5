"""The GPU catalogue: `GPU`, `Catalogue`, `load_catalogue`, the `gpus` table. Reading and checking
GPU files is `planner/gpu_files.py`; inventories (`2x8xH100`) are `planner/inventory.py`.

The catalogue lives in `profiles/gpus.yaml`; users add or override entries with a YAML file of the
same shape. Planning uses `GPU.memory_gib`, the total that torch/vLLM report (not the marketed size).
Nothing here touches a GPU: the module is pure apart from reading YAML files.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from planner.errors import PlannerError
from planner.paths import profiles_dir
from planner.units import GIB

__all__ = [
    "GPU",
    "Catalogue",
    "load_catalogue",
    "with_memory",
    "gpus_table",
    "GPU_TABLE_HEADERS",
    "INVENTORY_FORM",
]

INTERCONNECT_CLASSES = ("nvls", "nvlink", "pcie_p2p", "pcie")
"""How TP ranks talk (see GPU.interconnect_class); the non-torch sets of profiles/vllm/overheads.yaml price each."""
MAX_MEMORY_GIB = 65536
"""A sanity bound on one device's memory (the largest today have 288 GB)."""
INVENTORY_FORM = "NODESxGPUSxTYPE[,...] (e.g. 2x8xH100,4x1xL4; 8xH100 means one node)"


@dataclass(frozen=True)
class GPU:
    """One accelerator as vLLM sees it (one device; an MI250X entry is one GCD)."""

    name: str
    """Canonical name, e.g. `H100-SXM-80GB`."""
    vendor: str
    """`nvidia`, `amd`, `google`, `intel`, or whatever a user file says."""
    memory_gib: float
    """Total device memory torch/vLLM report, GiB (`torch.cuda.mem_get_info()[1] / 2**30`). Planning uses this."""
    bandwidth_tbs: float
    """Memory bandwidth, TB/s (10**12 bytes per second)."""
    aliases: tuple[str, ...] = ()
    """Other spellings: what users type, what nvidia-smi/torch print, cloud instance families."""
    memory_gb: float | None = None
    """Marketed capacity ("80 GB"); for NVIDIA parts really GiB of physical DRAM. Informational only."""
    memory_gib_measured: bool = False
    """True when a real vLLM log or torch reading backs `memory_gib`; False when it is an estimate."""
    memory_note: str | None = None
    """How `memory_gib` was obtained (the reading, or the estimation method)."""
    memory_type: str | None = None
    """HBM3, GDDR6, ... Informational."""
    nvidia_smi_total_mib: int | None = None
    """Total nvidia-smi prints, MiB (above `memory_gib` by the driver's reservation)."""
    devices_per_package: int = 1
    """Devices one physical package exposes (2 for an MI250X: one per GCD)."""
    bf16_tflops: float | None = None
    """Dense BF16 tensor throughput, TFLOPS (FP32 accumulate on GeForce). None where there is no BF16."""
    fp16_tflops: float | None = None
    """Dense FP16 tensor throughput, TFLOPS; given only where it differs from BF16 (T4)."""
    fp8_tflops: float | None = None
    """Dense FP8 tensor throughput, TFLOPS. None without native FP8."""
    fp4_tflops: float | None = None
    """Dense FP4 tensor throughput, TFLOPS, where known."""
    int8_tops: float | None = None
    """Dense INT8 tensor throughput, TOPS."""
    tflops_estimated: bool = False
    """True when the throughput figures are derived rather than read from a datasheet."""
    fp8_native: bool = False
    """W8A8 FP8 in hardware (CC >= 8.9, MI300-class, Gaudi 3). Otherwise FP8 checkpoints run weight-only at best."""
    fp4_native: bool | None = None
    """Native FP4/NVFP4 (Blackwell); None where unknown."""
    compute_capability: str | None = None
    """CUDA compute capability "9.0", or the architecture name for other vendors ("gfx942", "tpu-v6e")."""
    interconnect: str | None = None
    """Scale-up and host links in words."""
    nvlink_gbs: float = 0.0
    """NVLink bandwidth per GPU, bidirectional, GB/s; 0 for none."""
    interconnect_class: str | None = None
    """How vLLM's TP ranks talk on this part, which sets the communication buffers outside torch:
    `nvls` (NVSwitch of Hopper or later: NCCL NVLS), `nvlink` (NVLink without NVLS: A100 HGX, bridged
    pairs), `pcie_p2p` (PCIe with peer-to-peer), `pcie` (PCIe without P2P). None: not known."""
    scaleup_gbs: float = 0.0
    """Any scale-up fabric (NVLink, Infinity Fabric, ICI, RoCE) per device, bidirectional, GB/s; 0 for none."""
    gpus_per_node_max: int | None = None
    """Typical devices per node/VM (8 on SXM/HGX boards); None where the sources do not say."""
    tdp_w: float | None = None
    """Board power, W."""
    price_per_gpu_hour_usd: float | None = None
    """Indicative on-demand price per device-hour, USD; None where none was found."""
    price_source: str | None = None
    """Where the price comes from."""
    price_date: str | None = None
    """Date of the price's source snapshot (ISO, possibly only year-month)."""
    sources: tuple[str, ...] = ()
    """Source tags (resolved by `Catalogue.source_text`) or free text for user entries."""

    def __post_init__(self) -> None:
        where = f"GPU {self.name!r}" if self.name else "a GPU entry"
        if not isinstance(self.name, str) or not self.name.strip():
            raise PlannerError("a GPU entry has no name; give each entry a `name:`")
        if not _canon(self.name):
            raise PlannerError(f"GPU name {self.name!r} has no letters or digits; use a name like H100-SXM-80GB")
        if not isinstance(self.vendor, str) or not self.vendor.strip():
            raise PlannerError(f"{where} has no vendor; add `vendor:` (nvidia, amd, ...)")
        _check_positive(where, "memory_gib", self.memory_gib)
        if self.memory_gib > MAX_MEMORY_GIB:
            raise PlannerError(
                f"{where}: memory_gib {self.memory_gib:g} is above {MAX_MEMORY_GIB:,} GiB; give the total torch reports"
            )
        _check_positive(where, "bandwidth_tbs", self.bandwidth_tbs)
        for field in (
            "memory_gb",
            "bf16_tflops",
            "fp16_tflops",
            "fp8_tflops",
            "fp4_tflops",
            "int8_tops",
            "tdp_w",
            "price_per_gpu_hour_usd",
        ):
            value = getattr(self, field)
            if value is not None:
                _check_positive(where, field, value)
        for field in ("nvlink_gbs", "scaleup_gbs"):
            value = getattr(self, field)
            if not _is_number(value) or value < 0:
                raise PlannerError(f"{where}: {field} must be a number >= 0 (0 = none), got {value!r}")
        for field in ("gpus_per_node_max", "nvidia_smi_total_mib"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise PlannerError(f"{where}: {field} must be a whole number >= 1, got {value!r}")
        if not isinstance(self.devices_per_package, int) or self.devices_per_package < 1:
            raise PlannerError(f"{where}: devices_per_package must be a whole number >= 1")
        for field in ("memory_gib_measured", "tflops_estimated", "fp8_native"):
            if not isinstance(getattr(self, field), bool):
                raise PlannerError(f"{where}: {field} must be true or false, got {getattr(self, field)!r}")
        if self.fp4_native is not None and not isinstance(self.fp4_native, bool):
            raise PlannerError(f"{where}: fp4_native must be true, false or null")
        if self.interconnect_class is not None and self.interconnect_class not in INTERCONNECT_CLASSES:
            raise PlannerError(
                f"{where}: interconnect_class {self.interconnect_class!r} is not one of "
                f"{', '.join(INTERCONNECT_CLASSES)}"
            )
        if self.price_per_gpu_hour_usd is not None and not self.price_source:
            raise PlannerError(f"{where}: a price needs a price_source; add `price_source:` or drop the price")
        if not all(isinstance(a, str) and _canon(a) for a in self.aliases):
            raise PlannerError(f"{where}: aliases must be non-empty strings")
        if not self.sources or not all(isinstance(s, str) and s.strip() for s in self.sources):
            raise PlannerError(f"{where} has no sources; add `sources:` saying where its figures come from")

    @property
    def memory_bytes(self) -> int:
        """`memory_gib` in bytes."""
        return int(self.memory_gib * GIB)

    @property
    def cuda_capability(self) -> tuple[int, int] | None:
        """(major, minor) for CUDA devices; None for other vendors."""
        m = re.fullmatch(r"(\d+)\.(\d+)", self.compute_capability or "")
        return (int(m.group(1)), int(m.group(2))) if m else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_positive(where: str, field: str, value: Any) -> None:
    if not _is_number(value) or value <= 0:
        raise PlannerError(f"{where}: {field} must be a number > 0, got {value!r}")


# Leading words people and tools add or leave out: "NVIDIA GeForce RTX 4090", "AMD Instinct MI300X",
# "Tesla T4", "Standard_ND96isr_H100_v5". Stripped from both the query and the catalogue keys.
_PREFIXES = ("nvidia", "geforce", "tesla", "amd", "instinct", "intel", "standard")


_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def _canon(text: str) -> str:
    """Lower case, letters and digits only, common vendor words dropped from the front."""
    key = _NOT_ALNUM.sub("", str(text).lower())
    if not key.startswith(_PREFIXES):
        return key
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                key = key[len(prefix) :]
                stripped = True
    return key


class Catalogue:
    """An ordered, immutable set of GPUs with a case/punctuation-insensitive index over names and aliases.

    Lookup order: canonical names first, then aliases given in `preferred_aliases` (a user file's), then
    the other aliases.
    """

    __slots__ = ("gpus", "source_notes", "_index")

    def __init__(
        self,
        gpus: tuple[GPU, ...] | list[GPU],
        source_notes: Mapping[str, str] | None = None,
        preferred_aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.gpus: tuple[GPU, ...] = tuple(gpus)
        """Entries in order (bundled first, then user additions)."""
        self.source_notes: Mapping[str, str] = MappingProxyType(dict(source_notes or {}))
        """Source tag -> description, from the files' `sources:` maps."""
        by_name = {gpu.name: gpu for gpu in self.gpus}
        index: dict[str, GPU] = {}
        for gpu in self.gpus:
            for alias in gpu.aliases:
                index[_canon(alias)] = gpu
        for alias, name in (preferred_aliases or {}).items():
            index[_canon(alias)] = by_name[name]
        for gpu in self.gpus:
            index[_canon(gpu.name)] = gpu
        self._index: Mapping[str, GPU] = MappingProxyType(index)

    def __iter__(self) -> Iterator[GPU]:
        return iter(self.gpus)

    def __len__(self) -> int:
        return len(self.gpus)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _canon(name) in self._index

    @property
    def names(self) -> list[str]:
        """Canonical names, in catalogue order."""
        return [g.name for g in self.gpus]

    def get(self, name: str) -> GPU:
        """The GPU called `name` or one of its aliases (case, spaces, `-`, `_` and vendor words ignored)."""
        key = _canon(name) if isinstance(name, str) else ""
        if key in self._index:
            return self._index[key]
        raise PlannerError(
            f"unknown GPU {name!r}; nearest: {', '.join(self.nearest(name))}. "
            "Run `vllm-planner gpus` to list them, or add yours in a GPU YAML file"
        )

    def nearest(self, name: str, n: int = 3) -> list[str]:
        """Up to `n` canonical names closest to `name` (by name and alias spelling)."""
        import difflib  # only when a name is unknown

        key = _canon(name) if isinstance(name, str) else ""
        found: list[str] = []
        for cutoff in (0.6, 0.3, 0.0):
            for match in difflib.get_close_matches(key, list(self._index), n=4 * n, cutoff=cutoff):
                gpu_name = self._index[match].name
                if gpu_name not in found:
                    found.append(gpu_name)
            if len(found) >= n:
                break
        return found[:n]

    def __repr__(self) -> str:
        return f"Catalogue({len(self.gpus)} GPUs)"

    def source_text(self, tag: str) -> str:
        """The description of a source tag, or the tag itself when it is free text."""
        return self.source_notes.get(tag, tag)


@functools.cache
def _bundled() -> Catalogue:
    from planner import gpu_files  # local: it builds GPUs from this module

    path = profiles_dir() / "gpus.yaml"
    entries, notes = gpu_files.load_file(path, user=False)
    gpus = [gpu_files.build(entry, path) for entry in entries]
    gpu_files.check_aliases(gpus, path)
    return Catalogue(tuple(gpus), notes)


def load_catalogue(extra_yaml: Path | None = None) -> Catalogue:
    """The bundled catalogue (cached), plus the entries of `extra_yaml` if given.

    A user entry whose name is a bundled GPU's name or alias updates that GPU: the fields it gives
    replace the bundled ones, its aliases and sources are added. Any other entry is a new GPU and needs
    name, vendor, memory_gib and bandwidth_tbs. A user alias that a bundled GPU also uses points at the
    user's entry.
    """
    bundled = _bundled()
    if extra_yaml is None:
        return bundled
    from planner import gpu_files

    path = Path(extra_yaml)
    entries, notes = gpu_files.load_file(path)
    bundled_names = {_canon(g.name) for g in bundled}
    updated: dict[str, GPU] = {}
    added: list[GPU] = []
    preferred: list[tuple[str, str]] = []  # (alias, GPU name) as the user file gives them
    for entry in entries:
        if entry["name"] in bundled:
            base = bundled.get(entry["name"])
            if base.name in updated:
                raise PlannerError(f"GPU file {path}: two entries update {base.name}; merge them into one")
            gpu = updated[base.name] = gpu_files.merge(base, entry, path)
        else:
            entry.setdefault("sources", (f"user file {path.name}",))
            gpu = gpu_files.build(entry, path)
            added.append(gpu)
        for alias in entry.get("aliases", ()):
            if _canon(alias) in bundled_names and bundled.get(alias).name != gpu.name:
                raise PlannerError(
                    f"GPU file {path}: alias {alias!r} of {gpu.name} is the name of a bundled GPU; pick another alias"
                )
            preferred.append((alias, gpu.name))
    owners: dict[str, str] = {}
    for text, name in [*((g.name, g.name) for g in added), *preferred]:
        if owners.setdefault(_canon(text), name) != name:
            raise PlannerError(
                f"GPU file {path}: {text!r} names both {owners[_canon(text)]} and {name}; make it unique"
            )
    gpus = tuple(updated.get(g.name, g) for g in bundled) + tuple(added)
    return Catalogue(gpus, {**bundled.source_notes, **notes}, dict(preferred))


def with_memory(gpu: GPU, memory_gib: float) -> GPU:
    """`gpu` with its total memory replaced (the `--gpu-memory-gib` override), marked as user-supplied."""
    if not _is_number(memory_gib) or not 0 < memory_gib <= MAX_MEMORY_GIB:
        raise PlannerError(
            f"--gpu-memory-gib must be a number > 0 and at most {MAX_MEMORY_GIB:,}, got {memory_gib!r}; "
            "give the total torch reports, "
            f"e.g. {gpu.memory_gib:g} for {gpu.name}"
        )
    return dataclasses.replace(
        gpu,
        memory_gib=float(memory_gib),
        memory_gib_measured=True,
        memory_note=f"set with --gpu-memory-gib (catalogue: {gpu.memory_gib:g} GiB)",
    )


def _fp8_weight_only_min() -> tuple[int, ...]:
    from planner.target import gpu_families  # the gpus table only: off the plan path

    return tuple(map(int, gpu_families().fp8_weight_only_min_capability.split(".")))


def _fp8_support(gpu: GPU) -> str:
    if gpu.fp8_native:
        return "native"
    cc = gpu.cuda_capability
    if gpu.vendor == "nvidia" and cc is not None and cc >= _fp8_weight_only_min():
        return "weight-only"  # FP8-Marlin W8A16 on Turing/Ampere
    return "no"


# gpus_table keys (snake case, with their units) -> the text table's column headers
GPU_TABLE_HEADERS = {
    "gpu": "GPU",
    "memory_gib": "Memory GiB",
    "memory_source": "Memory",
    "bandwidth_tbs": "BW TB/s",
    "bf16_tflops": "BF16 TFLOPS",
    "fp8_tflops": "FP8 TFLOPS",
    "tflops_source": "TFLOPS",
    "fp8_support": "FP8",
    "interconnect": "Interconnect",
    "price_per_gpu_hour_usd": "$/GPU-h",
}


def gpus_table(catalogue: Catalogue) -> list[dict[str, Any]]:
    """One row per GPU for `vllm-planner gpus` (None = unknown); `GPU_TABLE_HEADERS` names the columns."""
    rows = []
    for gpu in catalogue:
        rows.append(
            {
                "gpu": gpu.name,
                "memory_gib": gpu.memory_gib,
                "memory_source": "measured" if gpu.memory_gib_measured else "estimated",
                "bandwidth_tbs": gpu.bandwidth_tbs,
                "bf16_tflops": gpu.bf16_tflops,
                "fp8_tflops": gpu.fp8_tflops,
                "tflops_source": "estimated" if gpu.tflops_estimated else "datasheet",
                "fp8_support": _fp8_support(gpu),
                "interconnect": (gpu.interconnect or "").split(";")[0].strip() or None,
                "price_per_gpu_hour_usd": gpu.price_per_gpu_hour_usd,
            }
        )
    return rows


_MOVED = {
    "NodeGroup": "planner.inventory",
    "parse_inventory": "planner.inventory",
    "MAX_GPUS_PER_NODE": "planner.inventory",
    "MAX_NODES": "planner.inventory",
    "GPU_FILE_LIMIT": "planner.gpu_files",
}


def __getattr__(name: str) -> Any:
    """The inventory and GPU-file names kept importable from here, loaded when first asked for."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
