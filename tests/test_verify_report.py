"""Predicted against observed: tolerances, entries from the log and /metrics, the verdict for start-up
failures (predicted or not) and for the load, and the JSON shape of --report."""

from __future__ import annotations

import dataclasses
import json

import pytest

from planner import releases
from planner.api import load_model
from planner.budget import Settings
from planner.hardware import load_catalogue
from planner.plan import Request
from planner.verify import perfcheck
from planner.verify.load import LoadResult
from planner.verify.logparse import StartupFigures, parse_log
from planner.verify.metrics import CacheConfig
from planner.verify.report import (
    TOLERANCES,
    Entry,
    Report,
    Tolerance,
    figure_entries,
    load_entries,
    predicts_startup_failure,
    text,
    usable_concurrency,
)
from planner.verify.server import Startup

CPU_PLAN = {
    "model": "/tmp/tiny",
    "gpu": "cpu",
    "vllm_version": "0.32.0",
    "tp": 1,
    "pp": 1,
    "weights_gib": 0.01,
    "activation_gib": 0.0,
    "non_torch_gib": 0.0,
    "cudagraph_gib": 0.0,
    "kv_cache_gib": 1.0,
    "block_size": 128,
    "num_blocks": 8192,
    "kv_cache_tokens": 1048576,
    "max_model_len": 512,
    "max_num_seqs": 128,
    "max_concurrency": 2048.0,
    "max_model_len_fit": 2048,
    "fits": True,
    "error": None,
    "concurrency": None,
    "vllm_serve_command": "VLLM_CPU_KVCACHE_SPACE=1 vllm serve /tmp/tiny --max-model-len 512",
}
CPU_LOG = (
    "(APIServer pid=1) INFO 11-26 00:15:40 [api_utils.py:347]  ▄▄ ▄█ █     █     █ ▀▄▀ █  version 0.32.0\n"
    "(Worker pid=3) INFO 11-26 00:16:18 [cpu_worker.py:260] Explicitly set (1.0/15.46) GiB for KV cache on node 0.\n"
    "(EngineCore pid=2) INFO 11-26 00:16:18 [kv_cache_utils.py:2327] CPU KV cache size: 1,048,576 tokens, "
    "Maximum concurrency for 512 tokens per request: 2048.00x\n"
    "INFO:     Application startup complete.\n"
)
CACHE = CacheConfig(
    num_gpu_blocks=8192,
    block_size=128,
    kv_cache_size_tokens=1048576,
    kv_cache_max_concurrency=2048.0,
    gpu_memory_utilization=0.92,
    kv_cache_memory_bytes=2**30,
)


def startup(outcome="ready", log=CPU_LOG, error=None) -> Startup:
    return Startup(outcome, 42.0, parse_log(log), 0 if outcome == "ready" else 1, error, [])


def load(n=4, done=4, preempt=0.0) -> LoadResult:
    return LoadResult(n, done, 384, 128, 3.0, n, 0, preempt, 0.002, [] if done == n else ["HTTP 500: boom"])


def report(plan=CPU_PLAN, st=None, entries=None, ld=None) -> Report:
    st = st or startup()
    started = st.outcome == "ready"
    entries = (
        entries if entries is not None else figure_entries(plan, st.figures, CACHE if started else None, "cpu", started)
    )
    if ld:
        entries = entries + load_entries(plan, ld)
    return Report("/tmp/tiny", "cpu", plan, ["vllm"], st, entries, ld, "0.32.0", "/tmp/x.log")


def test_tolerance():
    t = Tolerance(relative=0.03)
    assert t.allows(100, 103) and t.allows(100, 97) and not t.allows(100, 103.5)
    assert Tolerance(relative=0.25, absolute=0.25).allows(0.1, 0.34)
    assert Tolerance().allows(128, 128) and not Tolerance().allows(128, 16)
    assert str(t) == "3%" and str(Tolerance(0.05, 0.05)) == "5% or ±0.05" and str(Tolerance()) == "exact"
    assert TOLERANCES["kv_cache_tokens"].relative == 0.03


def test_cpu_entries_match_and_skip_what_the_cpu_backend_does_not_print():
    entries = {e.name: e for e in figure_entries(CPU_PLAN, parse_log(CPU_LOG), CACHE, "cpu")}
    assert set(entries) == {
        "weights_gib",
        "kv_cache_gib",
        "kv_cache_tokens",
        "max_concurrency",
        "max_model_len",
        "num_blocks",
        "block_size",
    }
    assert entries["kv_cache_tokens"].observed == 1048576 and entries["kv_cache_tokens"].source == "log"
    assert entries["kv_cache_tokens"].ok and entries["max_concurrency"].ok and entries["num_blocks"].ok
    assert entries["weights_gib"].ok is None and entries["weights_gib"].source == "-"  # not printed on CPU
    assert report().ok and report().problems == []


def test_metrics_fill_in_what_the_log_did_not_print():
    entries = {e.name: e for e in figure_entries(CPU_PLAN, StartupFigures(phase="ready"), CACHE, "cpu")}
    assert entries["kv_cache_tokens"].source == "/metrics" and entries["kv_cache_tokens"].ok
    assert entries["max_concurrency"].observed == 2048.0


def test_required_figures_missing_fail():
    entries = figure_entries(CPU_PLAN, StartupFigures(phase="ready"), None, "cpu")
    r = report(entries=entries)
    assert not r.ok and any(p.startswith("kv_cache_tokens: observed -") for p in r.problems)


def test_a_figure_off_by_more_than_3_percent_fails():
    log = CPU_LOG.replace("1,048,576 tokens", "1,000,000 tokens")
    r = report(st=startup(log=log))
    tokens = next(e for e in r.entries if e.name == "kv_cache_tokens")
    assert tokens.ok is False and tokens.error == 1000000 - 1048576
    assert r.problems == ["kv_cache_tokens: observed 1,000,000, predicted 1,048,576 (tolerance 3%)"]
    assert "FAIL" in text(r) and "NOT VERIFIED" in text(r)


def test_gpu_memory_utilization_is_judged_on_gpus_only():
    gpu_plan = {**CPU_PLAN, "gpu": "H100", "gpu_memory_utilization": 0.9}
    names = [e.name for e in figure_entries(gpu_plan, parse_log(CPU_LOG), CACHE, "cuda")]
    assert "gpu_memory_utilization" in names
    entry = next(
        e for e in figure_entries(gpu_plan, parse_log(CPU_LOG), CACHE, "cuda") if e.name == "gpu_memory_utilization"
    )
    assert entry.ok is False


def test_load_results():
    ok = report(ld=load())
    names = {e.name: e for e in ok.entries}
    assert names["load_completed"].ok and names["load_preemptions"].ok
    assert names["load_peak_kv_cache_usage"].tolerance is None and names["load_peak_kv_cache_usage"].ok is None
    assert names["load_peak_kv_cache_usage"].predicted == pytest.approx(4 * 4 / 8191)
    assert ok.ok
    bad = report(ld=load(done=3))
    assert not bad.ok and any("3 of 4 requests completed (HTTP 500: boom)" in p for p in bad.problems)
    preempted = report(ld=load(preempt=2.0))
    assert any(p.startswith("load_preemptions") for p in preempted.problems)


# TinyLlama-1.1B on the CPU build (issue 14): 47,616 KV tokens = 372 blocks of 128, a 512-token request
# holds 4; vLLM prints 93.00x, but its block pool keeps the null block back: 371 blocks, 92 requests.
TINYLLAMA_CPU = {**CPU_PLAN, "num_blocks": 372, "kv_cache_tokens": 47616, "max_concurrency": 93.0, "max_num_seqs": 256}


def test_usable_concurrency_leaves_out_the_null_block():
    assert usable_concurrency(TINYLLAMA_CPU) == 92
    assert usable_concurrency(CPU_PLAN) == 2047  # 8191 blocks // 4
    # the plan's JSON rounds to 2 decimals: 1,000 blocks of 3 print 333.33x; 999 // 3 = 333 still fit
    assert usable_concurrency({"max_concurrency": 333.33, "num_blocks": 1000}) == 333
    assert usable_concurrency({"max_concurrency": 1.0, "num_blocks": 4}) == 0  # 3 blocks left of the 4 needed
    assert usable_concurrency({"max_concurrency": 3.7}) == 3  # no block count: vLLM's figure, floored
    assert usable_concurrency({"max_concurrency": 0.0, "num_blocks": 0}) == 0


def test_preemption_is_judged_up_to_what_the_null_block_leaves():
    def verdict(n):
        return next(e for e in load_entries(TINYLLAMA_CPU, load(n=n, preempt=1.0)) if e.name == "load_preemptions")

    assert verdict(93).tolerance is None and verdict(93).ok is None  # 93 x 4 > 371: one must wait, as seen
    assert verdict(92).ok is False  # 92 x 4 <= 371: a preemption means the plan's blocks are not there


def test_preemptions_beyond_the_planned_concurrency_are_information():
    plan = {**CPU_PLAN, "max_concurrency": 2.5}
    entry = next(e for e in load_entries(plan, load(preempt=3.0)) if e.name == "load_preemptions")
    assert entry.tolerance is None and entry.ok is None


KV_ERROR_LOG = (
    "(EngineCore pid=2) ERROR 11-26 00:16:18 [core.py:1] ValueError: To serve at least one request with the "
    "model's max seq len (4096), (0.50 GiB KV cache is needed, which is larger than the available KV cache memory "
    "(0.25 GiB). Based on the available memory, the estimated maximum model length is 2048. Try increasing "
    "`gpu_memory_utilization`.\n"
)
MISFIT = {
    **CPU_PLAN,
    "fits": False,
    "max_model_len": 4096,
    "max_model_len_fit": 2048,
    "error": "To serve at least one request with the model's max seq len (4096) ...",
}


def test_predicted_startup_failure_is_a_pass_with_vllms_error():
    st = startup("failed", KV_ERROR_LOG, parse_log(KV_ERROR_LOG).error)
    r = report(plan=MISFIT, st=st)
    assert r.failure_predicted is True and r.ok
    assert [e.name for e in r.entries] == ["max_model_len_fit"]  # what the failed start-up printed
    fit = r.entries[0]
    assert fit.observed == 2048 and fit.ok
    data = r.to_json()
    assert data["startup"]["error"].startswith("ValueError: To serve at least one request")
    assert data["plan_error"] == MISFIT["error"] and data["failure_predicted"] is True
    out = text(r)
    assert "failure predicted" in out and "VERIFIED" in out


def test_unpredicted_startup_failure_fails():
    st = startup("failed", KV_ERROR_LOG, parse_log(KV_ERROR_LOG).error)
    r = report(st=st)
    assert r.failure_predicted is False and not r.ok
    assert r.problems[0].startswith("start-up failed, but the plan predicted it would start: ValueError")
    assert "failure NOT predicted" in text(r)


def test_predicted_failure_but_a_timeout_is_not_a_confirmation():
    r = report(plan=MISFIT, st=startup("timeout", "", "not healthy after 5 s"))
    assert not r.ok and "without vLLM's error" in r.problems[0]


def test_a_start_the_plan_said_would_fail_fails():
    r = report(plan=MISFIT)
    assert not r.ok and "the plan predicted it would refuse" in r.problems[-1]


def test_concurrency_misfit_still_predicts_a_start():
    plan = {**CPU_PLAN, "fits": False, "concurrency": 4096, "error": "4096 concurrent requests ..."}
    assert not predicts_startup_failure(plan)
    assert predicts_startup_failure({**CPU_PLAN, "fits": False, "num_blocks": 0})


def test_report_json_shape():
    data = json.loads(json.dumps(report(ld=load()).to_json()))
    assert data["ok"] is True and data["vllm_version"] == "0.32.0" and data["device"] == "cpu"
    entry = data["entries"][0]
    assert set(entry) >= {"name", "predicted", "observed", "error", "tolerance", "ok"}
    tokens = next(e for e in data["entries"] if e["name"] == "kv_cache_tokens")
    assert tokens["tolerance"] == {"relative": 0.03, "absolute": 0.0} and tokens["error"] == 0
    assert data["load"]["completed"] == 4 and data["startup"]["outcome"] == "ready"
    assert data["failure_predicted"] is None


def test_entry_without_prediction_is_not_judged():
    assert Entry("x", None, 3.0, "log", Tolerance()).ok is None


def test_a_different_model_runner_on_a_gpu_is_a_problem():
    log = CPU_LOG.replace(
        "INFO:     Application",
        "(EngineCore pid=2) INFO 11-26 00:16:00 [gpu_worker.py:378] Using V2 Model Runner\nINFO:     Application",
    )
    st = startup(log=log)
    assert st.figures.model_runner == "v2"
    gpu = Report("/tmp/tiny", "cuda", {**CPU_PLAN, "model_runner": "v1"}, ["vllm"], st, [], None, "0.32.0", None)
    assert any("model runner: the plan assumed v1, the server ran v2" in p for p in gpu.problems)
    assert gpu.to_json()["model_runner"] == {"planned": "v1", "observed": "v2"}
    same = Report("/tmp/tiny", "cuda", {**CPU_PLAN, "model_runner": "v2"}, ["vllm"], st, [], None, "0.32.0", None)
    assert not any("model runner" in p for p in same.problems)
    cpu = Report("/tmp/tiny", "cpu", {**CPU_PLAN, "model_runner": "v1"}, ["vllm"], st, [], None, "0.32.0", None)
    assert not any("model runner" in p for p in cpu.problems)


# ---- speed: measured beside perf's estimate --------------------------------------------------

# measured by planner/verify/load.py on vllm-cpu 0.32.0: the tiny Llama, 4 requests of 384 + 128 tokens at once
CPU_MEASURED = {
    "requests": 4,
    "ttft_ms": {"mean": 71.61, "p50": 85.89, "p90": 86.97, "p99": 87.22},
    "tpot_ms": {"mean": 3.227, "p50": 3.125, "p90": 3.42, "p99": 3.533},
    "itl_ms": {"mean": 3.226, "p50": 3.089, "p90": 3.337, "p99": 4.997},
    "e2e_latency_s": {"mean": 0.4815, "p50": 0.4824, "p90": 0.4832, "p99": 0.4834},
    "output_tokens_per_s": 1058.704,
    "total_tokens_per_s": 4234.815,
    "requests_per_s": 8.271,
    "seconds": 0.484,
}


def test_the_cpu_build_measures_the_loop_without_a_prediction():
    check = perfcheck.compare(None, CPU_MEASURED, "cpu", "perf models GPUs only")
    rows = {r.name: r for r in check.rows}
    assert [r.name for r in check.rows] == [f[0] for f in perfcheck.FIGURES]
    assert rows["ttft_ms"].measured == 71.61 and rows["ttft_ms"].measured_p99 == 87.22
    assert rows["output_tokens_per_s"].measured == 1058.704 and rows["output_tokens_per_s"].measured_p50 is None
    assert all(r.predicted is None and r.error is None and r.within_range is None for r in check.rows)
    assert check.notes == [perfcheck.CPU_NOTE] and "the loop, not the numbers" in perfcheck.CPU_NOTE
    ld = dataclasses.replace(load(), latency=CPU_MEASURED)
    r = dataclasses.replace(report(ld=ld), speed=check)
    j = json.loads(json.dumps(r.to_json()))
    assert j["speed"]["predicted_estimated"] is False and j["load"]["latency"]["ttft_ms"]["mean"] == 71.61
    assert not any(row["estimated"] for row in j["speed"]["rows"])
    t = text(r)
    assert "CPU build: the loop, not the numbers" in t and "71.6" in t and r.ok  # information, never a failure


def gpu_prediction(concurrency: int) -> dict:
    req = Request(load_model("qwen3-8b"), Settings(max_model_len=8192), releases.get("0.18.0"))
    return perfcheck.predict(req, load_catalogue().get("H100"), {"tp": 1, "pp": 1}, 1024, 256, concurrency)


@pytest.mark.parametrize("scale", [1.0, 0.5, 3.0], ids=["as estimated", "twice as fast", "three times slower"])
def test_a_gpu_measurement_beside_the_estimate_and_its_range(scale):
    pred = gpu_prediction(8)
    measured = {
        "ttft_ms": {"mean": pred["ttft_ms"] * scale, "p50": pred["ttft_ms"] * scale, "p99": pred["ttft_ms"] * scale},
        "tpot_ms": {"mean": pred["tpot_ms"] * scale},
        "output_tokens_per_s": pred["output_tokens_per_s"] / scale,
    }
    check = perfcheck.compare(pred, measured, "cuda", None)
    rows = {r.name: r for r in check.rows}
    for name, key in (("ttft_ms", "ttft_ms_range"), ("tpot_ms", "tpot_ms_range")):
        row = rows[name]
        assert row.predicted == pred[name] and row.predicted_range == pred[key]
        assert row.error == pytest.approx(scale - 1)
        lo, hi = pred[key]
        assert row.within_range is (lo <= pred[name] * scale <= hi)
    assert rows["itl_ms"].predicted_range == pred["tpot_ms_range"] and rows["itl_ms"].measured is None
    assert rows["e2e_latency_s"].predicted_range is None
    if scale == 1.0:
        assert all(r.within_range in (True, None) for r in check.rows)
    if scale == 3.0:
        assert rows["tpot_ms"].within_range is False and "OUTSIDE" in perfcheck.table(check)
    j = check.to_json()
    assert j["predicted_estimated"] and j["prediction"]["calibration"]["set"] == pred["calibration"]["set"]
    assert j["prediction"]["concurrency"] == 8 and any("at once" in n for n in j["notes"])
    assert perfcheck.CPU_NOTE not in j["notes"]


def test_a_gpu_load_over_the_kv_pool_has_no_latency_estimate_and_says_why():
    pred = gpu_prediction(4000)
    assert pred["kv_limited"]
    check = perfcheck.compare(pred, CPU_MEASURED, "cuda", None)
    assert {r.name: r.predicted for r in check.rows}["ttft_ms"] is None
    assert any(n.startswith("over KV capacity") for n in check.notes)


def test_the_speed_of_a_finished_load():
    ld = dataclasses.replace(load(n=8, done=8), prompt_tokens=1024, output_tokens=256, latency=CPU_MEASURED)
    req = Request(load_model("qwen3-8b"), Settings(max_model_len=8192), releases.get("0.18.0"))
    h100 = load_catalogue().get("H100")
    plan = {"gpu": h100.name, "tp": 1, "pp": 1}
    check = perfcheck.of_load(ld, plan, "cuda", lambda: (req, h100))
    assert check.prediction == gpu_prediction(8)  # perf's own estimate of the load that ran
    assert {r.name: r.measured for r in check.rows}["ttft_ms"] == 71.61
    other = perfcheck.of_load(ld, {**plan, "gpu": "A100-SXM-80GB"}, "cuda", lambda: (req, h100))
    assert other.prediction is None and any("the plan is for A100-SXM-80GB" in n for n in other.notes)
    cpu = perfcheck.of_load(ld, {"gpu": "cpu"}, "cpu", lambda: pytest.fail("the CPU build asks perf nothing"))
    assert cpu.prediction is None and cpu.notes == [perfcheck.CPU_NOTE]
    assert perfcheck.of_load(None, plan, "cuda", lambda: (req, h100)) is None


def test_vllms_own_figures_beside_the_clients():
    # a second run of the same load on vllm-cpu 0.32.0 (a busier machine), with vLLM's histograms read around it
    measured = {
        "ttft_ms": {"mean": 118.31, "p50": 134.71, "p90": 134.91, "p99": 134.95},
        "tpot_ms": {"mean": 12.208, "p50": 12.107, "p90": 12.39, "p99": 12.499},
        "e2e_latency_s": {"mean": 1.6687, "p50": 1.6723, "p90": 1.6725, "p99": 1.6726},
        "output_tokens_per_s": 306.015,
        "server": {"ttft_ms": 107.294, "tpot_ms": 12.178, "itl_ms": 12.178, "e2e_latency_s": 1.657, "queue_ms": 0.024},
    }
    rows = {r.name: r for r in perfcheck.compare(None, measured, "cpu", None).rows}
    assert (rows["ttft_ms"].measured, rows["ttft_ms"].measured_by_vllm) == (118.31, 107.294)
    assert rows["itl_ms"].measured is None and rows["itl_ms"].measured_by_vllm == 12.178
    assert rows["output_tokens_per_s"].measured_by_vllm is None
    assert "vLLM's own" in perfcheck.table(perfcheck.compare(None, measured, "cpu", None))


@pytest.mark.parametrize(
    "driver, rounds, says",
    [
        ("builtin", 1, "sends its 8 requests at once"),
        ("builtin", 3, "2 rounds after a ramp-up measured"),
        ("vllm bench serve", 1, "sends its 8 requests at once"),
        ("vllm bench serve", 3, "24 requests, every one measured"),
    ],
)
def test_the_notes_say_which_driver_measured_and_how_the_loop_compares(driver, rounds, says):
    pred = gpu_prediction(8)
    check = perfcheck.compare(pred, {"tpot_ms": {"mean": 9.0}, "rounds": rounds, "driver": driver}, "cuda", None)
    assert check.measured_by == driver and check.to_json()["measured_by"] == driver
    assert any(says in n for n in check.notes), check.notes
    assert (perfcheck.BENCH_NOTE in check.notes) is (driver != "builtin")
    assert not any("ramp-up measured" in n for n in check.notes) or driver == "builtin"
