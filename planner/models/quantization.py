"""Read a checkpoint's quantization scheme into a `QuantSpec`.

Sources, in vLLM's order: `quantization_config` in config.json, then `hf_quant_config.json`
(NVIDIA ModelOpt), then the user's `--quantization` (online quantization of a 16-bit checkpoint).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from planner.errors import PlannerError
from planner.models.spec import QuantSpec

# `--quantization` values the planner models, with what an online request means.
ONLINE_SCHEMES: dict[str, QuantSpec] = {
    "fp8": QuantSpec("fp8", 8, scale_granularity="tensor", vllm_name="fp8", source="--quantization fp8 (online)"),
    "fp8_per_tensor": QuantSpec(
        "fp8", 8, scale_granularity="tensor", vllm_name="fp8_per_tensor", source="--quantization"
    ),
    "fp8_per_channel": QuantSpec(
        "fp8", 8, scale_granularity="channel", vllm_name="fp8_per_channel", source="--quantization"
    ),
    "fp8_per_block": QuantSpec(
        "fp8", 8, block_shape=(128, 128), scale_granularity="block", vllm_name="fp8_per_block", source="--quantization"
    ),
    "bitsandbytes": QuantSpec(
        "bitsandbytes", 4, group_size=64, scale_granularity="group", vllm_name="bitsandbytes", source="--quantization"
    ),
}
# Names of checkpoint schemes a user may also pass to `--quantization` to confirm them.
CHECKPOINT_SCHEMES = (
    "awq",
    "awq_marlin",
    "gptq",
    "gptq_marlin",
    "compressed-tensors",
    "mxfp4",
    "modelopt",
    "modelopt_fp4",
    "fp8",
)


_FIX = "fix the config.json"
# Weight bits vLLM's kernels take: AWQ only 4 (AWQConfig), GPTQ 2/3/4/8 (GPTQConfig), compressed-tensors
# integers 4/8 (WNA16, W8A8) and floats 4/8 (NVFP4, FP8).
_BITS = {"awq": (4,), "gptq": (2, 3, 4, 8), "int": (4, 8), "float": (4, 8)}


def _bits(value: Any, kind: str, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value not in _BITS[kind]:
        raise PlannerError(
            f"quantization_config {field} must be one of {', '.join(map(str, _BITS[kind]))} for {kind}, "
            f"got {value!r}: {_FIX}"
        )
    return value


def _group_size(value: Any) -> int | None:
    """Elements per scale along the input; -1 (GPTQ, AWQ) means one group per row: a per-channel
    scale, so None here."""
    if value == -1 and not isinstance(value, bool):
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 2**20:
        raise PlannerError(
            f"quantization_config group_size must be a positive integer or -1 (one group per row), "
            f"got {value!r}: {_FIX}"
        )
    return value


def _names(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PlannerError(f"quantization_config {field} must be a list of module names, got {value!r}: {_FIX}")
    return tuple(value)


def _compressed_tensors(qc: dict[str, Any]) -> QuantSpec:
    groups = qc.get("config_groups") or {}
    if not isinstance(groups, dict) or not groups:
        raise PlannerError(
            "compressed-tensors quantization_config has no config_groups: pass the checkpoint's full config.json"
        )
    first = next(iter(groups.values()))
    weights = (first.get("weights") if isinstance(first, dict) else None) or {}
    if not isinstance(weights, dict):
        raise PlannerError(f"compressed-tensors config_groups entries need a weights object: {_FIX}")
    wtype = weights.get("type", "int")
    if wtype not in ("int", "float"):
        raise PlannerError(f"compressed-tensors weights type must be int or float, got {wtype!r}: {_FIX}")
    bits = _bits(weights.get("num_bits", 8), wtype, "num_bits")
    strategy = weights.get("strategy", "tensor")
    group = weights.get("group_size")
    method = "fp8" if wtype == "float" and bits == 8 else "int8" if bits == 8 else "w4a16"
    if wtype == "float" and bits == 4:
        method = "mxfp4" if _is_mxfp4(weights) else "nvfp4"
    block = weights.get("block_structure")
    return QuantSpec(
        method=method,
        weight_bits=bits,
        scale_dtype="uint8" if method == "mxfp4" else None,  # e8m0 exponents stored as U8 (weight_scale)
        group_size=None if group is None else _group_size(group),
        block_shape=_block(block, "block_structure"),
        scale_granularity={
            "tensor": "tensor",
            "channel": "channel",
            "group": "group",
            "block": "block",
            "tensor_group": "group",
        }.get(strategy, "tensor"),
        zero_points=not weights.get("symmetric", True),
        desc_act=weights.get("actorder") == "group",
        ignored_modules=_names(qc.get("ignore"), "ignore"),
        vllm_name="compressed-tensors",
        source="config.json quantization_config (compressed-tensors)",
    )


def _is_mxfp4(weights: dict[str, Any]) -> bool:
    """vLLM's CompressedTensorsConfig._is_mxfp4 (the `mxfp4-pack-quantized` format, scheme
    CompressedTensorsW4A4Mxfp4): 4-bit floats in symmetric groups of 32, one e8m0 scale per group,
    stored as `weight_packed` U8 [out, in / 2] and `weight_scale` U8 [out, in / 32]. NVFP4 is the
    tensor_group strategy in groups of 16 with fp8 scales."""
    return weights.get("strategy") == "group" and weights.get("group_size") == 32 and weights.get("symmetric", True)


def _block(block: Any, field: str) -> tuple[int, int] | None:
    if block is None:
        return None
    if (
        not isinstance(block, list)
        or len(block) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and 0 < b <= 2**20 for b in block)
    ):
        raise PlannerError(f"{field} must be two positive integers, got {block!r}: {_FIX}")
    return (block[0], block[1])


def _from_quantization_config(qc: Any) -> QuantSpec:
    if not isinstance(qc, dict):
        raise PlannerError(f"quantization_config must be a JSON object, got {qc!r}: fix the config.json")
    try:
        return _scheme(qc)
    except (TypeError, ValueError) as exc:
        raise PlannerError(f"quantization_config has a malformed value ({exc}): fix the config.json") from None


def _scheme(qc: dict[str, Any]) -> QuantSpec:
    method = str(qc.get("quant_method", "")).lower()
    src = f"config.json quantization_config ({method})"
    if method == "fp8":
        block = _block(qc.get("weight_block_size"), "weight_block_size")
        return QuantSpec(
            "fp8",
            8,
            block_shape=block,
            scale_granularity="block" if block else "tensor",
            ignored_modules=_names(
                qc.get("modules_to_not_convert") or qc.get("ignored_layers"), "modules_to_not_convert"
            ),
            vllm_name="fp8",
            source=src,
        )
    if method in ("awq", "gptq"):
        group = _group_size(qc.get("group_size", 128))
        return QuantSpec(
            method,
            _bits(qc.get("bits", 4), method, "bits"),
            group_size=group,
            scale_granularity="group" if group else "channel",
            zero_points=bool(qc.get("zero_point", True)) if method == "awq" else not qc.get("sym", True),
            desc_act=bool(qc.get("desc_act", False)),
            ignored_modules=_names(qc.get("modules_to_not_convert"), "modules_to_not_convert"),
            vllm_name=f"{method}_marlin",
            source=src,
        )
    if method == "mxfp4":
        return QuantSpec(
            "mxfp4",
            4,
            group_size=32,
            scale_granularity="group",
            ignored_modules=_names(qc.get("modules_to_not_convert"), "modules_to_not_convert"),
            vllm_name="mxfp4",
            source=src,
        )
    if method == "compressed-tensors":
        return _compressed_tensors(qc)
    if method == "bitsandbytes":
        return ONLINE_SCHEMES["bitsandbytes"]
    if method in ("modelopt", "modelopt_fp4"):
        return _modelopt(qc, src)
    raise PlannerError(
        f"quantization method {method!r} in config.json is not supported yet: "
        "supported are fp8, awq, gptq, compressed-tensors, mxfp4, modelopt, bitsandbytes"
    )


def _modelopt(q: dict[str, Any], src: str) -> QuantSpec:
    if not isinstance(q, dict):
        raise PlannerError(
            f"the ModelOpt quantization block must be a JSON object, got {q!r}: fix hf_quant_config.json"
        )
    algo = str(q.get("quant_algo", "")).upper()
    excluded = _names(q.get("exclude_modules") or q.get("ignore"), "exclude_modules")
    kv_algo = q.get("kv_cache_scheme") or q.get("kv_cache_quant_algo")
    kv = "fp8" if isinstance(kv_algo, str) and "FP8" in kv_algo.upper() else None
    if isinstance(kv_algo, dict) and kv_algo.get("num_bits") == 8 and kv_algo.get("type") == "float":
        kv = "fp8"  # config.json's form of the same (kv_cache_scheme {num_bits 8, type float}); vLLM: fp8_e4m3
    if algo == "FP8":
        return QuantSpec(
            "fp8",
            8,
            scale_granularity="tensor",
            ignored_modules=excluded,
            kv_cache_dtype=kv,
            vllm_name="modelopt",
            source=src,
        )
    if algo == "NVFP4":
        return QuantSpec(
            "nvfp4",
            4,
            group_size=16,
            scale_granularity="group",
            ignored_modules=excluded,
            kv_cache_dtype=kv,
            vllm_name="modelopt_fp4",
            source=src,
        )
    if algo == "MXFP8":
        return dataclasses.replace(_MXFP8, ignored_modules=excluded, kv_cache_dtype=kv, source=src)
    if algo == "MIXED_PRECISION":
        return _modelopt_mixed(q, excluded, kv, src)
    raise PlannerError(
        f"ModelOpt quant_algo {algo!r} is not supported yet: supported are FP8, NVFP4, MXFP8 and MIXED_PRECISION"
    )


# vLLM's ModelOpt MXFP8 (`modelopt_mxfp8`, LINEAR_ALGOS in modelopt.py): e4m3 weights, one e8m0 scale
# (stored as uint8, MXFP8_SCALE_DTYPE) per 32 input elements (MXFP8_BLOCK_SIZE)
_MXFP8 = QuantSpec(
    "mxfp8", 8, group_size=32, scale_granularity="group", scale_dtype="uint8", vllm_name="modelopt_mxfp8"
)


def _layer_scheme(algo: str, group: Any, module: str) -> QuantSpec:
    """One `quantized_layers` entry as the linear algo vLLM's ModelOpt table maps it to."""
    if algo in ("NVFP4", "W4A16_NVFP4"):
        size = 16 if group is None else _group_size(group)
        return QuantSpec("nvfp4", 4, group_size=size, scale_granularity="group", vllm_name="modelopt_fp4")
    if algo == "FP8":
        return QuantSpec("fp8", 8, scale_granularity="tensor", vllm_name="modelopt")
    if algo == "FP8_PER_CHANNEL_PER_TOKEN":
        return QuantSpec("fp8", 8, scale_granularity="channel", vllm_name="modelopt")
    if algo == "FP8_PB_WO":
        return QuantSpec("fp8", 8, block_shape=(128, 128), scale_granularity="block", vllm_name="modelopt")
    if algo == "MXFP8":
        return _MXFP8
    raise PlannerError(
        f"hf_quant_config.json quantized_layers[{module!r}] quant_algo {algo!r} is not supported yet: "
        "supported are NVFP4, W4A16_NVFP4, FP8, FP8_PER_CHANNEL_PER_TOKEN, FP8_PB_WO and MXFP8"
    )


def _modelopt_mixed(q: dict[str, Any], excluded: tuple[str, ...], kv: str | None, src: str) -> QuantSpec:
    """ModelOpt MIXED_PRECISION (vLLM's ModelOptMixedPrecisionConfig, `modelopt_mixed`): a scheme per
    module in `quantized_layers`; `exclude_modules` and every module not listed stay unquantized."""
    layers = q.get("quantized_layers")
    if not isinstance(layers, dict) or not layers:
        raise PlannerError(
            "ModelOpt quant_algo MIXED_PRECISION needs a non-empty 'quantized_layers' object: "
            "pass the checkpoint's complete hf_quant_config.json"
        )
    schemes: dict[tuple[str, Any], QuantSpec] = {}
    per_module = []
    for module, info in layers.items():
        if not isinstance(info, dict) or not isinstance(info.get("quant_algo"), str):
            raise PlannerError(f"hf_quant_config.json quantized_layers[{module!r}] needs a quant_algo string")
        key = (info["quant_algo"].upper(), info.get("group_size"))
        if key not in schemes:
            schemes[key] = _layer_scheme(key[0], key[1], module)
        per_module.append((str(module), schemes[key]))
    bits = min(s.weight_bits for s in schemes.values())
    return QuantSpec(
        "mixed",
        bits,
        scale_granularity="group",
        ignored_modules=excluded,
        kv_cache_dtype=kv,
        vllm_name="modelopt_mixed",
        source=src,
        per_module=tuple(per_module),
    )


# Checkpoint prefixes of multimodal wrappers (Qwen3.5/3.6: model.language_model.layers...) and the
# fused modules the tensor list names (vLLM's packed_modules_mapping), for the per-module lookup.
_WRAPPER_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."), ("language_model.", ""))
_PACKED = {
    "in_proj_qkvz": ("in_proj_qkv", "in_proj_z"),
    "in_proj_ba": ("in_proj_b", "in_proj_a"),
    "gate_up_proj": ("gate_proj", "up_proj"),
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
}


def _unwrapped(name: str) -> str:
    for prefix, plain in _WRAPPER_PREFIXES:
        if name.startswith(prefix):
            return plain + name[len(prefix) :]
    return name


def _per_module_index(quant: QuantSpec) -> dict[str, QuantSpec]:
    index = quant.__dict__.get("_per_module_index")
    if index is None:
        index = {_unwrapped(name): scheme for name, scheme in quant.per_module}
        for name, scheme in list(index.items()):
            cut = name.find(".experts.")
            if cut >= 0:
                index.setdefault(name[: cut + len(".experts")], scheme)
        object.__setattr__(quant, "_per_module_index", index)  # a cache beside the frozen fields
    return index


def module_scheme(quant: QuantSpec, module: str) -> QuantSpec | None:
    """The scheme of one module of a MIXED_PRECISION checkpoint, as vLLM's `_resolve_quant_algo` finds
    it: the module itself (wrapper prefixes aside), else its packed shards when they agree, else (a
    routed-expert stack) the experts listed under it; None when the module is not listed."""
    index, module = _per_module_index(quant), _unwrapped(module)
    if module in index:
        return index[module]
    base, _, leaf = module.rpartition(".")
    if leaf in _PACKED:
        found = {id(s): s for s in (index.get(f"{base}.{shard}") for shard in _PACKED[leaf]) if s is not None}
        if len(found) == 1:
            return next(iter(found.values()))
        if len(found) > 1:
            raise PlannerError(f"hf_quant_config.json gives the shards of {module} different schemes: {_FIX}")
    cut = module.find(".experts.")
    return index.get(module[: cut + len(".experts")]) if cut >= 0 else None


# Model classes that build their vision tower and projector without the checkpoint's scheme where it is
# one of these (`_maybe_ignore_quant_config`: vLLM 0.32 kimi_k25.py returns None for a
# CompressedTensorsConfig), with the modules it covers: an ignore entry vLLM applies, the config lacks.
_TOWER_WITHOUT_QUANT = {"KimiK25ForConditionalGeneration": (("compressed-tensors",), ("vision_tower", "mm_projector"))}


def _tower_exempt(config: dict[str, Any], q: QuantSpec) -> QuantSpec:
    archs = config.get("architectures") or []
    schemes, modules = _TOWER_WITHOUT_QUANT.get(archs[0] if archs else "", ((), ()))
    if q.vllm_name not in schemes:
        return q
    return dataclasses.replace(q, ignored_modules=q.ignored_modules + modules)


def parse_quantization(config: dict[str, Any], quant_files: dict[str, dict[str, Any]]) -> QuantSpec | None:
    """The checkpoint's own scheme, or None for an unquantized checkpoint."""
    text = config.get("text_config")
    qc = config.get("quantization_config") or (text.get("quantization_config") if isinstance(text, dict) else None)
    if qc:
        return _tower_exempt(config, _from_quantization_config(qc))
    hf_quant = quant_files.get("hf_quant_config.json")
    if hf_quant:
        return _modelopt(hf_quant.get("quantization") or {}, "hf_quant_config.json (ModelOpt)")
    return None


def resolve_quantization(checkpoint: QuantSpec | None, requested: str | None) -> QuantSpec | None:
    """Combine the checkpoint's scheme with `--quantization`, as vLLM checks them."""
    if not requested:
        return checkpoint
    name = requested.lower()
    if checkpoint is not None:
        aliases = {checkpoint.method, checkpoint.vllm_name, checkpoint.vllm_name.replace("_marlin", "")}
        if name in aliases or name in CHECKPOINT_SCHEMES and name.startswith(checkpoint.method):
            return checkpoint
        raise PlannerError(
            f"--quantization {requested} does not match the checkpoint's {checkpoint.vllm_name} scheme: "
            f"drop --quantization or pass {checkpoint.vllm_name}"
        )
    if name in ONLINE_SCHEMES:
        return ONLINE_SCHEMES[name]
    raise PlannerError(
        f"unknown or checkpoint-only quantization {requested!r} for an unquantized checkpoint: "
        f"online schemes are {', '.join(ONLINE_SCHEMES)}; for awq/gptq/mxfp4 use a quantized checkpoint"
    )
