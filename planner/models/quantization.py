"""Read a checkpoint's quantization scheme into a `QuantSpec`.

Sources, in vLLM's order: `quantization_config` in config.json, then `hf_quant_config.json`
(NVIDIA ModelOpt), then the user's `--quantization` (online quantization of a 16-bit checkpoint).
"""

from __future__ import annotations

from typing import Any

from planner.errors import PlannerError
from planner.models.spec import QuantSpec

# `--quantization` values the planner models, with what an online request means.
ONLINE_SCHEMES: dict[str, QuantSpec] = {
    "fp8": QuantSpec("fp8", 8, scale_granularity="tensor", vllm_name="fp8", source="--quantization fp8 (online)"),
    "fp8_per_tensor": QuantSpec("fp8", 8, scale_granularity="tensor", vllm_name="fp8_per_tensor", source="--quantization"),
    "fp8_per_channel": QuantSpec("fp8", 8, scale_granularity="channel", vllm_name="fp8_per_channel", source="--quantization"),
    "fp8_per_block": QuantSpec("fp8", 8, block_shape=(128, 128), scale_granularity="block", vllm_name="fp8_per_block", source="--quantization"),
    "bitsandbytes": QuantSpec("bitsandbytes", 4, group_size=64, scale_granularity="group", vllm_name="bitsandbytes", source="--quantization"),
}
# Names of checkpoint schemes a user may also pass to `--quantization` to confirm them.
CHECKPOINT_SCHEMES = ("awq", "awq_marlin", "gptq", "gptq_marlin", "compressed-tensors", "mxfp4", "modelopt", "modelopt_fp4", "fp8")


def _compressed_tensors(qc: dict[str, Any]) -> QuantSpec:
    groups = qc.get("config_groups") or {}
    if not groups:
        raise PlannerError("compressed-tensors quantization_config has no config_groups: pass the checkpoint's full config.json")
    weights = next(iter(groups.values())).get("weights") or {}
    bits = int(weights.get("num_bits", 8))
    strategy = weights.get("strategy", "tensor")
    wtype = weights.get("type", "int")
    method = "fp8" if wtype == "float" and bits == 8 else "int8" if bits == 8 else "w4a16"
    if wtype == "float" and bits == 4:
        method = "nvfp4"
    block = weights.get("block_structure")
    return QuantSpec(
        method=method, weight_bits=bits, group_size=weights.get("group_size"),
        block_shape=tuple(block) if block else None,
        scale_granularity={"tensor": "tensor", "channel": "channel", "group": "group", "block": "block",
                           "tensor_group": "group"}.get(strategy, "tensor"),
        zero_points=not weights.get("symmetric", True), desc_act=weights.get("actorder") == "group",
        ignored_modules=tuple(qc.get("ignore") or ()), vllm_name="compressed-tensors",
        source="config.json quantization_config (compressed-tensors)",
    )


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
        block = qc.get("weight_block_size")
        if block is not None and (not isinstance(block, list) or len(block) != 2 or not all(isinstance(b, int) and b > 0 for b in block)):
            raise PlannerError(f"weight_block_size must be two positive integers, got {block!r}: fix the config.json")
        return QuantSpec("fp8", 8, block_shape=tuple(block) if block else None,
                         scale_granularity="block" if block else "tensor",
                         ignored_modules=tuple(qc.get("modules_to_not_convert") or qc.get("ignored_layers") or ()),
                         vllm_name="fp8", source=src)
    if method in ("awq", "gptq"):
        return QuantSpec(method, int(qc.get("bits", 4)), group_size=int(qc.get("group_size", 128)),
                         scale_granularity="group",
                         zero_points=bool(qc.get("zero_point", True)) if method == "awq" else not qc.get("sym", True),
                         desc_act=bool(qc.get("desc_act", False)),
                         ignored_modules=tuple(qc.get("modules_to_not_convert") or ()),
                         vllm_name=f"{method}_marlin", source=src)
    if method == "mxfp4":
        return QuantSpec("mxfp4", 4, group_size=32, scale_granularity="group",
                         ignored_modules=tuple(qc.get("modules_to_not_convert") or ()), vllm_name="mxfp4", source=src)
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
    algo = str(q.get("quant_algo", "")).upper()
    excluded = tuple(q.get("exclude_modules") or q.get("ignore") or ())
    kv_algo = q.get("kv_cache_scheme") or q.get("kv_cache_quant_algo")
    kv = "fp8" if isinstance(kv_algo, str) and "FP8" in kv_algo.upper() else None
    if algo == "FP8":
        return QuantSpec("fp8", 8, scale_granularity="tensor", ignored_modules=excluded, kv_cache_dtype=kv,
                         vllm_name="modelopt", source=src)
    if algo == "NVFP4":
        return QuantSpec("nvfp4", 4, group_size=16, scale_granularity="group", ignored_modules=excluded,
                         kv_cache_dtype=kv, vllm_name="modelopt_fp4", source=src)
    raise PlannerError(f"ModelOpt quant_algo {algo!r} is not supported yet: supported are FP8 and NVFP4")


def parse_quantization(config: dict[str, Any], quant_files: dict[str, dict[str, Any]]) -> QuantSpec | None:
    """The checkpoint's own scheme, or None for an unquantized checkpoint."""
    qc = config.get("quantization_config") or (config.get("text_config") or {}).get("quantization_config")
    if qc:
        return _from_quantization_config(qc)
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
