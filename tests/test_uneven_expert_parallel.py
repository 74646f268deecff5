"""--enable-expert-parallel over a TP that does not divide the routed experts: vLLM 0.32 accepts it and
places them unevenly (fused_moe/expert_map_manager.py `determine_expert_map`, linear placement), and the
plan counts the busiest GPU. The placement is checked against vLLM's own function in the CPU build."""

from __future__ import annotations

import json
import subprocess

import pytest
from launch_helpers import deployment, require_vllm_python

from planner.api import load_model
from planner.cli.entry import main
from planner.expert_split import busiest_expert_rank_shape
from planner.inspection import inspect
from planner.models.tensors import Tensor

PLACEMENTS = [(60, 8), (896, 3), (896, 6), (128, 3), (16, 5), (64, 8), (7, 2)]

_ORACLE = """
import json, sys
from vllm.model_executor.layers.fused_moe.expert_map_manager import determine_expert_map
for e, ep in json.loads(sys.argv[1]):
    ranks = []
    for r in range(ep):
        n, m, _ = determine_expert_map(ep, r, e)
        ranks.append(sorted((m >= 0).nonzero().flatten().tolist()))
    print(json.dumps({"experts": e, "ep": ep, "ranks": ranks}))
"""


@pytest.fixture(scope="module")
def vllm_placements() -> dict[tuple[int, int], list[list[int]]]:
    proc = subprocess.run(
        [require_vllm_python(), "-c", _ORACLE, json.dumps(PLACEMENTS)], capture_output=True, text=True, timeout=600
    )
    rows = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert rows, proc.stderr[-2000:]
    return {(r["experts"], r["ep"]): r["ranks"] for r in rows}


def _spec_with(experts: int):
    spec = load_model("Qwen/Qwen1.5-MoE-A2.7B").spec
    return spec.__class__(
        **{**spec.__dict__, "moe": spec.moe.__class__(**{**spec.moe.__dict__, "num_experts": experts})}
    )


@pytest.mark.parametrize(("experts", "ep"), PLACEMENTS)
def test_busiest_rank_is_vllms_rank_zero(vllm_placements, experts, ep):
    ranks = vllm_placements[(experts, ep)]
    busiest = max(len(r) for r in ranks)
    assert len(ranks[0]) == busiest  # rank 0 is (one of) the busiest: its experts are what the plan counts
    spec = _spec_with(experts)
    stacked = Tensor("model.layers.0.mlp.experts.w13_weight", (experts, 2816, 2048), "experts", "experts", 0)
    assert busiest_expert_rank_shape(stacked, spec, ep)[0] == busiest
    for n in range(experts):  # a checkpoint's per-expert tensors: whole on rank 0 exactly where vLLM maps them
        one = Tensor(f"model.layers.0.mlp.experts.{n}.up_proj.weight", (1408, 2048), "experts", "experts", 0)
        held = busiest_expert_rank_shape(one, spec, ep) == one.shape
        assert held == (n in ranks[0]), n


def test_the_plan_counts_the_busiest_gpu():
    m = load_model("Qwen/Qwen1.5-MoE-A2.7B")  # 60 experts over TP 8: 8 on four GPUs, 7 on four
    even = inspect(m, tp=8)
    uneven = inspect(m, tp=8, expert_parallel=True)
    experts = even.weight_breakdown_per_gpu["experts"]
    # the experts' bytes of one TP rank (E / TP each) become rank 0's ceil(E / TP) whole experts; the total
    # per GPU moves by that, give or take the caching allocator's 2 MiB rounding of each of the 48 stacks
    grown = uneven.weight_breakdown_per_gpu["experts"] - experts
    assert grown == pytest.approx(experts * (8 * 8 / 60 - 1), rel=1e-9)
    assert abs(uneven.weight_bytes_per_gpu - even.weight_bytes_per_gpu - grown) <= 48 * 2 * 2**20
    assert uneven.weight_bytes_total == even.weight_bytes_total
    assert any("8 on each of the first 4 GPUs and 7 on the rest" in w for w in uneven.warnings)
    assert inspect(m, tp=4, expert_parallel=True).weight_bytes_per_gpu == inspect(m, tp=4).weight_bytes_per_gpu


def test_plan_and_emit_accept_an_uneven_split(capsys):
    args = ["plan", "Qwen/Qwen1.5-MoE-A2.7B", "--gpu", "H100", "--tp", "8", "--max-model-len", "8192", "--json"]
    assert main([*args, "--expert-parallel"]) == 0
    with_ep = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    default = json.loads(capsys.readouterr().out)
    assert "--enable-expert-parallel" in with_ep["vllm_serve_command"]
    assert "--enable-expert-parallel" not in default["vllm_serve_command"]  # the default stays off for uneven
    assert with_ep["weights_gib"] > default["weights_gib"]
    assert with_ep["kv_cache_gib"] < default["kv_cache_gib"]
    d = deployment(
        "Qwen/Qwen1.5-MoE-A2.7B", "--gpu", "H100", "--tp", "8", "--max-model-len", "8192", "--expert-parallel"
    )
    assert d.budget.tp == 8
