"""Activation offloading and optimizer-in-backward: what each moves or frees, the host RAM it needs,
their conflicting flags (one-line errors, exit 2), and the autocast regimes of the activation model."""

import json

import pytest
from test_training import run
from test_training_frameworks import est

from planner.api import load_model
from planner.training import TrainingConfig, load_training_profile
from planner.training.resolve import resolve
from planner.units import GIB


@pytest.fixture(scope="module")
def llama8b():
    return load_model("meta-llama/Llama-3.1-8B-Instruct")


def test_activation_offload_keeps_two_layers_on_the_gpu(llama8b):
    kw = dict(method="lora", base_dtype="bf16", seq_len=8192)
    plain, off = est(llama8b, **kw), est(llama8b, activation_offload=True, **kw)
    r = resolve(llama8b.spec, llama8b.tensors, TrainingConfig(**kw), load_training_profile())
    per_layer = r.act.layer_bytes(1, 8192)
    # on the GPU: two layers waiting, the one back-propagated; the other 29 layers' worth go to the host
    assert off.activation_bytes == 3 * max(per_layer) + r.act.head_bytes(1, 8192)
    assert off.host_activation_bytes == sum(per_layer) == off.host_offload_bytes
    assert plain.total_bytes - off.total_bytes > 25 * min(per_layer)
    ckpt = est(llama8b, activation_offload=True, gradient_checkpointing=True, **kw)
    assert ckpt.host_activation_bytes == 32 * 8192 * 4096 * 2  # the checkpointed inputs
    assert any("pinned host RAM" in n for n in ckpt.notes)


def test_activation_offload_host_ram_is_checked(llama8b):
    four = est(llama8b, method="lora", seq_len=8192, activation_offload=True, gpus=4)
    assert (
        four.host_activation_bytes
        == 4 * est(llama8b, method="lora", seq_len=8192, activation_offload=True).host_activation_bytes
    )


def test_optimizer_in_backward_keeps_one_gradient(llama8b):
    plain = est(llama8b, method="full", gradient_checkpointing=True)
    inbwd = est(llama8b, method="full", gradient_checkpointing=True, optimizer_in_backward=True)
    # the largest tensor is the embedding (or lm_head): 128256 x 4096, its bf16 gradient
    assert inbwd.phase_bytes["end of backward"] < plain.phase_bytes["end of backward"] - 13 * GIB
    assert inbwd.phase_bytes["optimizer step"] <= 128256 * 4096 * (4 + 4)  # one fp32 gradient (AMP), one moment
    assert plain.total_bytes - inbwd.total_bytes > 10 * GIB
    assert any("optimizer-in-backward" in a for a in inbwd.assumptions)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--optimizer-in-backward", "--grad-accum", "4"], "gradients cannot accumulate"),
        (["--optimizer-in-backward", "--zero", "2", "--offload", "optimizer"], "use one of them"),
        (["--optimizer-in-backward", "--gpus", "2", "--zero", "3"], "not under DeepSpeed ZeRO 3"),
        (["--host-memory-gib", "64"], "--offload or --activation-offload"),
        (["--activation-offload", "--seq-len", "8192", "--host-memory-gib", "1"], "--activation-offload needs"),
    ],
    ids=lambda x: x if isinstance(x, str) else " ".join(x),
)
def test_lever_conflicts_one_line_exit_2(capsys, argv, needle):
    code, out, err = run(capsys, "train", "llama3.1-8b", "--method", "lora", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and needle in err, err


def test_optimizer_in_backward_on_fsdp_is_accepted(capsys):
    code, out, _ = run(
        capsys,
        "train",
        "llama3.1-8b",
        "--method",
        "full",
        "--gpus",
        "2",
        "--zero",
        "3",
        "--sharding",
        "fsdp",
        "--optimizer-in-backward",
        "--json",
    )
    assert code == 0 and '"optimizer_in_backward": true' in out


@pytest.mark.parametrize(
    "precision,base,stream,casts",
    [
        ("bf16-mixed", "fp32", 4, True),  # HF's default LoRA: fp32 base under autocast
        ("bf16-mixed", "bf16", 2, False),
        ("bf16", "bf16", 2, False),
    ],
)
def test_the_autocast_regime_follows_precision_and_base(llama8b, precision, base, stream, casts):
    c = TrainingConfig(method="lora", precision=precision, base_dtype=base)
    r = resolve(llama8b.spec, llama8b.tensors, c, load_training_profile())
    assert r.assume.stream == stream and r.assume.weight_casts is casts
    assert r.act.layer_input_bytes_per_token == stream * 4096


def test_sharding_engines_run_adapters_in_the_compute_dtype(llama8b):
    for sharding in ("deepspeed", "fsdp"):
        c = TrainingConfig(method="lora", gpus=2, zero=3, sharding=sharding)
        r = resolve(llama8b.spec, llama8b.tensors, c, load_training_profile())
        assert not r.assume.autocast and r.assume.adapter_bytes == 2


def test_a_misfit_can_be_fixed_by_activation_offload(capsys):
    argv = ["train", "llama3.1-8b", "--method", "lora", "--base-dtype", "bf16", "--gpu", "H100"]
    argv += ["--seq-len", "32768", "--loss", "fused", "--json"]
    code, out, _ = run(capsys, *argv)
    fixes = {f["flags"]: f["reserved_gib"] for f in json.loads(out)["fixes"]}
    assert code == 1 and "--activation-offload" in fixes
    code2, out2, _ = run(capsys, *argv, "--activation-offload")
    assert code2 == 0 and json.loads(out2)["reserved_gib"] == pytest.approx(fixes["--activation-offload"], abs=0.01)
