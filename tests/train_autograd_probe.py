"""Runs in the vLLM CPU venv (real torch, transformers and PEFT), never on the planning path.

Reads a JSON list of cases on stdin; for each, builds the model from its config (random weights),
runs one training forward and backward pass and prints one JSON line with what autograd kept:

- `layer_saved_bytes`: per decoder layer, the bytes of the distinct storages packed by
  `torch.autograd.graph.saved_tensors_hooks` while that layer ran (parameters excluded: they are
  model states, not activations). A storage saved by several operations counts once, in the first
  layer that saved it (RoPE's shared cos/sin land in layer 0; compare a later layer).
- `head_saved_bytes`: what was saved outside the decoder layers (final norm, lm_head, loss).
- `last_layer_tensors`: shape, dtype and bytes of what the last layer kept (to read a mismatch).
- with `"optimizer_in_backward": true`: `grad_bytes_alive_max`, the most gradient bytes alive at once
  when each parameter is stepped and its gradient freed as it is accumulated, and `grad_bytes_total`.

A case: {"config": {...config.json...}, "method": "full"|"lora", "dtype": "bfloat16"|"float32",
"attn": "sdpa"|"eager", "checkpointing": bool, "batch": B, "seq": S,
"lora": {"r": 8, "alpha": 16, "targets": [...], "dropout": 0.0}, "autocast": null | "bfloat16",
"adapter_dtype": "fp32" | "compute", "cast_back": bool}: autocast runs the forward pass under
`torch.autocast("cpu", dtype)` as Trainer's bf16=True does; adapter_dtype "compute" is PEFT's
autocast_adapter_dtype=False (adapters in the model's dtype, as DeepSpeed's bf16 engine and FSDP
mixed precision leave them); cast_back emulates bitsandbytes' 4-bit linears (QLoRA).
"""

from __future__ import annotations

import json
import sys

import torch


def _tagged(layer: torch.nn.Module, index: int, state: dict) -> None:
    """Tag what autograd saves while decoder layer `index` runs, checkpoint wrapper included (a
    module hook would fire inside the checkpoint, after its inputs were saved)."""
    base = type(layer)

    def __call__(self, *args, **kwargs):  # noqa: N807
        state["tag"] = index
        try:
            return base.__call__(self, *args, **kwargs)
        finally:
            state["tag"] = "head"

    layer.__class__ = type(f"Tagged{base.__name__}", (base,), {"__call__": __call__})


def _build(case: dict) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    torch.manual_seed(0)
    raw = dict(case["config"])
    cfg = AutoConfig.for_model(raw.pop("model_type"), **raw)
    dtype = getattr(torch, case["dtype"])
    auto = AutoModelForImageTextToText if hasattr(cfg, "vision_config") else AutoModelForCausalLM  # a VLM: text batches
    model = auto.from_config(cfg, attn_implementation=case["attn"], dtype=dtype)
    if case["method"] == "lora":
        from peft import LoraConfig, get_peft_model

        lo = case["lora"]
        model = get_peft_model(
            model,
            LoraConfig(
                r=lo["r"],
                lora_alpha=lo["alpha"],
                target_modules=lo["targets"],
                lora_dropout=lo["dropout"],
                task_type="CAUSAL_LM",
            ),
            autocast_adapter_dtype=case.get("adapter_dtype", "fp32") == "fp32",
        )
        if case.get("cast_back"):
            _cast_back(model, getattr(torch, case.get("autocast") or case["dtype"]))
    if case["checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


class _Frozen4bit(torch.autograd.Function):
    """bitsandbytes' MatMul4Bit: the weight stashed on ctx (ctx.tensors), not saved; no input kept."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x @ weight.to(x.dtype).t()

    @staticmethod
    def backward(ctx, grad):
        return grad @ ctx.weight.to(grad.dtype), None


def _cast_back(model: torch.nn.Module, compute: torch.dtype) -> None:
    """bitsandbytes' Linear4bit.forward as QLoRA runs it, emulated on the adapted base linears: the
    input cast to the compute dtype, the matmul (keeping no input), the output cast back to the
    input's dtype (`.to(inp_dtype)`: an fp32 residual stream stays fp32)."""

    def linear4bit(x, base):
        return _Frozen4bit.apply(x.to(compute), base.weight).to(x.dtype)

    for m in model.modules():
        base = getattr(m, "base_layer", None)
        if isinstance(base, torch.nn.Linear):
            base.forward = lambda x, b=base: linear4bit(x, b)


def _optimizer_in_backward(model: torch.nn.Module) -> dict:
    """torchtune's optimizer_in_bwd on real torch: one AdamW per parameter, stepped and the gradient
    freed by a post-accumulate-grad hook; records the most gradient bytes alive at any hook."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizers = {p: torch.optim.AdamW([p], foreach=False) for p in params}
    seen = {"max": 0, "total": sum(p.numel() * p.element_size() for p in params)}

    def step(p: torch.Tensor) -> None:
        alive = sum(q.grad.untyped_storage().nbytes() for q in params if q.grad is not None)
        seen["max"] = max(seen["max"], alive)
        optimizers[p].step()
        p.grad = None

    for p in params:
        p.register_post_accumulate_grad_hook(step)
    return seen


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    for m in model.modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) and type(m[0]).__name__.endswith("DecoderLayer"):
            return m
    raise SystemExit("no decoder layers found")


def probe(case: dict) -> dict:
    model = _build(case)
    layers = _decoder_layers(model)
    state: dict = {"tag": "head", "seen": {}}
    for i, layer in enumerate(layers):
        _tagged(layer, i, state)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        key = st.data_ptr()
        if st.nbytes() and key not in params and key not in state["seen"]:
            state["seen"][key] = (state["tag"], st.nbytes(), list(t.shape), str(t.dtype).replace("torch.", ""))
        return t

    grads = _optimizer_in_backward(model) if case.get("optimizer_in_backward") else None
    torch.manual_seed(1)
    vocab = case["config"].get("text_config", case["config"])["vocab_size"]
    ids = torch.randint(0, vocab, (case["batch"], case["seq"]))
    autocast = case.get("autocast")
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", dtype=getattr(torch, autocast or "bfloat16"), enabled=bool(autocast)),
    ):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    per_layer = [0] * len(layers)
    head = 0
    last: list = []
    for tag, nbytes, shape, dtype in state["seen"].values():
        if tag == "head":
            head += nbytes
        else:
            per_layer[tag] += nbytes
            if tag == len(layers) - 1:
                last.append([shape, dtype, nbytes])
    extra = {"grad_bytes_alive_max": grads["max"], "grad_bytes_total": grads["total"]} if grads else {}
    return extra | {
        "name": case.get("name", ""),
        "layer_saved_bytes": per_layer,
        "head_saved_bytes": head,
        "last_layer_tensors": last,
    }


def main() -> None:
    torch.set_num_threads(1)
    for case in json.load(sys.stdin):
        print(json.dumps(probe(case)), flush=True)


if __name__ == "__main__":
    main()
