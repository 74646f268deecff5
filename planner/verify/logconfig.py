"""The settings a vLLM start-up log ran with: the engine's config line ('Initializing a V1 LLM engine
(v0.19.0) with config: model=..., tensor_parallel_size=2, ...'), the API server's 'non-default args:
{...}' and the GPU names nvidia-smi or the workers print. `planner/calibrate.py` replays a start-up
with them. Pure standard library; `None` for what the log does not say.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class LogSettings:
    model: Optional[str] = None
    tp: Optional[int] = None
    pp: Optional[int] = None
    max_model_len: Optional[int] = None
    dtype: Optional[str] = None
    """'bfloat16' ('torch.bfloat16' in the log)."""
    kv_cache_dtype: Optional[str] = None
    quantization: Optional[str] = None
    enforce_eager: Optional[bool] = None
    max_num_seqs: Optional[int] = None
    max_num_batched_tokens: Optional[int] = None
    gpu_memory_utilization: Optional[float] = None
    gpu_names: tuple[str, ...] = ()
    """'NVIDIA A100-SXM4-40GB' and the like, as printed, first seen first."""
    v2_runner_env: Optional[str] = None
    """The VLLM_USE_V2_MODEL_RUNNER value the log prints, if any."""


_CONFIG = re.compile(r"LLM engine \(v[^)]*\) with config: (?P<body>.*)$", re.MULTILINE)
_PAIR = re.compile(r"(?:^|, )(?P<key>\w+)=(?P<value>'[^']*'|[^,]*)")
_ARGS = re.compile(r"non-default args: (?P<body>\{.*\})\s*$", re.MULTILINE)
_GPU = re.compile(r"NVIDIA (?:[A-Z][\w-]*)(?: [A-Z0-9][\w-]*)*")
_V2_ENV = re.compile(r"'VLLM_USE_V2_MODEL_RUNNER': '?(?P<value>[^',}]*)'?")
_CONFIG_KEYS = {
    "model": "model",
    "tensor_parallel_size": "tp",
    "pipeline_parallel_size": "pp",
    "max_seq_len": "max_model_len",
    "dtype": "dtype",
    "kv_cache_dtype": "kv_cache_dtype",
    "quantization": "quantization",
    "enforce_eager": "enforce_eager",
}
_ARG_KEYS = {
    "model": "model",
    "tensor_parallel_size": "tp",
    "pipeline_parallel_size": "pp",
    "max_model_len": "max_model_len",
    "dtype": "dtype",
    "kv_cache_dtype": "kv_cache_dtype",
    "quantization": "quantization",
    "enforce_eager": "enforce_eager",
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "gpu_memory_utilization": "gpu_memory_utilization",
}
_TYPES = {"tp": int, "pp": int, "max_model_len": int, "max_num_seqs": int, "max_num_batched_tokens": int}


def _value(raw: str):
    raw = raw.strip()
    if raw.startswith("'") and raw.endswith("'"):
        return raw[1:-1]
    if raw in ("None", ""):
        return None
    if raw in ("True", "False"):
        return raw == "True"
    return raw.removeprefix("torch.")


def _from_config(text: str) -> dict:
    m = _CONFIG.search(text)
    if m is None:
        return {}
    out = {}
    for p in _PAIR.finditer(m["body"]):
        name = _CONFIG_KEYS.get(p["key"])
        if name and name not in out:
            out[name] = _value(p["value"])
    return out


def _from_args(text: str) -> dict:
    m = _ARGS.search(text)
    if m is None:
        return {}
    try:
        args = ast.literal_eval(m["body"])
    except (ValueError, SyntaxError):
        return {}
    return {name: args[key] for key, name in _ARG_KEYS.items() if isinstance(args, dict) and key in args}


def log_settings(text: str) -> LogSettings:
    """What the log says it ran with; the non-default args win over the config line (they are what
    the user typed), the config line fills the rest."""
    values = {**_from_config(text), **{k: v for k, v in _from_args(text).items() if v is not None}}
    for k, tp in _TYPES.items():
        if values.get(k) is not None:
            try:
                values[k] = tp(values[k])
            except (TypeError, ValueError):
                values[k] = None
    if isinstance(values.get("enforce_eager"), str):
        values["enforce_eager"] = values["enforce_eager"] == "True"
    names = tuple(dict.fromkeys(g.strip() for g in _GPU.findall(text)))
    env = _V2_ENV.search(text)
    return LogSettings(**values, gpu_names=names, v2_runner_env=env["value"] if env else None)
