"""Property: whatever the config.json, safetensors header, GPU file or flags, the CLI ends in one of
two ways, never a traceback (internal errors are not caught, so any exception fails here):
exit 2 with one line on stderr, or a plan (exit 0/1) whose figures are finite, non-negative and
consistent: KV <= requested <= total memory, active <= total parameters."""

from __future__ import annotations

import contextlib
import io
import json
import math
import struct
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli import main
from planner.models.checks import INT_FIELDS

FUZZ = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
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
MIXTRAL = {**LLAMA, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}

nasty_numbers = st.one_of(
    st.integers(-3, 300),
    st.sampled_from([0, -1, 2**31, 10**12, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
nasty = st.one_of(
    nasty_numbers,
    st.none(),
    st.text(max_size=6),
    st.lists(st.integers(-2, 9), max_size=3),
    st.dictionaries(st.sampled_from(["factor", "rope_type", "type", "bits"]), nasty_numbers, max_size=2),
)
config_keys = st.sampled_from(
    sorted(INT_FIELDS)
    + [
        "rope_scaling",
        "quantization_config",
        "tie_word_embeddings",
        "head_dim",
        "layer_types",
        "model_type",
        "architectures",
        "partial_rotary_factor",
        "mlp_only_layers",
        "torch_dtype",
        "text_config",
    ]
)
quant_configs = st.fixed_dictionaries(
    {"quant_method": st.sampled_from(["awq", "gptq", "fp8", "compressed-tensors", "x"])},
    optional={"bits": nasty_numbers, "group_size": nasty_numbers, "weight_block_size": nasty, "config_groups": nasty},
)


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _numbers(d: dict) -> dict[str, float]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _check_plan(plan: dict) -> None:
    nums = _numbers(plan)
    assert all(math.isfinite(v) for v in nums.values()), nums
    deficit_ok = {"kv_cache_gib"} if not plan["fits"] else set()  # a misfit's KV memory is its shortfall
    deficit_ok.add("kv_cache_gib_cold")  # a first boot can fall short where the warm start fits (the notes say so)
    assert all(v >= 0 for k, v in nums.items() if k not in deficit_ok), nums
    assert plan["kv_cache_gib"] <= plan["requested_gib"] <= plan["total_gib"] + 0.01
    if plan["fits"]:
        assert plan["kv_cache_tokens"] > 0 and plan["max_concurrency"] > 0


def _check_outcome(argv: list[str]) -> tuple[int, str]:
    code, out, err = _run(argv)
    assert code in (0, 1, 2), (argv, code)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("vllm-planner: error: "), err
    return code, out


def _check_model(path: str) -> None:
    code, out = _check_outcome(["inspect", path, "--json"])
    if code == 0:
        r = json.loads(out)
        assert all(math.isfinite(v) and v >= 0 for v in _numbers(r).values()), r
        assert 0 < r["params_active"] <= r["params_total"] and r["kv_bytes_per_token_per_gpu"] > 0
    code, out = _check_outcome(["plan", path, "--gpu", "H100", "--tp", "1", "--max-model-len", "2048", "--json"])
    if code != 2:
        _check_plan(json.loads(out))


@FUZZ
@given(
    base=st.sampled_from([LLAMA, MIXTRAL]),
    changes=st.dictionaries(config_keys, nasty, max_size=3),
    quant=st.none() | quant_configs,
)
def test_fuzzed_configs(base, changes, quant):
    config = {**base, **changes, **({"quantization_config": quant} if quant else {})}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        _check_model(str(path))


shapes = st.one_of(st.lists(st.integers(-4, 300), max_size=4), st.lists(nasty, max_size=3), nasty)
tensor_names = st.sampled_from(
    [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.layers.9.mlp.up_proj.weight",
        "x",
    ]
)
headers = st.dictionaries(
    tensor_names,
    st.one_of(
        st.fixed_dictionaries(
            {"dtype": st.sampled_from(["BF16", "F32", "I32", "U8", "F8_E4M3", "", "Q9"]) | nasty, "shape": shapes}
        ),
        nasty,
    ),
    max_size=5,
)


@FUZZ
@given(header=headers)
def test_fuzzed_safetensors_headers(header):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(LLAMA))
        raw = json.dumps(header).encode()
        (Path(tmp) / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
        _check_model(tmp)


gpu_fields = st.fixed_dictionaries(
    {"name": st.just("Fuzz")},
    optional={
        "vendor": st.sampled_from(["nvidia", "amd"]) | nasty,
        "memory_gib": nasty_numbers,
        "bandwidth_tbs": nasty_numbers,
        "gpus_per_node_max": nasty_numbers,
        "aliases": nasty,
        "sources": st.just(["me"]) | nasty,
        "compute_capability": st.sampled_from(["9.0", "8.0", "x"]) | nasty,
        "fp8_native": nasty,
        "price_per_gpu_hour_usd": nasty_numbers,
    },
)


@FUZZ
@given(entry=gpu_fields)
def test_fuzzed_gpu_files(entry):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpus.yaml"
        path.write_text(yaml.safe_dump({"gpus": [entry]}, allow_unicode=True))
        code, out = _check_outcome(
            ["plan", "qwen3-8b", "--gpu", "Fuzz", "--gpu-file", str(path), "--max-model-len", "4096", "--json"]
        )
        if code != 2:
            _check_plan(json.loads(out))


values = st.sampled_from(
    [
        "0",
        "-1",
        "1",
        "2",
        "8",
        "32k",
        "1K",
        "1e308K",
        "infk",
        "nan",
        "inf",
        "",
        " ",
        "abc",
        "0.5",
        "1.5",
        "4096",
        "99999999999",
        "auto",
    ]
) | st.text(max_size=6)
FLAGS = [
    "--tp",
    "--pp",
    "--max-model-len",
    "--max-num-seqs",
    "--max-num-batched-tokens",
    "--gpu-memory-utilization",
    "--kv-cache-dtype",
    "--dtype",
    "--quantization",
    "--block-size",
    "--gpu-memory-gib",
    "--concurrency",
    "--kv-cache-memory-bytes",
    "--vllm-version",
    "--cpu-kvcache-gib",
    "--inventory",
]


@FUZZ
@given(flags=st.dictionaries(st.sampled_from(FLAGS), values, max_size=4), cpu=st.booleans())
def test_fuzzed_flags(flags, cpu):
    argv = ["plan", "qwen3-8b", *(["--device", "cpu"] if cpu else ["--gpu", "H100"])]
    for flag, value in flags.items():
        argv += [flag, value]
    code, out = _check_outcome([*argv, "--json"])
    if code != 2 and "--inventory" not in flags:
        plan = json.loads(out)
        if not cpu:
            _check_plan(plan)
