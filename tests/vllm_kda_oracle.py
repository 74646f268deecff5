#!/usr/bin/env python3
"""vLLM's own per-sequence state of a Kimi Delta Attention layer and its layer map, computed by
vLLM's classes (Kimi-Linear, models/kimi_k3). Run with the python of the vLLM venv, as
tests/vllm_oracle.py:

    python tests/vllm_kda_oracle.py CONFIG_DIR [CONFIG_DIR ...] --tp N

tests/vllm_oracle.py's hybrid line cannot be had here: building a VllmConfig for this model on the
CPU build fails ("--mamba-block-size can only be set with --enable-prefix-caching"), so the model
class's `get_mamba_state_shape_from_config` / `get_mamba_state_dtype_from_config` are asked under a
plain namespace holding vLLM's ModelConfig, ParallelConfig and a default CacheConfig (no
speculative decoding), which is all they read (Kimi-K3's wrapper re-asks under its text config).
Prints per config one JSON line: the KDA layers
(0-based, `is_kda_layer`), the state shapes and dtypes, `MambaSpec.page_size_bytes` of one layer's
state, and the MLA layer count.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vllm_oracle  # noqa: E402  (the same venv set-up: offline, torchvision placeholder)


def kda_state(model_dir: Path, tp: int) -> dict:
    from vllm.config import CacheConfig, ModelConfig, ParallelConfig
    from vllm.model_executor.models import ModelRegistry
    from vllm.v1.kv_cache_interface import MambaSpec

    mc = ModelConfig(model=str(model_dir), tokenizer=str(model_dir), skip_tokenizer_init=True, dtype="auto")
    pc = ParallelConfig(tensor_parallel_size=tp)
    mc.verify_with_parallel_config(pc)
    cls, _ = ModelRegistry.resolve_model_cls(mc.architectures, mc)
    cc = CacheConfig()

    def namespace(model_config) -> SimpleNamespace:
        vc = SimpleNamespace(model_config=model_config, parallel_config=pc, cache_config=cc, speculative_config=None)
        # Kimi-K3's wrapper asks its text model's class under the text config
        vc.with_hf_config = lambda hf: namespace(SimpleNamespace(hf_config=hf, dtype=mc.dtype))
        return vc

    vc = namespace(mc)
    shapes = cls.get_mamba_state_shape_from_config(vc)
    dtypes = cls.get_mamba_state_dtype_from_config(vc)
    text = mc.hf_text_config
    kda = [i for i in range(text.num_hidden_layers) if text.is_kda_layer(i)]
    return {
        "class": cls.__name__,
        "tp": tp,
        "kda_layers": kda,
        "mla_layers": text.num_hidden_layers - len(kda),
        "shapes": [list(s) for s in shapes],
        "dtypes": [vllm_oracle._dtype_name(d) for d in dtypes],
        "page_size_bytes": MambaSpec(block_size=16, shapes=tuple(shapes), dtypes=tuple(dtypes)).page_size_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", type=Path, nargs="+")
    ap.add_argument("--tp", type=int, default=1)
    args = ap.parse_args(argv)
    return vllm_oracle.run_configs(args.configs, lambda d: kda_state(d, args.tp), "vllm_kda_oracle")


if __name__ == "__main__":
    sys.exit(main())
