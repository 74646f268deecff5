"""The gated-delta-net prefill tensors that vLLM's profile run leaves out (planner/linear_prefill.py,
vllm#52872): the count of one layer's chunk tensors by hand, the note a plan carries and its verdict
against the 1 - gpu_memory_utilization headroom, and the skipped core read in the installed vLLM."""

from __future__ import annotations

from pathlib import Path

import pytest
from launch_helpers import VLLM_ABSENT, vllm_python

from planner.api import load_model, plan
from planner.linear_prefill import linear_prefill_transient_bytes

NOTE = "linear attention: vLLM's profile run skips the "


def test_one_layers_chunk_tensors_by_hand():
    # Qwen3.6-27B: 16 key heads and 48 value heads of 128, 8,192 tokens on one GPU, bf16
    spec = load_model("Qwen/Qwen3.6-27B").spec
    t, hk, hv, d = 8192, 16, 48, 128
    conv_out = t * (2 * hk * d + hv * d) * 2  # causal conv output
    qkv = conv_out  # q, k, v after the post-conv prep
    gates = t * hv * (4 + 2 + 4)  # g, beta, g's chunk cumsum
    a16 = t * hv * 64 * 2
    states = a16 + 2 * t * hv * d * 2 + (t // 64) * hv * d * d * 2 + t * hv * d * 2  # A, w, u, h, v_new
    assert states > t * hv * 64 * 4 + a16  # the chunk-state phase is the larger one here
    assert linear_prefill_transient_bytes(spec, t, 1, 2) == conv_out + qkv + gates + states


@pytest.mark.parametrize("model", ["Qwen/Qwen3.6-27B", "Qwen/Qwen3-Next-80B-A3B-Thinking"])
def test_it_scales_with_the_chunk_and_splits_over_tp(model):
    spec = load_model(model).spec
    one = linear_prefill_transient_bytes(spec, 4096, 1, 2)
    assert linear_prefill_transient_bytes(spec, 8192, 1, 2) == 2 * one
    assert linear_prefill_transient_bytes(spec, 4096, 2, 2) == one // 2


@pytest.mark.parametrize("model", ["Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct"])
def test_no_figure_without_linear_layers(model):
    assert linear_prefill_transient_bytes(load_model(model).spec, 8192, 1, 2) == 0


def test_a_mamba2_layers_ssd_tensors_by_hand():
    # Nemotron 3 Nano: 64 heads of 64, 8 groups of state 128, chunks of 128, fp32 SSM cache
    spec = load_model("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16").spec
    t, h, p, g, n, c = 8192, 64, 64, 8, 128, 128
    conv_out = t * (h * p + 2 * g * n) * 2
    dt_cumsum = 2 * h * t * 4
    states = (t // c) * h * p * n * (4 + 4)  # fp32, and after the state passing in the fp32 cache dtype
    cb = (t // c) * g * c * c * 4
    assert linear_prefill_transient_bytes(spec, t, 1, 2) == conv_out + dt_cumsum + states + cb
    notes = plan("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", gpu="H200", tp=1, max_model_len=32768).to_json()
    assert any(n.startswith(NOTE + "Mamba2 SSD kernels") for n in notes["notes"])


def test_the_plan_says_where_it_comes_from_and_whether_it_fits():
    roomy = plan("Qwen/Qwen3.6-27B", gpu="H200", tp=1, max_model_len=32768, max_num_batched_tokens=8192)
    note = next(n for n in roomy.to_json()["notes"] if n.startswith(NOTE))
    assert "8,192 tokens holds about 0.83 GiB" in note and "beside the CUDA context" in note
    tight = plan(
        "Qwen/Qwen3.6-27B",
        gpu="H200",
        tp=1,
        max_model_len=32768,
        max_num_batched_tokens=65536,
        gpu_memory_utilization=0.99,
    )
    note = next(n for n in tight.to_json()["notes"] if n.startswith(NOTE))
    assert "may fail with CUDA out of memory" in note and "--max-num-batched-tokens" in note
    assert not any(n.startswith(NOTE) for n in plan("Qwen/Qwen3-8B", gpu="H100").to_json()["notes"])


def test_the_installed_vllm_skips_the_gdn_core_in_its_profile_run():
    py = vllm_python()
    if not py:
        pytest.skip(VLLM_ABSENT)
    site = next(Path(py).parent.parent.glob("lib/python3*/site-packages")) / "vllm"
    gdn = (site / "model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py").read_text()
    assert "``_forward_core`` returns early because\n        ``attn_metadata`` is ``None``" in gdn
    runner = (site / "v1/worker/gpu/model_runner.py").read_text()
    profile = runner[runner.index("def profile_run") :]
    assert "skip_attn=True" in profile[: profile.index("\n    def ", 10)]
    chunk = (site / "third_party/flash_linear_attention/ops/chunk.py").read_text()
    fwd = chunk[chunk.index("def chunk_gated_delta_rule_fwd") :]
    order = [
        "chunk_local_cumsum",
        "chunk_scaled_dot_kkt_fwd",
        "solve_tril",
        "recompute_w_u_fwd",
        "_fwd_h",
        "chunk_fwd_o",
    ]
    assert [fwd.index(x) for x in order] == sorted(fwd.index(x) for x in order)
    assert "output_dtype=torch.float32" in fwd[: fwd.index("solve_tril")]


def test_a_kimi_delta_attention_layers_tensors_by_hand():
    # Kimi-Linear-48B: 32 heads of 128 for q, k and v, each convolved; per-channel gates in fp32
    spec = load_model("moonshotai/Kimi-Linear-48B-A3B-Instruct").spec
    t, h, d = 8192, 32, 128
    conv_out = t * 3 * h * d * 2
    gates = 2 * t * h * d * 4
    aqk = t * h * 64 * 4
    states = aqk + t * h * 4 * d * 2 + (t // 64) * h * d * d * 2  # w, k.g, u, v_new; h
    assert states > 2 * aqk + t * h * 64 * 2
    assert linear_prefill_transient_bytes(spec, t, 1, 2) == conv_out + gates + states


def test_the_v1_graph_estimate_on_gdn_hybrids_is_flagged_not_modelled():
    note = "not modelled: on GDN hybrids"
    v1 = plan("Qwen/Qwen3.6-27B", gpu="H200", vllm_version="0.26.0", max_model_len=32768).to_json()
    assert any(n.startswith(note) and "vllm#50780" in n for n in v1["notes"])
    for kw in ({"vllm_version": "0.23.0"}, {}):  # before the change; the V2 runner (0.29+ default)
        assert not any(
            n.startswith(note)
            for n in plan("Qwen/Qwen3.6-27B", gpu="H200", max_model_len=32768, **kw).to_json()["notes"]
        )
