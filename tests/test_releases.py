"""Release facts: version parsing, range merging at every boundary, and data validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from planner import release_loader, releases
from planner.errors import PlannerError
from planner.paths import profiles_dir

DATA = profiles_dir() / "vllm" / releases.DATA_FILE

# ---------------------------------------------------------------------------------------------------
# Version parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.19", (0, 19, 0, 0)),
        ("0.19.0", (0, 19, 0, 0)),
        ("v0.19.0", (0, 19, 0, 0)),
        ("0.10.1.1", (0, 10, 1, 1)),
        (" 0.20.1 ", (0, 20, 1, 0)),
        ("0.19.0+cu128", (0, 19, 0, 0)),
        ("0.10.1.1+cu126", (0, 10, 1, 1)),
        ("0.19.0.post1", (0, 19, 0, 0)),
    ],
)
def test_parse_version(text, expected):
    assert releases.parse_version(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "0", "19", "0.x.1", "0.19.0.1.2", "0.19-0", "latest-ish"])
def test_parse_version_rejects_garbage(text):
    with pytest.raises(PlannerError, match="0.19.0"):
        releases.parse_version(text)


@pytest.mark.parametrize("text", ["0.20.0rc1", "0.11.1rc2.dev150+gabc", "0.19.0.dev3"])
def test_parse_version_rejects_prereleases(text):
    with pytest.raises(PlannerError, match="pre-release"):
        releases.parse_version(text)


def test_parse_version_rejects_non_string():
    with pytest.raises(PlannerError):
        releases.parse_version(0.19)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "version, canonical", [((0, 19, 0, 0), "0.19.0"), ((0, 10, 1, 1), "0.10.1.1"), ((0, 20, 1, 0), "0.20.1")]
)
def test_format_version(version, canonical):
    assert releases.format_version(version) == canonical


# ---------------------------------------------------------------------------------------------------
# Known versions, newest, get()


def test_known_versions():
    known = releases.known_versions()
    assert known[0] == "0.10.0" and known[-1] == "0.33.0"
    assert len(known) == 39
    for v in ("0.10.1.1", "0.11.2", "0.14.1", "0.20.2", "0.25.1", "0.27.1"):
        assert v in known
    parsed = [releases.parse_version(v) for v in known]
    assert parsed == sorted(parsed)


def test_newest_and_range():
    assert releases.newest() == "0.33.0"
    assert releases.supported_range() == ("0.10.0", "0.33.0")
    assert releases.get(None).version == "0.33.0"
    assert releases.get().version == "0.33.0"
    assert releases.get("latest").version == "0.33.0"


@pytest.mark.parametrize(
    "asked, version, known",
    [
        ("0.19", "0.19.0", True),
        ("v0.19.0", "0.19.0", True),
        ("0.10.1.1", "0.10.1.1", True),
        ("0.19.0+cu128", "0.19.0", True),
        ("0.19.5", "0.19.5", False),  # inside the window, not a release: facts of its range
        ("0.33.1", "0.33.1", False),  # a future patch of the newest minor
    ],
)
def test_get_version_forms(asked, version, known):
    f = releases.get(asked)
    assert f.version == version
    assert f.known_release is known


def test_unreleased_patch_gets_its_range():
    a, b = releases.get("0.19.5"), releases.get("0.19.1")
    assert a._replace(version="x", known_release=True, docker_image="x") == b._replace(version="x", docker_image="x")


@pytest.mark.parametrize("bad", ["0.9.2", "0.9", "0.34.0", "1.0.0", "0.8.5"])
def test_unsupported_versions(bad):
    with pytest.raises(PlannerError) as e:
        releases.get(bad)
    msg = str(e.value)
    assert "0.10.0" in msg and "0.33.0" in msg and bad in msg
    assert "\n" not in msg


@pytest.mark.parametrize("bad", ["abc", "", "0.20.0rc1"])
def test_unreadable_versions(bad):
    with pytest.raises(PlannerError):
        releases.get(bad)


def test_every_known_version_loads_and_is_hashable():
    for v in releases.known_versions():
        f = releases.get(v)
        assert f.version == v and f.known_release
        hash(f)
        assert f.docker_image == f"vllm/vllm-openai:v{v}"


def test_get_is_cached():
    assert releases.get("0.19.0") is releases.get("v0.19")


def test_every_field_has_a_docstring():
    import ast
    import inspect

    src = inspect.getsource(releases.ReleaseFacts)
    body = ast.parse(src).body[0].body
    documented = set()
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            documented.add(node.target.id)
    names = set(releases.ReleaseFacts._fields)
    assert names <= documented


# ---------------------------------------------------------------------------------------------------
# Facts at boundaries: {fact: {version: expected}}

BOUNDARIES: dict[str, dict[str, object]] = {
    "gpu_memory_utilization_default": {"0.10.0": 0.9, "0.19.1": 0.9, "0.20.0": 0.92, "0.20.1": 0.92, "0.33.0": 0.92},
    "cudagraph_estimate_profiled": {"0.17.1": False, "0.18.0": True, "0.19.1": True, "0.33.0": True},
    "cudagraph_estimate_subtracted": {
        "0.17.1": False,
        "0.18.0": False,
        "0.19.1": False,
        "0.20.0": True,
        "0.33.0": True,
    },
    "budget_formula": {
        "0.10.0": "peak_increase",
        "0.26.0": "peak_increase",
        "0.27.0": "total_consumed",
        "0.33.0": "total_consumed",
    },
    "nccl_before_snapshot": {"0.10.2": False, "0.11.0": True, "0.33.0": True},
    "cublas_before_snapshot": {"0.32.0": False, "0.33.0": True},
    "kv_tokens_formula": {
        "0.10.0": "blocks_x_block_size",
        "0.19.1": "blocks_x_block_size",
        "0.20.0": "blocks_x_block_size",
        "0.20.1": "concurrency_x_max_model_len",
        "0.33.0": "concurrency_x_max_model_len",
    },
    "kv_tokens_cp_multiplier": {
        "0.10.1.1": "none",
        "0.10.2": "dcp",
        "0.11.2": "dcp",
        "0.12.0": "pcp_x_dcp",
        "0.20.0": "pcp_x_dcp",
        "0.20.1": "none",
    },
    "kv_size_logged_per_worker": {"0.11.0": True, "0.11.1": False},
    "null_block_in_fit_check": {"0.28.0": False, "0.29.0": True, "0.33.0": True},
    "fit_check": {
        "0.10.0": "sum_of_layers",
        "0.13.0": "sum_of_layers",
        "0.14.0": "group0_blocks",
        "0.17.1": "group0_blocks",
        "0.18.0": "group0_blocks",
        "0.19.0": "all_groups_blocks",
        "0.28.0": "all_groups_blocks",
        "0.29.0": "bytes_per_block",
    },
    "bytes_per_block_rule": {"0.28.0": "group_size_x_page", "0.29.0": "largest_group_sum"},
    "hybrid_group_size_rule": {"0.17.1": "min_layers", "0.18.0": "max_if_under_1.5x_min"},
    "sliding_window_inflight_tokens": {
        "0.10.0": "max_num_batched_tokens",
        "0.25.1": "max_num_batched_tokens",
        "0.26.0": "max_concurrent_batches_x_mnbt",
        "0.27.0": "max_concurrent_batches_x_mnbt",
    },
    "async_scheduling_default": {"0.13.0": False, "0.14.0": True},
    "hybrid_prefix_caching_default": {"0.25.1": False, "0.26.0": True, "0.27.0": True},
    "v2_model_runner_env": {"0.11.2": False, "0.12.0": True, "0.33.0": True},
    "mamba_prefix_caching_mode": {
        "0.14.1": "unsupported",
        "0.15.0": "all_if_supported_else_align",
        "0.27.1": "all_if_supported_else_align",
        "0.28.0": "align",
        "0.32.0": "align",
    },
    "mamba_blocks_align_mode": {"0.14.1": None, "0.15.0": 2, "0.33.0": 2},
    "mamba_blocks_none_mode": {"0.10.0": 1, "0.33.0": 1},
    "mamba_blocks_add_spec_tokens": {"0.14.1": False, "0.15.0": True},
    "mamba_align_prefill_checkpoint_blocks": {"0.31.0": (), "0.32.0": ("mamba2",), "0.33.0": ("mamba2", "gdn")},
    "mamba_ssm_cache_bytes_nemotron_h": {"0.12.0": None, "0.19.1": 2, "0.20.0": 4},
    "mamba_all_mode_adds_spec_blocks": {"0.27.1": False, "0.28.0": True},
    "hybrid_mamba_block_align": {
        "0.10.0": "fixed_16",
        "0.11.0": "fixed_16",
        "0.11.1": "16_or_mla_64",
        "0.19.1": "16_or_mla_64",
        "0.20.0": "backend_kernel_block",
    },
    "block_size_default": {"0.10.0": 16, "0.33.0": 16},
    "block_size_from_backend": {"0.17.1": False, "0.18.0": True},
    "sparse_mla_block_size": {"0.10.2": None, "0.11.0": 64},
    "block_size_cpu_default": {"0.10.0": 128, "0.33.0": 128},
    "block_size_cpu_without_ipex": {"0.11.0": 16, "0.11.1": None},
    "block_size_cpu_mla": {"0.27.1": None, "0.28.0": 16},
    "max_model_len_fallback": {"0.10.0": 2048, "0.33.0": 2048},
    "rope_scaling_types_not_multiplied": {
        "0.10.0": ("su", "longrope", "llama3"),
        "0.29.0": ("su", "longrope", "llama3"),
        "0.30.0": ("su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling"),
    },
    "yarn_uses_original_max_position": {"0.29.0": True, "0.30.0": False},
    "longrope_defaults_to_original": {"0.11.0": False, "0.11.1": True},
    "max_model_len_auto_fit": {"0.13.0": False, "0.14.0": True},
    "mnbt_capped_by_seqs_x_len": {"0.11.0": False, "0.11.1": True},
    "kv_cache_memory_bytes_flag": {"0.10.1": False, "0.10.1.1": False, "0.10.2": True, "0.33.0": True},
    "swap_space_flag": {"0.10.0": True, "0.17.1": True, "0.18.0": False},
    "max_seq_len_to_capture_flag": {"0.10.0": True, "0.10.2": True, "0.11.0": False},
    "cuda_graph_sizes_flag": {"0.10.0": True, "0.12.0": True, "0.13.0": False},
    "max_cudagraph_capture_size_flag": {"0.11.0": False, "0.11.1": True},
    "performance_mode_flag": {"0.16.0": False, "0.17.0": True},
    "device_memory_utilization_alias": {"0.30.0": False, "0.31.0": True},
    "calculate_kv_scales_flag": {"0.27.1": True, "0.28.0": False},
    "kv_offloading_size_flag": {"0.11.0": False, "0.11.1": True},
    "native_multinode_flags": {"0.11.0": False, "0.11.1": True, "0.33.0": True},
    "multinode_backends": {"0.11.0": ("ray",), "0.11.1": ("ray", "mp")},
    "quantizations_removed": {
        "0.23.0": (),
        "0.24.0": ("gguf",),
        "0.27.1": ("gguf",),
        "0.28.0": ("gguf", "bitsandbytes"),
    },
    "online_quant_shorthands": {
        "0.19.1": (),
        "0.30.0": (
            "fp8_per_tensor",
            "fp8_per_block",
            "fp8_per_channel",
            "int8_per_channel_weight_only",
            "nvfp4_per_token",
            "mxfp8",
        ),
    },
    "fp8_online_requires_serialized": {"0.30.0": False, "0.31.0": True},
    "encoder_decoder_supported": {"0.10.1.1": False, "0.10.2": True},
    "mm_ipc_reservation": {"0.24.0": False, "0.25.0": True},
    "log_kv_cache_size_style": {
        "0.10.0": "two_lines",
        "0.27.1": "two_lines",
        "0.28.0": "one_line",
        "0.29.0": "one_line",
        "0.30.0": "one_line_device",
    },
    "log_available_kv_format": {
        "0.13.0": "Available KV cache memory: %.2f GiB",
        "0.14.0": "Available KV cache memory: %s GiB",
    },
    "log_model_loading_format": {
        "0.11.0": "Model loading took %.4f GiB and %.6f seconds",
        "0.11.1": "Model loading took %.4f GiB memory and %.6f seconds",
        "0.13.0": "Model loading took %.4f GiB memory and %.6f seconds",
        "0.14.0": "Model loading took %s GiB memory and %.6f seconds",
    },
    "log_model_loading_format_v2_runner": {
        "0.11.2": None,
        "0.12.0": "Model loading took %.4f GiB and %.6f seconds",
        "0.27.1": "Model loading took %s GiB and %.6f seconds",
        "0.28.0": "Model loading took %s GiB memory and %.6f seconds",
    },
}

CASES = [(fact, v, expected) for fact, table in BOUNDARIES.items() for v, expected in table.items()]


@pytest.mark.parametrize("fact, version, expected", CASES, ids=[f"{f}@{v}" for f, v, _ in CASES])
def test_fact_at_boundary(fact, version, expected):
    assert getattr(releases.get(version), fact) == expected


@pytest.mark.parametrize(
    "version, ampere, hopper, blackwell",
    [
        ("0.10.0", 16, 64, 16),
        ("0.10.1", 16, 64, 128),
        ("0.14.1", 16, 64, 128),
        ("0.15.0", 16, 64, 64),
        ("0.17.1", 16, 64, 64),
        ("0.18.0", 16, 16, 32),
        ("0.33.0", 16, 16, 32),
    ],
)
def test_mla_block_size(version, ampere, hopper, blackwell):
    f = releases.get(version)
    # sm120 (RTX 50 / RTX PRO 6000) and non-CUDA GPUs get Triton MLA's 16 in every release
    assert dict(f.mla_block_size_default) == {
        "ampere": ampere,
        "hopper": hopper,
        "blackwell": blackwell,
        "sm120": 16,
        "other": 16,
    }
    assert set(f.mla_backend_default) == {"ampere", "hopper", "blackwell", "sm120", "other"}


def test_mla_backends():
    assert releases.get("0.17.1").mla_backend_default["hopper"] == "FLASHMLA"
    assert releases.get("0.18.0").mla_backend_default["hopper"] == "FLASH_ATTN_MLA"
    assert releases.get("0.14.1").mla_backend_default["blackwell"] == "CUTLASS_MLA"
    assert releases.get("0.18.0").mla_backend_default["blackwell"] == "FLASHINFER_MLA"
    assert releases.get("0.33.0").mla_backend_default["ampere"] == "TRITON_MLA"


@pytest.mark.parametrize(
    "version, added, absent",
    [
        ("0.10.0", ["auto", "fp8", "fp8_inc"], ["bfloat16", "fp8_ds_mla"]),
        ("0.11.0", ["bfloat16"], ["fp8_ds_mla"]),
        ("0.11.1", ["fp8_ds_mla"], ["float16"]),
        ("0.17.1", ["fp8_ds_mla"], ["float16"]),
        ("0.18.0", ["float16"], ["nvfp4"]),
        ("0.20.0", ["nvfp4", "turboquant_k8v4", "fp8_per_token_head"], ["int4_per_token_head"]),
        ("0.25.0", ["int4_per_token_head"], ["nvfp4_4over6"]),
        ("0.28.0", ["nvfp4_4over6"], ["nvfp4_ds_mla"]),
        ("0.30.0", ["nvfp4_ds_mla"], ["ultraquant_4bit"]),
        ("0.32.0", ["ultraquant_4bit"], ["octave_k3v4"]),
        ("0.33.0", ["octave_k3v4", "octave_k3v3", "octave_k3v3_compact"], []),
    ],
)
def test_kv_cache_dtypes(version, added, absent):
    dtypes = releases.get(version).kv_cache_dtypes
    assert set(added) <= set(dtypes)
    assert not set(absent) & set(dtypes)


def test_kv_cache_dtypes_only_grow():
    prev: set[str] = set()
    for v in releases.known_versions():
        cur = set(releases.get(v).kv_cache_dtypes)
        assert prev <= cur, v
        prev = cur


def test_mamba_all_mode_architectures():
    assert releases.get("0.14.1").mamba_all_mode_architectures == ()
    assert "BambaForCausalLM" in releases.get("0.23.0").mamba_all_mode_architectures
    assert "BambaForCausalLM" not in releases.get("0.24.0").mamba_all_mode_architectures
    assert "JambaForCausalLM" in releases.get("0.31.0").mamba_all_mode_architectures
    assert releases.get("0.32.0").mamba_all_mode_architectures == ()


def test_v2_runner_allowlist():
    assert releases.get("0.21.0").v2_model_runner_default_architectures == ()
    assert releases.get("0.22.0").v2_model_runner_default_architectures == ("Qwen3ForCausalLM",)
    assert "DeepseekV4ForCausalLM" in releases.get("0.28.0").v2_model_runner_default_architectures
    assert releases.get("0.29.0").v2_model_runner_default_architectures == ()


def test_log_kv_size_formats():
    assert releases.get("0.27.1").log_kv_cache_size_formats == (
        "GPU KV cache size: %s tokens",
        "Maximum concurrency for %s tokens per request: %.2fx",
    )
    (one,) = releases.get("0.28.0").log_kv_cache_size_formats
    assert one.startswith("GPU KV cache size: %s tokens, Maximum concurrency")
    (dev,) = releases.get("0.30.0").log_kv_cache_size_formats
    assert dev.startswith("%s KV cache size")


def test_docker_image():
    assert releases.get("0.19.0").docker_image == "vllm/vllm-openai:v0.19.0"
    assert releases.get("0.10.1.1").docker_image == "vllm/vllm-openai:v0.10.1.1"
    assert releases.get("v0.19").docker_image == "vllm/vllm-openai:v0.19.0"


# ---------------------------------------------------------------------------------------------------
# Batch defaults

H100 = dict(total_gib=79.19, device_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
A100 = dict(total_gib=79.15, device_name="NVIDIA A100-SXM4-80GB", compute_capability="8.0")
L40S = dict(total_gib=44.4, device_name="NVIDIA L40S", compute_capability="8.9")
B200 = dict(total_gib=178.4, device_name="NVIDIA B200", compute_capability="10.0")
GB10 = dict(total_gib=119.7, device_name="NVIDIA GB10", compute_capability="12.1")


@pytest.mark.parametrize(
    "version, device, entrypoint, expected",
    [
        ("0.19.0", H100, "serve", (8192, 1024)),
        ("0.19.0", H100, "llm", (16384, 1024)),
        ("0.19.0", A100, "serve", (2048, 256)),
        ("0.19.0", A100, "llm", (8192, 256)),
        ("0.19.0", L40S, "serve", (2048, 256)),
        ("0.27.1", B200, "serve", (8192, 1024)),  # no 160 GiB tier yet
        ("0.28.0", B200, "serve", (16384, 1024)),
        ("0.28.0", B200, "llm", (16384, 1024)),
        ("0.29.0", H100, "serve", (8192, 1024)),
        ("0.32.0", GB10, "serve", (8192, 1024)),  # GB10 still big tier
        ("0.33.0", GB10, "serve", (2048, 256)),  # GB10 exception
        ("0.33.0", GB10, "llm", (8192, 256)),
        ("0.33.0", H100, "serve", (8192, 1024)),
        ("0.10.0", H100, "serve", (8192, 1024)),
    ],
)
def test_default_batch_gpu(version, device, entrypoint, expected):
    assert releases.get(version).default_batch(entrypoint, **device) == expected


def test_default_batch_unknown_device_is_lowest_tier():
    assert releases.get("0.33.0").default_batch("serve") == (2048, 256)


@pytest.mark.parametrize("ws, serve, llm", [(1, (2048, 128), (4096, 256)), (2, (4096, 256), (8192, 512))])
def test_default_batch_cpu(ws, serve, llm):
    f = releases.get("0.32.0")
    assert f.default_batch("serve", cpu=True, world_size=ws) == serve
    assert f.default_batch("llm", cpu=True, world_size=ws) == llm


def test_default_batch_bad_entrypoint():
    with pytest.raises(PlannerError):
        releases.get().default_batch("openai")  # type: ignore[arg-type]


def test_batch_fallbacks():
    bd = releases.get("0.19.0").batch_defaults
    assert (bd.fallback_max_num_batched_tokens, bd.fallback_max_num_seqs) == (2048, 128)
    assert bd.tiers[-1].min_total_gib == 0


# ---------------------------------------------------------------------------------------------------
# Data validation


def _raw() -> dict:
    return yaml.safe_load(DATA.read_text())


def _write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "releases.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def test_shipped_data_is_valid():
    data = releases.load_data(DATA)
    assert set(data.facts) == set(release_loader._fact_fields())


def test_every_range_boundary_is_a_release():
    """Range boundaries should be real releases, so a typo such as '0.20.3' is caught."""
    data = releases.load_data(DATA)
    for name, ranges in data.facts.items():
        for r in ranges:
            for b in (r.start, r.until):
                assert b is None or b in data.releases, (name, b)


def test_every_fact_has_a_source_comment():
    """Each fact in the YAML is preceded by a comment (its source) somewhere in its block."""
    lines = DATA.read_text().splitlines()
    facts = _raw()["facts"]
    for name in facts:
        idx = next(i for i, l in enumerate(lines) if l.startswith(f"  {name}:"))
        above = []
        j = idx - 1
        while j >= 0 and (lines[j].startswith("  #") or not lines[j].strip()):
            above.append(lines[j])
            j -= 1
        # facts grouped under one comment (e.g. the CLI flags) share the group's comment
        block_comment = any(l.strip().startswith("#") for l in above)
        group_comment = any(
            lines[k].strip().startswith("# ref") or "src:" in lines[k] for k in range(max(0, idx - 40), idx)
        )
        assert block_comment or group_comment, name


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["facts"].pop("budget_formula"), "facts missing: budget_formula"),
        (lambda d: d["facts"].__setitem__("made_up_fact", [{"from": "0.10.0", "value": 1}]), "unknown facts"),
        (
            lambda d: d["facts"]["gpu_memory_utilization_default"][1].__setitem__("from", "0.19.0"),
            "overlap",
        ),
        (
            lambda d: d["facts"]["gpu_memory_utilization_default"][1].__setitem__("from", "0.21.0"),
            "gap",
        ),
        (
            lambda d: d["facts"]["gpu_memory_utilization_default"][0].__setitem__("from", "0.11.0"),
            "starts at 0.11.0",
        ),
        (
            lambda d: d["facts"]["gpu_memory_utilization_default"][1].__setitem__("until", "0.40.0"),
            "no 'until'",
        ),
        (lambda d: d["facts"]["budget_formula"][0].__setitem__("value", "bogus"), "not one of"),
        (lambda d: d["facts"]["swap_space_flag"][0].__setitem__("value", "yes"), "true/false"),
        (lambda d: d["facts"]["block_size_default"][0].__setitem__("value", 16.5), "integer"),
        (lambda d: d["facts"]["budget_formula"][0].__setitem__("from", 0.1), "quoted strings"),
        (lambda d: d["facts"]["budget_formula"][0].__setitem__("extra", 1), "exactly"),
        (lambda d: d["facts"]["mla_block_size_default"][0]["value"].pop("ampere"), "same keys"),
        (lambda d: d["facts"]["batch_defaults"][0]["value"].pop("cpu"), "BatchDefaults missing cpu"),
        (lambda d: d["releases"].reverse(), "sorted"),
        (lambda d: d.pop("newest"), "newest"),
        (lambda d: d["facts"].__setitem__("budget_formula", []), "non-empty list"),
    ],
)
def test_bad_data_is_refused(tmp_path, mutate, message):
    doc = copy.deepcopy(_raw())
    mutate(doc)
    with pytest.raises(PlannerError, match=message) as e:
        releases.load_data(_write(tmp_path, doc))
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(PlannerError, match="missing"):
        releases.load_data(tmp_path / "nope.yaml")


def test_broken_yaml(tmp_path):
    p = tmp_path / "releases.yaml"
    p.write_text("facts: [unclosed\n")
    with pytest.raises(PlannerError, match="not valid YAML"):
        releases.load_data(p)


def test_facts_for_other_data(tmp_path):
    """facts_for() merges whatever data it is given (used by tests and tools)."""
    doc = copy.deepcopy(_raw())
    doc["facts"]["gpu_memory_utilization_default"] = [
        {"from": "0.10.0", "until": "0.25.0", "value": 0.8},
        {"from": "0.25.0", "value": 0.95},
    ]
    data = releases.load_data(_write(tmp_path, doc))
    assert releases.facts_for("0.24.0", data).gpu_memory_utilization_default == 0.8
    assert releases.facts_for("0.25.0", data).gpu_memory_utilization_default == 0.95


# ---------------------------------------------------------------------------------------------------
# vLLM's fit-check error text (checked against the f-strings of every wheel when written)

GIB = 2**30


def test_fit_error_text_by_release():
    args = (131072, 5 * GIB + 123456789, 3 * GIB)
    old = releases.get("0.12.0").fit_error(*args, estimated_max_len=0)
    assert old.startswith("To serve at least one request with the models's max seq len (131072), (5.11 GiB KV")
    assert "memory (3.00 GiB).  Try increasing" in old  # vLLM's double space without an estimate
    assert "docs.vllm.ai" not in old
    assert "docs.vllm.ai" in releases.get("0.13.0").fit_error(*args, estimated_max_len=0)
    new = releases.get("0.14.0").fit_error(*args, estimated_max_len=12345)
    assert "memory (3.0 GiB). Based on the available memory, the estimated maximum model length is 12345. Try" in new
    assert "models's" in releases.get("0.21.0").fit_error(*args, estimated_max_len=1)
    fixed = releases.get("0.22.0").fit_error(*args, estimated_max_len=1)
    assert "the model's max seq len" in fixed and "(which also controls CPU memory on the CPU backend)" in fixed


@pytest.mark.parametrize(
    "version, url, cpu", [("0.12.0", False, False), ("0.13.0", True, False), ("0.22.0", True, True)]
)
def test_no_kv_memory_error(version, url, cpu):
    f = releases.get(version)
    text = f.fit_error(1024, GIB, 0, 0)
    assert text == f.no_kv_memory_error
    assert text.startswith("No available memory for the cache blocks.")
    assert ("docs.vllm.ai" in text) is url
    assert ("CPU backend" in text) is cpu
