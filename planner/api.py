"""The Python API: `load_model` and `inspect`. The CLI is a thin layer over these.

    >>> import planner
    >>> m = planner.load_model("Qwen/Qwen3-8B")
    >>> r = planner.inspect(m, tp=2, kv_cache_dtype="fp8")
    >>> r.kv_bytes_per_token_per_gpu
    36864
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from planner import inspection
from planner.inspection import Inspection, Model, check_parallel, kv_dtype_bytes, resolve_dtype
from planner.models import sources
from planner.models.normalize import WEIGHTS_BY_FORMULA_UNSUPPORTED, normalize
from planner.models.tensors import classify, from_spec

__all__ = ["Inspection", "Model", "check_parallel", "inspect", "kv_dtype_bytes", "load_model", "resolve_dtype"]


def load_model(name: str) -> Model:
    """Resolve a bundled id/alias, a local config.json or checkpoint folder, or a Hub id."""
    src = sources.resolve(name)
    spec = normalize(src.config, quant_files=src.quant_files)
    quirks = set(src.meta.get("checkpoint_quirks") or ())
    if "rotary_inv_freq" in quirks:
        spec = dataclasses.replace(spec, checkpoint_rotary_buffers=True)
    if src.header_tensors:
        tensors = tuple(classify(t.name, t.shape, t.dtype, spec.num_layers) for t in src.header_tensors)
        tensor_source: Literal["formula", "safetensors", "none"] = "safetensors"
    elif spec.model_type in WEIGHTS_BY_FORMULA_UNSUPPORTED:
        tensors, tensor_source = (), "none"
    else:
        tensors, tensor_source = tuple(from_spec(spec)), "formula"
    return Model(src.model_id, src.source, spec, tensors, tensor_source, dict(src.meta))


def inspect(model: Model | str, *, tp: int = 1, pp: int = 1, dtype: str | None = None,
            quantization: str | None = None, kv_cache_dtype: str | None = None,
            kv_auto_from_checkpoint: bool = True) -> Inspection:
    """`planner.inspection.inspect` for a loaded `Model` or a name `load_model` resolves."""
    return inspection.inspect(load_model(model) if isinstance(model, str) else model, tp=tp, pp=pp, dtype=dtype,
                              quantization=quantization, kv_cache_dtype=kv_cache_dtype,
                              kv_auto_from_checkpoint=kv_auto_from_checkpoint)
