"""Model accounting against published figures, vLLM's rules computed independently, and the
calibration start-ups. Table-driven over real configs."""

import json
from pathlib import Path

import pytest

from planner import accounting as acc
from planner import kv_bytes as kvb
from planner.api import inspect, load_model
from planner.errors import PlannerError
from planner.models.normalize import normalize
from planner.models.tensors import from_spec

REPO = Path(__file__).resolve().parent.parent
CALIBRATION = REPO / "benchmarks" / "data" / "calibration" / "vllm-startup-h100.jsonl"
GIB = 2**30


def bundled_configs():
    """Every bundled config.json, except those the file-only rule below cannot read (with why)."""
    from planner.models import sources

    out = []
    for model_id in sources.bundled_ids():
        path = sources.find_bundled(model_id) / "config.json"
        cfg = json.loads(path.read_text())
        text = cfg.get("text_config") or cfg
        reason = None
        if load_model(model_id).spec.mamba is not None:
            reason = "Mamba/linear-attention layers hold no KV: test_hybrid.py checks them against vLLM"
        elif "num_attention_heads" not in text:
            reason = "its text config leaves the head counts to the class defaults"
        out.append(pytest.param(path, id=model_id, marks=[pytest.mark.skip(reason=reason)] if reason else []))
    return out


def bundled_published():
    from planner.models import sources

    out = []
    for model_id in sources.bundled_ids():
        m = load_model(model_id)
        if m.meta.get("params_published") and m.tensor_source != "none":
            out.append((model_id, m.meta["params_published"]))
    return out


@pytest.mark.parametrize("model,published", bundled_published())
def test_every_bundled_published_count_is_met(model, published):
    # meta.yaml's params_published names its source; the formula over config.json must give it exactly
    assert inspect(model).params_checkpoint == published


@pytest.mark.parametrize(
    "model,vision,not_loaded",
    [
        ("Qwen/Qwen2.5-VL-7B-Instruct", 676_550_144, 0),  # RMSNorm, gated MLP, Conv3d patches, merger
        ("Qwen/Qwen2.5-VL-3B-Instruct", 668_684_288, 0),
        ("Qwen/Qwen2-VL-7B-Instruct", 675_759_104, 0),  # LayerNorm, fc1/fc2 of 4 x 1280
        # CLIP ViT-L/14-336 read at layer -2: vLLM builds 23 of 24 blocks and no post-norm
        ("llava-hf/llava-1.5-7b-hf", 311_888_896, 12_598_272),
    ],
)
def test_vision_towers_of_published_vlms(model, vision, not_loaded):
    r = inspect(model)
    assert r.params_breakdown["vision"] == vision
    assert r.params_not_loaded.get("vision", 0) == not_loaded
    assert r.params_checkpoint == r.params_published


@pytest.mark.parametrize(
    "model",
    [
        "meta-llama/Llama-3.1-8B-Instruct",
        "Qwen/Qwen3-30B-A3B",
        "Qwen/Qwen2.5-72B-Instruct",
        "mistralai/Mistral-7B-Instruct-v0.3",
        "ibm-granite/granite-3.1-8b-instruct",
    ],
)
def test_bf16_checkpoint_bytes_equal_the_safetensors_index_total(model):
    # meta.yaml's checkpoint_bytes is the Hub's model.safetensors.index.json total_size (source named there)
    meta = load_model(model).meta
    assert inspect(model).params_checkpoint * 2 == meta["checkpoint_bytes"]


@pytest.mark.parametrize(
    "model,logged_gib",
    [
        ("Qwen/Qwen2.5-VL-3B-Instruct", 7.1550),  # vLLM 0.11.0, L4 (benchmarks/data/public-logs/ray-...)
        ("Qwen/Qwen2.5-VL-7B-Instruct", 15.6271),  # vLLM 0.9.0.1, L4 (tsailiming/openshift-ai-bootstrap@535d75b)
    ],
)
def test_mrope_cache_holds_four_times_the_positions(model, logged_gib):
    # MRotaryEmbedding caches 4 x 128,000 positions x 128 (bf16): 131 MB, in "Model loading took"
    r = inspect(model)
    assert r.runtime_buffer_bytes == 4 * 128_000 * 128 * 2
    assert abs(r.weight_bytes_per_gpu / GIB - logged_gib) < 0.01


def test_llama4_vision_tower_matches_the_published_count_and_vllm_sharding():
    r = inspect("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    assert r.params_total == r.params_published == 108_641_793_536
    assert r.params_breakdown["vision"] == 871_932_416
    # encoder blocks, patch projection, pixel-shuffle adapter and projector split across TP; class and
    # position embeddings and the norms replicated (vLLM mllama4.py, mm_encoder_tp_mode "weights")
    h, layers = 1408, 34
    replicated = 577 * h + h + 2 * h + layers * 6 * h + 2 * h
    sharded = 871_932_416 - replicated
    assert inspect("meta-llama/Llama-4-Scout-17B-16E-Instruct", tp=4).weight_breakdown_per_gpu["vision"] == 2 * (
        replicated + sharded // 4
    )
    # every pipeline stage builds the vision tower (no pp_group gating in mllama4.py)
    stages = inspect("meta-llama/Llama-4-Scout-17B-16E-Instruct", tp=4, pp=2).weight_bytes_per_stage
    assert min(stages) > 2 * (replicated + sharded // 4)


def _vision_split(model: str, tp: int) -> int:
    return inspect(model, tp=tp).weight_breakdown_per_gpu["vision"] // 2  # bf16 elements on one rank


def test_pixtral_tower_and_mistral3_projector_as_vllm_builds_them():
    # PixtralHFVisionModel: bias-free conv patches, RMSNorm ln_pre, 24 gated bias-free blocks (two
    # RMSNorms each), no post-norm; Mistral3MultiModalProjector: RMSNorm, the merger's nn.Linear
    # [1024*4 -> 1024] (both replicated), linear_1 [1024 -> 5120] column, linear_2 [5120 -> 5120] row
    model, h, inter, th, layers = "mistralai/Mistral-Small-3.1-24B-Instruct-2503", 1024, 4096, 5120, 24
    replicated = 3 * 14 * 14 * h + h + layers * 2 * h + h + 4 * h * h
    sharded = layers * (4 * h * h + 3 * h * inter) + h * th + th * th
    assert inspect(model).params_breakdown["vision"] == replicated + sharded == 438_958_080
    assert _vision_split(model, 2) == replicated + sharded // 2
    assert load_model(model).spec.vision.tokens_per_image == (1540 // 14 // 2) ** 2


def test_moonvit_tower_and_kimi_vl_projector_as_vllm_builds_them():
    # MoonViT: biased conv patches, a 64 x 64 learned position table, 27 LayerNorm blocks with biased
    # QKV/out/fc0/fc1, a final LayerNorm; KimiVLMultiModalProjector (ReplicatedLinear, all whole):
    # LayerNorm(1152), [4608 -> 4608] and [4608 -> 2048], biased
    model, h, inter, th, layers, k = "moonshotai/Kimi-VL-A3B-Instruct", 1152, 4304, 2048, 27, 4 * 1152
    replicated = 3 * 14 * 14 * h + h + 64 * 64 * h + layers * (4 * h + 2 * h) + 2 * h + 2 * h + k * k + k + k * th + th
    sharded = layers * (4 * h * h + 3 * h + 2 * h * inter + inter)
    assert inspect(model).params_breakdown["vision"] == replicated + sharded
    assert _vision_split(model, 2) == replicated + sharded // 2
    # the profile's dummy image: 1024 px shrunk to 4096 patches (897 px), padded to 28 px: 33 x 33 tokens
    assert load_model(model).spec.vision.tokens_per_image == 33 * 33


@pytest.mark.parametrize(
    "feature_layer,blocks", [(-1, 27), (-2, 26), ([-24, -20, -12, -1], 27), ([-24, -20, -12, -5], 23), (3, 3)]
)
def test_llava_next_builds_the_tower_up_to_the_deepest_feature_layer(feature_layer, blocks):
    # vLLM's llava.py _get_num_hidden_layers; LLaVA-NeXT never builds the post-norm, and the
    # projector takes the features of every listed layer side by side
    cfg = json.loads((REPO / "profiles/models/google/gemma-3-27b-it/config.json").read_text())
    text = {
        "model_type": "llama",
        "hidden_size": 2048,
        "num_hidden_layers": 2,
        "num_attention_heads": 16,
        "intermediate_size": 8192,
        "vocab_size": 1000,
    }
    llava = {
        "model_type": "llava_next",
        "architectures": ["LlavaNextForConditionalGeneration"],
        "torch_dtype": "bfloat16",
        "text_config": text,
        "vision_config": cfg["vision_config"],
        "vision_feature_layer": feature_layer,
    }
    v = normalize(llava).vision
    assert (v.num_layers, v.post_norm) == (blocks, False)
    n = len(feature_layer) if isinstance(feature_layer, list) else 1
    assert v.projector_column_params == n * 1152 * 2048 + 2048 * 2048 + 2048


def test_llava_over_a_pixtral_tower_with_the_config_class_defaults():
    # pixtral-12b's layout: LlavaForConditionalGeneration whose vision_config names no sizes
    # (PixtralVisionConfig's defaults); vLLM's llava.py builds PixtralHFVisionModel for it
    cfg = {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "torch_dtype": "bfloat16",
        "vision_feature_layer": -1,
        "text_config": {
            "model_type": "mistral",
            "hidden_size": 5120,
            "head_dim": 128,
            "num_hidden_layers": 40,
            "vocab_size": 131072,
            "max_position_embeddings": 1024000,
            "sliding_window": None,
        },
        "vision_config": {"model_type": "pixtral", "head_dim": 64, "image_size": 1024, "patch_size": 16},
    }
    spec = normalize(cfg)
    h, inter, layers, th = 1024, 4096, 24, 5120
    tower = layers * (4 * h * h + 3 * h * inter + 2 * h) + 3 * 16 * 16 * h + h  # no biases, RMSNorms, ln_pre
    projector = h * th + th + th * th + th  # LlavaMultiModalProjector, biased by default
    assert sum(t.numel for t in from_spec(spec) if t.component == "vision") == tower + projector
    assert not spec.notes


@pytest.mark.parametrize("feature_layer", [-30, 40, 0, [-1, 99], []])
def test_a_feature_layer_outside_the_tower_is_a_one_line_error(feature_layer):
    cfg = json.loads((REPO / "profiles/models/ibm-granite/granite-vision-3.3-2b/config.json").read_text())
    cfg["vision_feature_layer"] = feature_layer
    with pytest.raises(
        PlannerError, match="vision_feature_layer .* does not name a layer of the 27-block vision tower"
    ):
        normalize(cfg)


def test_vision_tower_tp_must_divide_its_heads_and_mlp():
    with pytest.raises(PlannerError, match="vision tower .*16 heads, MLP 4304.*valid TP sizes are 1, 2, 4, 8, 16"):
        inspect("google/gemma-3-27b-it", tp=32)


def test_published_extras_are_shown_separately():
    r = inspect("deepseek-ai/DeepSeek-V3")
    assert r.params_total == 671_026_419_200  # the 671B main model vLLM loads
    assert r.params_not_loaded == {"mtp": 13_463_426_304}
    # the rest of the published figure is the fp8 block-scale tensors
    assert r.params_checkpoint - r.params_total - 13_463_426_304 == 41_540_496
    llama2 = inspect("meta-llama/Llama-2-7b-hf")
    assert llama2.params_not_loaded == {"buffers": 2048}  # 32 layers x 64 stored rotary inv_freq


# model, tp, pp, kv dtype -> bytes per token per GPU (issue #2's reference values)
KV_CASES = [
    ("meta-llama/Llama-3.1-8B-Instruct", 1, "auto", 131_072),
    ("meta-llama/Llama-3.1-70B-Instruct", 8, "auto", 40_960),
    ("meta-llama/Llama-3.1-70B-Instruct", 16, "auto", 40_960),  # 8 KV heads < TP 16: replicated
    ("Qwen/Qwen3-32B", 2, "auto", 131_072),
    ("deepseek-ai/DeepSeek-V3", 8, "auto", 70_272),  # MLA: 61 x 576 x 2, not split by TP
]


@pytest.mark.parametrize("model,tp,kv,expected", KV_CASES)
def test_kv_bytes_reference_values(model, tp, kv, expected):
    assert inspect(model, tp=tp, kv_cache_dtype=kv).kv_bytes_per_token_per_gpu == expected
    assert inspect(model, tp=tp, kv_cache_dtype="fp8").kv_bytes_per_token_per_gpu == expected // 2


def _independent_kv(cfg: dict, tp: int, dtype_bytes: int) -> int:
    """vLLM's page-size rule written out from the raw config, without the planner's spec."""
    text = cfg.get("text_config") or cfg
    layers = text["num_hidden_layers"]
    if "compress_ratios" in text:  # DeepSeek-V4: fp8_ds_mla pages (584 B states, 576-B aligned) of 256 tokens
        pad = lambda n: -(-n // 576) * 576  # noqa: E731
        idx = text["index_head_dim"] + text["index_head_dim"] // 128 * 4
        ratios = [r for r in text["compress_ratios"][:layers] if r > 1]
        return sum(pad(256 // r * 584) + (pad(64 * idx) if r == 4 else 0) for r in ratios) // 256
    if "kv_lora_rank" in text:
        # DSA (DeepSeek-V3.2, GLM-5): the indexer's uint8 key cache, index_head_dim + one fp32 scale per 128
        indexer = text["index_head_dim"] + text["index_head_dim"] // 128 * 4 if "index_topk" in text else 0
        # GLM-5.2's IndexShare: only the layers its indexer_types marks "full" keep an indexer cache
        with_indexer = text["indexer_types"].count("full") if "indexer_types" in text else layers
        return layers * (text["kv_lora_rank"] + text["qk_rope_head_dim"]) * dtype_bytes + with_indexer * indexer
    heads = text["num_attention_heads"]
    kv_heads = text.get("num_key_value_heads") or heads
    head_dim = text.get("head_dim") or text["hidden_size"] // heads
    if "block_configs" in text:  # nemotron-nas: KV only in blocks with attention, heads / n_heads_in_group
        attn = [b["attention"] for b in text["block_configs"] if not b["attention"]["no_op"]]
        layers, kv_heads = len(attn), heads // attn[0]["n_heads_in_group"]
    if "global_head_dim" in text:  # Gemma 4: full layers have their own KV heads and head size
        # (num_global_key_value_heads only with attention_k_eq_v); the num_kv_shared_layers last keep no cache
        own = text["layer_types"][: layers - (text.get("num_kv_shared_layers") or 0)]
        full = own.count("full_attention")
        g = text["num_global_key_value_heads"] if text.get("attention_k_eq_v") else kv_heads
        full_kv = full * 2 * max(1, g // tp) * text["global_head_dim"] * dtype_bytes
        return (len(own) - full) * 2 * max(1, kv_heads // tp) * head_dim * dtype_bytes + full_kv
    if "swa_head_dim" in text:  # MiMo-V2: sliding layers (hybrid_layer_pattern 1) have their own heads and sizes
        swa = sum(text["hybrid_layer_pattern"][:layers])
        per = lambda h, k, v: max(1, h // tp) * (k + v) * dtype_bytes  # noqa: E731
        full = per(kv_heads, head_dim, text["v_head_dim"])
        return (layers - swa) * full + swa * per(
            text["swa_num_key_value_heads"], text["swa_head_dim"], text["swa_v_head_dim"]
        )
    # MiniMax-M3: each sparse layer's index keys, one bf16 head of sparse_index_dim, whole on every rank
    sparse = text.get("sparse_attention_config") or {}
    index = sum(sparse.get("sparse_attention_freq") or ()) * sparse.get("sparse_index_dim", 0) * 2
    return layers * 2 * max(1, kv_heads // tp) * head_dim * dtype_bytes + index


@pytest.mark.parametrize("path", bundled_configs())
@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_kv_bytes_match_independent_rule(path, tp):
    cfg = json.loads(path.read_text())
    text = cfg.get("text_config") or cfg
    heads = text["num_attention_heads"]
    kv = text.get("num_key_value_heads") or heads
    if heads % tp or (kv % tp and tp % kv):
        pytest.skip("TP not valid for this model")
    spec = normalize(cfg)
    got = kvb.kv_bytes_per_token(spec, 2, tp).max_per_gpu
    assert got == _independent_kv(cfg, tp, 2)


@pytest.mark.parametrize(
    "layers,pp,expected",
    [
        (32, 1, [32]),
        (32, 2, [16, 16]),
        (61, 4, [15, 15, 16, 15]),
        (80, 3, [27, 27, 26]),
        (10, 4, [2, 3, 3, 2]),
        (126, 8, [15, 16, 16, 16, 16, 16, 16, 15]),
    ],
)
def test_pp_split_follows_get_pp_indices(layers, pp, expected):
    # vLLM: L // pp each; the remainder +1 each to partitions -2, -3, ... (never the last)
    assert [len(r) for r in acc.pp_layer_ranges(layers, pp)] == expected


def test_kv_replication_and_pp_stage():
    # 70B at PP 2: each stage holds 40 layers' KV; TP 16 replicates the 8 KV heads.
    r = inspect("meta-llama/Llama-3.1-70B-Instruct", tp=16, pp=2)
    assert r.kv_bytes_per_token_per_stage == (20_480, 20_480)
    assert r.kv_heads_per_rank == 1


def test_vocab_padding_and_tp_sharding():
    spec = normalize(
        {
            "model_type": "llama",
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_hidden_layers": 1,
            "intermediate_size": 128,
            "vocab_size": 1000,
            "torch_dtype": "bfloat16",
        }
    )
    tensors = from_spec(spec)
    embed = next(t for t in tensors if t.name == "model.embed_tokens.weight")
    assert acc.rank_shape(embed, spec, 4) == (1024 // 4, 64)  # 1000 padded to 1024, then split
    k = next(t for t in tensors if t.name.endswith("k_proj.weight"))
    assert acc.rank_shape(k, spec, 4) == (16, 64)  # 2 KV heads < TP 4: one head of 16 per rank


def test_tied_embeddings_have_no_lm_head():
    r = inspect("facebook/opt-125m")
    assert "lm_head" not in r.params_breakdown
    assert r.params_total == 125_239_296


def test_moe_active_params():
    r = inspect("Qwen/Qwen3-30B-A3B")
    assert r.params_active == 3_353_032_704  # the third-party figure quoted in param-counts.jsonl


def test_sliding_window_layer_counts():
    assert inspect("google/gemma-3-27b-it").layer_types == {"sliding": 52, "full": 10}
    assert inspect("openai/gpt-oss-20b").layer_types == {"sliding": 12, "full": 12}
    assert inspect("google/gemma-2-9b-it").layer_types == {"sliding": 21, "full": 21}


def test_fp8_block_weights_are_about_one_byte_per_param():
    r = inspect("Qwen/Qwen3-32B-FP8")
    # linear weights fp8 + fp32 128x128 block scales; embeddings, lm_head and norms stay bf16
    linear = (
        r.params_total
        - r.params_breakdown["embeddings"]
        - r.params_breakdown.get("lm_head", 0)
        - r.params_breakdown["norms"]
    )
    floor = linear + 2 * (r.params_total - linear)
    assert floor < r.weight_bytes_per_gpu < floor * 1.001 + 64 * 2**20


def test_online_fp8_halves_linear_weights():
    bf16 = inspect("meta-llama/Llama-3.1-8B-Instruct")
    fp8 = inspect("meta-llama/Llama-3.1-8B-Instruct", quantization="fp8")
    assert fp8.weight_bytes_per_gpu < 0.6 * bf16.weight_bytes_per_gpu


# ---- against real vLLM start-ups (calibration) ------------------------------------------------


def calibration_cases():
    out = []
    for line in CALIBRATION.read_text().splitlines():
        r = json.loads(line)
        if r.get("weights_gib") is None:
            continue
        out.append(pytest.param(r, id=f"{r['model']}-tp{r['tp']}pp{r['pp']}-{r['dtype']}-{r['quantization']}"))
    return out


@pytest.mark.parametrize("case", calibration_cases())
def test_weights_match_vllm_model_loading_took(case):
    model = load_model(case["model"])  # every model of the calibration set is bundled
    dtype = case["dtype"] or None
    quant = case["quantization"]
    r = inspect(
        model,
        tp=case["tp"],
        pp=case["pp"],
        dtype=dtype,
        quantization=quant if quant in ("fp8",) and model.spec.quant is None else None,
    )
    predicted = r.weight_bytes_per_gpu / GIB
    tolerance = 0.01 if "weight_bytes_per_gpu" not in r.estimated else 0.08
    assert predicted == pytest.approx(case["weights_gib"], rel=tolerance, abs=0.006)


@pytest.mark.parametrize(
    "model,quantization,warned",
    [
        (
            "RedHatAI/Mistral-Small-3.1-24B-Instruct-2503-quantized.w8a8",
            None,
            False,
        ),  # recipe ignores re:vision_tower.*
        ("Qwen/Qwen2.5-VL-7B-Instruct", "fp8", True),  # online fp8: nothing excludes the ViT
        ("Qwen/Qwen2.5-VL-7B-Instruct", None, False),
    ],
)
def test_a_quantization_that_may_reach_the_vision_tower_is_flagged(model, quantization, warned):
    r = inspect(model, quantization=quantization)
    assert any("vision tower is counted at" in w for w in r.warnings) == warned


@pytest.mark.parametrize(
    "module, ignored",
    [
        ("lm_head", True),  # the entry itself
        ("model.lm_head", True),  # a module whose name ends with it
        ("model.layers.1", True),
        ("model.layers.1.mlp.down_proj", True),  # under it
        ("model.layers.10.mlp.down_proj", False),  # not under "model.layers.1"
        ("c.a.b", True),
        ("xa.b", False),  # ends with "a.b" but not at a dot
        ("a.bc", False),
        ("x.gate", True),  # re: entries are searched
        ("x.gate_proj", False),
        ("mlp.up_proj", True),  # a glob
        ("model.mlp.up_proj", False),  # a glob matches from the start (a literal entry also matches at a dot)
        ("visual.blocks.0", True),  # a glob, and what is under it
        ("model.visual.blocks.0", False),
    ],
)
def test_ignore_entries_match_as_vllm_names_modules(module, ignored):
    from planner.models.spec import QuantSpec

    q = QuantSpec("fp8", 8, ignored_modules=("lm_head", "model.layers.1", "re:.*gate$", "mlp.*_proj", "vis*", "a.b"))
    assert acc.is_ignored(module + ".weight", q) is ignored
