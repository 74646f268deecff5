"""The 'vision tower may be quantized' warning appears only where vLLM would run the checkpoint's scheme
over the tower: a scheme whose ignore list does not name the tower, on a model class that passes it to
the tower. Kimi-K2.5 builds MoonViT3d and its projector without a compressed-tensors config (vLLM 0.32
kimi_k25.py `_maybe_ignore_quant_config`), so its W4A16 checkpoint leaves them in bf16; NVIDIA's
ModelOpt exports of K2.5-K2.7 exclude `vision_tower*` / `mm_projector*`; an online --quantization fp8
has no ignore list, and Qwen3-VL hands its quant_config to the vision transformer."""

from __future__ import annotations

import copy
import json

import pytest

from planner.api import inspect, load_model
from planner.models import sources

WARNING = "the vision tower is counted at"

# every bundled checkpoint with a vision tower and its own scheme: none of them quantizes the tower
QUANTIZED_VL = sorted(
    m for m in sources.bundled_ids() if load_model(m).spec.vision is not None and load_model(m).spec.quant is not None
)


def _warned(model, **kw) -> bool:
    return any(w.startswith(WARNING) for w in inspect(model, **kw).warnings)


def test_the_table_holds_the_kimi_checkpoints():
    assert {"moonshotai/Kimi-K2.5", "nvidia/Kimi-K2.5-NVFP4", "moonshotai/Kimi-K3"} <= set(QUANTIZED_VL)


@pytest.mark.parametrize("model_id", QUANTIZED_VL)
def test_no_warning_where_the_tower_stays_unquantized(model_id):
    assert not _warned(model_id)


@pytest.mark.parametrize(
    "model_id", ["Qwen/Qwen3-VL-8B-Instruct", "google/gemma-3-4b-it", "mistralai/Mistral-Small-3.1-24B-Instruct-2503"]
)
def test_online_fp8_warns(model_id):
    assert _warned(model_id, quantization="fp8")


def test_kimi_k25s_exemption_is_vllms_compressed_tensors_rule(tmp_path):
    # the same K2.5 config under another model class: the ignore list names no tower, so it warns
    cfg = json.loads((sources.find_bundled("moonshotai/Kimi-K2.5") / "config.json").read_text())
    other = copy.deepcopy(cfg)
    other["architectures"] = ["SomeOtherKimiClass"]
    (tmp_path / "config.json").write_text(json.dumps(other))
    model = load_model(str(tmp_path))
    assert "vision_tower" not in model.spec.quant.ignored_modules and _warned(model)
    k25 = load_model("moonshotai/Kimi-K2.5").spec.quant
    assert k25.ignored_modules[-2:] == ("vision_tower", "mm_projector")
    assert k25.ignored_modules[:-2] == tuple(cfg["text_config"]["quantization_config"]["ignore"])


def test_a_mixed_precision_checkpoint_warns_only_where_it_lists_a_tower_module(tmp_path):
    # nvidia/Qwen3.6-27B-NVFP4 lists only language-model layers: the tower stays bf16, no warning;
    # the same checkpoint listing one tower layer may have its tower quantized
    import shutil

    src = sources.find_bundled("nvidia/Qwen3.6-27B-NVFP4")
    assert not _warned("nvidia/Qwen3.6-27B-NVFP4")
    for f in ("config.json", "hf_quant_config.json"):
        shutil.copyfile(src / f, tmp_path / f)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["quantization_config"]["quantized_layers"]["model.visual.blocks.0.mlp.linear_fc1"] = {"quant_algo": "FP8"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert _warned(load_model(str(tmp_path)))
