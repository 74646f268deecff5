"""Runs in the vLLM CPU venv (real torch and transformers), never on the planning path.

Reads a JSON list of cases on stdin; for each builds a one-layer Llama with a large vocabulary
(random weights, a frozen lm_head as under LoRA), runs the loss's forward and backward pass the way
Trainer's compute_loss does (the model outputs dropped before backward) and prints one JSON line
with the live tensor bytes per token per vocabulary entry, tracked op by op with a
TorchDispatchMode (every new storage counted until it is freed):

- `forward_peak`: the most alive during the forward pass;
- `kept`: alive after the forward pass (what the loss keeps for the backward pass);
- `backward_peak`: the most alive during the backward pass.

A case: {"name": str, "dtype": "bfloat16"|"float32", "autocast": bool, "vocab": V, "batch": B, "seq": S}.
"""

from __future__ import annotations

import json
import sys
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages the dispatched ops created that are still alive, and their peak;
    `exclude`: storages that existed before (the parameters, which views like `t` return)."""

    def __init__(self, exclude: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.seen: set[int] = set()
        self.exclude = exclude

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key, n = st.data_ptr(), st.nbytes()
                if key and n and key not in self.seen and key not in self.exclude:
                    self.seen.add(key)
                    self.live += n
                    weakref.finalize(st, self._free, key, n)
        self.peak = max(self.peak, self.live)
        return out

    def _free(self, key: int, n: int) -> None:
        self.seen.discard(key)
        self.live -= n


def probe(case: dict) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    v, b, s = case["vocab"], case["batch"], case["seq"]
    cfg = LlamaConfig(
        vocab_size=v,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=s,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(getattr(torch, case["dtype"]))
    for p in model.parameters():
        p.requires_grad_(False)
    model.model.layers[0].mlp.down_proj.weight.requires_grad_(True)  # something trains; the head is frozen
    ids = torch.randint(0, v, (b, s))
    mode = LiveBytes(frozenset(p.untyped_storage().data_ptr() for p in model.parameters()))

    def compute_loss():  # Trainer.compute_loss: the outputs die with the call
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case["autocast"]):
            return model(input_ids=ids, labels=ids).loss

    with mode:
        loss = compute_loss()
        forward_peak, kept = mode.peak, mode.live
        mode.peak = mode.live
        loss.backward()
    per = b * s * v
    return {
        "name": case["name"],
        "forward_peak": forward_peak / per,
        "kept": kept / per,
        "backward_peak": mode.peak / per,
    }


def main() -> None:
    torch.set_num_threads(1)
    for case in json.load(sys.stdin):
        print(json.dumps(probe(case)), flush=True)


if __name__ == "__main__":
    main()
