#!/usr/bin/env python3
"""vLLM's own KV-cache specs and grouping for MiniMax-M3 (vllm/models/minimax_m3, the CPU build 0.32).

Run with the python of the vLLM venv (PLANNER_VLLM_PYTHON), not the project's:

    python tests/vllm_minimax_m3_oracle.py CONFIG_DIR [--tp 1 4 8] [--block-size 64]

Which layers are sparse is vLLM's own `_sparse_attention_layer_ids` (nvidia/model.py) over the
config's text part; each sparse layer's index-key cache is vLLM's `MiniMaxM3IndexerCache`,
instantiated here, and its `get_kv_cache_spec`. The GQA spec is what `MiniMaxM3SparseAttention` /
the dense layers' `Attention` return (FullAttentionSpec of max(1, kv_heads // tp) heads): the
attention modules themselves are not built, their constructors need CUDA kernels this build lacks.
The grouping and bytes per block are vLLM's `get_kv_cache_groups` and `_get_kv_cache_bytes_per_block`
(layout LBNHC, the default the engine core resolves).

Prints one JSON object per (config, tp), one per line. The torchvision placeholder is
vllm_oracle's (the package's processor imports it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def oracle(model_dir: Path, tp: int, block_size: int) -> dict:
    import torch
    import vllm_oracle
    from vllm.config import CacheConfig, ParallelConfig, VllmConfig, set_current_vllm_config
    from vllm.v1.core.kv_cache_utils import _get_kv_cache_bytes_per_block, get_kv_cache_groups
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    cfg = json.loads((model_dir / "config.json").read_text())
    text = cfg.get("text_config") or cfg
    cc = CacheConfig(block_size=block_size, cache_dtype="auto")
    cc.kv_cache_layout = "LBNHC"
    vc = VllmConfig(cache_config=cc, parallel_config=ParallelConfig())
    with set_current_vllm_config(vc):
        from vllm.models.minimax_m3.common.indexer import MiniMaxM3IndexerCache
        from vllm.models.minimax_m3.nvidia.model import _sparse_attention_layer_ids

        sparse = _sparse_attention_layer_ids(types.SimpleNamespace(**text))
        sc = text.get("sparse_attention_config") or {}
        index_dim = sc.get("sparse_index_dim") or text["index_head_dim"]
        specs = {}
        for i in range(text["num_hidden_layers"]):
            name = f"model.layers.{i}.self_attn.attn"
            specs[name] = FullAttentionSpec(
                block_size=block_size,
                num_kv_heads=max(1, text["num_key_value_heads"] // tp),
                head_size=text["head_dim"],
                head_size_v=text["head_dim"],
                dtype=torch.bfloat16,
            )
            if i in sparse:
                cache = MiniMaxM3IndexerCache(head_dim=index_dim, prefix=f"{name}.index_cache", cache_config=cc)
                specs[cache.prefix] = cache.get_kv_cache_spec(vc)
        groups = get_kv_cache_groups(vc, dict(specs))
    out = []
    for g in groups:
        spec = g.kv_cache_spec
        _, pages = vllm_oracle.group_pages(g, lambda name: "index" if name.endswith("index_cache") else "attn")
        out.append(
            {
                "layers": len(g.layer_names),
                "class": type(spec).__name__,
                "pages": pages,
                "page_size_bytes": spec.page_size_bytes,
            }
        )
    return {
        "config": str(model_dir),
        "tp": tp,
        "sparse_layers": len(sparse),
        "groups": out,
        "bytes_per_block": _get_kv_cache_bytes_per_block(groups, cc.get_resolved_kv_cache_layout()),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", type=Path)
    ap.add_argument("--tp", type=int, nargs="+", default=[1])
    ap.add_argument("--block-size", type=int, default=64)
    args = ap.parse_args()
    import vllm_oracle

    vllm_oracle._stub_torchvision()
    for tp in args.tp:
        print(json.dumps(oracle(args.config, tp, args.block_size)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
