"""Expert parallelism as vLLM 0.32 does it: --enable-expert-parallel places whole experts over the
TP x DP ranks (fused_moe/expert_map_manager.py determine_expert_map: E // EP each, the first E % EP
ranks one more), and it ignores a config's own `ep_size` (DeepSeek's modeling code: n_routed_experts
// ep_size per rank). Bad input: a config whose ep_size does not divide its experts; an explicit
--expert-parallel over more GPUs than experts (an uneven split is counted: tests/test_uneven_expert_parallel.py)."""

from __future__ import annotations

import copy
import json

import pytest
from launch_helpers import deployment

from planner.cli import main
from planner.errors import PlannerError
from planner.models import sources
from planner.models.normalize import normalize

# every bundled config that carries ep_size (DeepSeek, Kimi, GLM-5 families)
EP_CONFIGS = sorted(
    m for m in sources.bundled_ids() if "ep_size" in json.loads((sources.find_bundled(m) / "config.json").read_text())
)


def _config(model_id: str) -> dict:
    return json.loads((sources.find_bundled(model_id) / "config.json").read_text())


def _text(cfg: dict) -> dict:
    return cfg["text_config"] if "ep_size" not in cfg else cfg


def test_bundled_ep_sizes_divide_their_experts():
    assert EP_CONFIGS
    for m in EP_CONFIGS:
        t = _text(_config(m))
        assert t["n_routed_experts"] % t["ep_size"] == 0, m


@pytest.mark.parametrize("model_id", EP_CONFIGS)
@pytest.mark.parametrize("ep", [3, 0, "8"])
def test_ep_size_that_contradicts_the_experts_is_a_one_line_error(model_id, ep, tmp_path, capsys):
    cfg = copy.deepcopy(_config(model_id))
    t = _text(cfg)
    if isinstance(ep, int) and ep and t["n_routed_experts"] % ep == 0:
        pytest.skip(f"{ep} divides {t['n_routed_experts']}")
    t["ep_size"] = ep
    with pytest.raises(PlannerError, match="ep_size") as err:
        normalize(cfg)
    assert "n_routed_experts" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["inspect", str(tmp_path)]) == 2
    out = capsys.readouterr().err.strip()
    assert "ep_size" in out and len(out.splitlines()) == 1


def test_a_dividing_ep_size_plans_as_before():
    cfg = copy.deepcopy(_config("deepseek-ai/DeepSeek-V3"))
    base = normalize(cfg)
    cfg["ep_size"] = 8  # vLLM ignores the field: same model
    assert normalize(cfg) == base


@pytest.mark.parametrize(
    "args, even",
    [
        (
            ("mistralai/Mixtral-8x7B-Instruct-v0.1", "--gpu", "H100", "--tp", "16", "--gpus-per-node", "16"),
            False,
        ),  # 8 experts
        (("mistralai/Mixtral-8x7B-Instruct-v0.1", "--gpu", "H100", "--tp", "8"), True),
        (("Qwen/Qwen3-30B-A3B", "--gpu", "H100", "--tp", "4"), True),
    ],
)
def test_explicit_expert_parallel_refuses_an_uneven_split(args, even):
    if even:
        assert deployment(*args, "--max-model-len", "8192", "--expert-parallel").budget.tp > 1
        return
    with pytest.raises(PlannerError, match="fewer than its GPUs") as err:
        deployment(*args, "--max-model-len", "8192", "--expert-parallel")
    assert "\n" not in str(err.value)
    # the default leaves EP off where whole experts do not split evenly
    assert deployment(*args, "--max-model-len", "8192").budget.tp == 16


@pytest.mark.parametrize(
    "model_id, tp, flag, code, enabled",
    [
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 16, "--expert-parallel", 2, None),  # 8 experts over 16 ranks
        ("Qwen/Qwen3-30B-A3B", 4, "--expert-parallel", 0, True),  # 128 experts, 32 a rank
        ("Qwen/Qwen3-30B-A3B", 4, "--no-expert-parallel", 0, False),  # asked off: the command leaves it off
        ("Qwen/Qwen3-30B-A3B", 4, None, 0, True),  # the default: on where the experts split evenly
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 16, None, 0, False),
    ],
)
def test_plan_carries_the_expert_parallel_request(model_id, tp, flag, code, enabled, capsys):
    # `plan` printed its serve command with the default rule whatever was asked; now as `emit` does
    args = ["plan", model_id, "--gpu", "H100", "--tp", str(tp), "--gpus-per-node", "16", "--max-model-len", "8192"]
    assert main([*args, "--json"] + ([flag] if flag else [])) == code
    out, err = capsys.readouterr()
    if code == 2:
        assert "fewer than its GPUs" in err and "--no-expert-parallel" in err and len(err.strip().splitlines()) == 1
        return
    assert ("--enable-expert-parallel" in json.loads(out)["vllm_serve_command"]) is enabled
