#!/usr/bin/env python3
"""vLLM's own model, built on the meta device, for what only its constructor knows. Run with the python
of the vLLM venv, as tests/vllm_oracle.py:

    python tests/vllm_model_oracle.py CONFIG_DIR [CONFIG_DIR ...] [--max-num-batched-tokens 8192]

Builds the model class vLLM picks (`initialize_model`, TP = PP = 1, a one-process gloo group) with no
weights and reports, per config, one JSON line:
- `params`: the numel of every parameter, `float32_params` those vLLM keeps in float32 (on this CPU
  build: a device without CUDA router kernels); `buffers`: every buffer (name, shape, dtype) once per module,
  so a rotary cache `get_rope` shares between layers appears once;
- `attention`: per Attention layer of the static forward context, its `kv_sharing_target_layer_name`
  or its own KV-cache spec (`get_kv_cache_spec`: kind, heads, head sizes, window, block size, page
  bytes after `unify_kv_cache_spec_page_size`), as the GPU model runner collects them (a KV-shared
  layer gets no spec);
- `init_buffers`: the plain tensors the model allocates at start-up beside its parameters
  (Gemma 4's `per_layer_embeddings`, Qwen3-VL's `deepstack_input_embeds`), shape and dtype.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vllm_oracle  # noqa: E402  (the same venv set-up: offline, torchvision placeholder)

_INIT_BUFFERS = ("per_layer_embeddings", "deepstack_input_embeds")


def _spec_row(spec) -> dict:
    return {
        "kind": "sliding" if getattr(spec, "sliding_window", None) else "full",
        "window": getattr(spec, "sliding_window", None),
        "heads": spec.num_kv_heads,
        "k": spec.head_size,
        "v": getattr(spec, "head_size_v", spec.head_size),
        "block_size": spec.block_size,
        "page_size_bytes": spec.page_size_bytes,
    }


def _attention(vc) -> list[dict]:
    from vllm.model_executor.layers.attention.attention import Attention
    from vllm.v1.core.kv_cache_utils import unify_kv_cache_spec_page_size

    rows, specs = [], {}
    for name, layer in vc.compilation_config.static_forward_context.items():
        if not isinstance(layer, Attention):
            continue
        if layer.kv_sharing_target_layer_name:
            rows.append({"layer": name, "shared_with": layer.kv_sharing_target_layer_name})
            continue
        specs[name] = layer.get_kv_cache_spec(vc)
        rows.append({"layer": name})
    unified = unify_kv_cache_spec_page_size(specs) if specs else {}
    for row in rows:
        if row["layer"] in unified:
            row.update(_spec_row(unified[row["layer"]]))
    return rows


def _init_buffers(model) -> dict:
    out = {}
    for module in model.modules():
        for attr in _INIT_BUFFERS:
            value = getattr(module, attr, None)
            tensors = value if isinstance(value, list) else [value]
            if all(hasattr(t, "shape") for t in tensors) and tensors:
                out[attr] = [[list(t.shape), str(t.dtype).removeprefix("torch.")] for t in tensors]
    return out


def build(model_dir: Path, mnbt: int, tmp: Path) -> dict:
    import torch
    import vllm
    from vllm.config import CacheConfig, ModelConfig, VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.model_executor.model_loader.utils import initialize_model
    from vllm.utils.torch_utils import set_default_torch_dtype

    mc = ModelConfig(model=str(model_dir), tokenizer=str(model_dir), skip_tokenizer_init=True)
    vc = VllmConfig(model_config=mc, cache_config=CacheConfig(block_size=16))
    vc.scheduler_config.max_num_batched_tokens = mnbt
    with set_current_vllm_config(vc):
        from vllm.distributed import parallel_state

        if parallel_state._WORLD is None:
            init_distributed_environment(1, 0, f"file://{tmp}/pg", 0, "gloo")
        parallel_state.destroy_model_parallel()  # the groups follow the model (an EP group for MoE ones)
        initialize_model_parallel(1, 1)
        with set_default_torch_dtype(mc.dtype), torch.device("meta"):
            model = initialize_model(vllm_config=vc)
        buffers = [[name, list(b.shape), str(b.dtype).removeprefix("torch.")] for name, b in model.named_buffers()]
        return {
            "vllm_version": vllm.__version__,
            "architecture": type(model).__name__,
            "dtype": str(mc.dtype).removeprefix("torch."),
            "max_num_batched_tokens": mnbt,
            "block_size": vc.cache_config.block_size,
            "params": sum(p.numel() for p in model.parameters()),
            "float32_params": {n: p.numel() for n, p in model.named_parameters() if p.dtype == torch.float32},
            "buffers": buffers,
            "attention": _attention(vc),
            "init_buffers": _init_buffers(model),
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", type=Path, nargs="+")
    ap.add_argument("--max-num-batched-tokens", type=int, default=8192)
    args = ap.parse_args(argv)
    # One process group for every model: its rendezvous file outlives each config's folder.
    with tempfile.TemporaryDirectory(prefix="vllm-model-oracle-pg-") as pg:
        return vllm_oracle.run_configs(
            args.configs, lambda model_dir: build(model_dir, args.max_num_batched_tokens, Path(pg)), "vllm-model-oracle"
        )


if __name__ == "__main__":
    sys.exit(main())
