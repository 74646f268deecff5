"""A CLI that explains itself (issue #14, section 4): help for every flag with its default, vLLM's
own flag spellings, no silent abbreviations, --version, snake-case JSON, and plans that say what
they take and what does not fit."""

from __future__ import annotations

import argparse
import json

import pytest

from planner.cli import build_parser, main

# Every subcommand's options live in planner/cli/ (calibrate: issue #11's, checked once it names its defaults).
OWN = ("inspect", "models", "dtypes", "plan", "gpus", "emit", "verify", "train", "perf")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(name: str) -> list[argparse.Action]:
    return [
        a
        for a in _subparsers()[name]._actions
        if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))
    ]


@pytest.mark.parametrize("name", OWN)
def test_every_option_has_help_with_its_default(name):
    missing = [
        a.option_strings[0]
        for a in _options(name)
        if not a.help or not ("default" in a.help or "required" in a.help or a.required)
    ]
    assert not missing, f"{name}: {missing}"


@pytest.mark.parametrize(
    "flag,unit",
    [
        ("--max-model-len", "tokens"),
        ("--max-num-batched-tokens", "tokens"),
        ("--gpu-memory-gib", "GiB"),
        ("--kv-cache-memory-bytes", "bytes"),
        ("--cpu-kvcache-gib", "GiB"),
        ("--block-size", "tokens"),
        ("--gpu-memory-utilization", "share"),
    ],
)
def test_number_options_name_their_unit(flag, unit):
    action = next(a for a in _options("plan") if flag in a.option_strings)
    assert unit in action.help


def test_verify_lists_only_what_it_accepts():
    flags = {s for a in _options("verify") for s in a.option_strings}
    assert not {"--inventory", "--objective", "--emit"} & flags
    assert {"--gpu", "--max-model-len", "--report", "--timeout"} <= flags


@pytest.mark.parametrize("spelling", [["--tp", "2"], ["--tensor-parallel-size", "2"], ["-tp", "2"]])
def test_vllm_spellings_of_the_parallel_sizes(capsys, spelling):
    pp = {"--tp": "--pp", "--tensor-parallel-size": "--pipeline-parallel-size", "-tp": "-pp"}[spelling[0]]
    code = main(["plan", "qwen3-8b", "--gpu", "H100", *spelling, pp, "1", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and (data["tp"], data["pp"]) == (2, 1)


def test_version(capsys):
    from planner import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vllm-planner {__version__}"


@pytest.mark.parametrize(
    "command,keys",
    [
        ("gpus", {"gpu", "memory_gib", "bandwidth_tbs", "bf16_tflops", "fp8_support", "price_per_gpu_hour_usd"}),
        ("dtypes", {"format", "bits", "exponent_bits", "mantissa_bits", "bytes_per_parameter"}),
    ],
)
def test_json_lists_use_snake_case_keys(capsys, command, keys):
    assert main([command, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert keys <= set(rows[0]) and all(k == k.lower() and " " not in k for r in rows for k in r)


PLAN_KEYS = {
    "vllm_serve_command",
    "binding",
    "fixes",
    "kv_cache_gib",
    "kv_cache_tokens",
    "max_concurrency",
    "requested_gib",
    "weights_gib",
    "fits",
    "error",
}


def test_inventory_entries_carry_the_plan_keys_fit_or_not(capsys):
    code = main(["plan", "llama3.1-70b", "--inventory", "2x8xH100,4x1xL4", "--context", "32768", "--json"])
    entries = {e["inventory"]: e for e in json.loads(capsys.readouterr().out)}
    assert code == 0 and all(PLAN_KEYS <= set(e) for e in entries.values())
    l4 = entries["4x1xL4"]
    assert l4["fits"] is False and l4["replicas"] == 0 and l4["vllm_serve_command"].startswith("vllm serve")
    assert entries["2x8xH100-SXM-80GB"]["fits"] is True


def test_concurrency_misfit_is_not_a_start_up_failure(capsys):
    code = main(
        ["plan", "llama3.1-70b", "--gpu", "H100", "--tp", "4", "--max-model-len", "131072", "--concurrency", "5"]
    )
    out = capsys.readouterr().out
    assert code == 1 and "would fail to start" not in out and "below the requested 5" in out


def test_a_misfit_labels_its_command_and_every_fix_carries_one(capsys):
    code = main(
        [
            "plan",
            "llama3.1-70b",
            "--gpu",
            "H100",
            "--tp",
            "4",
            "--max-model-len",
            "131072",
            "--concurrency",
            "5",
            "--json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["fixes"]
    assert all(f["vllm_serve_command"].startswith("vllm serve") for f in data["fixes"])
    fp8 = next(f for f in data["fixes"] if f["flags"] == {"kv_cache_dtype": "fp8"})
    assert "--kv-cache-dtype fp8" in fp8["vllm_serve_command"]
    main(["plan", "llama3.1-70b", "--gpu", "H100", "--tp", "4", "--max-model-len", "131072", "--concurrency", "5"])
    text = capsys.readouterr().out.splitlines()
    assert "does NOT fit" in text[-2] and text[-1].startswith("vllm serve")


@pytest.mark.parametrize(
    "layout,line",
    [
        (["--tp", "8", "--pp", "2"], "one replica: 16 GPUs on 2 nodes of 8 GPUs"),
        (["--tp", "4", "--pp", "3"], "one replica: 12 GPUs on 3 nodes of 8 GPUs"),  # whole TP groups: 3 nodes of 4
        (["--tp", "2", "--pp", "2"], "one replica: 4 GPUs in one node"),
    ],
)
def test_a_plan_over_several_gpus_says_how_many_and_nodes(capsys, layout, line):
    main(["plan", "meta-llama/Llama-3.1-405B", "--gpu", "H100", "--max-model-len", "8192", *layout])
    assert capsys.readouterr().out.splitlines()[1] == line


def test_every_flag_of_every_subcommand_has_help_naming_its_default():
    """A flag with a default other than off/None says it in its help text."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sp in sub.choices.items():
        for a in sp._actions:
            if not a.option_strings or a.dest == "help":
                continue
            text = (a.help or "").lower()
            if not text or (a.default not in (None, False) and "default" not in text):
                missing.append(f"{name} {a.option_strings[0]}")
    assert not missing, missing


GPU_CASES = [
    ["--gpu", ""],
    ["--gpu", "NoSuchGPU"],
    ["--gpu", "H100", "--gpu-memory-gib", "nan"],
    ["--gpu", "H100", "--gpu-memory-gib", "0"],
    ["--gpu", "H100", "--gpu-memory-gib", "1e9"],
    ["--gpu", "H100", "--gpu-memory-gib", "twelve"],
    ["--gpu", "H100", "--gpu-file", ""],
    ["--gpu", "H100", "--gpu-file", "/nonexistent/gpus.yaml"],
]


@pytest.mark.parametrize("gpu", GPU_CASES, ids=" ".join)
def test_train_takes_the_gpu_as_plan_does(capsys, gpu):
    """One definition of --gpu, --gpu-memory-gib and --gpu-file: the same bad value, the same one-line error."""
    errors = {}
    for command, rest in (("plan", []), ("train", ["--method", "lora"])):
        code = main([command, "qwen3-8b", *gpu, *rest])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, (command, err)
        errors[command] = err.replace(f"vllm-planner {command}", "vllm-planner COMMAND")
    assert errors["plan"] == errors["train"]


def test_train_reads_the_gpu_memory_override_as_plan_does(capsys):
    main(["plan", "qwen3-8b", "--gpu", "H100", "--gpu-memory-gib", "40", "--json"])
    plan = json.loads(capsys.readouterr().out)
    main(["train", "qwen3-8b", "--method", "lora", "--gpu", "H100", "--gpu-memory-gib", "40", "--json"])
    train = json.loads(capsys.readouterr().out)
    assert plan["total_gib"] == train["gpu_memory_gib"] == 40


# flag -> (dataclass, field) whose docstring's first sentence is the flag's help
FIELD_FLAGS = {
    "--tp": ("Settings", "tp"),
    "--pp": ("Settings", "pp"),
    "--max-model-len": ("Settings", "max_model_len"),
    "--max-num-seqs": ("Settings", "max_num_seqs"),
    "--max-num-batched-tokens": ("Settings", "max_num_batched_tokens"),
    "--gpu-memory-utilization": ("Settings", "gpu_memory_utilization"),
    "--kv-cache-dtype": ("Settings", "kv_cache_dtype"),
    "--enforce-eager": ("Settings", "enforce_eager"),
    "--kv-cache-memory-bytes": ("Settings", "kv_cache_memory_bytes"),
    "--block-size": ("Settings", "block_size"),
    "--gpu-memory-gib": ("Target", "memory_bytes"),
    "--device": ("Target", "device"),
    "--cpu-kvcache-gib": ("Target", "cpu_kvcache_bytes"),
    "--interconnect": ("Target", "interconnect"),
    "--dtype": ("Request", "dtype"),
    "--quantization": ("Request", "quantization"),
    "--concurrency": ("Request", "concurrency"),
}


def _docstrings(cls: str) -> dict[str, str]:
    """The field docstrings of `cls` (planner/plan.py's Request, planner/target.py's others), read here on their own."""
    import ast
    from pathlib import Path

    import planner.plan
    import planner.target

    tree = ast.parse(Path((planner.plan if cls == "Request" else planner.target).__file__).read_text())
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    return {
        a.target.id: " ".join(b.value.value.split())
        for a, b in zip(body, body[1:])
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)
    }


@pytest.mark.parametrize("flag", sorted(FIELD_FLAGS))
def test_plan_flag_help_is_its_field_docstring(flag):
    cls, field = FIELD_FLAGS[flag]
    sentence = _docstrings(cls)[field].split(". ")[0].rstrip(".")
    help_text = next(a for a in _options("plan") if flag in a.option_strings).help
    assert sentence[1:] in help_text and help_text[0].lower() == sentence[0].lower(), (help_text, sentence)


def test_plan_help_printed_carries_the_docstrings(capsys):
    assert main(["plan", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "skipping the measured terms as vLLM does" in out and "stages of whole layers" in out


def test_a_run_without_help_reads_no_docstring_and_keeps_every_flag():
    import planner.cli.fieldhelp as fieldhelp

    fieldhelp.field_docs.cache_clear()
    quick = build_parser("plan", with_help=False)
    assert fieldhelp.field_docs.cache_info().misses == 0
    full = build_parser("plan")
    flags = lambda p: {  # noqa: E731
        s: a.dest
        for a in next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices["plan"]._actions
        for s in a.option_strings
    }
    assert flags(quick) == flags(full)
