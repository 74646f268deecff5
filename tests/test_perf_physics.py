"""The perf model's physical limits, checked on the real calibration rows: rows faster than the GPU's
datasheet allows are flagged (with the reason) and not fitted, the fitted fractions stay under what
Hopper reaches, and the routed experts' GEMMs run at their own efficiency."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import yaml
from md1_reference import md1_wait_quantile

from planner import releases
from planner.api import load_model
from planner.budget import Settings
from planner.hardware import load_catalogue
from planner.perf import calibration as cal
from planner.perf import fitting
from planner.perf.service import Workload, open_loop
from planner.perf.shape import inspection_of, step_shape
from planner.perf.step import Coefficients, StepLoad, allreduce_s, compute_s, floor_s, memory_s, step_s
from planner.perf.ttft_percentiles import kingman_ttft_percentiles_ms, kingman_wait_quantile
from planner.plan import Request

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "benchmarks" / "data" / "perf"
ROWS = [json.loads(x) for x in (DATA / "vllm-measured.jsonl").read_text().splitlines() if x.strip()]
MAPPING = yaml.safe_load((DATA / "rows.yaml").read_text())
CAT = load_catalogue()


@pytest.fixture(scope="module")
def cases():
    return cal.cases(ROWS, MAPPING, CAT)[0]


def _hand_bound_s(row: dict) -> float:
    """A coarse lower bound of a Llama-3.1-8B FP8 row's mean step on an H200, counted by hand from
    the published figures: x = C / e2e requests/s; per step x I TPOT prompt tokens and x (O - 1) TPOT
    decodes over I + O / 2 tokens of context; 2 x 7.5e9 FLOPs per token (8.03e9 parameters less the
    0.53e9 embedding) over TP GPUs at the 1979 TFLOPS FP8 peak, or 9.1 GB of weights at 4.8 TB/s,
    whichever is longer; then the decodes' KV (131,072 B per token of context) at 4.8 TB/s, and 2
    all-reduces per layer (32 layers) of 4096 bf16 values per token over the ring's 2 (tp - 1) / tp
    at 450 GB/s one way."""
    w, m, tp = row["workload"], row["metrics"], row["tp"]
    tau = m["tpot_ms"] * 1e-3
    x = w["concurrency"] / (m["ttft_ms"] * 1e-3 + (w["osl"] - 1) * tau)
    decodes = x * (w["osl"] - 1) * tau
    tokens = x * w["isl"] * tau + decodes
    gemm = max(tokens * 2 * 7.5e9 / tp / 1979e12, 9.1e9 / tp / 4.8e12)
    kv = decodes * (w["isl"] + w["osl"] / 2) * 131072 / tp / 4.8e12
    ring = 2 * 32 * 2 * (tp - 1) / tp * tokens * 4096 * 2 / 450e9
    return gemm + kv + ring


def test_rows_faster_than_the_datasheet_are_flagged_and_not_fitted(cases):
    odd = [c for c in cases if c.implausible]
    assert {c.model for c in odd} == {"nvidia/Llama-3.1-8B-Instruct-FP8"} and len(odd) == 17
    by_id = {r["id"]: r for r in ROWS}
    for c in odd:
        assert c.implausible in c.caveats and "physically implausible" in c.implausible
        assert not c.over_capacity and c.kind == "closed"
        # by hand, GEMMs, KV reads and the ring at the peaks already take most of the measured step
        assert _hand_bound_s(by_id[c.id]) > 0.75 * c.measured["tpot_ms"] * 1e-3
    assert not any(c.implausible for c in cases if c.kind == "static" or c.model != odd[0].model)


def test_the_same_row_measured_slower_is_plausible(cases):
    row = next(r for r in ROWS if r["id"] == next(c for c in cases if c.implausible).id)
    c = next(c for c in cases if c.id == row["id"])
    m = dict(row["metrics"])
    assert cal.implausible_reason(c.shape, "closed", c.input_len, c.output_len, c.load, m, c.max_num_batched_tokens)
    m["tpot_ms"] *= 2  # twice the step time: well inside the hardware
    assert not cal.implausible_reason(c.shape, "closed", c.input_len, c.output_len, c.load, m, 8192)


@pytest.mark.parametrize("x", [-50.0, 0.0, 3.0, 50.0])
def test_fitted_fractions_stay_under_what_hopper_reaches(x):
    c = fitting._to_coef([x] * len(fitting.FITTED))
    assert 0 < c.bandwidth_fraction <= 0.9 and 0 < c.compute_fraction <= 0.8
    assert 0 < c.moe_gemm_efficiency <= 1.0 and 0 < c.burst_share <= 1.0
    assert 0 < c.moe_read_efficiency <= 1.0 and c.moe_layer_floor_us > 0
    n = len(fitting.FITTED)
    back = fitting._from_coef([getattr(fitting._to_coef([0.5] * n), k) for k in fitting.FITTED])
    assert back == pytest.approx([0.5] * n)


def _shape(model: str, tp: int):
    req = Request(load_model(model), Settings(tp=tp, max_model_len=8192), releases.get("0.18.0"))
    insp = inspection_of(req, tp, 1)
    return step_shape(req.model.spec, insp, CAT.get("H200")), insp, req.model.spec


@pytest.mark.parametrize("model, tp", [("openai/gpt-oss-120b", 2), ("MiniMaxAI/MiniMax-M2.5", 4)])
def test_routed_expert_flops_run_at_their_own_efficiency(model, tp):
    s, insp, spec = _shape(model, tp)
    k, e = spec.moe.experts_per_token, spec.moe.num_experts
    assert s.expert_flops_per_token == pytest.approx(2 * insp.params_breakdown["experts"] * k / e / tp)
    assert 0 < s.expert_flops_per_token < s.gemm_flops_per_token
    assert s.expert_flops_per_s == CAT.get("H200").bf16_tflops * 1e12 <= s.gemm_flops_per_s
    c = Coefficients(0.8, 0.5, 1.0, 0.0, 10.0, 40.0)
    load = StepLoad(16, 1024, 4096, 2048)
    slow = compute_s(s, dataclasses.replace(c, moe_gemm_efficiency=0.25), load) - compute_s(s, c, load)
    expected = s.expert_flops_per_token * (16 + 4096) * (1 / 0.25 - 1) / s.expert_flops_per_s / c.compute_fraction
    assert slow == pytest.approx(expected)


def test_a_dense_model_has_no_expert_flops():
    s, _, _ = _shape("llama3.1-70b", 4)
    c = Coefficients(0.8, 0.5, 1.0, 0.0, 10.0, 40.0)
    load = StepLoad(16, 1024, 4096, 2048)
    assert s.expert_flops_per_token == 0.0
    assert compute_s(s, dataclasses.replace(c, moe_gemm_efficiency=0.1), load) == compute_s(s, c, load)
    assert math.isfinite(compute_s(s, c, load))


@pytest.mark.parametrize(
    "model, moe_layers, layers",
    [
        ("deepseek-ai/DeepSeek-V3", 58, 61),  # first_k_dense_replace 3
        ("meta-llama/Llama-4-Maverick-17B-128E-Instruct", 24, 48),  # interleave_moe_layer_step 2
        ("openai/gpt-oss-120b", 36, 36),
        ("llama3.1-70b", 0, 80),
    ],
)
def test_the_moe_floor_counts_the_layers_with_routed_experts(model, moe_layers, layers):
    s, _, _ = _shape(model, 8)
    assert (s.moe_layers, s.layers) == (moe_layers, layers)
    c = Coefficients(0.8, 0.5, 1.0, 2.0, 10.0, 40.0)
    more = floor_s(s, dataclasses.replace(c, moe_layer_floor_us=4.0)) - floor_s(s, c)
    assert more == pytest.approx(4e-6 * moe_layers)


@pytest.mark.parametrize("model, tp", [("openai/gpt-oss-120b", 2), ("llama3.1-70b", 4)])
def test_only_the_touched_experts_are_read_at_the_moe_kernels_rate(model, tp):
    s, _, _ = _shape(model, tp)
    c = Coefficients(0.8, 0.5, 1.0, 0.0, 10.0, 40.0)
    load = StepLoad(16, 1024)
    slower = memory_s(s, dataclasses.replace(c, moe_read_efficiency=0.5), load) - memory_s(s, c, load)
    touched = 1 - (1 - s.experts_per_token / s.num_experts) ** 16 if s.num_experts else 0.0
    expected = s.expert_weight_bytes * touched * (1 / 0.5 - 1) / (s.bandwidth_bytes_per_s * c.bandwidth_fraction)
    assert slower == pytest.approx(expected, abs=1e-15)
    assert (slower > 0) == bool(s.num_experts)


# ---- the TTFT tail sizing reports: Kingman's, as the service model's mean ----------------------


@pytest.mark.parametrize("rho", [0.8, 0.9, 0.95])
def test_the_kingman_tail_is_the_md1_tail_in_heavy_traffic(rho):
    mean = rho / (2 * (1 - rho))  # in services: the M/D/1 mean wait
    for q in (0.5, 0.9, 0.99):
        assert kingman_wait_quantile(q, rho, mean) == pytest.approx(md1_wait_quantile(q, rho), rel=0.1)


@pytest.mark.parametrize("rho, wait", [(0.3, 5.0), (0.7, 40.0)])
def test_the_kingman_wait_keeps_the_mean_and_its_atom_at_zero(rho, wait):
    assert kingman_wait_quantile(1 - rho, rho, wait) == 0.0 and kingman_wait_quantile(1 - rho + 1e-3, rho, wait) > 0
    n = 20000  # the mean of the quantile function over q is the mean wait
    assert sum(kingman_wait_quantile((i + 0.5) / n, rho, wait) for i in range(n)) / n == pytest.approx(wait, rel=0.01)


def test_sizing_percentiles_come_from_the_service_models_wait():
    s, _, _ = _shape("llama3.1-70b", 4)
    c = Coefficients(0.8, 0.5, 1.0, 0.0, 10.0, 40.0)
    w = Workload(4096, 256, 8192)
    low, high = open_loop(s, c, w, 0.2), open_loop(s, c, w, 2.0)  # rho 0.07 and 0.68
    assert 0 <= low.ttft_wait_s < high.ttft_wait_s < high.ttft_s
    p = kingman_ttft_percentiles_ms(high.ttft_s * 1e3, high.ttft_wait_s * 1e3, high.prefill_utilization)
    assert p["p50"] <= p["p90"] <= p["p99"] and p["p99"] > high.ttft_s * 1e3
    assert kingman_ttft_percentiles_ms(high.ttft_s * 1e3, high.ttft_wait_s * 1e3, 1.0) is None


def test_a_mixed_step_runs_its_gemms_and_its_attention_one_after_the_other():
    """The GEMM kernels overlap the weights' reads with their FLOPs, the attention kernels the KV's
    reads with theirs; one kind runs after the other, so a step is the sum of the two maxima."""
    s, _, _ = _shape("llama3.1-70b", 4)
    c = Coefficients(0.8, 0.5, 1.0, 2.0, 10.0, 40.0)
    load = StepLoad(64, 8192, 2048, 1024)
    bw = s.bandwidth_bytes_per_s * c.bandwidth_fraction
    (kind,) = s.kv_kinds
    kv = kind.bytes_per_token * 64 * 8192
    attn = s.attn_flops_per_pair * kind.layers * (64 * 8192 + 2048 * 1024)
    gemm = (s.gemm_flops_per_token * (64 + 2048) - s.head_flops_per_token * 2048) / s.gemm_flops_per_s
    want = max(s.dense_weight_bytes / bw, gemm / c.compute_fraction)
    want += max(kv / bw, attn / s.attn_flops_per_s / c.compute_fraction)
    want += allreduce_s(s, c, 64 + 2048) + floor_s(s, c)
    assert step_s(s, c, load) == pytest.approx(want)
    assert step_s(s, c, load) > max(memory_s(s, c, load), compute_s(s, c, load))
