"""`vllm-planner train`: training and fine-tuning memory per GPU (full, LoRA, QLoRA).

Wire it with `register(sub)` in `planner.cli.build_parser`. Exit status: 0 it fits (or no --gpu was
given), 1 it does not fit the GPU, 2 bad input (a one-line error).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from planner import training as tr
from planner.cliargs import finite_float, human_int, int_range

GIB = 2**30

_OPTIMIZER_LABELS = {"adamw": "AdamW", "adamw-8bit": "8-bit AdamW (bitsandbytes)",
                     "sgd-momentum": "SGD with momentum", "adafactor": "Adafactor"}


def _targets(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(","))


def register(subparsers: Any) -> None:
    """Add the `train` subcommand to the CLI's subparsers."""
    p = subparsers.add_parser("train", help="training / fine-tuning memory per GPU: full, LoRA, QLoRA")
    p.add_argument("model", help="bundled id or alias, a config.json / checkpoint folder, or a Hugging Face id")
    p.add_argument("--method", choices=tr.METHODS, required=True, help="full fine-tuning, LoRA, or QLoRA (NF4 base)")
    p.add_argument("--gpu", help="GPU type from `vllm-planner gpus`: adds the fit and the largest batch and sequence")
    p.add_argument("--gpus", type=int_range(1, 2**20, "a GPU count"), default=1, help="data-parallel GPUs (ZeRO shards over them)")
    p.add_argument("--precision", choices=tr.PRECISIONS_CHOICES, default="bf16-mixed")
    p.add_argument("--optimizer", choices=tr.OPTIMIZERS, default="adamw")
    p.add_argument("--micro-batch-size", type=int_range(1, 2**20, "a sequence count"), default=1, help="sequences per GPU per forward/backward pass")
    p.add_argument("--seq-len", type=human_int(1, 2**31 - 1),
                   help=f"tokens per sequence (default {tr.DEFAULT_SEQ_LEN_TOKENS}, capped at the model's context)")
    p.add_argument("--grad-accum", type=int_range(1, 2**20, "a micro-batch count"), default=1, help="micro-batches per optimizer step")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="keep each layer's input only; recompute one layer at a time")
    p.add_argument("--attention", choices=tr.ATTENTIONS, default="flash",
                   help="flash (linear in s) or eager (s^2 score matrices)")
    p.add_argument("--lora-rank", type=int_range(1, 2**16, "a LoRA rank"), help="LoRA rank r (default 16)")
    p.add_argument("--lora-alpha", type=finite_float(-1e6, 1e6, "LoRA alpha"), help="LoRA alpha (default 2 x rank; does not change memory)")
    p.add_argument("--lora-targets", type=_targets,
                   help="comma-separated modules: q,k,v,o,gate,up,down, any module name, or all-linear (default)")
    p.add_argument("--zero", type=int, choices=tr.ZERO_STAGES, default=0,
                   help="ZeRO stage: 1 optimizer states, 2 + gradients, 3 + parameters")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_train)


def config_from_args(a: argparse.Namespace) -> tr.TrainingConfig:
    return tr.TrainingConfig(
        method=a.method, precision=a.precision, optimizer=a.optimizer, micro_batch_size=a.micro_batch_size,
        seq_len=a.seq_len, grad_accum=a.grad_accum, gpus=a.gpus, zero=a.zero,
        gradient_checkpointing=a.gradient_checkpointing, attention=a.attention,
        lora_rank=a.lora_rank, lora_alpha=a.lora_alpha, lora_targets=a.lora_targets,
    )


def _cmd_train(a: argparse.Namespace) -> int:
    from planner.api import load_model
    from planner.hardware import load_catalogue

    gpu = load_catalogue().get(a.gpu) if a.gpu else None
    model = load_model(a.model)
    est = tr.estimate_training(model.spec, model.tensors, config_from_args(a),
                               gpu_memory_bytes=gpu.memory_bytes if gpu else None,
                               gpu_name=gpu.name if gpu else None, model_id=model.id)
    print(json.dumps(est.to_json(), indent=2) if a.json else train_text(est))
    return 1 if est.fits is False else 0


# ---- text -------------------------------------------------------------------------------------

def _g(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / GIB:,.2f}"


def _headline(e: tr.TrainingEstimate) -> list[str]:
    method = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}[e.method]
    if e.lora_rank:
        method += f" (r={e.lora_rank}, alpha {e.lora_alpha:g}, on {', '.join(e.lora_targets)})"
    share = 100 * e.params_trainable / e.params_total if e.params_total else 0.0
    return [
        f"{e.model}: {method}",
        f"{e.precision}, {_OPTIMIZER_LABELS[e.optimizer]}, {e.attention} attention, "
        f"gradient checkpointing {'on' if e.gradient_checkpointing else 'off'}, {e.gpus} GPU(s), ZeRO {e.zero}",
        f"parameters: {e.params_total:,} total, {e.params_trainable:,} trainable ({share:.2f}%)",
        "",
    ]


def _dtype(precision: str, nbytes: int) -> str:
    return "fp32" if nbytes == 4 else precision.split("-")[0]


def _state_rows(e: tr.TrainingEstimate) -> list[list[str]]:
    s, rule = e.states, tr.PRECISIONS[e.precision]
    w, opt = _dtype(e.precision, rule.weight_bytes), _OPTIMIZER_LABELS[e.optimizer]
    if e.method == "full":
        rows = [(f"weights ({w})", s.weights), ("master weights (fp32)", s.master_weights),
                (f"gradients ({_dtype(e.precision, rule.grad_bytes)})", s.gradients), (f"optimizer states ({opt})", s.optimizer)]
        return [[k, _g(v), f"{v:,}"] for k, v in rows if v or k.startswith(("weights", "gradients", "optimizer"))]
    a = _dtype(e.precision, rule.adapter_bytes)
    rows = [(f"frozen base weights ({w}{', outside the NF4 linears' if e.method == 'qlora' else ''})", s.weights)]
    if e.method == "qlora":
        rows.append(("quantized base (NF4, double quantization)", s.quantized_base))
    rows += [(f"LoRA adapter weights ({a})", s.adapter_weights), (f"LoRA adapter gradients ({a})", s.adapter_gradients),
             (f"LoRA adapter optimizer states ({opt})", s.adapter_optimizer)]
    return [[k, _g(v), f"{v:,}"] for k, v in rows]


def _budget_table(e: tr.TrainingEstimate) -> str:
    from tabulate import tabulate  # only the table output needs it

    rows = _state_rows(e)
    rows += [["activations (est.)", _g(e.activation_bytes), f"{e.activation_bytes:,}"],
             ["temporary buffers (est.)", _g(e.temporary_bytes), f"{e.temporary_bytes:,}"],
             ["total per GPU (est.)", _g(e.total_bytes), f"{e.total_bytes:,}"]]
    return tabulate(rows, headers=["per GPU", "GiB", "bytes"], colalign=("left", "right", "right"), disable_numparse=True)


def _fit_lines(e: tr.TrainingEstimate) -> list[str]:
    if e.gpu_memory_bytes is None:
        return ["no --gpu given: add one for the fit, the largest micro-batch and the longest sequence"]
    free = e.gpu_memory_bytes - e.total_bytes
    verdict = f"FITS, {free / GIB:,.2f} GiB to spare" if e.fits else f"DOES NOT FIT, {-free / GIB:,.2f} GiB short"
    return [f"on {e.gpu} ({_g(e.gpu_memory_bytes)} GiB): {verdict} (est.)",
            f"largest micro-batch at {e.seq_len:,} tokens: {e.max_micro_batch_size:,}; "
            f"longest sequence at micro-batch {e.micro_batch_size}: {e.max_seq_len:,} tokens (context {e.context_tokens:,})"]


def _batch_lines(e: tr.TrainingEstimate) -> list[str]:
    out = [f"effective batch: {e.micro_batch_size} micro-batch x {e.grad_accum} grad-accum x {e.gpus} GPU(s) = "
           f"{e.effective_batch_size:,} sequences ({e.effective_batch_size * e.seq_len:,} tokens) per optimizer step"]
    if e.total_bytes_without_accum is not None:
        out.append(f"gradient accumulation trades time for memory: {e.grad_accum} forward/backward passes per step at "
                   f"{_g(e.total_bytes)} GiB instead of one pass at micro-batch {e.micro_batch_size * e.grad_accum} "
                   f"needing {_g(e.total_bytes_without_accum)} GiB")
    else:
        out.append("gradient accumulation: --grad-accum G grows the effective batch G-fold with no extra activation "
                   "memory, at G forward/backward passes per optimizer step")
    return out


def train_text(e: tr.TrainingEstimate) -> str:
    acts = ", ".join(f"{k} {_g(v)} GiB" for k, v in e.activation_breakdown.items())
    lines = _headline(e) + [_budget_table(e), ""]
    lines += [f"activations: {acts}",
              "optimizer step transient (est., after the backward pass; the total takes the larger): "
              f"{_g(e.optimizer_step_bytes)} GiB"]
    lines += _fit_lines(e) + _batch_lines(e)
    lines.append("estimated (modelled, not measured): " + ", ".join(e.estimated))
    lines += [f"note: {n}" for n in e.notes]
    return "\n".join(lines)
