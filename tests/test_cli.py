"""The command line: output shape, JSON keys, and one-line errors with exit status 2."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from readme_keys import readme_json_keys

from planner.cli import main

REPO = Path(__file__).resolve().parent.parent

INSPECT_KEYS = readme_json_keys("inspect")
PLAN_KEYS = readme_json_keys("plan", until="With `--inventory`")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_json_has_the_documented_keys(capsys):
    code, out, _ = run(capsys, "inspect", "Qwen/Qwen3-8B", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == INSPECT_KEYS
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


LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "vocab_size": 100,
    "torch_dtype": "bfloat16",
}


@pytest.mark.parametrize(
    "case,argv,needle",
    [
        ("missing path", ["inspect", "/no/such/config.json"], "no such file"),
        ("malformed json", ["inspect", "{bad}"], "malformed JSON"),
        ("missing fields", ["inspect", "{nofields}"], "has no 'num_hidden_layers'"),
        ("unknown model_type", ["inspect", "{unknown}"], "unknown model_type 'frobnicator'"),
        (
            "re-export model_type of a known class",  # sgl-project's DeepSeek-V4 FP8: model_type deepseek_ref
            ["inspect", "{reexport}"],
            "its architecture DeepseekV4ForCausalLM is built from model_type 'deepseek_v4' configs",
        ),
        ("tp zero", ["inspect", "{llama}", "--tp", "0"], "expected a GPU count 1-4096"),
        ("tp not dividing heads", ["inspect", "{llama}", "--tp", "3"], "does not divide the 4 attention heads"),
        ("unknown dtype", ["inspect", "{llama}", "--dtype", "float12"], "unknown --dtype"),
        ("unknown quantization", ["inspect", "{llama}", "--quantization", "magic"], "quantization 'magic'"),
        ("unknown kv dtype", ["inspect", "{llama}", "--kv-cache-dtype", "fp3"], "--kv-cache-dtype"),
        ("unknown model", ["inspect", "not-a-model"], "unknown model"),
        ("folder without config", ["inspect", "{emptydir}"], "has no config.json"),
        ("bad option", ["inspect", "{llama}", "--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case, argv, needle):
    files = {
        "{bad}": _write(tmp_path, "bad.json", "{not json"),
        "{nofields}": _write(tmp_path, "nofields.json", json.dumps({"model_type": "llama"})),
        "{unknown}": _write(tmp_path, "unknown.json", json.dumps({**LLAMA, "model_type": "frobnicator"})),
        "{reexport}": _write(
            tmp_path,
            "reexport.json",
            json.dumps({**LLAMA, "model_type": "deepseek_ref", "architectures": ["DeepseekV4ForCausalLM"]}),
        ),
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
    def __init__(self, root, fail=None, cached=False):
        self.root, self.fail, self.calls, self.cached = root, fail, [], cached

    def hf_hub_download(self, repo_id, filename, token=None, local_files_only=False):
        self.calls.append((repo_id, filename, token))
        if self.fail or local_files_only and not self.cached:
            raise self.fail
        path = self.root / filename
        if not path.is_file():
            raise FileNotFoundError(filename)
        return str(path)

    def get_safetensors_metadata(self, repo_id, token=None):
        raise FileNotFoundError("no safetensors")


@pytest.fixture
def hub_reachable(monkeypatch):
    monkeypatch.setattr("planner.models.sources._hub_reachable", lambda: True)


@pytest.mark.usefixtures("hub_reachable")
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


@pytest.mark.usefixtures("hub_reachable")
def test_hub_failure_is_one_line_naming_the_alternatives(tmp_path, monkeypatch, capsys):
    import sys as _sys

    monkeypatch.setitem(_sys.modules, "huggingface_hub", _FakeHub(tmp_path, fail=OSError("connection refused")))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    code, _, err = run(capsys, "inspect", "someorg/not-bundled")
    assert code == 2 and "bundled id" in err and "local config.json" in err
    assert "hf_secret_value" not in err and len(err.strip().splitlines()) == 1


class _SlowHub(_FakeHub):
    """huggingface_hub offline: every network call retries for about 20 s before it gives up."""

    def hf_hub_download(self, repo_id, filename, token=None, local_files_only=False):
        if not local_files_only:
            time.sleep(20)
        return super().hf_hub_download(repo_id, filename, token, local_files_only)


@pytest.mark.parametrize("cached", [False, True])
def test_unreachable_hub_fails_fast_or_uses_the_cache(tmp_path, monkeypatch, capsys, cached):
    import sys as _sys

    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    monkeypatch.setitem(_sys.modules, "huggingface_hub", _SlowHub(tmp_path, cached=cached))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    code, out, err = run(capsys, "inspect", "someorg/tiny-llama", "--json")
    assert time.monotonic() - start < 2
    if cached:
        assert code == 0 and json.loads(out)["tensor_source"] == "formula"
    else:
        assert code == 2 and "not reachable" in err and len(err.strip().splitlines()) == 1


def test_hub_offline_or_without_the_extra(monkeypatch, capsys):
    import sys as _sys

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(_sys.modules, "huggingface_hub", _FakeHub(Path("/nonexistent")))
    code, _, err = run(capsys, "inspect", "someorg/not-bundled")
    assert code == 2 and "HF_HUB_OFFLINE=1" in err
    monkeypatch.setitem(_sys.modules, "huggingface_hub", None)  # import fails: the extra is missing
    code, _, err = run(capsys, "inspect", "someorg/not-bundled")
    assert code == 2 and "vllm-planner[hub]" in err


def test_per_expert_checkpoint_tensors_are_split_by_tp(tmp_path):
    """Checkpoints store each expert's matrices (experts.N.w1/w2/w3): TP splits them like the stacked ones."""
    import struct

    cfg = {
        "model_type": "mixtral",
        "architectures": ["MixtralForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 1,
        "vocab_size": 128,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "torch_dtype": "bfloat16",
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    header = {}
    for e in range(4):
        for w, shape in (("w1", [128, 64]), ("w3", [128, 64]), ("w2", [64, 128])):
            header[f"model.layers.0.block_sparse_moe.experts.{e}.{w}.weight"] = {
                "dtype": "BF16",
                "shape": shape,
                "data_offsets": [0, 0],
            }
    raw = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    from planner.api import inspect

    one, two = inspect(str(tmp_path), tp=1), inspect(str(tmp_path), tp=2)
    assert (
        two.weight_breakdown_per_gpu["experts"] * 2 == one.weight_breakdown_per_gpu["experts"] == 4 * 3 * 128 * 64 * 2
    )


def test_tied_embeddings_are_held_by_the_last_pipeline_stage_too():
    from planner.api import inspect

    granite = inspect("ibm-granite/granite-3.3-8b-instruct", pp=2)  # tied: the last stage keeps lm_head = embedding
    assert abs(granite.weight_bytes_per_stage[0] - granite.weight_bytes_per_stage[1]) < 2**26
    gemma = inspect("google/gemma-2-2b-it", pp=2)  # Gemma builds embed_tokens on every rank
    assert gemma.weight_breakdown_per_gpu["embeddings"] > 0 and gemma.weight_bytes_per_stage[1] > 2**30


@pytest.mark.parametrize(
    "name,config",
    [
        ("rope_str", {**LLAMA, "rope_scaling": "yes"}),
        ("rope_factor", {**LLAMA, "rope_scaling": {"rope_type": "linear", "factor": "x"}}),
        ("zero_heads", {**LLAMA, "num_attention_heads": 0}),
        ("zero_layers", {**LLAMA, "num_hidden_layers": 0}),
        ("head_dim_str", {**LLAMA, "head_dim": "x"}),
        ("quant_str", {**LLAMA, "quantization_config": "fp8"}),
        ("fp8_block", {**LLAMA, "quantization_config": {"quant_method": "fp8", "weight_block_size": [128]}}),
        ("zero_context", {**LLAMA, "max_position_embeddings": 0}),
    ],
)
def test_malformed_config_values_are_one_line_errors(tmp_path, capsys, name, config):
    path = _write(tmp_path, f"{name}.json", json.dumps(config))
    code, _, err = run(capsys, "inspect", path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_aliases_never_name_another_bundled_model():
    """find_bundled resolves a bare model name without parsing meta.yaml: no alias may claim it."""
    from planner.models.sources import _bundled_dirs, find_bundled, read_meta

    dirs = _bundled_dirs()
    bare = {key.split("/", 1)[1]: key for key in dirs}
    for key, folder in dirs.items():
        for alias in read_meta(folder).get("aliases") or ():
            assert bare.get(str(alias).lower(), key) == key, (alias, key)
            assert find_bundled(str(alias)) == folder


def test_readme_documents_every_plan_json_key(capsys):
    """The README's list of `plan --json` keys is the one the command prints (both directions)."""
    code, out, _ = run(capsys, "plan", "qwen3-8b", "--gpu", "H100", "--json")
    assert code == 0
    assert PLAN_KEYS == set(json.loads(out))
