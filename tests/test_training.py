"""Training memory: published checks (16 B/param, LoRA counts, the ZeRO paper, Korthikanti et al.),
the derived activation variants, the fit search, and the `train` command's output and errors."""

import argparse
import json
import sys

import pytest

from planner import cli
from planner.api import load_model
from planner.cli.train import register
from planner.dtypes import get_format
from planner.errors import PlannerError
from planner.models.spec import LayerSpec, ModelSpec
from planner.training import (
    PRECISIONS,
    ActivationAssumptions,
    ModelStates,
    TrainingConfig,
    activation_model,
    attention_terms,
    decoder_linear_modules,
    estimate_training,
    korthikanti_layer_bytes,
    layer_terms,
    lora_trainable_params,
    mlp_terms,
    moe_terms,
    nf4_double_quant_bytes,
    optimizer_state_bytes,
    resolve_lora_targets,
    trainable_states,
    zero_shard,
)
from planner.units import GIB

H100 = int(79.19 * GIB)


def _train_main(argv):
    """`vllm-planner train ...`: through planner.cli.main once `train` is wired, else through a
    throwaway parser that handles errors as cli.main does."""
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "train" in sub.choices:
        return cli.main(argv)
    parser = cli._Parser(prog="vllm-planner")
    register(parser.add_subparsers(dest="command", required=True, parser_class=cli._Parser))
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except PlannerError as exc:
        print(f"vllm-planner: error: {exc}", file=sys.stderr)
        return exc.exit_code


def run(capsys, *argv):
    code = _train_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def llama8b():
    return load_model("meta-llama/Llama-3.1-8B-Instruct")  # Llama-3-8B's shapes


def estimate(model, **kw):
    mem = kw.pop("gpu_memory_bytes", None)
    return estimate_training(model.spec, model.tensors, TrainingConfig(**kw), gpu_memory_bytes=mem)


# ---- model states: published figures ------------------------------------------------------------


def test_mixed_precision_adamw_full_fine_tuning_is_16_bytes_per_param(llama8b):
    # DeepSpeed's engine (ZeRO 1 on one GPU shards nothing): 16-bit weights and gradients, fp32 master
    e = estimate(llama8b, method="full", zero=1)
    s = e.states
    assert e.params_trainable == 8_030_261_248
    assert (s.weights, s.master_weights, s.gradients, s.optimizer) == tuple(
        n * e.params_trainable for n in (2, 4, 2, 8)
    )
    assert s.total == 16 * e.params_trainable
    # Trainer's bf16=True without an engine is torch AMP: fp32 weights and gradients, no master copy
    amp = estimate(llama8b, method="full").states
    assert (amp.weights, amp.master_weights, amp.gradients, amp.optimizer) == tuple(
        n * e.params_trainable for n in (4, 0, 4, 8)
    )
    assert amp.total == s.total


N = 4096 * 4096  # one square weight, a multiple of every block size


@pytest.mark.parametrize(
    "precision,optimizer,bytes_per_param",
    [
        ("bf16-mixed", "adamw", 16),  # 2 + 4 master + 2 + 8
        ("fp16-mixed", "adamw", 16),
        ("bf16", "adamw", 8),  # no master; torch states follow the bf16 params
        ("fp32", "adamw", 16),  # 4 + 4 + 8
        ("bf16-mixed", "sgd-momentum", 12),  # one fp32 momentum
        ("bf16-mixed", "adamw-8bit", 8 + 2 + 2 * 4 / 256),  # uint8 x2 + fp32 absmax per 256 per state
        ("bf16-mixed", "adafactor", 8 + (4096 + 4096) * 4 / N),  # row + column factors
    ],
)
def test_bytes_per_param_by_precision_and_optimizer(precision, optimizer, bytes_per_param):
    s = trainable_states([(4096, 4096)], PRECISIONS[precision], optimizer)
    assert s.total / N == pytest.approx(bytes_per_param, rel=0, abs=1e-12)


def test_bitsandbytes_keeps_small_tensors_in_fp32():
    assert optimizer_state_bytes((4095,), "adamw-8bit", 4) == 2 * 4095 * 4
    assert optimizer_state_bytes((4096,), "adamw-8bit", 4) == 2 * (4096 + 4 * 16)


@pytest.mark.parametrize("stage,gb_per_gpu", [(0, 120.0), (1, 31.40625), (2, 16.640625), (3, 1.875)])
def test_zero_paper_7_5b_on_64_gpus(stage, gb_per_gpu):
    """ZeRO (Rajbhandari et al. 2020), Figure 1: Psi = 7.5B, K = 12, N_d = 64."""
    states = trainable_states([(7_500_000_000,)], PRECISIONS["bf16-mixed"], "adamw")
    assert states.total == 120 * 10**9
    assert zero_shard(states, stage, 64).total == round(gb_per_gpu * 10**9)


def test_zero_stages_shard_what_the_paper_says():
    s = ModelStates(
        weights=64,
        master_weights=128,
        gradients=64,
        optimizer=256,
        adapter_weights=8,
        adapter_gradients=8,
        adapter_optimizer=16,
        quantized_base=32,
        quant_scales=5,
    )
    one = zero_shard(s, 1, 8)
    assert (one.master_weights, one.optimizer, one.adapter_optimizer, one.gradients, one.weights) == (16, 32, 2, 64, 64)
    two = zero_shard(s, 2, 8)
    assert (two.gradients, two.adapter_gradients, two.weights, two.quantized_base) == (8, 1, 64, 32)
    three = zero_shard(s, 3, 8)
    assert (three.weights, three.adapter_weights, three.quantized_base) == (8, 1, 4)
    assert three.quant_scales == 5  # bitsandbytes' QuantState is no parameter: every GPU keeps it whole


# ---- LoRA ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_id,rank,targets,params",
    [
        ("meta-llama/Llama-3.1-8B-Instruct", 16, "q,k,v,o,gate,up,down", 41_943_040),  # the issue's figure
        (
            "mistralai/Mistral-7B-v0.1",
            16,
            "q,k,v,o,gate,up,down",
            41_943_040,
        ),  # PEFT prints 41,943,040 of 7,283,675,136
        ("meta-llama/Llama-2-7b-hf", 8, "q,v", 4_194_304),  # PEFT's README: 4,194,304 trainable
        ("microsoft/phi-2", 16, "fc1,fc2", 32 * 16 * 2 * (2560 + 10240)),
    ],
)
def test_lora_trainable_params(model_id, rank, targets, params):
    m = load_model(model_id)
    modules = decoder_linear_modules(m.tensors)
    names = resolve_lora_targets(targets.split(","), modules, m.spec.architecture)
    assert lora_trainable_params(modules, names, rank) == params


def test_lora_adapter_states_are_16_bytes_per_trainable_param(llama8b):
    e = estimate(
        llama8b, method="lora", lora_rank=16, lora_targets=("q", "k", "v", "o", "gate", "up", "down"), base_dtype="bf16"
    )
    assert e.params_trainable == 41_943_040
    assert e.states.adapter == 16 * 41_943_040  # fp32 weights 4 + fp32 grads 4 + AdamW 8
    assert e.states.weights == 2 * e.params_total  # frozen bf16 base, no master, no gradients
    assert estimate(llama8b, method="lora").states.weights == 4 * e.params_total  # hf's default: fp32 base
    assert e.states.gradients == e.states.optimizer == e.states.master_weights == 0


def test_lora_on_moe_experts_counts_one_adapter_per_expert():
    m = load_model("mistralai/Mixtral-8x7B-Instruct-v0.1")
    modules = decoder_linear_modules(m.tensors)
    h, inter, experts, layers, r = 4096, 14336, 8, 32, 8
    assert lora_trainable_params(modules, ("gate_proj",), r) == layers * experts * r * (h + inter)


# ---- QLoRA --------------------------------------------------------------------------------------


def test_nf4_double_quant_bytes_follow_the_format():
    fmt = get_format("nf4").with_double_quant()
    n = 64 * 256 * 1024
    assert nf4_double_quant_bytes(n) == fmt.bytes_per_param * n + 4  # + the fp32 absmax offset
    assert nf4_double_quant_bytes(4096 * 4096) == 8_388_608 + 262_144 + 4 * 1024 + 4


def test_qlora_quantizes_the_decoder_linears_only(llama8b):
    e = estimate(llama8b, method="qlora", base_dtype="bf16")
    linear = sum(t.numel for t in llama8b.tensors if t.linear)
    assert e.states.weights == 2 * (e.params_total - linear)  # embeddings, norms, lm_head in bf16
    upcast = estimate(llama8b, method="qlora")  # prepare_model_for_kbit_training: fp32
    assert (upcast.states.weights - e.states.weights) / GIB == pytest.approx(
        1.96, abs=0.01
    )  # the issue's +2 GiB for an 8B
    nf4 = e.states.quantized_base + e.states.quant_scales
    assert nf4 == sum(nf4_double_quant_bytes(t.numel) for t in llama8b.tensors if t.linear)
    assert e.states.quantized_base == linear // 2  # the 4-bit codes; the scales beside them
    assert nf4 < 0.29 * 2 * linear


# ---- activations --------------------------------------------------------------------------------


def _gpt(h, a, layers=1):
    return ModelSpec(
        model_type="gpt2",
        architecture="GPT2LMHeadModel",
        hidden_size=h,
        vocab_size=50257,
        num_heads=a,
        num_kv_heads=a,
        head_dim=h // a,
        v_head_dim=h // a,
        intermediate_size=4 * h,
        layers=(LayerSpec("full"),) * layers,
        max_position_embeddings=2048,
        dtype="float16",
        gated_mlp=False,
        norm="layer",
    )


MEGATRON = ActivationAssumptions(element_bytes=2, attention="eager", dropout=True, softmax_bytes=2, norm_style="fused")


@pytest.mark.parametrize("h,a,s,b", [(12288, 96, 2048, 1), (4096, 32, 2048, 4), (1024, 16, 512, 8), (768, 12, 1024, 2)])
def test_korthikanti_gpt_layer(h, a, s, b):
    """s*b*h*(34 + 5*a*s/h) bytes per GPT layer, 16-bit, no recomputation."""
    assert layer_terms(_gpt(h, a), 0, MEGATRON).bytes(b, s) == korthikanti_layer_bytes(s, b, h, a)
    assert korthikanti_layer_bytes(s, b, h, a) == s * b * h * (34 + 5 * a * s / h)


def test_korthikanti_parts():
    spec = _gpt(4096, 32)
    assert attention_terms(spec, MEGATRON).coefficients() == (11 * 4096, 5 * 32)
    assert mlp_terms(spec, MEGATRON).coefficients() == (19 * 4096, 0)


def test_full_recomputation_keeps_2sbh_per_layer():
    spec, s, b, h = _gpt(4096, 32, layers=24), 2048, 1, 4096
    act = activation_model(spec, MEGATRON, [], checkpointing=True).breakdown(b, s)
    assert act["checkpointed layer inputs"] == 2 * s * b * h * 24
    assert act["recomputed layer"] == korthikanti_layer_bytes(s, b, h, 32)


# Per token, bf16, full fine-tuning, as the CPU probe lists the saved tensors of a Llama layer: each
# RMSNorm keeps x.float() (4h), the fp32 reciprocal RMS (4) and the bf16 normalized tensor (2h).
LLAMA3_FLASH = {
    "norms": 2 * (4 * 4096 + 4 + 2 * 4096),
    "qkv input": 2 * 4096,
    "q": 2 * 4096,
    "k": 2 * 1024,
    "v": 2 * 1024,
    "attention output (o_proj input)": 2 * 4096,
    "attention log-sum-exp (fp32)": 4 * 32,
    "mlp input": 2 * 4096,
    "swiglu (4 I-wide tensors)": 4 * 2 * 14336,
}


@pytest.mark.parametrize(
    "attention,per_token,per_token_ctx",
    [
        # SwiGLU: e*(h + 4I); GQA under flash: K and V at 8 KV heads; fp32 log-sum-exp per head
        ("flash", sum(LLAMA3_FLASH.values()), 0),
        # eager repeats K/V to 32 heads and keeps the fp32 softmax and the bf16 probabilities
        ("eager", sum(LLAMA3_FLASH.values()) - 4 * 32 + 2 * 2 * (4096 - 1024), 32 * (4 + 2)),
    ],
)
def test_llama3_layer_swiglu_gqa(llama8b, attention, per_token, per_token_ctx):
    a = ActivationAssumptions(element_bytes=2, attention=attention)
    assert layer_terms(llama8b.spec, 0, a).coefficients() == (per_token, per_token_ctx)


def test_moe_layer_mixtral():
    spec = load_model("mistralai/Mixtral-8x7B-Instruct-v0.1").spec
    e, h, inter, k, experts = 2, 4096, 14336, 2, 8
    # router softmax, int64 indices, top-k normalization, routing weights, outputs, gathered inputs,
    # gate-up + activation + down input, router input
    expected = 4 * experts + 32 * k + (4 + 4 * k) + e * k + k * e * h + k * e * h + k * 4 * e * inter + e * h
    assert moe_terms(spec, ActivationAssumptions()).coefficients() == (expected, 0)


def test_frozen_linears_keep_no_input(llama8b):
    lora_qv = ActivationAssumptions(trainable=False, adapted=frozenset({"q_proj", "v_proj"}), lora_rank=8)
    terms = layer_terms(llama8b.spec, 0, lora_qv, [m for m in decoder_linear_modules(llama8b.tensors) if m.layer == 0])
    assert "mlp input" not in terms.per_token and "mlp down input" not in terms.per_token
    assert "qkv input" not in terms.per_token  # fp32 adapters: each keeps its own fp32 copy instead
    assert terms.per_token["LoRA input copies (qkv input)"] == 2 * 4 * 4096
    assert terms.per_token["LoRA A outputs (qkv input)"] == 2 * 4 * 8  # two adapted modules, fp32 r wide each
    same_dtype = ActivationAssumptions(
        trainable=False, adapted=frozenset({"q_proj", "v_proj"}), lora_rank=8, adapter_bytes=2
    )
    assert layer_terms(llama8b.spec, 0, same_dtype).per_token["qkv input"] == 2 * 4096  # one shared copy


def test_flash_is_linear_and_eager_quadratic_in_seq_len(llama8b):
    kw = dict(method="lora", base_dtype="bf16")  # autocast's adapter weight copies: a constant, not per token
    flash = [estimate(llama8b, seq_len=s, **kw).activation_bytes for s in (1024, 2048, 3072)]
    eager = [estimate(llama8b, seq_len=s, attention="eager", **kw).activation_bytes for s in (1024, 2048, 3072)]
    assert flash[2] - flash[1] == flash[1] - flash[0] > 0
    assert eager[2] - eager[1] > eager[1] - eager[0] and eager[0] > flash[0]


def test_gradient_checkpointing_cuts_activations(llama8b):
    plain = estimate(llama8b, method="lora", seq_len=4096)
    ckpt = estimate(llama8b, method="lora", seq_len=4096, gradient_checkpointing=True)
    assert ckpt.activation_bytes < plain.activation_bytes / 4
    # HF's default fp32 base under autocast keeps the residual stream in fp32; a bf16 base in bf16
    assert ckpt.activation_breakdown["checkpointed layer inputs"] == 32 * 4096 * 4096 * 4
    bf16 = estimate(llama8b, method="lora", seq_len=4096, gradient_checkpointing=True, base_dtype="bf16")
    assert bf16.activation_breakdown["checkpointed layer inputs"] == 32 * 4096 * 4096 * 2


# ---- fit, largest batch and sequence, ZeRO, accumulation --------------------------------------


def test_largest_micro_batch_and_sequence_are_the_boundaries(llama8b):
    e = estimate(llama8b, method="qlora", gpu_memory_bytes=H100)
    assert e.fits and e.max_micro_batch_size >= 1 and e.max_seq_len >= 2048
    b = e.max_micro_batch_size
    assert estimate(llama8b, method="qlora", micro_batch_size=b, gpu_memory_bytes=H100).fits
    assert not estimate(llama8b, method="qlora", micro_batch_size=b + 1, gpu_memory_bytes=H100).fits
    s = e.max_seq_len
    assert estimate(llama8b, method="qlora", seq_len=s, gpu_memory_bytes=H100).fits
    assert not estimate(llama8b, method="qlora", seq_len=s + 1, gpu_memory_bytes=H100).fits


def test_full_fine_tuning_8b_does_not_fit_one_h100_but_zero3_on_8_does(llama8b):
    one = estimate(llama8b, method="full", gpu_memory_bytes=H100)
    assert not one.fits and one.max_micro_batch_size == 0 and one.max_seq_len == 0
    eight = estimate(llama8b, method="full", gpus=8, zero=3, gradient_checkpointing=True, gpu_memory_bytes=H100)
    assert eight.fits and eight.max_micro_batch_size >= 1


def test_zero_stages_shrink_the_per_gpu_states(llama8b):
    totals = [estimate(llama8b, method="full", gpus=8, zero=z).states.total for z in (0, 1, 2, 3)]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 4
    assert totals[3] == pytest.approx(16 * 8_030_261_248 / 8, abs=8)


def test_gradient_accumulation_trades_time_not_memory(llama8b):
    one = estimate(llama8b, method="lora")
    four = estimate(llama8b, method="lora", grad_accum=4, gpus=2)
    single = estimate(llama8b, method="lora", gpus=2)
    assert four.activation_bytes == single.activation_bytes
    assert 0 < four.total_bytes - single.total_bytes <= single.states.adapter_gradients  # accumulated gradients stay
    assert four.effective_batch_size == 8
    assert four.total_bytes_without_accum == estimate(llama8b, method="lora", micro_batch_size=4, gpus=2).total_bytes
    assert one.total_bytes_without_accum is None


def test_lora_over_a_quantized_checkpoint_counts_the_base_as_stored():
    fp8 = load_model("Qwen/Qwen3-32B-FP8")
    e = estimate(fp8, method="lora")
    assert e.states.weights < 0.6 * 2 * e.params_total
    assert "weights_gib" in e.estimated


# ---- the command --------------------------------------------------------------------------------

JSON_KEYS = {
    "method",
    "params_trainable",
    "weights_gib",
    "master_weights_gib",
    "gradients_gib",
    "optimizer_gib",
    "activations_gib",
    "adapter_gib",
    "total_gib",
    "fits",
    "max_micro_batch_size",
    "max_seq_len",
    "estimated",
}


def test_train_json_has_the_issue_keys(capsys):
    code, out, _ = run(
        capsys,
        "train",
        "llama3.1-8b",
        "--method",
        "lora",
        "--lora-rank",
        "16",
        "--lora-targets",
        "q,k,v,o,gate,up,down",
        "--gpu",
        "H100",
        "--json",
    )
    data = json.loads(out)
    assert code == 0 and JSON_KEYS <= set(data)
    assert data["params_trainable"] == 41_943_040 and data["method"] == "lora" and data["fits"] is True
    assert {"activations_gib", "temporary_gib", "total_gib"} <= set(data["estimated"])
    assert data["adapter_gib"] == round(16 * 41_943_040 / GIB, 4)


def test_train_json_without_gpu(capsys):
    code, out, _ = run(capsys, "train", "tinyllama", "--method", "full", "--json")
    data = json.loads(out)
    assert code == 0 and data["fits"] is None and data["max_micro_batch_size"] is None
    assert data["weights_gib"] + data["master_weights_gib"] + data["gradients_gib"] + data[
        "optimizer_gib"
    ] == pytest.approx(16 * data["params_trainable"] / GIB, abs=1e-3)


@pytest.mark.parametrize(
    "argv,needles",
    [
        (
            ["llama3.1-8b", "--method", "qlora", "--gpu", "L4", "--gradient-checkpointing"],
            ["quantized base (NF4 codes)", "NF4 scales", "LoRA adapter weights (fp32)", "activations (est.)", "FITS"],
        ),
        (
            [
                "llama3.1-8b",
                "--method",
                "full",
                "--gpus",
                "8",
                "--zero",
                "3",
                "--gradient-checkpointing",
                "--gpu",
                "H100",
            ],
            ["master weights (fp32)", "checkpointed layer inputs", "ZeRO 3", "largest micro-batch"],
        ),
        (
            ["tinyllama", "--method", "lora", "--grad-accum", "8", "--attention", "eager"],
            ["gradient accumulation trades time for memory", "8 grad-accum", "eager attention", "no --gpu given"],
        ),
    ],
)
def test_train_table(capsys, argv, needles):
    code, out, _ = run(capsys, "train", *argv)
    assert code == 0
    for n in needles:
        assert n in out, n


def test_train_exit_1_when_it_does_not_fit(capsys):
    code, out, _ = run(capsys, "train", "llama3.1-8b", "--method", "full", "--gpu", "L4")
    assert code == 1 and "DOES NOT FIT" in out


@pytest.mark.parametrize(
    "case,argv,needle",
    [
        (
            "LoRA target the architecture lacks",
            ["phi-2", "--method", "lora", "--lora-targets", "q,gate"],
            "LoRA target 'gate' (gate_proj) is not a linear module of PhiForCausalLM",
        ),
        ("rank zero", ["llama3.1-8b", "--method", "lora", "--lora-rank", "0"], "--lora-rank"),
        (
            "seq len above the context",
            ["tinyllama", "--method", "full", "--seq-len", "4096"],
            "--seq-len 4,096 exceeds the model's context of 2,048 tokens",
        ),
        ("ZeRO 3 on one GPU", ["llama3.1-8b", "--method", "full", "--zero", "3"], "--zero 3 shards the parameters"),
        ("QLoRA on a quantized model", ["Qwen/Qwen3-4B-AWQ", "--method", "qlora"], "already quantized (awq)"),
        ("full on a quantized model", ["Qwen/Qwen3-32B-FP8", "--method", "full"], "full fine-tuning needs the 16-bit"),
        (
            "LoRA options with full",
            ["tinyllama", "--method", "full", "--lora-rank", "8"],
            "apply to --method lora or qlora",
        ),
        ("unknown optimizer", ["tinyllama", "--method", "full", "--optimizer", "lion"], "invalid choice"),
        ("no method", ["tinyllama"], "--method"),
        ("micro-batch zero", ["tinyllama", "--method", "lora", "--micro-batch-size", "0"], "--micro-batch-size"),
        ("unmodelled weights", ["nemotron-h-56b", "--method", "lora"], "not modelled"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, case, argv, needle):
    code, out, err = run(capsys, "train", *argv)
    assert code == 2, case
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("vllm-planner: error: "), err
    assert needle in err, err
