"""Which GPU model runner vLLM starts: V1 (`v1/worker/gpu_model_runner.py`) or the V2 model runner
(`v1/worker/gpu/model_runner.py`, logged as "Using V2 Model Runner").

The choice changes two measured budget terms: the V2 runner's dummy sampler keeps fewer fp32
copies of the logits (`profiles/vllm/overheads.yaml`, overlay `runner-v2`), and up to 0.28 its
`profile_cudagraph_memory()` returns 0, so no CUDA-graph estimate is subtracted. The default rule of
each release is data (`profiles/vllm/releases.yaml`: v2_model_runner_*); like vLLM, an explicit
VLLM_USE_V2_MODEL_RUNNER wins where the release reads it. Pure: numbers in, a name out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from planner.errors import PlannerError
from planner.models.spec import ModelSpec
from planner.releases import ReleaseFacts

Runner = Literal["v1", "v2"]


@dataclass(frozen=True)
class RunnerTraits:
    """The model properties vLLM's default-runner rule reads (config/vllm.py)."""

    architecture: str
    is_moe: bool
    """model_config.is_moe: routed experts."""
    is_hybrid: bool
    """Attention plus Mamba / linear-attention layers."""
    attention_free: bool
    """No attention layer at all (pure Mamba)."""
    quantized: bool
    """model_config.is_quantized as the rule reads it: the checkpoint has a quantization_config
    (an online --quantization fp8 does not count)."""


def traits(spec: ModelSpec) -> RunnerTraits:
    kinds = {layer.attention for layer in spec.layers}
    stateful = bool(kinds & {"mamba", "linear"})
    return RunnerTraits(
        architecture=spec.architecture,
        is_moe=spec.moe is not None,
        is_hybrid=stateful and bool(kinds - {"mamba", "linear", "none"}),
        attention_free=stateful and not (kinds - {"mamba", "linear", "none"}),
        quantized=spec.quant is not None,
    )


def default_runner(rel: ReleaseFacts, t: RunnerTraits, device: str = "cuda") -> Runner:
    """The runner a release picks with VLLM_USE_V2_MODEL_RUNNER unset (rule names: releases.py)."""
    rule = rel.v2_model_runner_rule
    listed = t.architecture in rel.v2_model_runner_default_architectures
    if device != "cuda" or rule == "none":
        return "v1"
    if rule == "listed_dense_unquantized":  # models with inner state (Mamba) stay on V1 too
        ok = listed and not t.is_moe and not t.quantized and not t.is_hybrid and not t.attention_free
    elif rule == "listed":
        ok = listed
    elif rule == "all":
        ok = True
    else:
        hybrid_ok = rule == "listed_or_dense" and listed
        ok = not t.attention_free and (not t.is_hybrid or hybrid_ok) and (listed or not t.is_moe)
    return "v2" if ok else "v1"


def from_env(raw: Optional[str]) -> Optional[Runner]:
    """VLLM_USE_V2_MODEL_RUNNER as vLLM reads it (bool(int(value))); None when unset or empty."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return "v2" if int(raw) else "v1"
    except ValueError:
        raise PlannerError(
            f"VLLM_USE_V2_MODEL_RUNNER={raw!r} is not an integer: set 1 (V2 model runner) or 0 (V1)"
        ) from None


def resolve(rel: ReleaseFacts, t: RunnerTraits, requested: Optional[Runner], device: str = "cuda") -> Runner:
    """`requested` is VLLM_USE_V2_MODEL_RUNNER ("v2" for 1, "v1" for 0), None when unset; releases
    before the variable existed ignore it."""
    if requested is not None and rel.v2_model_runner_env and device == "cuda":
        if requested == "v2" and rel.v2_model_runner_rejects_stateful and (t.is_hybrid or t.attention_free):
            raise PlannerError(
                f"vLLM {rel.version} refuses VLLM_USE_V2_MODEL_RUNNER=1 for {t.architecture} "
                '("does not yet support: hybrid/mamba models"): unset it or set it to 0'
            )
        return requested
    return default_runner(rel, t, device)
