"""The performance step: the step-time physics, the service model, the KV limit, the coefficient
file, and `vllm-planner perf` (bad input: one line, exit 2)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from planner import releases
from planner.api import load_model
from planner.budget import Settings
from planner.errors import PlannerError
from planner.hardware import load_catalogue
from planner.perf import coefficients as co
from planner.perf.api import estimate
from planner.perf.service import Workload, closed_loop, open_loop
from planner.perf.shape import inspection_of, step_shape
from planner.perf.step import (
    Coefficients,
    StepLoad,
    allreduce_s,
    compute_s,
    experts_touched_fraction,
    memory_s,
    step_s,
)
from planner.plan import Request

REPO = Path(__file__).resolve().parent.parent
CAT = load_catalogue()
C = Coefficients(
    bandwidth_fraction=0.8,
    compute_fraction=0.5,
    step_floor_ms=1.0,
    layer_floor_us=0.0,
    allreduce_us=10.0,
    request_overhead_ms=0.0,
)


def _req(model: str, **kw) -> Request:
    return Request(load_model(model), Settings(**kw), releases.get("0.18.0"))


def _shape(model: str, gpu: str = "H100", tp: int = 1, **kw):
    req = _req(model, tp=tp, **kw)
    return step_shape(req.model.spec, inspection_of(req, tp, 1), CAT.get(gpu))


def test_a_lone_decode_step_reads_the_weights_once():
    s = _shape("llama3.1-8b")
    t = memory_s(s, C, StepLoad(1, 0))
    assert t == pytest.approx(s.dense_weight_bytes / (3.35e12 * 0.8))
    assert step_s(s, C, StepLoad(1, 0)) == pytest.approx(t + 1e-3)


def test_kv_reads_grow_with_context_but_sliding_layers_stop_at_their_window():
    s = _shape("gpt-oss-120b")
    sliding = next(k for k in s.kv_kinds if k.window)
    assert sliding.window == 128
    grow = memory_s(s, C, StepLoad(8, 4096)) - memory_s(s, C, StepLoad(8, 2048))
    full = sum(k.bytes_per_token for k in s.kv_kinds if not k.window)
    assert grow == pytest.approx(8 * 2048 * full / (s.bandwidth_bytes_per_s * 0.8), rel=1e-6)


def test_moe_experts_touched_follow_top_k_routing():
    s = _shape("mixtral-8x7b", tp=2)
    assert experts_touched_fraction(s, 1) == pytest.approx(2 / 8)
    assert experts_touched_fraction(s, 2) == pytest.approx(1 - (6 / 8) ** 2)
    assert experts_touched_fraction(s, 256) == pytest.approx(1.0)
    assert memory_s(s, C, StepLoad(1, 0)) < memory_s(s, C, StepLoad(64, 0))


def test_all_reduces_only_under_tp_and_two_per_layer():
    assert allreduce_s(_shape("llama3.1-8b"), C, 64) == 0
    s = _shape("llama3.1-8b", tp=2)
    assert allreduce_s(s, C, 0) == pytest.approx(2 * 32 * 10e-6)


def test_prefill_chunks_are_compute_bound():
    s = _shape("llama3.1-8b")
    assert step_s(s, C, StepLoad(0, 0, 8192, 4096)) > 5 * step_s(s, C, StepLoad(1, 0))


@pytest.mark.parametrize("model, tp", [("llama3.1-8b", 1), ("llama3.1-8b", 2), ("gpt-oss-120b", 4), ("qwen3-8b", 1)])
def test_a_prompt_token_skips_the_lm_head(model, tp):
    """vLLM takes logits only at the positions it samples: a prompt token costs the lm_head's
    2 x vocab x hidden / tp FLOPs less than a decode token (the vocabulary split over TP)."""
    s = _shape(model, tp=tp)
    spec = load_model(model).spec
    assert s.head_flops_per_token == pytest.approx(2 * spec.vocab_size * spec.hidden_size / tp, rel=0.01)
    per_token = (compute_s(s, C, StepLoad(4096, 0)) - compute_s(s, C, StepLoad(0, 0, 4096, 0))) / 4096
    assert per_token == pytest.approx(s.head_flops_per_token / (s.gemm_flops_per_s * C.compute_fraction))


@pytest.mark.parametrize(
    "model, gpu, tp, isl, osl, loads",
    [
        ("qwen3-8b", "H100", 1, 128, 128, (64, 128, 256, 512)),  # 0.5 to 4 prompts arrive per step
        ("qwen3-8b", "H100", 1, 512, 256, (16, 64, 160)),
        ("gpt-oss-120b", "H200", 2, 256, 512, (64, 256, 512)),
    ],
)
def test_short_prompts_arriving_together_share_the_budget_instead_of_queueing(model, gpu, tp, isl, osl, loads):
    """Prompts far under the step budget that arrive in the same step are prefilled together: while
    the prefill load stays under about one half, the steady TTFT beyond the request overhead is the
    residual of a step, the prompt's own step and a short wait: under three mean steps (an M/D/1 of
    one prompt per step jumped to its closed-loop cap of C - 1 prompts once more than one arrived)."""
    req = _req(model, tp=tp)
    g = CAT.get(gpu)
    s = step_shape(req.model.spec, inspection_of(req, tp, 1), g)
    w = Workload(isl, osl, 8192)
    for load in loads:
        r = closed_loop(s, C, w, load)
        assert r.prefill_utilization < 0.55
        assert (r.ttft_steady_s - C.request_overhead_ms * 1e-3) / r.tpot_s < 3, load


def test_closed_loop_obeys_littles_law_and_latency_grows_with_load():
    s = _shape("llama3.1-8b")
    w = Workload(1024, 256, 8192)
    lo, hi = closed_loop(s, C, w, 4), closed_loop(s, C, w, 64)
    for r, n in ((lo, 4), (hi, 64)):
        assert r.requests_per_s == pytest.approx(n / r.e2e_s, rel=1e-6)
        assert r.e2e_s == pytest.approx(r.ttft_s + 255 * r.tpot_s, rel=1e-6)
    assert hi.tpot_s > lo.tpot_s and hi.output_tokens_per_s > lo.output_tokens_per_s


def test_open_loop_below_capacity_is_stable_and_far_above_it_saturates():
    s = _shape("llama3.1-8b")
    w = Workload(1024, 256, 8192)
    ok = open_loop(s, C, w, 2.0)
    assert not ok.saturated and ok.requests_per_s == 2.0
    assert open_loop(s, C, w, 1e4).saturated


def test_over_kv_capacity_reports_the_admissible_concurrency_not_a_latency():
    r = estimate(_req("llama3.1-8b", max_model_len=16384), CAT.get("L4"), 4096, 4096, concurrency=256)
    j = r.to_json()
    assert j["kv_limited"] and j["ttft_ms"] is None and j["tpot_ms"] is None
    assert 0 < j["max_concurrency_kv"] < 256 and j["at_admissible_concurrency"]["tpot_ms"] > 0
    assert "over KV capacity" in j["notes"][0]


def test_every_figure_is_estimated_with_a_range_and_its_calibration():
    j = estimate(_req("llama3.1-8b", max_model_len=8192), CAT.get("H100"), 1024, 128, concurrency=16).to_json()
    for k in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_latency_s", "output_tokens_per_s", "requests_per_s"):
        assert j[k] > 0 and k in j["estimated"]
    assert j["ttft_ms_range"][0] < j["ttft_ms"] < j["ttft_ms_range"][1]
    assert j["tpot_ms_range"][0] < j["tpot_ms"] < j["tpot_ms_range"][1]
    assert j["calibration"]["set"] == "v1-hopper" and not j["kv_limited"]


def test_another_gpu_family_or_release_is_marked_extrapolated():
    sets = co.bundled()
    a100 = co.choose(sets, "0.18.0", CAT.get("A100-80GB-SXM"))
    assert a100.set.gpu_family == "hopper" and "no ampere GPU" in a100.extrapolated[0]
    assert "applied to 0.33.0" in co.choose(sets, "0.33.0", CAT.get("H100")).extrapolated[-1]
    assert not co.choose(sets, "0.12.0", CAT.get("H200")).extrapolated


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("sets"), "missing sets"),
        (
            lambda d: d["sets"][0]["coefficients"].update(bandwidth_fraction=1.5),
            "bandwidth_fraction: must be a number in",
        ),
        (lambda d: d["sets"][0]["coefficients"].pop("step_floor_ms"), "missing step_floor_ms"),
        (lambda d: d["sets"][0]["releases"].update(first="next"), "sets[0]"),
    ],
)
def test_a_bad_coefficient_file_is_one_line(tmp_path, edit, message):
    doc = yaml.safe_load((REPO / "profiles" / "perf" / "coefficients.yaml").read_text())
    edit(doc)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PlannerError) as e:
        co.load(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_coefficient_file_reproduces_from_the_bundled_rows():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import fit_perf

    cases, skipped = fit_perf.load_cases()
    doc = yaml.safe_load((REPO / "profiles" / "perf" / "coefficients.yaml").read_text())
    assert doc["rows_used"] == len(cases) and doc["rows_not_used"] == skipped


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, text=True, cwd=REPO)


BASE = ("perf", "llama3.1-8b", "--gpu", "H100", "--max-model-len", "8192")


@pytest.mark.parametrize(
    "args, message",
    [
        (("--input-len", "0", "--output-len", "10", "--concurrency", "4"), "--input-len"),
        (("--input-len", "10", "--output-len", "-5", "--concurrency", "4"), "--output-len"),
        (("--input-len", "10", "--output-len", "10", "--request-rate", "0"), "--request-rate"),
        (("--input-len", "10", "--output-len", "10", "--request-rate", "-1"), "--request-rate"),
        (("--input-len", "10", "--output-len", "10", "--concurrency", "0"), "--concurrency"),
        (("--input-len", "10", "--output-len", "10", "--concurrency", "4", "--request-rate", "2"), "exactly one load"),
        (("--input-len", "10", "--output-len", "10"), "exactly one load"),
        (("--input-len", "8000", "--output-len", "1000", "--concurrency", "4"), "exceeds max_model_len 8,192"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    p = _cli(*BASE, *args)
    assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_perf_json_is_the_api_result_and_over_capacity_exits_1():
    p = _cli(*BASE, "--input-len", "1024", "--output-len", "128", "--concurrency", "16", "--json")
    api = estimate(_req("llama3.1-8b", max_model_len=8192), CAT.get("H100"), 1024, 128, concurrency=16)
    assert p.returncode == 0
    out, want = json.loads(p.stdout), api.to_json()
    assert out["vllm_version"] != want["vllm_version"] or out == want  # the CLI targets the newest release
    for key in (
        "ttft_ms",
        "tpot_ms",
        "itl_ms",
        "e2e_latency_s",
        "output_tokens_per_s",
        "requests_per_s",
        "ttft_ms_range",
        "tpot_ms_range",
        "kv_limited",
        "max_concurrency_kv",
        "calibration",
        "estimated",
    ):
        assert key in out
    q = _cli(*BASE, "--input-len", "4096", "--output-len", "4000", "--concurrency", "900")
    assert q.returncode == 1 and "OVER CAPACITY" in q.stdout


def test_the_curve_lists_concurrency_up_to_the_kv_limit():
    p = _cli(*BASE, "--input-len", "1024", "--output-len", "128", "--concurrency", "8", "--curve", "--json")
    rows = json.loads(p.stdout)["curve"]
    assert [r["concurrency"] for r in rows][:3] == [1, 2, 4] and rows[-1]["kv_limited"]
    assert all(not r["kv_limited"] for r in rows[:-1])


def test_plan_does_not_import_the_perf_step():
    code = (
        "import sys; from planner.cli import main; main(['plan', 'qwen3-8b', '--gpu', 'H100', '--json']); "
        "print('planner.perf' in sys.modules, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stderr.strip().splitlines()[-1] == "False"
