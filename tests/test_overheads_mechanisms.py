"""The measured budget terms as mechanisms (issue #11): CUDA-graph capture sizes as vLLM builds
them, the graph estimate's dependence on them, non-torch memory by interconnect class, the
per-token forward term and the cold-start extra. Figures checked against the start-up logs that
print them (benchmarks/data/calibration/vllm-startup-recent.jsonl and the public logs)."""

from __future__ import annotations

import pytest

import planner.overheads as oh
from planner.errors import PlannerError
from planner.hardware import INTERCONNECT_CLASSES, load_catalogue

GIB = 2**30


@pytest.mark.parametrize(
    "seqs, mnbt, pw, full, largest",
    [
        (256, 2048, 51, 35, 512),  # "PIECEWISE=51 (largest=512), FULL=35 (largest=256)": A5000 0.21, A100-40GB 0.19.1
        (1024, 8192, 51, 51, 512),  # the H100 calibration set: 51 and 51 in every row of its results table
        (4, 8192, 4, 3, 8),  # max_num_seqs 4: sizes up to 2 x 4
        (6, 8192, 4, 3, 8),
    ],
)
def test_capture_sizes_match_the_logs(seqs, mnbt, pw, full, largest) -> None:
    g = oh.GraphShape.of(seqs, mnbt)
    assert (len(g.piecewise_sizes), len(g.full_sizes), max(g.piecewise_sizes)) == (pw, full, largest)
    assert max(g.full_sizes) <= seqs


def test_capture_sizes_capped_by_batched_tokens() -> None:
    g = oh.GraphShape.of(1024, 256)
    assert max(g.piecewise_sizes) == 256


def test_capture_max_size_by_release_and_family() -> None:
    assert oh.capture_max_size("0.21.0", "blackwell") == 512
    assert oh.capture_max_size("0.30.0", "blackwell") == 1024
    assert oh.capture_max_size("0.30.0", "hopper") == 512


def test_graph_estimate_is_unchanged_on_the_calibration_envelope() -> None:
    c = oh.coefficients("0.19.0")
    env = oh.GraphShape.of(1024, 8192)
    assert oh.cudagraph_estimate_bytes(36, c, env) == oh.cudagraph_estimate_bytes(36, c)


def test_graph_estimate_shrinks_with_fewer_full_graphs() -> None:
    # 0.21.0, RTX A5000, Qwen3-8B (36 layers), 256 sequences: 0.52 GiB printed; the envelope line says 0.89
    c = oh.coefficients("0.21.0")
    est = oh.cudagraph_estimate_bytes(36, c, oh.GraphShape.of(256, 2048)) / GIB
    assert est < oh.cudagraph_estimate_bytes(36, c) / GIB - 0.2
    assert abs(est - 0.52) < 0.1


@pytest.mark.parametrize(
    "layers, seqs, mnbt, printed",
    [
        (36, 1024, 8192, 0.93),  # GH200, Qwen3-8B
        (64, 1024, 8192, 2.19),  # GH200, Qwen3-32B
        (36, 256, 2048, 0.43),  # A10, Qwen3-8B
        (48, 256, 2048, 0.61),  # 2x RTX A6000, Qwen3-30B-A3B at TP 2
    ],
)
def test_v2_graph_estimate_from_029_follows_the_0_30_logs(layers, seqs, mnbt, printed) -> None:
    c = oh.coefficients("0.30.0", "v2")
    est = oh.cudagraph_estimate_bytes(layers, c, oh.GraphShape.of(seqs, mnbt)) / GIB
    assert abs(est - printed) < 0.25


def test_non_torch_by_interconnect() -> None:
    c = oh.coefficients("0.19.0")
    nvls = oh.non_torch_bytes(2, 1, c, "nvls") / GIB
    pcie = oh.non_torch_bytes(2, 1, c, "pcie") / GIB
    assert nvls == pytest.approx(2.07, abs=0.01)  # the H100 set's TP 2 figure
    assert pcie < 0.6 < nvls  # NCCL buffers only: no NVLS
    assert oh.non_torch_bytes(2, 1, c) == oh.non_torch_bytes(2, 1, c, "nvls")  # default: the envelope's class
    assert oh.non_torch_bytes(1, 1, c, "pcie") == oh.non_torch_bytes(1, 1, c, "nvls")  # TP 1: no communicator


def test_every_interconnect_class_is_priced_and_unknown_is_an_error() -> None:
    for version in ("0.10.0", "0.19.0", "0.26.0", "0.30.0", "0.33.0"):
        assert set(oh.interconnects(oh.coefficients(version))) == set(INTERCONNECT_CLASSES)
    with pytest.raises(PlannerError, match="unknown interconnect 'infiniband'"):
        oh.non_torch_bytes(2, 1, oh.coefficients("0.19.0"), "infiniband")


def test_catalogue_interconnect_classes() -> None:
    cat = load_catalogue()
    assert cat.get("H100-SXM-80GB").interconnect_class == "nvls"
    assert cat.get("A100-80GB-SXM").interconnect_class == "nvlink"  # NVSwitch gen 2: no NVLS
    assert cat.get("RTX-4090").interconnect_class == "pcie"
    assert cat.get("L4").interconnect_class == "pcie"


def test_forward_term_per_release_family() -> None:
    f8 = oh.Features(0, 0, 0, 0, 0, tokens=8192)
    f2 = oh.Features(0, 0, 0, 0, 0, tokens=2048)
    # the forward pass's transients beyond 2 hidden copies and the MLP grow with the batched tokens: to
    # 0.26 the H100 set's 0.294 GiB at 8192 tokens (its only count), read per token; the 2048-token
    # start-ups of 0.11 and 0.23 (Qwen2.5-VL on L4 and A100) are the vision encoder's pass, which the
    # decoder's term does not enter, and the 2048-token 0.19.1 A100 and 0.21 A5000 ones are sampler-bound
    c = oh.coefficients("0.19.0")
    assert oh.activation_peak_bytes(f8, c) / GIB == pytest.approx(0.2938, abs=1e-3)
    assert oh.activation_peak_bytes(f2, c) == pytest.approx(oh.activation_peak_bytes(f8, c) / 4, rel=0.01)
    # from 0.27 (everything allocated during profiling is charged) the 0.30 start-ups at 2048 (L4, A10)
    # and 8192 (GH200) tokens measure it: per token, no constant part
    c = oh.coefficients("0.30.0", "v2")
    assert oh.activation_peak_bytes(f2, c) == pytest.approx(oh.activation_peak_bytes(f8, c) / 4, rel=0.01)


def test_cold_start_extra_about_one_gib_on_small_cards() -> None:
    c = oh.coefficients("0.30.0", "v2")
    small = oh.cold_start_extra_bytes(2048, c) / GIB  # L4/A10: 0.8-1.0 GiB less KV cold
    large = oh.cold_start_extra_bytes(8192, c) / GIB  # GH200: 1.5-1.6 GiB
    assert 0.6 < small < 1.2 and 1.2 < large < 2.0


# ---- the fused-MoE workspace by the MoE kernels vLLM selects for the checkpoint ----------------


def _ct_mxfp4_qwen3_moe(tmp_path) -> str:
    """Qwen3-30B-A3B's config with a compressed-tensors MXFP4 quantization_config (the format
    llm-compressor writes), as a local checkpoint folder."""
    import json

    from planner.paths import profiles_dir

    cfg = json.loads((profiles_dir() / "models/Qwen/Qwen3-30B-A3B/config.json").read_text())
    weights = {"num_bits": 4, "type": "float", "strategy": "group", "group_size": 32, "symmetric": True}
    cfg["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": "mxfp4-pack-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "format": "mxfp4-pack-quantized"}},
        "ignore": ["lm_head", "re:.*self_attn.*", "re:.*mlp.gate$"],
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return str(tmp_path)


@pytest.mark.parametrize(
    "model, has_workspace",
    [
        ("openai/gpt-oss-120b", False),  # quant_method mxfp4: the OAI Triton kernels, no caches
        ("moonshotai/Kimi-K3", False),  # compressed-tensors MXFP4 that vLLM's K3 config hook maps to mxfp4
        ("ct-mxfp4", True),  # compressed-tensors MXFP4 otherwise: Marlin / CUTLASS, M x top-k caches
        ("Qwen/Qwen3-30B-A3B", True),  # bf16: the Triton fused-MoE caches
        ("Qwen/Qwen3-30B-A3B-FP8", True),
    ],
)
def test_the_moe_workspace_follows_the_kernels_of_the_checkpoint(model, has_workspace, tmp_path) -> None:
    from planner.api import load_model

    spec = load_model(_ct_mxfp4_qwen3_moe(tmp_path) if model == "ct-mxfp4" else model).spec
    if model == "ct-mxfp4":
        assert (spec.quant.method, spec.quant.vllm_name) == ("mxfp4", "compressed-tensors")
    shape = oh.ProfileShape.of(8192, 1024, 8, 2, True)
    ws = oh.features(spec, shape).moe_workspace_bytes
    m = spec.moe
    n = m.expert_intermediate_size // 8
    assert ws == (8192 * m.experts_per_token * (2 * n + spec.hidden_size) * 2 if has_workspace else 0)


def test_the_moe_kernel_choice_is_what_the_installed_vllm_selects() -> None:
    """Read in the installed vLLM's source (the CUDA kernels do not import in the CPU build): a
    compressed-tensors MXFP4 MoE defaults to Marlin and otherwise takes CUTLASS, both with M x top-k
    workspaces; `quant_method: mxfp4` checkpoints try the OAI Triton kernels before Marlin."""
    from pathlib import Path

    from launch_helpers import VLLM_ABSENT, vllm_python

    py = vllm_python()
    if not py:
        pytest.skip(VLLM_ABSENT)
    site = next(Path(py).parent.parent.glob("lib/python3*/site-packages")) / "vllm/model_executor/layers"
    ct = (
        site / "quantization/compressed_tensors/compressed_tensors_moe/compressed_tensors_moe_w4a4_mxfp4.py"
    ).read_text()
    assert "self.mxfp4_backend = Mxfp4MoeBackend.MARLIN" in ct and "CutlassExpertsMxfp4" in ct
    oracle = (site / "fused_moe/oracle/mxfp4.py").read_text()
    gpt_oss = oracle[oracle.index("def _get_priority_backends_for_gpt_oss") :]
    gpt_oss = gpt_oss[: gpt_oss.index("return ")]
    assert gpt_oss.index("Mxfp4MoeBackend.TRITON,") < gpt_oss.index("Mxfp4MoeBackend.MARLIN,")
    cutlass = (site / "fused_moe/experts/cutlass_moe.py").read_text()
    assert "workspace1 = (M * topk, max(N, K))" in cutlass
    marlin = (site / "fused_moe/experts/marlin_moe.py").read_text()
    assert "(M * num_topk, w13_num_shards * N)" in marlin and "(M * num_topk, N)" in marlin
