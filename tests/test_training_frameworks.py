"""The `train` command's reserved footprint, framework defaults, levers, fixes, the GPU options it
shares with `plan`, its bad-input errors, and the replay of the published measured runs."""

import json
import sys
from pathlib import Path

import pytest
from test_training import run

from planner.api import load_model
from planner.training import TrainingConfig, estimate_training
from planner.units import GIB

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def llama8b():
    return load_model("meta-llama/Llama-3.1-8B-Instruct")


def est(model, mem=None, **kw):
    return estimate_training(model.spec, model.tensors, TrainingConfig(**kw), gpu_memory_bytes=mem)


def test_fits_is_judged_on_the_reserved_footprint(llama8b):
    e = est(llama8b, method="qlora", gradient_checkpointing=True, seq_len=4096)
    assert e.reserved_bytes > e.total_bytes + 0.5 * GIB  # context + fragmentation on top of allocated
    lo, hi = e.reserved_range_bytes
    assert lo <= e.reserved_bytes <= hi
    between = (e.total_bytes + e.reserved_bytes) // 2  # allocated fits, reserved does not
    assert est(llama8b, between, method="qlora", gradient_checkpointing=True, seq_len=4096).fits is False


def test_framework_defaults_and_overrides(llama8b):
    hf = est(llama8b, method="lora")
    tt = est(llama8b, method="lora", framework="torchtune")
    assert hf.base_dtype == "fp32" and tt.base_dtype == "bf16" and tt.loss == "chunked" and hf.loss == "full"
    assert est(llama8b, method="lora", base_dtype="bf16").states.weights == tt.states.weights
    assert est(llama8b, method="lora", loss="fused").temporary_bytes < hf.temporary_bytes
    assert any("framework: Hugging Face" in a for a in hf.assumptions)
    # DeepSpeed's engine casts the module to bf16 whatever the framework loaded
    assert est(llama8b, method="lora", gpus=2, zero=3).base_dtype == "bf16"


def test_gradients_are_not_all_alive_at_the_backward_start(llama8b):
    one = est(llama8b, method="full", gpus=8, zero=3, gradient_checkpointing=True)
    accum = est(llama8b, method="full", gpus=8, zero=3, gradient_checkpointing=True, grad_accum=4)
    assert accum.total_bytes - one.total_bytes > 0.9 * (one.states.gradients - 128256 * 4096 * 2 // 8)


def test_levers(llama8b):
    base = est(llama8b, method="full", gpus=2, zero=2)
    off = est(llama8b, method="full", gpus=2, zero=2, offload="optimizer")
    assert off.states.optimizer == 0 and off.host_offload_bytes == 2 * (
        base.states.optimizer + base.states.master_weights + base.states.gradients
    )
    paged = est(llama8b, method="full", optimizer="paged-adamw-8bit", mem=80 * GIB)
    assert paged.paged_optimizer_bytes > 0
    sel = est(llama8b, method="lora", gradient_checkpointing=True, checkpointed_layers=16)
    full_ck = est(llama8b, method="lora", gradient_checkpointing=True)
    assert sel.activation_bytes > full_ck.activation_bytes
    assert "layers kept whole (selective checkpointing)" in sel.activation_breakdown


def test_a_misfit_lists_recomputed_fixes(capsys):
    code, out, _ = run(
        capsys,
        "train",
        "llama3.1-70b",
        "--method",
        "qlora",
        "--gpu",
        "L40S",
        "--seq-len",
        "4096",
        "--gradient-checkpointing",
        "--json",
    )
    d = json.loads(out)
    assert code == 1 and d["fits"] is False
    flags = [f["flags"] for f in d["fixes"]]
    assert "--gpus 2 --zero 3" in flags  # the example: two GPUs with ZeRO-3 fit
    for f in d["fixes"]:
        argv = [
            "train",
            "llama3.1-70b",
            "--method",
            "qlora",
            "--gpu",
            "L40S",
            "--seq-len",
            "4096",
            "--gradient-checkpointing",
            *f["flags"].split(),
            "--json",
        ]
        code2, out2, _ = run(capsys, *argv)
        assert code2 == 0 and json.loads(out2)["reserved_gib"] == pytest.approx(f["reserved_gib"], abs=0.01)


def test_gpu_options_as_plan_takes_them(capsys, tmp_path):
    code, out, _ = run(
        capsys,
        "train",
        "llama3.1-8b",
        "--method",
        "qlora",
        "--gpu",
        "H100",
        "--gpu-memory-gib",
        "12",
        "--gradient-checkpointing",
        "--json",
    )
    assert code == 1 and json.loads(out)["gpu_memory_gib"] == 12
    code, out, err = run(
        capsys,
        "train",
        "llama3.1-8b",
        "--method",
        "lora",
        "--gpu",
        "H100",
        "--gpu-file",
        str(tmp_path / "missing.yaml"),
    )
    assert code == 2 and "missing.yaml" in err  # the file is read as plan reads it
    d = json.loads(run(capsys, "train", "llama3.1-8b", "--method", "lora", "--json")[1])
    assert {"reserved_gib", "framework", "assumptions", "fixes"} <= set(d)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--framework", "keras"], "unknown --framework 'keras'"),
        (["--framework", "torchtune", "--loss", "fused"], "--loss fused is not available in torchtune"),
        (["--framework", "torchtune", "--base-dtype", "fp16"], "--base-dtype fp16 is not supported by torchtune"),
        (["--offload", "optimizer"], "add --zero 2"),
        (["--zero", "2", "--offload", "optimizer+params"], "--offload optimizer+params needs sharded parameters"),
        (
            ["--gpus", "2", "--zero", "3", "--framework", "torchtune", "--offload", "optimizer"],
            "use --offload optimizer+params",
        ),
        (["--gpus", "2", "--zero", "3", "--offload", "optimizer+params", "--host-memory-gib", "8"], "of host RAM"),
        (["--zero", "2", "--offload", "optimizer", "--optimizer", "paged-adamw-8bit"], "pages its states"),
        (["--checkpoint-layers", "4"], "add --gradient-checkpointing"),
        (["--gradient-checkpointing", "--checkpoint-layers", "99"], "exceeds the model's 32 layers"),
        (["--gpu-memory-gib", "20"], "need --gpu"),
    ],
    ids=lambda x: x if isinstance(x, str) else " ".join(x),
)
def test_bad_input_one_line_exit_2(capsys, argv, needle):
    code, out, err = run(capsys, "train", "llama3.1-8b", "--method", "lora", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and needle in err, err


def test_base_dtype_with_full_is_an_error(capsys):
    code, _, err = run(capsys, "train", "tinyllama", "--method", "full", "--base-dtype", "bf16")
    assert code == 2 and "drop --base-dtype" in err


def test_published_runs_replay():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import train_accuracy as ta

    recs = ta.records()
    assert len(recs) >= 8 and all(r["source"] and r["url"].startswith("https://") for r in recs)
    rows = [ta.replay(r) for r in recs]
    s = ta.summary(rows)
    assert s["records"] == len(recs) and s["worst_abs_error"] >= s["median_abs_error"] >= 0
    # the worst miss a planner can make: "fits" where the measured run used more than the card or OOMed
    assert s["fits_contradicted_by_measurement"] == []
    # and a measured peak that ran on its card is judged to fit it ("does not fit" would be wrong too)
    assert [r["id"] for r in rows if r["kind"] == "peak" and r["ran_but_no_fit"]] == []
    assert set(s["no_fit_where_the_run_fitted"]) <= {r["id"] for r in rows if r["kind"] == "max_seq_len"}
    assert set(ta.by_source(recs, rows)) == {"peft-docs", "unsloth", "philschmid", "answerdotai"}


def test_sharded_parameters_cache_a_share_of_what_churns(llama8b):
    """ZeRO-3 / FSDP FULL_SHARD: the allocator's extra cache is sharded_fragmentation of the peak
    beyond the states allocated once; the fit is judged with the flushable cache left out, and the
    figure shown grows into free memory only up to the card."""
    from planner.training import load_training_profile

    rm = load_training_profile().reserved
    kw = dict(method="lora", gpus=2, zero=3, sharding="fsdp", gradient_checkpointing=True, seq_len=4096)
    e = est(llama8b, **kw)
    st = e.states
    churn = e.total_bytes - (st.total - st.gradients - st.adapter_gradients)
    cache = e.reserved_bytes - e.total_bytes - (rm.cuda_context_gib + rm.nccl_gib) * GIB
    assert cache == pytest.approx(rm.sharded_fragmentation * churn, abs=2)
    fit = e.total_bytes * (1 + rm.fragmentation) + (rm.cuda_context_gib + rm.nccl_gib) * GIB
    card = int((fit + e.reserved_bytes) / 2)
    on_card = est(llama8b, card, **kw)
    assert on_card.fits is True and on_card.reserved_bytes == card
    assert est(llama8b, int(fit) - GIB, **kw).fits is False
    unsharded = est(llama8b, method="lora", gpus=2, zero=2, gradient_checkpointing=True, seq_len=4096)
    assert unsharded.reserved_bytes - unsharded.total_bytes == pytest.approx(
        unsharded.total_bytes * rm.fragmentation + (rm.cuda_context_gib + rm.nccl_gib) * GIB, abs=2
    )


@pytest.mark.parametrize("gpu,link", [("H100", "nvls"), ("A100-40GB-SXM", "nvlink"), ("L40S", None)])
def test_train_prices_nccl_by_the_gpus_interconnect(capsys, gpu, link):
    """`train --gpu` takes the catalogue GPU's interconnect class for NCCL's device memory, and says so."""
    from planner.hardware import load_catalogue
    from planner.training import load_training_profile

    link = link or load_catalogue().get(gpu).interconnect_class
    argv = ("train", "llama3.1-8b", "--method", "lora", "--gpus", "4", "--zero", "3", "--gpu", gpu, "--json")
    code, out, _ = run(capsys, *argv)
    d = json.loads(out)
    nccl = load_training_profile().reserved.nccl_for(link, 4)[0]
    assert d["reserved_breakdown"]["NCCL buffers (est.)"] == pytest.approx(nccl * GIB, abs=GIB / 100)
    assert any(f"({link})" in a for a in d["assumptions"])


def test_published_peaks_break_down_into_what_is_predicted():
    """The --breakdown table: the reserved parts add up to the predicted footprint, and the allocated
    peak is the persistent states plus its peak phase (gradients counted in the phases they are alive in)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import train_accuracy as ta

    for rec in ta.records():
        if rec["kind"] != "peak":
            continue
        row = ta.replay(rec)
        b = row["breakdown_gib"]
        outside = b["CUDA context"] + b.get("NCCL buffers", 0)  # what torch's own peaks leave out
        parts = {
            "reserved": b["allocated peak"] + b["allocator cache and fragmentation"] + outside,
            "torch-rsv": b["allocated peak"] + b["allocator cache and fragmentation"],
            "torch-alc": b["allocated peak"],
        }[row["peak"]]
        assert parts == pytest.approx(row["predicted_gib"], abs=0.05), rec["id"]
        phase = next(v for k, v in b.items() if k.startswith("peak phase"))
        kept = b["weights"] + b["optimizer"]
        assert kept + phase == pytest.approx(b["allocated peak"], abs=0.05), rec["id"]
