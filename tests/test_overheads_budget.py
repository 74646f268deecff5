"""The plan's measured terms end to end (issue #11): interconnect, capture sizes, the cold-start
figures and the stated range in `--json`."""

from __future__ import annotations

import pytest

from planner import api
from planner.errors import PlannerError


def _b(gpu: str, version: str = "0.30.0", **kw):
    return api.plan(
        "Qwen/Qwen3-8B", gpu=gpu, vllm_version=version, max_model_len=4096, gpu_memory_utilization=0.9, **kw
    ).budget


def test_json_has_cold_and_ranges() -> None:
    j = _b("L4").to_json()
    for key in (
        "kv_cache_gib_cold",
        "kv_cache_tokens_cold",
        "kv_cache_gib_range",
        "kv_cache_tokens_range",
        "max_concurrency_range",
    ):
        assert key in j
    lo, hi = j["kv_cache_gib_range"]
    assert lo < j["kv_cache_gib"] < hi
    assert j["kv_cache_tokens_range"][0] <= j["kv_cache_tokens"] <= j["kv_cache_tokens_range"][1]
    assert j["max_concurrency_range"][0] <= j["max_concurrency"] <= j["max_concurrency_range"][1]
    # a first boot on an empty compile cache: about 1 GiB less on a 24 GB card (L4 Qwen3-8B: 2.72 vs 3.71)
    assert 0.6 < j["kv_cache_gib"] - j["kv_cache_gib_cold"] < 1.3
    assert j["kv_cache_tokens_cold"] < j["kv_cache_tokens"]
    assert any("empty torch.compile cache" in n for n in j["notes"])


def test_l4_replay_is_close_to_the_log() -> None:
    # vLLM 0.30.0 on an L4, Qwen3-8B, --max-model-len 4096 --gpu-memory-utilization 0.9 (Glyd records):
    # warm 3.71 GiB / 27,024 tokens, cold 2.72 GiB / 19,760 tokens
    b = _b("L4")
    assert abs(b.kv_cache_gib - 3.71) / 3.71 < 0.05
    assert abs(b.kv_cache_tokens_cold - 19760) / 19760 < 0.06


def test_pinned_pool_is_exact() -> None:
    j = _b("L4", kv_cache_memory_bytes=2 * 2**30).to_json()
    assert j["kv_cache_gib_range"] == [j["kv_cache_gib"]] * 2 == [2.0, 2.0]
    assert j["kv_cache_gib_cold"] == j["kv_cache_gib"]


def test_eager_has_no_cold_penalty() -> None:
    b = _b("L4", enforce_eager=True)
    assert b.kv_cache_gib_cold == b.kv_cache_gib


def test_interconnect_sets_the_tp_buffers() -> None:
    h100 = api.plan("Qwen/Qwen3-8B", gpu="H100", vllm_version="0.19.0", tp=2).budget
    pcie = api.plan("Qwen/Qwen3-8B", gpu="H100", vllm_version="0.19.0", tp=2, interconnect="pcie").budget
    assert h100.non_torch_gib == pytest.approx(2.07, abs=0.01)  # the H100 set's TP 2 figure (NVSwitch: NVLS)
    assert pcie.non_torch_gib < 0.5 and pcie.kv_cache_gib > h100.kv_cache_gib
    with pytest.raises(PlannerError, match="unknown interconnect"):
        api.plan("Qwen/Qwen3-8B", gpu="H100", vllm_version="0.19.0", tp=2, interconnect="ethernet")


def test_fewer_sequences_capture_fewer_graphs() -> None:
    many = _b("H100", max_num_seqs=1024).cudagraph_gib
    few = _b("H100", max_num_seqs=256).cudagraph_gib
    assert few < many


def test_outside_the_envelope_widens_the_range() -> None:
    seen = _b("L4")
    unseen = _b("RTX-4090")  # no start-up of a 4090 in the 0.27+ data
    w = lambda b: b.kv_cache_gib_range[1] - b.kv_cache_gib_range[0]  # noqa: E731
    assert w(unseen) > 1.5 * w(seen)
    assert any("KV range widened" in n for n in unseen.notes)
    assert not any("KV range widened" in n for n in seen.notes)


def test_cli_interconnect(capsys) -> None:
    import json

    from planner.cli import main

    code = main(
        [
            "plan",
            "qwen3-8b",
            "--gpu",
            "H100",
            "--tp",
            "2",
            "--vllm-version",
            "0.19.0",
            "--interconnect",
            "pcie",
            "--json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["non_torch_gib"] < 0.5
    assert main(["plan", "qwen3-8b", "--inventory", "1x8xH100", "--interconnect", "pcie"]) == 2
    assert "--interconnect has no effect with --inventory" in capsys.readouterr().err
    assert main(["plan", "qwen3-8b", "--gpu", "H100", "--interconnect", "infiniband"]) == 2


def test_cli_default_release_follows_the_installed_vllm(monkeypatch, capsys) -> None:
    import importlib.metadata
    import json

    from planner.cli import main

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.30.0+cu130" if name == "vllm" else real(name))
    assert main(["plan", "qwen3-8b", "--gpu", "L4", "--max-model-len", "4096", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["vllm_version"] == "0.30.0"
    assert "installed vLLM 0.30.0+cu130" in err
