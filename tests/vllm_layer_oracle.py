#!/usr/bin/env python3
"""vLLM's per-layer KV-cache specs for models whose layers differ (Gemma 4, MiMo-V2), computed by
vLLM's own classes. Run with the python of the vLLM venv, as tests/vllm_oracle.py:

    python tests/vllm_layer_oracle.py CONFIG_DIR [CONFIG_DIR ...] --tp N [--block-size 16]

For each layer: vLLM's `ModelConfig` (its per-layer `model_arch_config[i]`, KV heads per rank by
`get_num_kv_heads(parallel_config, arch_config)`) gives the geometry, except where the model file
reads its own fields (MiMo-V2-Flash: `swa_num_key_value_heads`, `swa_head_dim`, `swa_v_head_dim`
for the layers `hybrid_layer_pattern` marks, `v_head_dim` beside `head_dim`: as
`MiMoV2FlashDecoderLayer` passes them to `Attention(head_size_v=...)`); the spec is vLLM's
`FullAttentionSpec` / `SlidingWindowSpec`, and `unify_kv_cache_spec_page_size` evens the pages out
as the engine does. Prints one JSON line per config: per layer the kind, KV heads, head sizes,
block size and page bytes after unification.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vllm_oracle  # noqa: E402  (the same venv set-up and main loop: offline, torchvision placeholder)


def _mimo_geometry(text, i: int, heads_per_rank) -> dict:
    swa = text.hybrid_layer_pattern[i] == 1
    if swa:
        heads, k = text.swa_num_key_value_heads, text.swa_head_dim
        v = getattr(text, "swa_v_head_dim", None) or k
        return dict(kind="sliding", window=text.sliding_window_size, heads=heads_per_rank(heads), k=k, v=v)
    k = text.head_dim
    v = getattr(text, "v_head_dim", None) or k
    return dict(kind="full", window=None, heads=heads_per_rank(text.num_key_value_heads), k=k, v=v)


def layers(model_dir: Path, tp: int, block_size: int) -> dict:
    import vllm
    from vllm.config import ModelConfig, ParallelConfig
    from vllm.v1.core.kv_cache_utils import unify_kv_cache_spec_page_size
    from vllm.v1.kv_cache_interface import FullAttentionSpec, SlidingWindowSpec

    mc = ModelConfig(model=str(model_dir), tokenizer=str(model_dir), skip_tokenizer_init=True)
    pc = ParallelConfig(tensor_parallel_size=tp)
    mc.verify_with_parallel_config(pc)
    text = mc.hf_text_config
    n = mc.get_total_num_hidden_layers()
    rows = []
    for i in range(n):
        if hasattr(text, "hybrid_layer_pattern"):
            g = _mimo_geometry(text, i, lambda h: max(1, h // tp))
        else:
            arch = mc.model_arch_config[i]
            sliding = (getattr(text, "layer_types", None) or ["full_attention"] * n)[i] == "sliding_attention"
            g = dict(
                kind="sliding" if sliding else "full",
                window=text.sliding_window if sliding else None,
                heads=mc.get_num_kv_heads(pc, arch),
                k=arch.head_size,
                v=arch.head_size,
            )
        rows.append(g)
    specs = {}
    for i, g in enumerate(rows):
        common = dict(
            block_size=block_size, num_kv_heads=g["heads"], head_size=g["k"], head_size_v=g["v"], dtype=mc.dtype
        )
        specs[f"layers.{i}"] = (
            SlidingWindowSpec(sliding_window=g["window"], **common)
            if g["kind"] == "sliding"
            else FullAttentionSpec(**common)
        )
    unified = unify_kv_cache_spec_page_size(specs)
    for i, g in enumerate(rows):
        s = unified[f"layers.{i}"]
        g.update(block_size=s.block_size, page_size_bytes=s.page_size_bytes)
    return {
        "vllm_version": vllm.__version__,
        "architecture": mc.architecture,
        "tp": tp,
        "max_model_len": mc.max_model_len,
        "layers": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", type=Path, nargs="+")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--block-size", type=int, default=16)
    args = ap.parse_args(argv)
    return vllm_oracle.run_configs(args.configs, lambda d: layers(d, args.tp, args.block_size), "vllm_layer_oracle")


if __name__ == "__main__":
    sys.exit(main())
