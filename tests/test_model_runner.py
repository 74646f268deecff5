"""Which model runner each vLLM release starts (config/vllm.py `_is_default_v2_model_runner_model`, read
release by release), and what the choice does to the budget."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from planner import overheads, releases
from planner.api import load_model
from planner.budget import Settings, Target, compute
from planner.errors import PlannerError
from planner.inspection import inspect
from planner.model_runner import RunnerTraits, default_runner, resolve, traits

DENSE = RunnerTraits("LlamaForCausalLM", is_moe=False, is_hybrid=False, attention_free=False, quantized=False)
QWEN3 = RunnerTraits("Qwen3ForCausalLM", is_moe=False, is_hybrid=False, attention_free=False, quantized=False)
QWEN3_FP8 = RunnerTraits("Qwen3ForCausalLM", is_moe=False, is_hybrid=False, attention_free=False, quantized=True)
PHI3 = RunnerTraits("Phi3ForCausalLM", is_moe=False, is_hybrid=False, attention_free=False, quantized=False)
QWEN3_MOE = RunnerTraits("Qwen3MoeForCausalLM", is_moe=True, is_hybrid=False, attention_free=False, quantized=False)
DSV2 = RunnerTraits("DeepseekV2ForCausalLM", is_moe=True, is_hybrid=False, attention_free=False, quantized=False)
NEMOTRON_H = RunnerTraits("NemotronHForCausalLM", is_moe=False, is_hybrid=True, attention_free=False, quantized=False)
MAMBA = RunnerTraits("MambaForCausalLM", is_moe=False, is_hybrid=False, attention_free=True, quantized=False)

# release -> runner for each model above, read off each release's config/vllm.py
TABLE = {
    #          DENSE QWEN3 QWEN3_FP8 PHI3 QWEN3_MOE DSV2 NEMOTRON_H MAMBA
    "0.19.0": "v1 v1 v1 v1 v1 v1 v1 v1",
    "0.21.0": "v1 v1 v1 v1 v1 v1 v1 v1",
    "0.22.0": "v1 v2 v1 v1 v1 v1 v1 v1",  # Qwen3 only, dense, unquantized
    "0.23.0": "v2 v2 v1 v1 v1 v1 v1 v1",  # + Llama, Mistral
    "0.24.0": "v2 v2 v2 v1 v1 v2 v1 v1",  # the list alone decides
    "0.25.0": "v2 v2 v2 v2 v1 v2 v1 v1",  # every dense non-hybrid model, listed MoE
    "0.26.0": "v2 v2 v2 v2 v1 v2 v1 v1",
    "0.27.0": "v2 v2 v2 v2 v1 v2 v1 v1",  # hybrids only when listed (none here)
    "0.29.0": "v2 v2 v2 v2 v2 v2 v2 v2",  # everything
    "0.33.0": "v2 v2 v2 v2 v2 v2 v2 v2",
}
MODELS = (DENSE, QWEN3, QWEN3_FP8, PHI3, QWEN3_MOE, DSV2, NEMOTRON_H, MAMBA)


@pytest.mark.parametrize("version", sorted(TABLE))
def test_default_runner_by_release(version: str) -> None:
    rel = releases.get(version)
    assert [default_runner(rel, t) for t in MODELS] == TABLE[version].split()


def test_cpu_backend_and_explicit_choice() -> None:
    rel = releases.get("0.26.0")
    assert default_runner(rel, QWEN3, device="cpu") == "v1"
    assert resolve(rel, QWEN3, "v1") == "v1"  # VLLM_USE_V2_MODEL_RUNNER=0 wins
    assert resolve(rel, QWEN3_MOE, "v2") == "v2"
    assert resolve(releases.get("0.11.0"), QWEN3, "v2") == "v1"  # the variable did not exist yet


@pytest.mark.parametrize(
    "model, expected",
    [
        ("Qwen/Qwen3-8B", RunnerTraits("Qwen3ForCausalLM", False, False, False, False)),
        ("Qwen/Qwen3-30B-A3B-FP8", RunnerTraits("Qwen3MoeForCausalLM", True, False, False, True)),
        ("nvidia/Nemotron-H-56B-Base-8K", RunnerTraits("NemotronHForCausalLM", False, True, False, False)),
        ("Qwen/Qwen3-Next-80B-A3B-Thinking", RunnerTraits("Qwen3NextForCausalLM", True, True, False, False)),
    ],
)
def test_traits_from_real_configs(model: str, expected: RunnerTraits) -> None:
    assert traits(load_model(model).spec) == expected


H200 = Target("H200", int(139.8 * 2**30), compute_capability="9.0")


def _budget(version: str, runner: str | None = None, **kw):
    model = load_model("Qwen/Qwen3-8B")
    return compute(model, inspect(model), H200, releases.get(version), Settings(model_runner=runner, **kw))


def test_v2_runner_subtracts_no_cudagraph_estimate_before_029() -> None:
    v2, v1 = _budget("0.26.0"), _budget("0.26.0", "v1")
    assert (v2.model_runner, v1.model_runner) == ("v2", "v1")
    assert v2.cudagraph_gib == 0 and v1.cudagraph_gib > 0
    assert v2.activation_gib < v1.activation_gib  # the V2 sampler keeps fewer logits copies
    assert _budget("0.29.0").cudagraph_gib > 0
    assert _budget("0.26.0", "v1", enforce_eager=True).cudagraph_gib == 0
    assert _budget("0.29.0", enforce_eager=True).cudagraph_gib == 0


def test_v2_runner_buffers_are_charged_from_027() -> None:
    # vLLM's V2 runner (v1/worker/gpu/, read in the 0.32.0 wheel), for 1,024 sequences of Qwen3's
    # 151,936-token vocabulary: sample/penalties.py output_bin_counts int32 [1024, 151936] =
    # 622,329,856 B, prompt_bin_mask int32 [1024, cdiv(151936, 32) = 4748] = 19,447,808 B, and
    # structured_outputs.py's int32 [1024, 4748] bitmask = 19,447,808 B: 661,225,472 B = 0.616 GiB
    assert overheads.v2_runner_buffer_bytes(1024, 151936) == 661_225_472
    assert _budget("0.26.0").runner_buffers_gib == 0
    assert _budget("0.27.0").runner_buffers_gib == 0.62
    assert _budget("0.27.0", "v1").runner_buffers_gib == 0


def test_overhead_overlays_by_runner() -> None:
    assert overheads.coefficients("0.26.0", "v2").sampler_logits == 2.0
    assert overheads.coefficients("0.25.0", "v2").sampler_logits == 3.0  # one more fp32 copy before 0.26
    assert overheads.coefficients("0.26.0", "v1").sampler_logits == overheads.coefficients("0.19.0").sampler_logits
    assert overheads.coefficients("0.26.0", "v1").validated == ("0.26.0",)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "planner", *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def test_env_var_reaches_plan_and_serve_command() -> None:
    run = _cli(
        "plan",
        "Qwen/Qwen3-8B",
        "--gpu",
        "H200",
        "--vllm-version",
        "0.26.0",
        "--json",
        env={"VLLM_USE_V2_MODEL_RUNNER": "0"},
    )
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert plan["model_runner"] == "v1"
    assert plan["vllm_serve_command"].startswith("VLLM_USE_V2_MODEL_RUNNER=0 vllm serve ")


def test_env_var_that_is_not_an_integer_is_a_one_line_error() -> None:
    run = _cli("plan", "Qwen/Qwen3-8B", "--gpu", "H200", env={"VLLM_USE_V2_MODEL_RUNNER": "yes"})
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "VLLM_USE_V2_MODEL_RUNNER" in run.stderr and "Traceback" not in run.stderr


def test_memory_outside_the_budget_is_named() -> None:
    def note(version: str, **kw) -> str:
        return " ".join(n for n in _budget(version, **kw).notes if n.startswith("V2 model runner"))

    assert "sampler buffers (0.62 GiB)" in note("0.26.0") and "CUDA graphs" in note("0.26.0")
    assert "sampler buffers" not in note("0.27.0") and "CUDA graphs" in note("0.27.0")
    assert note("0.29.0") == "" and " ".join(_budget("0.26.0", "v1").notes).find("V2 model runner") == -1
    assert "CUDA graphs" not in note("0.26.0", enforce_eager=True)


def test_v2_sampler_buffers_only_on_the_last_pipeline_stage():
    model = load_model("Qwen/Qwen3-8B")
    b = compute(model, inspect(model, pp=2), H200, releases.get("0.27.0"), Settings(pp=2))
    assert [st.runner_buffers_bytes > 0 for st in b.stages] == [False, True]


def test_inflight_batches_follow_the_runner():
    """VllmConfig.max_concurrent_batches with async scheduling: PP + 1 on V2, 2 on V1 without PP, else PP."""
    from planner.budget import inflight_tokens

    rel = releases.get("0.29.0")
    assert [inflight_tokens(rel, 100, pp, "cuda", r) for pp, r in [(1, "v1"), (1, "v2"), (2, "v1"), (2, "v2")]] == [
        200,
        200,
        200,
        300,
    ]
    assert inflight_tokens(rel, 100, 2, "cpu", "v2") == 200  # the CPU backend turns async scheduling off


def test_v2_profile_run_skips_the_vision_encoder_before_027():
    model = load_model("google/gemma-3-12b-it")
    act = {
        v: compute(model, inspect(model), H200, releases.get(v), Settings()).activation_gib
        for v in ("0.26.0", "0.27.0")
    }
    v1 = compute(model, inspect(model), H200, releases.get("0.26.0"), Settings(model_runner="v1")).activation_gib
    assert act["0.26.0"] < act["0.27.0"] and act["0.26.0"] < v1


@pytest.mark.parametrize("version,refused", [("0.19.0", False), ("0.20.0", True), ("0.22.1", True), ("0.23.0", False)])
def test_explicit_v2_runner_with_a_hybrid_model_is_refused_where_vllm_refuses_it(version, refused):
    # config/vllm.py _validate_v2_model_runner, 0.20-0.22: "does not yet support: hybrid/mamba models"
    t = traits(load_model("Qwen/Qwen3-Next-80B-A3B-Thinking").spec)
    rel = releases.get(version)
    if refused:
        with pytest.raises(PlannerError, match="refuses VLLM_USE_V2_MODEL_RUNNER=1.*set it to 0"):
            resolve(rel, t, "v2")
    else:
        assert resolve(rel, t, "v2") == "v2"
    assert resolve(rel, t, "v1") == "v1"
    assert resolve(rel, traits(load_model("Qwen/Qwen3-8B").spec), "v2") == "v2"


@pytest.mark.parametrize("version,refused", [("0.19.0", False), ("0.23.0", True), ("0.24.0", True), ("0.25.0", False)])
def test_explicit_v2_runner_with_align_prefix_caching_is_refused_in_0_21_to_0_24(version, refused):
    # config/vllm.py 0.21-0.24: assert not VLLM_USE_V2_MODEL_RUNNER for mamba_cache_mode 'align'
    # (0.20-0.22 refuse any hybrid before that)
    m = load_model("Qwen/Qwen3-Next-80B-A3B-Thinking")
    insp = inspect(m, tp=4)
    target = Target("H100", 80 * 2**30, compute_capability="9.0")
    rel = releases.get(version)
    run = lambda: compute(m, insp, target, rel, Settings(tp=4, model_runner="v2", enable_prefix_caching=True))  # noqa: E731
    if refused:
        with pytest.raises(PlannerError, match="mamba_cache_mode='align'"):
            run()
    else:
        run()
    compute(m, insp, target, rel, Settings(tp=4, model_runner="v2", enable_prefix_caching=False))
