"""nemotron-nas / DeciLM (planner/models/families/nemotron_nas.py): Llama-3.3-Nemotron-Super-49B's
per-layer blocks. The profile inspects and plans at TP 1 and 8, plans an inventory and emits; the
KV cache lives only in the attention layers and each MLP has its block's width; bad input is a
one-line error naming the field, exit 2.

vLLM's own classes cannot be asked here: its ModelConfig needs the checkpoint's remote
configuration_decilm.py (trust_remote_code), which is not bundled; the layer count that keeps KV is
checked against vLLM's rule instead (`ModelConfig.get_num_layers_by_block_type`: the blocks whose
attention is not a no-op)."""

from __future__ import annotations

import copy
import json

import pytest

from planner import kv_bytes as kvb
from planner.api import inspect, load_model, plan
from planner.cli import main
from planner.errors import PlannerError
from planner.models import sources
from planner.models import tensors as T
from planner.models.normalize import normalize

SUPER_49B = "nvidia/Llama-3_3-Nemotron-Super-49B-v1"


def config_of(model_id: str) -> dict:
    return json.loads((sources.find_bundled(model_id) / "config.json").read_text())


# inspect, plan at TP 1/8, inventory and emit: test_families.NEW_PROFILES


@pytest.mark.parametrize("tp", [1, 8])
def test_plain_attention_blocks_of_16(tp):
    assert plan(load_model(SUPER_49B), gpu="H100", tp=tp, max_model_len=32768).budget.block_size == 16


@pytest.mark.parametrize("tp", [1, 2, 8])
def test_kv_only_in_the_attention_blocks(tp):
    blocks = config_of(SUPER_49B)["block_configs"]
    with_attention = [b for b in blocks if not b["attention"]["no_op"]]
    kv_heads = {
        config_of(SUPER_49B)["num_attention_heads"] // b["attention"]["n_heads_in_group"] for b in with_attention
    }
    (kv,) = kv_heads
    m = load_model(SUPER_49B)
    assert m.spec.layer_type_counts() == {"full": len(with_attention), "none": len(blocks) - len(with_attention)}
    per_layer = 2 * max(kv // tp, 1) * 128 * 2
    assert inspect(m, tp=tp).kv_bytes_per_token_per_gpu == len(with_attention) * per_layer
    assert kvb.kv_layer_bytes_per_token(m.spec, "full", tp, 2) == per_layer


def test_each_mlp_has_its_block_width():
    blocks = config_of(SUPER_49B)["block_configs"]
    names = {t.name: t for t in T.from_spec(load_model(SUPER_49B).spec)}
    for i, b in enumerate(blocks):
        width = -(-int(2 * b["ffn"]["ffn_mult"] * 8192 / 3) // 256) * 256
        assert names[f"model.layers.{i}.mlp.down_proj.weight"].shape == (8192, width)
        assert (f"model.layers.{i}.self_attn.q_proj.weight" in names) == (not b["attention"]["no_op"])
        assert (f"model.layers.{i}.input_layernorm.weight" in names) == (not b["attention"]["no_op"])


def _block(i, part, key, value):
    return lambda c: c["block_configs"][i][part].__setitem__(key, value)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: c["block_configs"].pop(), "block_configs"),
        (_block(0, "attention", "n_heads_in_group", 7), "n_heads_in_group"),
        (_block(0, "attention", "n_heads_in_group", None), "n_heads_in_group"),
        (_block(0, "attention", "n_heads_in_group", 4), "n_heads_in_group"),
        (_block(1, "attention", "replace_with_linear", True), "replace_with_linear"),
        (_block(2, "ffn", "ffn_mult", -1.0), "ffn_mult"),
        (lambda c: c["block_configs"].__setitem__(3, {"attention": {"no_op": True}}), "block_configs[3]"),
    ],
)
def test_bad_input_is_a_one_line_error_naming_the_field(edit, field):
    cfg = copy.deepcopy(config_of(SUPER_49B))
    edit(cfg)
    with pytest.raises(PlannerError) as err:
        normalize(cfg)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_bad_input_exits_2(tmp_path, capsys):
    cfg = config_of(SUPER_49B)
    cfg["block_configs"] = cfg["block_configs"][:-1]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "block_configs" in err and len(err.splitlines()) == 1
