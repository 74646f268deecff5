"""Replay a recorded vLLM start-up (a record of `shared/calibration/vllm-startup-*.jsonl`) through
the planner: the same model, GPU total, layout, utilization, context, dtypes and release, giving
the predicted figures next to the observed ones. Used by the accuracy benchmark and the tests."""

from __future__ import annotations

from typing import Any

from planner import releases
from planner.api import inspect, load_model
from planner.budget import Budget, Settings, Target, compute
from planner.model_runner import from_env
from planner.releases import ReleaseFacts
from planner.units import GIB


def release_for(r: dict[str, Any]) -> ReleaseFacts:
    return releases.get(r["vllm_version"].split()[0])  # e.g. "v0.15.0 (from run file name)"


CALIBRATION_GPU = "NVIDIA H100 80GB HBM3"
"""The GPU of the H100 calibration set as torch names it: a record that names none ran on it."""


def target_for(r: dict[str, Any]) -> Target:
    """The recorded GPU: its logged torch total, else the catalogue entry the record names
    (`gpu_catalogue`), else the calibration set's GPU (its catalogue entry's total and compute
    capability). A record may name its `compute_capability` and `interconnect` class (the H100
    set's default: the catalogue's 9.0, NVSwitch)."""
    from planner.hardware import load_catalogue

    if r.get("gpu_total_gib") is None and r.get("gpu_catalogue"):
        gpu = load_catalogue().get(r["gpu_catalogue"])
        return Target(
            gpu.name,
            gpu.memory_bytes,
            compute_capability=r.get("compute_capability") or gpu.compute_capability,
            interconnect=r.get("interconnect") or gpu.interconnect_class,
        )
    default = load_catalogue().get(CALIBRATION_GPU)
    total = r.get("gpu_total_gib")
    return Target(
        name=str(r.get("gpu") or CALIBRATION_GPU),
        memory_bytes=round((total if total is not None else default.memory_gib) * GIB),
        compute_capability=r.get("compute_capability") or default.compute_capability,
        interconnect=r.get("interconnect"),
    )


def settings_for(r: dict[str, Any]) -> Settings:
    """The record's settings; batch limits and VLLM_USE_V2_MODEL_RUNNER where it names them."""
    return Settings(
        tp=r["tp"],
        pp=r["pp"],
        max_model_len=r["max_model_len"],
        gpu_memory_utilization=r["gpu_memory_utilization"],
        kv_cache_dtype=r.get("kv_cache_dtype") or "auto",
        max_num_seqs=r.get("max_num_seqs"),
        max_num_batched_tokens=r.get("max_num_batched_tokens"),
        enforce_eager=bool(r.get("enforce_eager")),
        model_runner=from_env((r.get("env") or {}).get("VLLM_USE_V2_MODEL_RUNNER")),
    )


def replay_budget(r: dict[str, Any]) -> Budget:
    model = load_model(r["model"])
    quant = r.get("quantization")
    online = quant if quant == "fp8" and model.spec.quant is None else None
    rel, s = release_for(r), settings_for(r)
    insp = inspect(
        model,
        tp=r["tp"],
        pp=r["pp"],
        dtype=r.get("dtype"),
        quantization=online,
        kv_cache_dtype=s.kv_cache_dtype,
        kv_auto_from_checkpoint=rel.kv_cache_dtype_auto_from_checkpoint,
    )
    return compute(model, insp, target_for(r), rel, s)


def replay(r: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(predicted, observed) per figure. With PP each stage logs its own figures and the records
    hold the first stage's; the token count is vLLM's, after the minimum over stages."""
    b = replay_budget(r)
    st = b.stages[0]
    return {
        "weights": (round(st.weights_bytes / GIB, 2), r["weights_gib"]),
        "activation": (round(st.activation_bytes / GIB, 2), r["activation_peak_gib"]),
        "kv_gib": (round(st.available_kv_bytes / GIB, 2), r["kv_cache_gib"]),
        "kv_tokens": (b.kv_cache_tokens, r["kv_cache_tokens"]),
    }
