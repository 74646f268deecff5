"""The model-accounting step's result: `Model` (spec + tensors) and `Inspection` (parameters,
weight bytes, KV bytes per token for one dtype / quantization / layout). Pure: reading a model is
`planner.api.load_model`'s job; the budget and the plan build on this module, never on the API."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from planner import accounting as acc
from planner import kv_bytes as kvb
from planner.dtypes import torch_dtype_bytes
from planner.errors import PlannerError
from planner.expert_split import uneven_expert_split
from planner.models import checks
from planner.models.quantization import resolve_quantization
from planner.models.spec import ModelSpec, QuantSpec
from planner.models.tensors import Tensor

# `--dtype` values vLLM accepts, normalized.
_DTYPES = {
    "auto": "auto",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "half": "float16",
    "fp16": "float16",
    "float32": "float32",
    "float": "float32",
    "fp32": "float32",
}
# `--kv-cache-dtype` values whose bytes per element are plain (per-token-head and 4-bit formats pack
# scales into pages in backend-specific ways and are refused rather than guessed).
_KV_DTYPES = {"auto": None, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1}


@dataclass(frozen=True)
class Model:
    """A model ready for accounting: its normalized spec and the tensors of its checkpoint."""

    id: str
    source: Literal["bundled", "local", "hub"]
    spec: ModelSpec
    tensors: tuple[Tensor, ...]
    tensor_source: Literal["formula", "safetensors", "none"]
    """Where the tensor list came from: the architecture formula or the checkpoint's safetensors
    headers; `none` for architectures whose weights are not modelled yet."""
    meta: dict[str, Any] = field(default_factory=dict)


def resolve_dtype(spec: ModelSpec, dtype: str | None) -> str:
    """vLLM's `--dtype`: `auto` takes the checkpoint's dtype, and float32 checkpoints are served in
    bfloat16 (`_resolve_auto_dtype`)."""
    key = (dtype or "auto").lower().replace("torch.", "")
    if key not in _DTYPES:
        raise PlannerError(f"unknown --dtype {dtype!r}: use one of auto, bfloat16, float16, float32")
    if _DTYPES[key] != "auto":
        return _DTYPES[key]
    return "bfloat16" if spec.dtype == "float32" else _DTYPES.get(spec.dtype, "bfloat16")


def kv_dtype_bytes(kv_cache_dtype: str | None, model_dtype: str) -> int:
    key = (kv_cache_dtype or "auto").lower()
    if key not in _KV_DTYPES:
        raise PlannerError(f"--kv-cache-dtype {kv_cache_dtype!r} is not modelled: use one of {', '.join(_KV_DTYPES)}")
    return _KV_DTYPES[key] or torch_dtype_bytes(model_dtype)


def check_parallel(spec: ModelSpec, tp: int, pp: int) -> None:
    """vLLM's divisibility rules: TP divides the attention heads; KV heads divide TP or TP divides
    them; PP at most the number of layers."""
    if tp < 1 or pp < 1:
        raise PlannerError(f"--tp and --pp must be at least 1 (got tp={tp}, pp={pp})")
    valid = [
        t
        for t in range(1, spec.num_heads + 1)
        if spec.num_heads % t == 0 and (spec.mla or spec.num_kv_heads % t == 0 or t % spec.num_kv_heads == 0)
    ]
    if spec.num_heads % tp:
        raise PlannerError(
            f"--tp {tp} does not divide the {spec.num_heads} attention heads: valid TP sizes are "
            f"{', '.join(map(str, valid))}"
        )
    if not spec.mla and spec.num_kv_heads % tp and tp % spec.num_kv_heads:
        raise PlannerError(
            f"--tp {tp} and the {spec.num_kv_heads} KV heads do not divide each other: valid TP sizes are "
            f"{', '.join(map(str, valid))}"
        )
    checks.check_tp(spec, tp)
    if pp > spec.num_layers:
        raise PlannerError(f"--pp {pp} exceeds the {spec.num_layers} decoder layers: use at most {spec.num_layers}")
    _check_kv_sharing_stages(spec, pp)
    v = spec.vision
    if v is not None and v.num_layers and v.tp_split and (v.num_heads % tp or v.intermediate_size % tp):
        # the ViT's QKV / column-parallel layers split heads and the MLP across TP (vLLM's divide())
        ok = [t for t in valid if v.num_heads % t == 0 and v.intermediate_size % t == 0]
        raise PlannerError(
            f"--tp {tp} does not divide the vision tower ({v.num_heads} heads, MLP {v.intermediate_size}): "
            f"valid TP sizes are {', '.join(map(str, ok))}"
        )


def _kv_split_layer(spec: ModelSpec, pp: int) -> int | None:
    """The first KV-shared layer that `pp` stages put on another stage than its target, if any."""
    stage = {i: s for s, r in enumerate(acc.pp_layer_ranges(spec.num_layers, pp)) for i in r}
    src = [(i, l.kv_shared_with) for i, l in enumerate(spec.layers) if l.kv_shared_with is not None]
    return next((i for i, t in src if stage[i] != stage[t]), None)


def _check_kv_sharing_stages(spec: ModelSpec, pp: int) -> None:
    """vLLM's validate_kv_sharing_target: a KV-shared layer's target must be built by the same stage."""
    bad = _kv_split_layer(spec, pp)
    if bad is not None:
        ok = [p for p in range(1, pp) if _kv_split_layer(spec, p) is None]
        raise PlannerError(
            f"--pp {pp} puts KV-shared layer {bad} (num_kv_shared_layers) on another stage than layer "
            f"{spec.layers[bad].kv_shared_with}, whose cache it reads, which vLLM refuses: use --pp "
            f"{', '.join(map(str, ok))}"
        )


@dataclass(frozen=True)
class Inspection:
    """Model accounting for one dtype / quantization / KV dtype / TP x PP choice."""

    model: str
    source: str
    architecture: str
    model_type: str
    tensor_source: str
    dtype: str
    """Dtype vLLM loads the unquantized tensors in."""
    quantization: str | None
    """vLLM's quantization method name, or None."""
    kv_cache_dtype: str
    tp: int
    pp: int
    params_total: int
    """Parameters vLLM loads (vision tower included, MTP layers and stored buffers excluded)."""
    params_active: int
    """Parameters one token passes through (text model; MoE: top-k routed experts)."""
    params_breakdown: dict[str, int]
    params_not_loaded: dict[str, int]
    """Parameters the checkpoint stores that vLLM does not load (MTP layers, rotary buffers)."""
    params_checkpoint: int
    """What the checkpoint's safetensors total counts: loaded + not loaded + quantization scales."""
    params_published: int | None
    weight_bytes_total: int
    """Weights on all GPUs of one replica together (TP x PP ranks), as vLLM holds them."""
    weight_bytes_per_gpu: int
    """The largest GPU's weights (the budget's weights term)."""
    weight_bytes_per_stage: tuple[int, ...]
    weight_breakdown_per_gpu: dict[str, int]
    runtime_buffer_bytes: int
    kv_bytes_per_token_per_gpu: int
    kv_bytes_per_token_by_kind: dict[str, int]
    kv_bytes_per_token_per_stage: tuple[int, ...]
    head_size: int
    kv_heads_per_rank: int
    mamba_state_bytes_per_seq: int
    layer_types: dict[str, int]
    max_model_len_default: int
    estimated: list[str]
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _estimated(model: Model, quant: QuantSpec | None) -> list[str]:
    out = []
    if quant is not None and quant.method in ("awq", "gptq", "w4a16", "mxfp4", "nvfp4", "bitsandbytes"):
        out.append("weight_bytes_per_gpu")  # kernels may repack (Marlin, padded MXFP4) beyond the stored size
    if model.spec.vision is not None and model.tensor_source == "formula":
        out.append("params_breakdown.vision")
    if model.tensor_source == "none":
        out += ["params_total", "weight_bytes_per_gpu"]
    return out


# A linear layer of the tower under each name checkpoints give it, with and without the wrapper's "model."
_TOWER_PROBES = tuple(
    prefix + name
    for name in ("vision_tower.blocks.0.mlp.fc1", "visual.blocks.0.mlp.fc1", "vision_model.encoder.layers.0.mlp.fc1")
    for prefix in ("", "model.")
)


def _vision_maybe_quantized(spec: ModelSpec, quant: QuantSpec) -> bool:
    """The formula keeps vision towers in the model dtype; a scheme whose ignore list does not cover
    the tower (checkpoint recipes usually name it; online fp8 has none) may quantize it in vLLM. A
    MIXED_PRECISION checkpoint quantizes only the modules it lists."""
    if spec.vision is None or acc.experts_only_mxfp4(quant):
        return False
    if any(acc.is_ignored(n, quant) for n in _TOWER_PROBES):
        return False
    if quant.per_module:  # quantized where listed: a tower module among them
        return any(
            part in ("visual", "vision_tower", "vision_model")
            for name, _ in quant.per_module
            for part in name.split(".")
        )
    return True


def _weight_warnings(model: Model, quant: QuantSpec | None, load_dtype: str) -> list[str]:
    """What the weight figures leave out or may over-count."""
    spec, out = model.spec, []
    if model.tensor_source == "none":
        out.append(
            f"weights of {spec.model_type} are not modelled yet: KV and state figures only; pass a checkpoint "
            "folder with safetensors for exact weights"
        )
    if quant is not None and model.tensor_source == "formula" and _vision_maybe_quantized(spec, quant):
        out.append(
            f"the vision tower is counted at {load_dtype}, but vLLM may apply {quant.method} to its linear "
            "layers too (no ignore entry names the tower): its weights may be over-estimated"
        )
    if quant is not None and quant.method == "bitsandbytes":
        out.append(
            "bitsandbytes was removed from vLLM in 0.28.0: target vLLM 0.27 or older, or use an AWQ/GPTQ checkpoint"
        )
    return out


def _kv_cache_dtype(asked: str | None, quant: QuantSpec | None, from_checkpoint: bool) -> tuple[str, list[str]]:
    """The KV-cache dtype (`auto` takes the checkpoint's KV scheme where vLLM does) and the note saying so."""
    kv_cache_dtype = (asked or "auto").lower()
    if kv_cache_dtype == "auto" and from_checkpoint and quant is not None and quant.kv_cache_dtype:
        return quant.kv_cache_dtype, [
            f"--kv-cache-dtype auto resolves to the checkpoint's {quant.kv_cache_dtype} KV cache (vLLM 0.14+)"
        ]
    return kv_cache_dtype, []


def _weights(
    model: Model,
    tensors: list[Tensor],
    quant: QuantSpec | None,
    load_dtype: str,
    tp: int,
    pp: int,
    expert_parallel: bool,
) -> tuple[acc.WeightBytes, int, list[str]]:
    """Weight bytes per GPU (the busiest of an uneven expert split), the total over the GPUs, and the note
    an uneven split gets."""
    spec = model.spec
    w = acc.weight_bytes(spec, tensors, quant, load_dtype, tp, pp)
    if not uneven_expert_split(spec, tp, expert_parallel):
        return w, sum(w.per_stage) * tp, []
    assert spec.moe is not None
    e = spec.moe.num_experts
    if e < tp:
        raise PlannerError(
            f"--expert-parallel over TP {tp}: {model.id} has {e} routed experts, fewer than its GPUs, so vLLM's "
            f"expert map would leave {tp - e} GPUs without one: use a TP of at most {e}, or --no-expert-parallel"
        )
    busiest = acc.weight_bytes(spec, tensors, quant, load_dtype, tp, pp, uneven_ep=True)
    note = (
        f"expert parallelism over TP {tp}: vLLM places the {e} routed experts unevenly, "
        f"{-(-e // tp)} on each of the first {e % tp} GPUs and {e // tp} on the rest; weights per GPU are the busiest's"
    )
    return busiest, sum(w.per_stage) * tp, [note]


def inspect(
    model: Model,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype: str | None = None,
    quantization: str | None = None,
    kv_cache_dtype: str | None = None,
    kv_auto_from_checkpoint: bool = True,
    expert_parallel: bool = False,
) -> Inspection:
    """Parameters, weight and KV bytes per GPU as vLLM holds them (`kv_auto_from_checkpoint`: vLLM 0.14+)."""
    spec = model.spec
    check_parallel(spec, tp, pp)
    load_dtype = resolve_dtype(spec, dtype)
    quant = resolve_quantization(spec.quant, quantization)
    tensors = list(model.tensors)
    kv_cache_dtype, kv_note = _kv_cache_dtype(kv_cache_dtype, quant, kv_auto_from_checkpoint)
    checks.check_kv_cache_dtype(spec, kv_cache_dtype)
    w, weight_total, ep_note = _weights(model, tensors, quant, load_dtype, tp, pp, expert_parallel)
    warnings = list(spec.notes) + kv_note + _weight_warnings(model, quant, load_dtype) + ep_note
    kv = kvb.kv_bytes_per_token(spec, kv_dtype_bytes(kv_cache_dtype, load_dtype), tp, pp)
    loaded = acc.params_by_component(tensors)
    every = acc.params_by_component(tensors, loaded_only=False)
    return Inspection(
        model=model.id,
        source=model.source,
        architecture=spec.architecture,
        model_type=spec.model_type,
        tensor_source=model.tensor_source,
        dtype=load_dtype,
        quantization=quant.vllm_name if quant else None,
        kv_cache_dtype=kv_cache_dtype,
        tp=tp,
        pp=pp,
        params_total=sum(loaded.values()),
        params_active=acc.active_params(spec, tensors),
        params_breakdown=loaded,
        params_not_loaded={k: v - loaded.get(k, 0) for k, v in every.items() if v != loaded.get(k, 0)},
        # meta.yaml `params_published_counts_scales: false`: a Hub total computed without the block scales
        params_checkpoint=acc.checkpoint_params(
            tensors, quant if quant is spec.quant and model.meta.get("params_published_counts_scales", True) else None
        ),
        params_published=model.meta.get("params_published"),
        weight_bytes_total=weight_total,
        weight_bytes_per_gpu=w.max_per_gpu,
        weight_bytes_per_stage=w.per_stage,
        weight_breakdown_per_gpu=w.by_component_max_stage,
        runtime_buffer_bytes=w.runtime_buffers,
        kv_bytes_per_token_per_gpu=kv.max_per_gpu,
        kv_bytes_per_token_by_kind=kv.by_kind_max_stage,
        kv_bytes_per_token_per_stage=kv.per_stage,
        head_size=kv.head_size,
        kv_heads_per_rank=kv.kv_heads_per_rank,
        mamba_state_bytes_per_seq=kvb.mamba_state_bytes_per_seq(spec, torch_dtype_bytes(load_dtype), tp),
        layer_types=spec.layer_type_counts(),
        max_model_len_default=spec.max_model_len_default,
        estimated=_estimated(model, quant),
        warnings=warnings,
    )
