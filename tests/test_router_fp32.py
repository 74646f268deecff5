"""Nemotron-H's MoE router in float32 where vLLM keeps it so: the device rule against vLLM's own
GateLinear on every CUDA compute capability of the GPU catalogue (tests/vllm_router_oracle.py), the
release rule (0.12-0.16: a float32 ReplicatedLinear everywhere), and the bytes the budget adds per
stage (the gate [experts, hidden] of each MoE layer on it, 2 more bytes per element than bf16)."""

from __future__ import annotations

import pytest
from launch_helpers import oracle_rows

from planner import accounting as acc
from planner import releases
from planner.api import load_model, plan
from planner.hardware import load_catalogue
from planner.models.families.nemotron_h import fp32_router, router_fp32_extra_bytes
from planner.target import Target

CATALOGUE = load_catalogue()
CUDA = sorted({g.compute_capability for g in CATALOGUE if g.compute_capability and g.compute_capability[0].isdigit()})
NANO, SUPER = "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-BF16"


def _target(cc: str | None, device: str = "cuda") -> Target:
    return Target("gpu", 80 * 2**30, device=device, compute_capability=cc)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def vllm_router_dtypes():
    return oracle_rows("vllm_router_oracle.py", *CUDA, timeout=600)[-1]


@pytest.mark.parametrize("cc", CUDA)
def test_the_device_rule_is_vllms_gate_linear(vllm_router_dtypes, cc):
    # vLLM 0.32 (the CPU build): float32 where its router kernels do not run
    assert fp32_router(releases.get("0.32.0"), _target(cc)) == (vllm_router_dtypes[cc] == "float32")


@pytest.mark.parametrize(
    "version, cc, device, expected",
    [
        ("0.15.0", "9.0", "cuda", True),  # ReplicatedLinear(params_dtype=torch.float32) on every device
        ("0.16.0", "10.0", "cuda", True),
        ("0.17.0", "9.0", "cuda", False),  # GateLinear: Hopper's kernels
        ("0.17.0", "8.9", "cuda", True),
        ("0.33.0", "10.0", "cuda", False),
        ("0.33.0", "12.0", "cuda", True),  # sm120 is not capability family 10.x
        ("0.33.0", "gfx942", "cuda", True),  # not CUDA
        ("0.33.0", None, "cpu", True),  # the CPU backend
    ],
)
def test_release_and_device_rule(version, cc, device, expected):
    assert fp32_router(releases.get(version), _target(cc, device)) == expected


@pytest.mark.parametrize(
    "model_id, moe_layers, experts, hidden",
    [(NANO, 23, 128, 2688), (SUPER, 40, 512, 4096)],  # config: hybrid_override_pattern's E blocks
)
@pytest.mark.parametrize("gpu, extra", [("A100", True), ("L40S", True), ("H100", False), ("B200", False)])
def test_the_budget_adds_the_fp32_router_as_model_memory(model_id, moe_layers, experts, hidden, gpu, extra):
    tp = 8
    p = plan(model_id, gpu=gpu, tp=tp, max_model_len=8192)
    base = plan(model_id, gpu="H200", tp=tp, max_model_len=8192)  # 9.0: the model dtype
    spec = load_model(model_id).spec
    ranges = acc.pp_layer_ranges(spec.num_layers, 1)
    assert sum(1 for i in ranges[0] if spec.layers[i].mlp == "moe") == moe_layers
    expected = moe_layers * experts * hidden * 2 if extra else 0  # replicated: the same on every TP rank
    assert p.budget.memory.weights_bytes - base.budget.memory.weights_bytes == expected


def test_per_stage_the_layers_of_that_stage():
    spec = load_model(SUPER).spec
    rel, a100 = releases.get("0.32.0"), _target("8.0")
    ranges = acc.pp_layer_ranges(spec.num_layers, 4)
    per_stage = [router_fp32_extra_bytes(spec, r, 2, rel, a100) for r in ranges]
    assert sum(per_stage) == 40 * 512 * 4096 * 2 and all(b > 0 for b in per_stage)
    assert router_fp32_extra_bytes(load_model("Qwen/Qwen3-30B-A3B").spec, ranges[0], 2, rel, a100) == 0
