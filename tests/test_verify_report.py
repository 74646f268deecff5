"""Predicted against observed: tolerances, entries from the log and /metrics, the verdict for start-up
failures (predicted or not) and for the load, and the JSON shape of --report."""

from __future__ import annotations

import json

import pytest

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
CPU_LOG = """\
(APIServer pid=1) INFO 11-26 00:15:40 [api_utils.py:347]  ▄▄ ▄█ █     █     █ ▀▄▀ █  version 0.32.0
(Worker pid=3) INFO 11-26 00:16:18 [cpu_worker.py:260] Explicitly set (1.0/15.46) GiB for KV cache on node 0.
(EngineCore pid=2) INFO 11-26 00:16:18 [kv_cache_utils.py:2327] CPU KV cache size: 1,048,576 tokens, Maximum concurrency for 512 tokens per request: 2048.00x
INFO:     Application startup complete.
"""
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


KV_ERROR_LOG = """\
(EngineCore pid=2) ERROR 11-26 00:16:18 [core.py:1] ValueError: To serve at least one request with the model's max seq len (4096), (0.50 GiB KV cache is needed, which is larger than the available KV cache memory (0.25 GiB). Based on the available memory, the estimated maximum model length is 2048. Try increasing `gpu_memory_utilization`.
"""
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
