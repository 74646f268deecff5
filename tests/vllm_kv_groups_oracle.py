#!/usr/bin/env python3
"""vLLM's own KV-cache grouping for the sparse-attention families whose layers keep caches of
several page sizes: GLM-5.2/5.3 (DSA with IndexShare: an indexer in some layers only) and
DeepSeek-V4 (sliding-window, compressed, indexer and compressor-state caches per layer).

Run with the python of the vLLM venv (PLANNER_VLLM_PYTHON), not the project's:

    python tests/vllm_kv_groups_oracle.py CONFIG_DIR [CONFIG_DIR ...] [--block-size 64]
                                          [--kv-cache-dtype auto|fp8_ds_mla]

The per-layer specs are vLLM's classes: MLAAttentionSpec as `MLAAttention.get_kv_cache_spec` and
`DeepseekV32IndexerCache` build them (DSA), or the V4 cache modules' own `get_kv_cache_spec`
(DeepseekV4SWACache, CompressorStateCache, DeepseekV4IndexerCache, instantiated here) and
`DeepseekV4Attention.get_kv_cache_spec`'s MLAAttentionSpec; which layers hold which cache is
read from the config as the model files decide it (deepseek_v2.py: `index_topk_freq` /
`index_skip_topk_offset` / `index_topk_pattern`; deepseek_v4/attention.py: `compress_ratios`,
the MTP layer not built). The grouping, page sizes and bytes per block are vLLM's own
`get_kv_cache_groups` and `_get_kv_cache_bytes_per_block` under the KV-cache layout the engine core
resolves on GPUs (BLHNC for V4, whose indexer backend declares only block-outermost layouts; LBNHC,
the default, for DSA).

Prints one JSON object per config, one per line: the groups (layers, page bytes per layer kind,
block size, spec class), `bytes_per_block`, and for each group `blocks_for_len` at a few lengths
(`max_num_blocks_per_req`). A config vLLM rejects gives {"config": ..., "error": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

LENGTHS = (1, 4096, 32768, 131072)


def _dsa_specs(text, block_size: int, kv_str: str, kv_dtype, head_size: int) -> dict:
    import torch
    from vllm.v1.kv_cache_interface import MLAAttentionSpec, SparseCacheRole, get_kv_quant_mode

    n = text.num_hidden_layers
    freq = getattr(text, "index_topk_freq", None) or 1
    offset = getattr(text, "index_skip_topk_offset", None)
    offset = 2 if offset is None else offset
    pattern = getattr(text, "index_topk_pattern", None)
    specs = {}
    for i in range(n):
        specs[f"model.layers.{i}.self_attn.attn"] = MLAAttentionSpec(
            block_size=block_size,
            num_kv_heads=1,
            head_size=head_size,
            dtype=kv_dtype,
            max_tp_shards=1,
            cache_dtype_str=kv_str,
            kv_quant_mode=get_kv_quant_mode(kv_str),
            state_content_bytes={"fp8_ds_mla": 656, "nvfp4_ds_mla": 352}.get(kv_str),
        )
        skip = pattern[i] == "S" if pattern is not None else max(i - offset + 1, 0) % freq != 0
        if not skip:
            specs[f"model.layers.{i}.self_attn.indexer.k_cache"] = MLAAttentionSpec(
                block_size=block_size,
                num_kv_heads=1,
                max_tp_shards=1,
                head_size=text.index_head_dim + text.index_head_dim // 128 * 4,
                dtype=torch.uint8,
                cache_role=SparseCacheRole.INDEXER,
            )
    return specs


def _v4_specs(vllm_config, text, block_size: int) -> dict:
    import torch
    from vllm.config import set_current_vllm_config
    from vllm.models.deepseek_v4.attention import DeepseekV4IndexerCache
    from vllm.models.deepseek_v4.compressor import CompressorStateCache
    from vllm.v1.attention.backends.mla.sparse_swa import DeepseekV4SWACache
    from vllm.v1.kv_cache_interface import MLAAttentionSpec, get_kv_quant_mode

    cc = vllm_config.cache_config
    fp8 = cc.cache_dtype.startswith("fp8")
    kv_str = "fp8_ds_mla" if fp8 else cc.cache_dtype
    if fp8:
        cc.cache_dtype = "fp8_ds_mla"  # as _resolve_dsv4_kv_cache_dtype writes it back
    kv_torch = torch.uint8 if fp8 else torch.bfloat16
    specs = {}
    with set_current_vllm_config(vllm_config):
        for i in range(text.num_hidden_layers):
            p = f"model.layers.{i}.attn"
            ratio = max(1, text.compress_ratios[i])
            swa = DeepseekV4SWACache(
                head_dim=text.head_dim,
                window_size=text.sliding_window,
                dtype=kv_torch,
                prefix=f"{p}.swa_cache",
                cache_config=cc,
            )
            specs[swa.prefix] = swa.get_kv_cache_spec(vllm_config)
            if ratio == 1:
                continue
            specs[p] = MLAAttentionSpec(  # DeepseekV4Attention.get_kv_cache_spec
                block_size=block_size,
                num_kv_heads=1,
                max_tp_shards=1,
                head_size=text.head_dim,
                dtype=kv_torch,
                tokens_per_state=ratio,
                cache_dtype_str=kv_str,
                alignment=576 if fp8 else 512,
                model_version="deepseek_v4",
                kv_quant_mode=get_kv_quant_mode(kv_str),
                state_content_bytes=584 if fp8 else None,
            )
            coff = 1 + (ratio == 4)
            state = CompressorStateCache(2 * coff * text.head_dim, torch.float32, ratio, f"{p}.compressor.state_cache")
            specs[state.prefix] = state.get_kv_cache_spec(vllm_config)
            if ratio == 4:
                idx = DeepseekV4IndexerCache(
                    head_dim=text.index_head_dim + text.index_head_dim // 128 * 4,
                    dtype=torch.uint8,
                    prefix=f"{p}.indexer.k_cache",
                    cache_config=cc,
                    compress_ratio=ratio,
                )
                specs[idx.prefix] = idx.get_kv_cache_spec(vllm_config)
                istate = CompressorStateCache(
                    2 * coff * text.index_head_dim, torch.float32, ratio, f"{p}.indexer.compressor.state_cache"
                )
                specs[istate.prefix] = istate.get_kv_cache_spec(vllm_config)
    return specs


def _kind(name: str) -> str:
    for key in ("indexer.compressor.state_cache", "compressor.state_cache", "indexer.k_cache", "swa_cache"):
        if name.endswith(key):
            return key.replace(".", "_")
    return "attn"


def oracle(model_dir: Path, block_size: int, kv_cache_dtype: str) -> dict:
    import vllm_oracle  # beside this script: run as a script, its folder is on sys.path
    from vllm.config import CacheConfig, ModelConfig, ParallelConfig, VllmConfig
    from vllm.utils.torch_utils import kv_cache_dtype_str_to_dtype, resolve_kv_cache_dtype_string
    from vllm.v1.core.kv_cache_utils import _get_kv_cache_bytes_per_block, get_kv_cache_groups

    default_len = ModelConfig(model=str(model_dir), tokenizer=str(model_dir), skip_tokenizer_init=True).max_model_len
    mc = ModelConfig(model=str(model_dir), tokenizer=str(model_dir), skip_tokenizer_init=True, max_model_len=131072)
    cc = CacheConfig(block_size=block_size, cache_dtype=kv_cache_dtype)
    vc = VllmConfig(model_config=mc, cache_config=cc, parallel_config=ParallelConfig())
    text = mc.hf_text_config
    v4 = getattr(text, "compress_ratios", None) is not None
    # the layout the engine core resolves from the GPU backends' declarations: DeepSeek-V4's indexer
    # backend declares block-outermost layouts only (BLHNC first); the DSA backends declare none (default LBNHC)
    cc.kv_cache_layout = "BLHNC" if v4 else "LBNHC"
    if v4:
        specs = _v4_specs(vc, text, block_size)
    else:
        kv_str = resolve_kv_cache_dtype_string(cc.cache_dtype, mc)
        specs = _dsa_specs(text, block_size, kv_str, kv_cache_dtype_str_to_dtype(kv_str, mc), mc.get_head_size())
    groups = get_kv_cache_groups(vc, dict(specs))
    layout = vc.cache_config.get_resolved_kv_cache_layout()
    out = []
    for g in groups:
        spec = g.kv_cache_spec
        per, pages = vllm_oracle.group_pages(g, _kind)
        first = next(iter(per.values()))
        out.append(
            {
                "layers": len(g.layer_names),
                "class": type(first).__name__,
                "block_size": first.block_size,
                "pages": pages,
                "page_size_bytes": spec.page_size_bytes,
                "blocks_for_len": {n: spec.max_num_blocks_per_req(vc, n) for n in LENGTHS},
                # blocks one request of max_model_len holds (the start-up check's max_memory_usage_bytes)
                "max_blocks": spec.max_memory_usage_bytes(vc) // spec.page_size_bytes,
            }
        )
    return {
        "config": str(model_dir),
        "layout": layout.name,
        "num_specs": len(specs),
        "groups": out,
        "bytes_per_block": _get_kv_cache_bytes_per_block(groups, layout),
        "max_model_len": mc.max_model_len,
        "max_model_len_default": default_len,  # what vLLM derives from the config alone
        "max_in_flight_tokens": vc.max_in_flight_tokens,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--kv-cache-dtype", default="auto")
    args = ap.parse_args()
    status = 0
    for c in args.configs:
        try:
            row = oracle(c, args.block_size, args.kv_cache_dtype)
        except Exception as e:  # noqa: BLE001 - one line per config, the reason named
            traceback.print_exc(file=sys.stderr)
            row, status = {"config": str(c), "error": f"{type(e).__name__}: {e}"}, 1
        print(json.dumps(row), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
