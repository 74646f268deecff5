"""Measured training memory on a GPU against the planner: run on a CUDA machine (not run in CI).

    python benchmarks/gpu_train.py [--model TinyLlama/TinyLlama-1.1B-Chat-v1.0] [--seq 1024] [--batch 2] [--out FILE]

For a small bundled model (random weights from its config: no download) it runs a few real
training steps with transformers + PEFT (+ bitsandbytes for QLoRA) in full, LoRA and QLoRA, with
and without gradient checkpointing, plus optimizer-in-backward (full) and activation offloading
(torch's save_on_cpu, LoRA with checkpointing), and records `torch.cuda.max_memory_allocated` and
`max_memory_reserved` (and the device's used memory, CUDA context included), next to the
planner's `total_gib` (allocated) and `reserved_gib` for the same settings. LoRA and QLoRA run the
forward pass under torch.autocast(bf16) as Trainer's bf16=True does (LoRA over a bf16 base, QLoRA
after prepare_model_for_kbit_training: fp32 non-quantized weights); full fine-tuning is pure bf16.
Prints a table and writes JSON lines. A few minutes on one GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from planner.units import GIB  # noqa: E402 (after the sys.path line)

CASES = [(m, ck, "") for m in ("full", "lora", "qlora") for ck in (False, True)]
CASES += [("full", False, "optimizer-in-backward"), ("lora", True, "activation-offload")]


def _step(model, opt, ids, method: str, lever: str) -> None:
    import contextlib

    import torch

    amp = torch.autocast("cuda", dtype=torch.bfloat16) if method != "full" else contextlib.nullcontext()
    off = (
        torch.autograd.graph.save_on_cpu(pin_memory=True) if lever == "activation-offload" else contextlib.nullcontext()
    )
    with amp, off:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)


def _optimizer(model, lever: str):
    """torch AdamW (foreach), or one per parameter stepped by a post-accumulate-grad hook."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if lever != "optimizer-in-backward":
        return torch.optim.AdamW(params, lr=1e-5)
    per_param = {p: torch.optim.AdamW([p], lr=1e-5, foreach=False) for p in params}

    def step(p):
        per_param[p].step()
        p.grad = None

    for p in params:
        p.register_post_accumulate_grad_hook(step)
    return None


def measure(config_path: Path, method: str, ckpt: bool, batch: int, seq: int, steps: int, lever: str = "") -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    cfg = AutoConfig.from_pretrained(config_path.parent)
    kw: dict = {"dtype": torch.bfloat16, "attn_implementation": "sdpa"}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_config(cfg, **kw).cuda() if method != "qlora" else _quantized(cfg, kw)
    if method != "full":
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if method == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = get_peft_model(
            model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
        )
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if method != "full":
            model.enable_input_require_grads()
    model.train()
    opt = _optimizer(model, lever)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device="cuda")
    for _ in range(steps):
        _step(model, opt, ids, method, lever)
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    out = {
        "allocated_gib": torch.cuda.max_memory_allocated() / GIB,
        "reserved_gib": torch.cuda.max_memory_reserved() / GIB,
        "device_used_gib": (total - free) / GIB,
        "device_total_gib": total / GIB,
    }
    del model, opt
    return out


def _quantized(cfg, kw):
    """bitsandbytes quantizes on load: build on the meta device, save random bf16 weights, reload."""
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM

    tmp = Path(tempfile.mkdtemp())
    AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(tmp)
    return AutoModelForCausalLM.from_pretrained(tmp, device_map={"": 0}, **kw)


def predict(model_ref: str, method: str, ckpt: bool, batch: int, seq: int, total_gib: float, lever: str = "") -> dict:
    from planner.api import load_model
    from planner.training import TrainingConfig, estimate_training

    m = load_model(model_ref)
    c = TrainingConfig(
        method=method,
        micro_batch_size=batch,
        seq_len=seq,
        gradient_checkpointing=ckpt,
        framework="pytorch",
        precision="bf16" if method == "full" else "bf16-mixed",
        lora_rank=None if method == "full" else 16,
        base_dtype={"full": None, "lora": "bf16", "qlora": "fp32"}[method],
        activation_offload=lever == "activation-offload",
        optimizer_in_backward=lever == "optimizer-in-backward",
    )
    e = estimate_training(m.spec, m.tensors, c, gpu_memory_bytes=int(total_gib * GIB), with_fixes=False)
    return {"planned_allocated_gib": e.total_bytes / GIB, "planned_reserved_gib": e.reserved_bytes / GIB}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", default="TinyLlama/TinyLlama-1.1B-Chat-v1.0", help="a bundled model id (its config.json is used)"
    )
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default="gpu_train_results.jsonl")
    a = p.parse_args()
    try:
        import torch
    except ImportError:
        print("gpu_train: needs torch, transformers, peft and bitsandbytes (a CUDA machine)", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_train: no CUDA device; run this on a GPU machine", file=sys.stderr)
        return 2
    from planner.models.sources import find_bundled  # the bundled profile folder holds config.json

    folder = find_bundled(a.model)
    if folder is None:
        print(f"gpu_train: {a.model} is not a bundled model (see `vllm-planner models`)", file=sys.stderr)
        return 2
    config_path = folder / "config.json"
    rows = []
    for method, ckpt, lever in CASES:
        t0 = time.time()
        try:
            got = measure(config_path, method, ckpt, a.batch, a.seq, a.steps, lever)
        except Exception as exc:  # an OOM or a missing bitsandbytes is reported, not fatal
            got = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        row = {
            "model": a.model,
            "method": method,
            "checkpointing": ckpt,
            "lever": lever or None,
            "batch": a.batch,
            "seq": a.seq,
            "device": torch.cuda.get_device_name(),
            **got,
            "seconds": round(time.time() - t0, 1),
        }
        if "device_total_gib" in got:
            row |= predict(a.model, method, ckpt, a.batch, a.seq, got["device_total_gib"], lever)
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
