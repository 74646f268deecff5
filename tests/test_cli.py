"""The command line: output shape, JSON keys, and one-line errors with exit status 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from planner.cli import main

REPO = Path(__file__).resolve().parent.parent

INSPECT_KEYS = {
    "model", "source", "architecture", "params_total", "params_active", "params_breakdown",
    "weight_bytes_total", "weight_bytes_per_gpu", "kv_bytes_per_token_per_gpu", "layer_types",
    "estimated", "warnings",
}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_json_has_the_documented_keys(capsys):
    code, out, _ = run(capsys, "inspect", "Qwen/Qwen3-8B", "--json")
    assert code == 0
    data = json.loads(out)
    assert INSPECT_KEYS <= set(data)
    assert data["source"] == "bundled"
    assert data["params_total"] == 8_190_735_360
    assert data["kv_bytes_per_token_per_gpu"] == 147_456


def test_inspect_table(capsys):
    code, out, _ = run(capsys, "inspect", "deepseek-ai/DeepSeek-V3", "--tp", "8")
    assert code == 0
    assert "70,272 B" in out and "not loaded: mtp" in out


def test_inspect_is_case_insensitive_and_takes_aliases(capsys):
    code, out, _ = run(capsys, "inspect", "qwen/QWEN3-8b", "--json")
    assert code == 0 and json.loads(out)["model"] == "Qwen/Qwen3-8B"


def test_models_lists_every_bundled_profile(capsys):
    code, out, _ = run(capsys, "models", "--json")
    rows = json.loads(out)
    assert code == 0
    ids = {r["id"] for r in rows}
    assert {"meta-llama/Llama-3.1-8B-Instruct", "deepseek-ai/DeepSeek-V3", "openai/gpt-oss-20b"} <= ids
    assert all(r["max_model_len"] for r in rows)
    # every architecture whose weights are modelled has an exact count
    assert all(r["params_total"] for r in rows if r["model_type"] not in ("qwen3_next", "nemotron_h", "jamba"))


def test_dtypes(capsys):
    code, out, _ = run(capsys, "dtypes")
    assert code == 0 and "bf16" in out and "65504" in out


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


LLAMA = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
         "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 100, "torch_dtype": "bfloat16"}


@pytest.mark.parametrize("case,argv,needle", [
    ("missing path", ["inspect", "/no/such/config.json"], "no such file"),
    ("malformed json", ["inspect", "{bad}"], "malformed JSON"),
    ("missing fields", ["inspect", "{nofields}"], "has no 'num_hidden_layers'"),
    ("unknown model_type", ["inspect", "{unknown}"], "unknown model_type 'frobnicator'"),
    ("tp zero", ["inspect", "{llama}", "--tp", "0"], "at least 1"),
    ("tp not dividing heads", ["inspect", "{llama}", "--tp", "3"], "does not divide the 4 attention heads"),
    ("unknown dtype", ["inspect", "{llama}", "--dtype", "float12"], "unknown --dtype"),
    ("unknown quantization", ["inspect", "{llama}", "--quantization", "magic"], "quantization 'magic'"),
    ("unknown kv dtype", ["inspect", "{llama}", "--kv-cache-dtype", "fp3"], "--kv-cache-dtype"),
    ("unknown model", ["inspect", "not-a-model"], "unknown model"),
    ("folder without config", ["inspect", "{emptydir}"], "has no config.json"),
    ("bad option", ["inspect", "{llama}", "--frobnicate"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case, argv, needle):
    files = {
        "{bad}": _write(tmp_path, "bad.json", "{not json"),
        "{nofields}": _write(tmp_path, "nofields.json", json.dumps({"model_type": "llama"})),
        "{unknown}": _write(tmp_path, "unknown.json", json.dumps({**LLAMA, "model_type": "frobnicator"})),
        "{llama}": _write(tmp_path, "llama.json", json.dumps(LLAMA)),
        "{emptydir}": str(tmp_path),
    }
    argv = [files.get(a, a) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2, (case, out, err)
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_bad_input_in_a_new_process_has_no_traceback(tmp_path):
    bad = _write(tmp_path, "bad.json", "{not json")
    proc = subprocess.run([sys.executable, "-m", "planner", "inspect", bad], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_local_checkpoint_folder_reads_safetensors_headers(tmp_path):
    """A folder with safetensors files: tensors come from the headers (data never read)."""
    import struct

    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    header = {
        "model.embed_tokens.weight": {"dtype": "BF16", "shape": [100, 64], "data_offsets": [0, 0]},
        "model.layers.0.self_attn.q_proj.weight": {"dtype": "BF16", "shape": [64, 64], "data_offsets": [0, 0]},
        "model.layers.0.self_attn.k_proj.weight": {"dtype": "BF16", "shape": [32, 64], "data_offsets": [0, 0]},
        "model.norm.weight": {"dtype": "BF16", "shape": [64], "data_offsets": [0, 0]},
        "__metadata__": {"format": "pt"},
    }
    raw = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    from planner.api import inspect

    r = inspect(str(tmp_path))
    assert r.tensor_source == "safetensors"
    assert r.params_total == 100 * 64 + 64 * 64 + 32 * 64 + 64


# ---- the Hub path: the network cannot be reached here, so huggingface_hub is replaced by a fake
# module that behaves like the real one offline or with a repo that exists.

class _FakeHub:
    def __init__(self, root, fail=None):
        self.root, self.fail, self.calls = root, fail, []

    def hf_hub_download(self, repo_id, filename, token=None):
        self.calls.append((repo_id, filename, token))
        if self.fail:
            raise self.fail
        path = self.root / filename
        if not path.is_file():
            raise FileNotFoundError(filename)
        return str(path)

    def get_safetensors_metadata(self, repo_id, token=None):
        raise FileNotFoundError("no safetensors")


def test_hub_model_is_fetched_and_token_never_printed(tmp_path, monkeypatch, capsys):
    import sys as _sys

    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    fake = _FakeHub(tmp_path)
    monkeypatch.setitem(_sys.modules, "huggingface_hub", fake)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    code, out, err = run(capsys, "inspect", "someorg/tiny-llama", "--json")
    assert code == 0 and json.loads(out)["source"] == "hub"
    assert fake.calls[0] == ("someorg/tiny-llama", "config.json", "hf_secret_value")
    assert "hf_secret_value" not in out + err


def test_hub_failure_is_one_line_naming_the_alternatives(tmp_path, monkeypatch, capsys):
    import sys as _sys

    monkeypatch.setitem(_sys.modules, "huggingface_hub", _FakeHub(tmp_path, fail=OSError("connection refused")))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    code, _, err = run(capsys, "inspect", "someorg/not-bundled")
    assert code == 2 and "bundled id" in err and "local config.json" in err
    assert "hf_secret_value" not in err and len(err.strip().splitlines()) == 1


def test_hub_offline_or_without_the_extra(monkeypatch, capsys):
    import sys as _sys

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(_sys.modules, "huggingface_hub", _FakeHub(Path("/nonexistent")))
    code, _, err = run(capsys, "inspect", "someorg/not-bundled")
    assert code == 2 and "HF_HUB_OFFLINE=1" in err
    monkeypatch.setitem(_sys.modules, "huggingface_hub", None)  # import fails: the extra is missing
    code, _, err = run(capsys, "inspect", "someorg/not-bundled")
    assert code == 2 and "vllm-planner[hub]" in err
