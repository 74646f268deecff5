"""Nemotron-H with MoE blocks (planner/models/families/nemotron_h.py): Nemotron 3 Nano and Super,
BF16 and ModelOpt NVFP4. Every profile inspects and plans at TP 1 and 8, plans an inventory and
emits; published totals split as the checkpoints store them; the Mamba2 state and the attention
page against vLLM's own classes (the CPU build, tests/vllm_oracle.py); bad input as one-line errors
naming the field, exit 2."""

from __future__ import annotations

import copy
import json

import pytest
from launch_helpers import VLLM_ABSENT, vllm_python
from test_families import oracle_rows

from planner import accounting as acc
from planner import kv_bytes as kvb
from planner.api import check_parallel, inspect, kv_dtype_bytes, load_model
from planner.cli import main
from planner.errors import PlannerError
from planner.models import sources
from planner.models import tensors as T
from planner.models.normalize import normalize

NANO, NANO_FP4 = "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-NVFP4"
SUPER = "nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-BF16"
PROFILES = [NANO, NANO_FP4, SUPER]
TPS = (1, 8)


def config_of(model_id: str) -> dict:
    return json.loads((sources.find_bundled(model_id) / "config.json").read_text())


@pytest.mark.parametrize("model_id", PROFILES)
@pytest.mark.parametrize("tp", TPS)
def test_every_rank_keeps_a_mamba_state(model_id, tp):
    """Inspect, plan, inventory and emit of these profiles: test_families.NEW_PROFILES."""
    m = load_model(model_id)
    check_parallel(m.spec, tp, 1)
    assert inspect(m, tp=tp).mamba_state_bytes_per_seq > 0


# ---- published totals ------------------------------------------------------------------------------


def _named(model_id: str) -> dict[str, T.Tensor]:
    return {t.name: t for t in T.from_spec(load_model(model_id).spec)}


def test_router_bias_is_loaded_but_outside_the_bf16_totals():
    # The BF16 totals are the stored tensors less the routers' e_score_correction_bias (23 x 128 for
    # Nano); ModelOpt's NVFP4 export counts them. vLLM loads them in fp32 either way.
    nano, fp4 = inspect(NANO), inspect(NANO_FP4)
    assert fp4.params_total - nano.params_total == 23 * 128
    bias = _named(NANO)["backbone.layers.1.mixer.gate.e_score_correction_bias"]
    assert bias.runtime and acc.tensor_bytes(bias, load_model(NANO).spec, None, 2, 1) == 128 * 4


def test_super_mtp_layer_is_stored_not_loaded():
    r = inspect(SUPER)
    h, latent, e, inter, shared = 4096, 1024, 512, 2688, 5376
    attention = h + 4096 * h + 2 * 256 * h + h * 4096
    moe = h + e * h + 2 * e * inter * latent + 2 * latent * h + 2 * shared * h
    assert r.params_not_loaded == {"mtp": attention + moe + 3 * h + 2 * h * h}


def test_nvfp4_leaves_the_excluded_modules_and_routers_in_bf16():
    spec, named = load_model(NANO_FP4).spec, _named(NANO_FP4)
    q = spec.quant
    assert q.method == "nvfp4" and q.kv_cache_dtype == "fp8"
    assert not acc.is_quantized(named["backbone.layers.4.mixer.in_proj.weight"], q)  # exclude_modules
    assert not acc.is_quantized(named["lm_head.weight"], q)
    assert not acc.is_quantized(named["backbone.layers.1.mixer.gate.weight"], q)  # router: not a quantized linear
    assert acc.is_quantized(named["backbone.layers.0.mixer.in_proj.weight"], q)
    assert acc.is_quantized(named["backbone.layers.1.mixer.experts.up_proj"], q)


# ---- state and page against vLLM's classes ---------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_rows():
    py = vllm_python()
    if py is None:
        pytest.skip(VLLM_ABSENT)
    out = {}
    for tp in TPS:
        out.update({(m, tp): row for m, row in oracle_rows(py, PROFILES, tp).items()})
    return out


@pytest.mark.parametrize("model_id", PROFILES)
@pytest.mark.parametrize("tp", TPS)
def test_state_and_page_match_vllm(vllm_rows, model_id, tp):
    row = vllm_rows[(model_id, tp)]
    assert row is not None and "error" not in row and "error" not in row["mamba"], row
    m = load_model(model_id)
    conv, ssm = kvb.mamba_layer_state_shapes(m.spec, tp)
    # vLLM stores the Mamba2 conv state transposed (kernel - 1, channels): same bytes
    assert sorted(conv) == sorted(row["mamba"]["shapes"][0]) and list(ssm) == row["mamba"]["shapes"][1]
    assert m.spec.mamba.ssm_dtype == row["mamba"]["model_hook_ssm_cache_dtype"]
    state = kvb.mamba_layer_state_bytes(m.spec, 2, 2, tp)
    assert state == row["mamba"]["page_size_bytes"]
    assert inspect(m, tp=tp).mamba_state_bytes_per_seq == m.spec.layer_type_counts()["mamba"] * state
    kv_bytes = kv_dtype_bytes(m.spec.quant.kv_cache_dtype if m.spec.quant else None, m.spec.dtype)
    page = row["block_size"] * kvb.kv_layer_bytes_per_token(m.spec, "full", tp, kv_bytes)
    assert page == row["page_size_bytes_per_layer"]
    assert (m.spec.quant is not None and m.spec.quant.kv_cache_dtype == "fp8") == row["kv_cache_dtype"].startswith(
        "fp8"
    )


# ---- bad input -------------------------------------------------------------------------------------


def _set(key, value):
    return lambda c: c.__setitem__(key, value)


@pytest.mark.parametrize(
    "model_id, edit, field",
    [
        (
            NANO,
            lambda c: c.__setitem__("hybrid_override_pattern", c["hybrid_override_pattern"][:-1]),
            "hybrid_override",
        ),
        (NANO, _set("hybrid_override_pattern", "MEX" * 17 + "M"), "hybrid_override_pattern"),
        (NANO, lambda c: c.pop("n_routed_experts"), "n_routed_experts"),
        (NANO, _set("num_experts_per_tok", 129), "num_experts_per_tok"),
        (NANO, _set("moe_latent_size", 0), "moe_latent_size"),
        (NANO, _set("mamba_ssm_cache_dtype", "fp4"), "mamba_ssm_cache_dtype"),
        (NANO, _set("n_groups", 7), "n_groups"),
        (SUPER, _set("mtp_hybrid_override_pattern", "E*"), "mtp_hybrid_override_pattern"),
        (SUPER, _set("num_nextn_predict_layers", 2), "num_nextn_predict_layers"),
    ],
)
def test_bad_input_is_a_one_line_error_naming_the_field(model_id, edit, field):
    cfg = copy.deepcopy(config_of(model_id))
    edit(cfg)
    with pytest.raises(PlannerError) as err:
        normalize(cfg)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_bad_input_exits_2(tmp_path, capsys):
    cfg = config_of(NANO)
    cfg["hybrid_override_pattern"] += "M"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "hybrid_override_pattern" in err and len(err.splitlines()) == 1


def test_layers_block_type_lists_the_same_blocks():
    # transformers 5 configs list the blocks instead of the pattern string
    cfg = config_of(NANO)
    names = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}
    listed = {**cfg, "layers_block_type": [names[c] for c in cfg.pop("hybrid_override_pattern")]}
    assert normalize(listed).layers == load_model(NANO).spec.layers
