"""Bad input, as a careless or hostile user gives it (issue #14, section 2): each row ends in one
line on stderr naming the problem, exit status 2, never a traceback, a hang or a silent wrong
number. Rows name where the input enters: a config.json field, a safetensors header, a GPU file,
a command-line number."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from planner.cli import main

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "profiles" / "models"
LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "vocab_size": 100,
    "torch_dtype": "bfloat16",
    "max_position_embeddings": 4096,
}


def _profile(name: str) -> dict:
    return json.loads((PROFILES / name / "config.json").read_text())


DEEPSEEK = _profile("deepseek-ai/DeepSeek-V2-Lite")
MIXTRAL = _profile("mistralai/Mixtral-8x7B-Instruct-v0.1")
QWEN_MOE = _profile("Qwen/Qwen3-30B-A3B")
LLAVA = _profile("llava-hf/llava-1.5-7b-hf")
LLAMA4 = _profile("meta-llama/Llama-4-Scout-17B-16E-Instruct")
_CT = {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": -4}}}}

# (case, config.json text or object, what the one-line error must name)
CONFIG_CASES = [
    ("experts negative", {**DEEPSEEK, "n_routed_experts": -64}, "'n_routed_experts'"),
    ("intermediate negative", {**LLAMA, "intermediate_size": -512}, "'intermediate_size'"),
    ("intermediate a string", {**LLAMA, "intermediate_size": "abc"}, "'intermediate_size'"),
    ("hidden size absurd", {**LLAMA, "hidden_size": 10**12}, "'hidden_size'"),
    ("vocab zero", {**LLAMA, "vocab_size": 0}, "'vocab_size'"),
    ("layers absurd", {**LLAMA, "num_hidden_layers": 10**7}, "'num_hidden_layers'"),
    ("rope factor negative", {**LLAMA, "rope_scaling": {"rope_type": "linear", "factor": -2}}, "rope_scaling.factor"),
    (
        "rope factor NaN",
        json.dumps(LLAMA)[:-1] + ', "rope_scaling": {"rope_type": "linear", "factor": NaN}}',
        "rope_scaling.factor",
    ),
    (
        "context Infinity",
        json.dumps(LLAMA)[:-1] + ', "max_position_embeddings": Infinity}',
        "'max_position_embeddings'",
    ),
    (
        "context above int32",
        {**LLAMA, "rope_scaling": {"rope_type": "linear", "factor": 1000}, "max_position_embeddings": 2**30},
        "context comes out as",
    ),
    ("top-k above experts", {**MIXTRAL, "num_experts_per_tok": 64}, "num_experts_per_tok 64"),
    ("top-k zero", {**MIXTRAL, "num_experts_per_tok": 0}, "'num_experts_per_tok'"),
    (
        "more KV heads than heads",
        {**LLAMA, "num_attention_heads": 8, "num_key_value_heads": 16},
        "does not divide num_attention_heads",
    ),
    (
        "KV heads not dividing",
        {**LLAMA, "num_attention_heads": 4, "num_key_value_heads": 3},
        "does not divide num_attention_heads",
    ),
    (
        "MoE without expert size",
        {k: v for k, v in DEEPSEEK.items() if k != "moe_intermediate_size"},
        "moe_intermediate_size",
    ),
    ("sliding window negative", {**_profile("mistralai/Mistral-7B-v0.1"), "sliding_window": -5}, "'sliding_window'"),
    ("mlp_only_layers not a list", {**QWEN_MOE, "mlp_only_layers": 5}, "'mlp_only_layers'"),
    (
        "interleave step zero",
        {**LLAMA4, "text_config": {**LLAMA4["text_config"], "interleave_moe_layer_step": 0}},
        "interleave_moe_layer_step",
    ),
    ("bool as a string", {**LLAMA, "tie_word_embeddings": "false"}, "true or false"),
    ("model_type a list", {**LLAMA, "model_type": ["llama"]}, "'model_type' must be a string"),
    ("architectures an object", {**LLAMA, "architectures": {"a": 1}}, "'architectures'"),
    ("text_config a number", {**LLAVA, "text_config": 5}, "'text_config'"),
    ("AWQ bits 0", {**LLAMA, "quantization_config": {"quant_method": "awq", "bits": 0}}, "bits must be one of 4"),
    (
        "GPTQ bits 5",
        {**LLAMA, "quantization_config": {"quant_method": "gptq", "bits": 5}},
        "bits must be one of 2, 3, 4, 8",
    ),
    (
        "GPTQ group 0",
        {**LLAMA, "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 0}},
        "group_size",
    ),
    ("compressed-tensors bits -4", {**LLAMA, "quantization_config": _CT}, "num_bits"),
    (
        "compressed-tensors groups a string",
        {**LLAMA, "quantization_config": {**_CT, "config_groups": "x"}},
        "config_groups",
    ),
    (
        "ignore list a number",
        {**LLAMA, "quantization_config": {"quant_method": "fp8", "ignored_layers": 3}},
        "module names",
    ),
    ("nested 50 deep", {**LLAMA, "extra": json.loads("[" * 50 + "]" * 50)}, "nests deeper than"),
    ("nested 200,000 deep", "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ("a JSON list", "[1, 2]", "expected a JSON object"),
]


@pytest.mark.parametrize("case,config,needle", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_one_line_exit_2(tmp_path, capsys, case, config, needle):
    path = tmp_path / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    _assert_one_line(capsys, ["plan", str(path), "--gpu", "H100"], needle)


def _assert_one_line(capsys, argv, needle, code=2):
    got = main(argv)
    out, err = capsys.readouterr()
    assert got == code, (argv, out[-300:], err)
    assert needle in err and len(err.strip().splitlines()) == 1, err
    return err


def _safetensors(header: dict | bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


_T = "model.layers.0.mlp.down_proj.weight"
SAFETENSORS_CASES = [
    ("negative shape", {_T: {"dtype": "BF16", "shape": [-1024, 256]}}, "non-negative integers"),
    ("shape as a string", {_T: {"dtype": "BF16", "shape": "1024"}}, "non-negative integers"),
    ("shape of strings", {_T: {"dtype": "BF16", "shape": ["1024", 256]}}, "non-negative integers"),
    ("shape of booleans", {_T: {"dtype": "BF16", "shape": [True, 2]}}, "non-negative integers"),
    ("rank 40", {_T: {"dtype": "BF16", "shape": [1] * 40}}, "at most 8"),
    ("extent 2**60", {_T: {"dtype": "BF16", "shape": [2**60, 2]}}, "non-negative integers"),
    ("dtype missing", {_T: {"shape": [2, 2]}}, "dtype"),
    ("entry a list", {_T: [1, 2]}, "dtype"),
    ("header not JSON", b"{nope", "not valid JSON"),
    ("header a list", b"[]", "not a JSON object"),
]


@pytest.mark.parametrize("case,header,needle", SAFETENSORS_CASES, ids=[c[0] for c in SAFETENSORS_CASES])
def test_bad_safetensors_header_is_one_line_exit_2(tmp_path, capsys, case, header, needle):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    (tmp_path / "model.safetensors").write_bytes(_safetensors(header))
    _assert_one_line(capsys, ["inspect", str(tmp_path)], needle)


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_header_length_beyond_the_file_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 10**6) + b"{}")
    _assert_one_line(capsys, ["inspect", str(tmp_path)], "implausible")


def test_index_naming_a_shard_outside_the_folder_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {_T: "../../etc/passwd"}}))
    _assert_one_line(capsys, ["inspect", str(tmp_path)], "shard names must be file names")


# Files that are not regular files must be refused before a read that would block or never end.
@pytest.mark.parametrize("where", ["config", "safetensors", "gpu-file"])
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_fifos_and_devices_are_refused_not_read(tmp_path, capsys, where, kind):
    special = _fifo(tmp_path / "special") if kind == "fifo" else Path("/dev/zero")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(LLAMA))
    if where == "config":
        argv = ["inspect", str(special)] if kind == "device" else ["inspect", str(special.rename(tmp_path / "c.json"))]
    elif where == "safetensors":
        os.symlink(special, tmp_path / "m" / "model.safetensors")
        argv = ["inspect", str(tmp_path / "m")]
    else:
        argv = ["plan", "qwen3-8b", "--gpu", "H100", "--gpu-file", str(special)]
    _assert_one_line(capsys, argv, "not a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_config_names_the_permission_problem(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA))
    path.chmod(0)
    _assert_one_line(capsys, ["inspect", str(path)], "Permission denied")


_BOMB = (
    "a: &a ['x','x','x','x','x','x','x','x','x']\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
        for i in range(9)
    )
    + "gpus:\n  - name: Bomb\n    vendor: acme\n    memory_gib: 80\n    bandwidth_tbs: 1\n    aliases: *j\n"
)
GPU_FILE_CASES = [
    ("anchor bomb", _BOMB, "anchors or aliases"),
    (
        "memory 1e300",
        "gpus:\n  - {name: Big, vendor: acme, memory_gib: 1.0e+300, bandwidth_tbs: 1, sources: [me]}\n",
        "above 65,536 GiB",
    ),
    (
        "memory .nan",
        "gpus:\n  - {name: Big, vendor: acme, memory_gib: .nan, bandwidth_tbs: 1, sources: [me]}\n",
        "memory_gib must be a number > 0",
    ),
    ("5 MiB of comments", "#" * (5 * 2**20), "MiB"),
    ("nested 10,000 deep", "gpus: " + "[" * 10_000 + "]" * 10_000, "not a mapping"),
]


@pytest.mark.parametrize("case,text,needle", GPU_FILE_CASES, ids=[c[0] for c in GPU_FILE_CASES])
def test_bad_gpu_file_is_one_line_exit_2(tmp_path, capsys, case, text, needle):
    path = tmp_path / "gpus.yaml"
    path.write_text(text)
    _assert_one_line(capsys, ["plan", "qwen3-8b", "--gpu", "Big", "--gpu-file", str(path)], needle)


PLAN = ["plan", "qwen3-8b", "--gpu", "H100"]
FLAG_CASES = [
    (PLAN + ["--max-model-len", "infk"], "--max-model-len"),
    (PLAN + ["--max-model-len", "1e308K"], "--max-model-len"),
    (PLAN + ["--max-model-len", "nank"], "--max-model-len"),
    (PLAN + ["--max-model-len", "99999999999"], "from 1 to 2,147,483,647"),
    (PLAN + ["--max-num-batched-tokens", "-1k"], "--max-num-batched-tokens"),
    (PLAN + ["--kv-cache-memory-bytes", "1e308G"], "--kv-cache-memory-bytes"),
    (PLAN + ["--gpu-memory-gib", "1e300"], "--gpu-memory-gib"),
    (PLAN + ["--gpu-memory-gib", "inf"], "--gpu-memory-gib"),
    (PLAN + ["--gpu-memory-gib", "nan"], "--gpu-memory-gib"),
    (PLAN + ["--gpu-memory-utilization", "nan"], "--gpu-memory-utilization"),
    (PLAN + ["--block-size", "0"], "--block-size"),
    (PLAN + ["--tp", "100000000"], "--tp"),
    (PLAN + ["--kv-cache-dtype", ""], "--kv-cache-dtype"),
    (PLAN + ["--dtype", ""], "--dtype"),
    (PLAN + ["--quantization", " "], "--quantization"),
    (
        PLAN + ["--max-num-seqs", "4096", "--max-num-batched-tokens", "1024"],
        "must be greater than or equal to max_num_seqs",
    ),
    (PLAN + ["--max-num-seqs", "100000"], "max_num_seqs (100000)"),
    (PLAN + ["--inventory", "1x8xL4"], "--gpu H100 has no effect with --inventory"),
    (PLAN + ["--device", "cpu", "--cpu-kvcache-gib", "8"], "--gpu H100 has no effect with --device cpu"),
    (PLAN + ["--cpu-kvcache-gib", "8"], "applies to --device cpu only"),
    (["plan", "qwen3-8b", "--inventory", "1x8xL4", "--gpu-memory-gib", "20"], "--gpu-memory-gib has no effect"),
    (["plan", "qwen3-8b", "--inventory", "1x100000000xH100"], "1-1024 GPUs"),
    (["plan", "qwen3-8b", "--inventory", "1000000x8xH100"], "1-100,000 nodes"),
    (["plan", "qwen3-8b", "--inventory", "9" * 12 + "x8xH100"], "cannot read GPU inventory part"),
    (["plan", "qwen3-8b", "--inventory", "9" * 5000 + "xH100"], "expected an inventory"),
    (["plan", "llama3.1-70b", "--gpu", "H100", "--tp", "16"], "does not fit in a node of 8"),
    (["emit", "llama3.1-70b", "--gpu", "H100", "--tp", "16", "-f", "serve"], "does not fit in a node of 8"),
    (["train", "qwen3-8b", "--method", "lora", "--lora-alpha", "nan"], "--lora-alpha"),
    (["train", "qwen3-8b", "--method", "lora", "--micro-batch-size", "0"], "--micro-batch-size"),
    (["inspect", "x" * 300], "unknown model"),
    (["inspect", "org/" + "x" * 300], "unknown model"),
    (["inspect", "qwen3-8b\n"], "control characters"),
    (["inspect", "qwen3-8bb"], "did you mean Qwen/Qwen3-8B"),
    (["plan", "qwen3-8b", "--gpu", "H100", "--max-num", "8"], "unrecognized arguments"),
    (["plan", "qwen3-8b", "--gpu", "H100", "--conc", "8"], "unrecognized arguments"),
]


@pytest.mark.parametrize("argv,needle", FLAG_CASES, ids=[" ".join(a)[:60] for a, _ in FLAG_CASES])
def test_bad_flag_is_one_line_exit_2(capsys, argv, needle):
    _assert_one_line(capsys, argv, needle)


def test_gptq_group_size_minus_one_is_one_group_per_row(tmp_path):
    """group_size -1: one fp16 scale per output row (no zeros with sym), so the checkpoint's extra
    elements are the sum of every quantized linear's output width."""
    from planner.api import inspect

    cfg = {**LLAMA, "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": -1, "sym": True}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = inspect(str(tmp_path / "config.json"))
    per_layer = 64 + 32 + 32 + 64 + 128 + 128 + 64  # q, k, v, o, gate, up, down output widths
    assert r.params_checkpoint - r.params_total == 2 * per_layer


def test_long_context_env_is_written_into_the_serve_command(monkeypatch, capsys):
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
    code = main(["plan", "qwen3-8b", "--gpu", "H200", "--max-model-len", "65536", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["max_model_len"] == 65536 and data["vllm_serve_command"].startswith("VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 ")
    assert code in (0, 1)


# ---- exit statuses of a whole process --------------------------------------------------------

MISFIT = ["plan", "llama3.1-70b", "--gpu", "L4", "--tp", "1", "--json"]


def _planner(argv, **kw):
    return subprocess.run([sys.executable, "-m", "planner", *argv], cwd=REPO, text=True, timeout=60, **kw)


def test_broken_pipe_keeps_the_misfit_status():
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first byte, as with `| head -c0`
    proc = _planner(MISFIT, stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_a_full_disk_is_one_line_exit_2():
    with open("/dev/full", "w") as full:
        proc = _planner(["models"], stdout=full, stderr=subprocess.PIPE)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "cannot write the output" in proc.stderr


def test_emit_of_a_misfit_exits_1(capsys):
    _assert_one_line(
        capsys, ["emit", "llama3.1-70b", "--gpu", "L4", "--tp", "1", "-f", "serve"], "does not fit", code=1
    )
