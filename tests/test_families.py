"""The families registered in planner/models/families/ (one module each): every new bundled profile
inspects, plans at TP 1 and 8 where valid, plans an inventory and emits; published breakdowns;
recurrent state against vLLM's own model classes (the CPU build, tests/vllm_oracle.py); bad input
as one-line errors naming the field.

The published totals themselves are checked for every bundled profile by
test_accounting.py::test_every_bundled_published_count_is_met; the KV geometry of every bundled
profile vLLM accepts by test_vllm_parity.py."""

from __future__ import annotations

import copy
import json
import math
import subprocess
from pathlib import Path

import pytest

from launch_helpers import VLLM_ABSENT, vllm_python
from planner import accounting as acc
from planner.api import check_parallel, inspect, load_model, plan
from planner.cli import main
from planner.errors import PlannerError
from planner.models import families, sources
from planner.models.normalize import normalize

REPO = Path(__file__).resolve().parent.parent
# family -> its bundled profiles
NEW_PROFILES = {
    "qwen3_5": ["Qwen/Qwen3.5-27B", "Qwen/Qwen3.5-35B-A3B", "Qwen/Qwen3.5-122B-A10B", "Qwen/Qwen3.5-397B-A17B"],
}
ALL_NEW = [m for ms in NEW_PROFILES.values() for m in ms]


def config_of(model_id: str) -> dict:
    return json.loads((sources.find_bundled(model_id) / "config.json").read_text())


def test_every_new_profile_is_registered_and_bundled():
    for family, models in NEW_PROFILES.items():
        for model_id in models:
            assert families.find(config_of(model_id)["model_type"]).name == family
            assert load_model(model_id).meta["params_published"], f"{model_id}: no published count"


@pytest.mark.parametrize("model_id", ALL_NEW)
@pytest.mark.parametrize("tp", [1, 8])
def test_inspect_and_plan_at_tp(model_id, tp):
    m = load_model(model_id)
    try:
        check_parallel(m.spec, tp, 1)
    except PlannerError:
        pytest.skip(f"TP {tp} is not valid for {model_id}")
    r = inspect(m, tp=tp)
    assert r.params_checkpoint == r.params_published
    assert r.kv_bytes_per_token_per_gpu > 0 and r.weight_bytes_per_gpu > 0
    p = plan(m, gpu="H200", tp=tp, max_model_len=32768)
    assert p.budget.block_size > 0 and p.serve_command.startswith("vllm serve ")


@pytest.mark.parametrize("model_id", ALL_NEW)
def test_inventory_plan_and_emit(model_id, tmp_path, capsys):
    assert main(["plan", model_id, "--inventory", "2x8xH200", "--max-model-len", "32768", "--json"]) in (0, 1)
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["model"] == model_id for r in rows)
    code = main(["emit", model_id, "--gpu", "H200", "--max-model-len", "32768", "-f", "serve", "--out", str(tmp_path)])
    assert code in (0, 1) and any(tmp_path.iterdir())


# ---- published breakdowns ------------------------------------------------------------------------

def test_qwen3_5_397b_parts_match_the_checkpoint_audit():
    # A public audit of the Hub files (search-index file id 69814713714): vision 456,010,480,
    # MTP 6,595,568,128, text 396,346,350,336 (embedding and head included).
    r = inspect("Qwen/Qwen3.5-397B-A17B")
    assert r.params_breakdown["vision"] == 456_010_480
    assert r.params_not_loaded == {"mtp": 6_595_568_128}
    assert r.params_total - r.params_breakdown["vision"] == 396_346_350_336


# ---- recurrent state against vLLM's classes --------------------------------------------------------

QWEN3_5_TPS = (1, 2, 4)


@pytest.fixture(scope="module")
def vllm_state():
    py = vllm_python()
    if py is None:
        pytest.skip(VLLM_ABSENT)
    dirs = {m: sources.find_bundled(m) for m in NEW_PROFILES["qwen3_5"]}
    out = {}
    for tp in QWEN3_5_TPS:
        proc = subprocess.run([py, str(REPO / "tests" / "vllm_oracle.py"), *map(str, dirs.values()), "--tp", str(tp)],
                              capture_output=True, text=True, timeout=900)
        rows = {str(Path(json.loads(l)["config"])): json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")}
        for m, d in dirs.items():
            out[(m, tp)] = rows.get(str(d))
    return out


_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@pytest.mark.parametrize("model_id", NEW_PROFILES["qwen3_5"])
@pytest.mark.parametrize("tp", QWEN3_5_TPS)
def test_qwen3_5_state_matches_vllm(vllm_state, model_id, tp):
    row = vllm_state[(model_id, tp)]
    assert row is not None and "error" not in row, row
    mamba = row["mamba"]
    assert "error" not in mamba, mamba
    m = load_model(model_id)
    conv, ssm = acc.mamba_layer_state_shapes(m.spec, tp)
    # vLLM stores the GDN conv state transposed (kernel - 1, channels): same bytes
    assert sorted(conv) == sorted(mamba["shapes"][0]) and list(ssm) == mamba["shapes"][1]
    # the SSM dtype is the checkpoint's mamba_ssm_dtype, by the model's own config hook
    assert m.spec.mamba.ssm_dtype == mamba["model_hook_ssm_cache_dtype"]
    expected = math.prod(mamba["shapes"][0]) * 2 + math.prod(mamba["shapes"][1]) * _BYTES[mamba["dtypes"][1]]
    assert acc.mamba_layer_state_bytes(m.spec, 2, 2, tp) == expected == mamba["page_size_bytes"]
    n_linear = m.spec.layer_type_counts()["linear"]
    assert inspect(m, tp=tp).mamba_state_bytes_per_seq == n_linear * expected


# ---- bad input -----------------------------------------------------------------------------------

def _broken(model_id: str, edit) -> dict:
    cfg = copy.deepcopy(config_of(model_id))
    edit(cfg)
    return cfg


@pytest.mark.parametrize("model_id, edit, field", [
    ("Qwen/Qwen3.5-27B", lambda c: c["text_config"]["layer_types"].pop(), "layer_types"),
    ("Qwen/Qwen3.5-27B", lambda c: c["text_config"]["layer_types"].__setitem__(3, "sliding_attention"), "layer_types"),
    ("Qwen/Qwen3.5-35B-A3B", lambda c: c["text_config"].pop("num_experts"), "num_experts"),
    ("Qwen/Qwen3.5-35B-A3B", lambda c: c["text_config"].__setitem__("mamba_ssm_dtype", "fp4"), "mamba_ssm_dtype"),
    ("Qwen/Qwen3.5-35B-A3B", lambda c: c.pop("text_config"), "text_config"),
    ("Qwen/Qwen3.5-35B-A3B", lambda c: c["vision_config"].__setitem__("deepstack_visual_indexes", [99]),
     "deepstack_visual_indexes"),
])
def test_bad_input_is_a_one_line_error_naming_the_field(model_id, edit, field):
    with pytest.raises(PlannerError) as err:
        normalize(_broken(model_id, edit))
    assert field in str(err.value) and "\n" not in str(err.value)


def test_bad_input_exits_2(tmp_path, capsys):
    cfg = _broken("Qwen/Qwen3.5-27B", lambda c: c["text_config"]["layer_types"].pop())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "layer_types" in err and len(err.splitlines()) == 1
