"""`vllm-planner train`: training and fine-tuning memory per GPU (full, LoRA, QLoRA).

Registered in planner/cli/parser.py's COMMANDS. Exit status: 0 it fits (or no --gpu was
given), 1 it does not fit the GPU, 2 bad input (a one-line error).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from planner import training as tr
from planner.cli.args import finite_float, human_int, int_range, word
from planner.cli.options import MAX_MEMORY_GIB, MAX_TOKENS, MODEL_HELP, add_gpu_options, gpu_from_args
from planner.units import GIB

_OPTIMIZER_LABELS = {
    "adamw": "AdamW",
    "adamw-8bit": "8-bit AdamW (bitsandbytes)",
    "paged-adamw": "paged AdamW (bitsandbytes)",
    "paged-adamw-8bit": "paged 8-bit AdamW (bitsandbytes)",
    "sgd-momentum": "SGD with momentum",
    "adafactor": "Adafactor",
}


def _targets(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(","))


def register(p: argparse.ArgumentParser) -> None:
    """The `train` subcommand's options."""
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--method", choices=tr.METHODS, required=True, help="full fine-tuning, LoRA, or QLoRA (NF4 base)")
    add_gpu_options(p, "default: none; with it, the fit and the largest micro-batch and sequence")
    _add_run_options(p)
    _add_lora_options(p)
    _add_levers(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (default: text)")
    p.set_defaults(func=_cmd_train)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """How the run is shaped: GPUs, precision, optimizer, batch, sequence, checkpointing, attention, ZeRO."""
    p.add_argument(
        "--gpus",
        type=int_range(1, 2**20, "a GPU count"),
        default=1,
        help="data-parallel GPUs; ZeRO shards over them (default: 1)",
    )
    p.add_argument(
        "--precision",
        choices=tr.PRECISIONS_CHOICES,
        default="bf16-mixed",
        help="training precision of weights, gradients and activations (default: bf16-mixed)",
    )
    p.add_argument(
        "--optimizer",
        choices=tr.OPTIMIZERS,
        default="adamw",
        help="optimizer whose states are counted per parameter (default: adamw)",
    )
    p.add_argument(
        "--micro-batch-size",
        type=int_range(1, 2**20, "a sequence count"),
        default=1,
        help="sequences per GPU per forward/backward pass (default: 1)",
    )
    p.add_argument(
        "--seq-len",
        type=human_int(1, MAX_TOKENS),
        help=f"tokens per sequence (default {tr.DEFAULT_SEQ_LEN_TOKENS}, capped at the model's context)",
    )
    p.add_argument(
        "--grad-accum",
        type=int_range(1, 2**20, "a micro-batch count"),
        default=1,
        help="micro-batches per optimizer step (default: 1)",
    )
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="keep each layer's input only; recompute one layer at a time (default: off)",
    )
    p.add_argument(
        "--attention",
        choices=tr.ATTENTIONS,
        default="flash",
        help="flash (memory linear in the sequence) or eager (s^2 score matrices) (default: flash)",
    )
    p.add_argument(
        "--zero",
        type=int,
        choices=tr.ZERO_STAGES,
        default=0,
        help="ZeRO stage: 1 optimizer states, 2 + gradients, 3 + parameters (default: 0, none)",
    )


def _add_lora_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora-rank", type=int_range(1, 2**16, "a LoRA rank"), help="LoRA rank r (default 16)")
    p.add_argument(
        "--lora-alpha",
        type=finite_float(-1e6, 1e6, "LoRA alpha"),
        help="LoRA alpha (default 2 x rank; does not change memory)",
    )
    p.add_argument(
        "--lora-targets",
        type=_targets,
        help="comma-separated modules: q,k,v,o,gate,up,down, any module name, or all-linear (default)",
    )


def _add_levers(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--framework",
        default="hf",
        type=word("a framework"),
        help="hf (Trainer / TRL + PEFT), torchtune, axolotl, pytorch: picks base dtype, loss, adapter dtype "
        "(default: hf)",
    )
    p.add_argument(
        "--base-dtype",
        choices=tr.BASE_DTYPES,
        help="frozen base dtype for lora/qlora (qlora: embeddings, norms, lm_head) (default: the framework's)",
    )
    p.add_argument(
        "--loss",
        choices=tr.LOSSES,
        help="cross-entropy: full, chunked (torchtune), fused (Liger/CCE) (default: the framework's)",
    )
    p.add_argument(
        "--lora-dropout",
        type=finite_float(0, 0.999, "a dropout probability"),
        default=0.0,
        help="LoRA dropout; above 0 each adapted module keeps a dropout output and mask (default: 0)",
    )
    p.add_argument(
        "--sharding",
        choices=("deepspeed", "fsdp"),
        help="what --zero runs on: DeepSpeed ZeRO or FSDP (3 = FULL_SHARD) (default: the framework's)",
    )
    p.add_argument(
        "--offload",
        choices=tr.OFFLOADS,
        default="none",
        help="CPU offload: optimizer (ZeRO-Offload), optimizer+params (ZeRO-3 / FSDP) (default: none)",
    )
    p.add_argument(
        "--host-memory-gib",
        type=finite_float(0.001, MAX_MEMORY_GIB, "number of GiB"),
        metavar="GIB",
        help="host RAM for --offload / --activation-offload, checked (default: not checked)",
    )
    p.add_argument(
        "--checkpoint-layers",
        type=int_range(1, 1 << 16, "a layer count"),
        metavar="N",
        help="selective checkpointing: checkpoint N decoder layers, keep the rest whole (default: all)",
    )
    p.add_argument(
        "--activation-offload",
        action="store_true",
        help="offload what the layers keep for backward to pinned host RAM (save_on_cpu, torchtune's "
        "enable_activation_offloading) (default: off)",
    )
    p.add_argument(
        "--optimizer-in-backward",
        action="store_true",
        help="step and free each gradient inside the backward pass (torchtune's optimizer_in_bwd; no "
        "--grad-accum) (default: off)",
    )


def config_from_args(a: argparse.Namespace) -> tr.TrainingConfig:
    return tr.TrainingConfig(
        method=a.method,
        precision=a.precision,
        optimizer=a.optimizer,
        micro_batch_size=a.micro_batch_size,
        seq_len=a.seq_len,
        grad_accum=a.grad_accum,
        gpus=a.gpus,
        zero=a.zero,
        gradient_checkpointing=a.gradient_checkpointing,
        attention=a.attention,
        lora_rank=a.lora_rank,
        lora_alpha=a.lora_alpha,
        lora_targets=a.lora_targets,
        lora_dropout=a.lora_dropout,
        framework=a.framework,
        base_dtype=a.base_dtype,
        loss=a.loss,
        sharding=a.sharding,
        offload=a.offload,
        host_memory_bytes=None if a.host_memory_gib is None else int(a.host_memory_gib * GIB),
        checkpointed_layers=a.checkpoint_layers,
        activation_offload=a.activation_offload,
        optimizer_in_backward=a.optimizer_in_backward,
    )


def _cmd_train(a: argparse.Namespace) -> int:
    from planner.api import load_model

    gpu = gpu_from_args(a)
    model = load_model(a.model)
    config = config_from_args(a)
    if gpu is not None and getattr(gpu, "interconnect_class", None):
        config = dataclasses.replace(config, interconnect=gpu.interconnect_class)
    est = tr.estimate_training(
        model.spec,
        model.tensors,
        config,
        gpu_memory_bytes=gpu.memory_bytes if gpu else None,
        gpu_name=gpu.name if gpu else None,
        model_id=model.id,
    )
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
    if e.method == "full":  # bytes per element from the states (torch AMP keeps fp32 weights and gradients)
        n = max(1, e.params_trainable)
        rows = [
            (f"weights ({_dtype(e.precision, s.weights // n)})", s.weights),
            ("master weights (fp32)", s.master_weights),
            (f"gradients ({_dtype(e.precision, s.gradients // n)})", s.gradients),
            (f"optimizer states ({opt})", s.optimizer),
        ]
        return [[k, _g(v), f"{v:,}"] for k, v in rows if v or k.startswith(("weights", "gradients", "optimizer"))]
    a = "fp32" if s.adapter_weights and s.adapter_weights == 4 * e.params_trainable else _dtype(e.precision, 2)
    w = e.base_dtype or w
    rows = [(f"frozen base weights ({w}{', outside the NF4 linears' if e.method == 'qlora' else ''})", s.weights)]
    if e.method == "qlora":
        rows.append(("quantized base (NF4 codes)", s.quantized_base))
        rows.append(("NF4 scales (double-quantized absmax; whole on every GPU)", s.quant_scales))
    rows += [
        (f"LoRA adapter weights ({a})", s.adapter_weights),
        (f"LoRA adapter gradients ({a})", s.adapter_gradients),
        (f"LoRA adapter optimizer states ({opt})", s.adapter_optimizer),
    ]
    return [[k, _g(v), f"{v:,}"] for k, v in rows]


def _budget_table(e: tr.TrainingEstimate) -> str:
    from tabulate import tabulate  # only the table output needs it

    rows = _state_rows(e)
    rows += [
        ["activations (est.)", _g(e.activation_bytes), f"{e.activation_bytes:,}"],
        ["temporary buffers (est.)", _g(e.temporary_bytes), f"{e.temporary_bytes:,}"],
        ["allocated peak per GPU (est., max_memory_allocated)", _g(e.total_bytes), f"{e.total_bytes:,}"],
        ["reserved per GPU (est., what the card must hold)", _g(e.reserved_bytes), f"{e.reserved_bytes:,}"],
    ]
    return tabulate(
        rows, headers=["per GPU", "GiB", "bytes"], colalign=("left", "right", "right"), disable_numparse=True
    )


def _fit_lines(e: tr.TrainingEstimate) -> list[str]:
    if e.gpu_memory_bytes is None:
        return ["no --gpu given: add one for the fit, the largest micro-batch and the longest sequence"]
    free = e.gpu_memory_bytes - (e.reserved_bytes - e.paged_optimizer_bytes)
    verdict = f"FITS, {free / GIB:,.2f} GiB to spare" if e.fits else f"DOES NOT FIT, {-free / GIB:,.2f} GiB short"
    lo, hi = e.reserved_range_bytes
    out = [
        f"on {e.gpu} ({_g(e.gpu_memory_bytes)} GiB): {verdict} (est., judged on reserved {_g(e.reserved_bytes)} GiB, "
        f"range {_g(lo)}-{_g(hi)})",
        f"largest micro-batch at {e.seq_len:,} tokens: {e.max_micro_batch_size:,}; "
        f"longest sequence at micro-batch {e.micro_batch_size}: {e.max_seq_len:,} tokens "
        f"(context {e.context_tokens:,})",
    ]
    out += [f"fix: {f['change']} ({f['flags']}): reserved {f['reserved_gib']:,.2f} GiB" for f in e.fixes]
    if e.fits is False and not e.fixes:
        out.append("no single change fits: see the largest micro-batch and sequence above")
    return out


def _batch_lines(e: tr.TrainingEstimate) -> list[str]:
    out = [
        f"effective batch: {e.micro_batch_size} micro-batch x {e.grad_accum} grad-accum x {e.gpus} GPU(s) = "
        f"{e.effective_batch_size:,} sequences ({e.effective_batch_size * e.seq_len:,} tokens) per optimizer step"
    ]
    if e.total_bytes_without_accum is not None:
        out.append(
            f"gradient accumulation trades time for memory: {e.grad_accum} forward/backward passes per step at "
            f"{_g(e.total_bytes)} GiB instead of one pass at micro-batch {e.micro_batch_size * e.grad_accum} "
            f"needing {_g(e.total_bytes_without_accum)} GiB"
        )
    else:
        out.append(
            "gradient accumulation: --grad-accum G grows the effective batch G-fold with no extra activation "
            "memory, at G forward/backward passes per optimizer step"
        )
    return out


def train_text(e: tr.TrainingEstimate) -> str:
    acts = ", ".join(f"{k} {_g(v)} GiB" for k, v in e.activation_breakdown.items())
    lines = _headline(e) + [_budget_table(e), ""]
    lines += [
        f"activations: {acts}",
        "optimizer step transient (est., after the backward pass; the total takes the larger): "
        f"{_g(e.optimizer_step_bytes)} GiB",
    ]
    lines += _fit_lines(e) + _batch_lines(e)
    lines.append("estimated (modelled, not measured): " + ", ".join(e.estimated))
    lines += [f"assumed: {x}" for x in e.assumptions]
    lines += [f"note: {n}" for n in e.notes]
    return "\n".join(lines)
