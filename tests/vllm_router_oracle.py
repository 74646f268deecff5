#!/usr/bin/env python3
"""The dtype vLLM's own GateLinear gives a router that must compute in fp32 (Nemotron-H's
`force_fp32_compute=True`), per CUDA compute capability. Run with the python of the vLLM venv:

    python tests/vllm_router_oracle.py 8.0 9.0 10.0 12.0 [--hidden 2688 --experts 128]

The CPU build has no GPU: the platform's `is_cuda` and `get_device_capability` are replaced, one
capability at a time, while GateLinear is built on the meta device under the load's default dtype
(bfloat16), as the model loader builds it. Prints one JSON object {capability: weight dtype}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vllm_oracle  # noqa: E402  (the same venv set-up: offline, torchvision placeholder)


def dtypes(capabilities: list[str], hidden: int, experts: int) -> dict[str, str]:
    import torch
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.model_executor.layers.fused_moe.router.gate_linear import GateLinear
    from vllm.platforms import current_platform
    from vllm.platforms.interface import DeviceCapability
    from vllm.utils.torch_utils import set_default_torch_dtype

    cls = type(current_platform)
    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(1, 0, f"file://{tempfile.mkdtemp()}/pg", 0, "gloo")
        initialize_model_parallel(1, 1)
    out = {}
    for text in capabilities:
        cap = tuple(int(x) for x in text.split("."))
        saved = cls.is_cuda, cls.get_device_capability
        cls.is_cuda = lambda self: True
        cls.get_device_capability = classmethod(lambda c, device_id=0, cap=cap: DeviceCapability(*cap))
        try:
            with set_current_vllm_config(VllmConfig()), torch.device("meta"), set_default_torch_dtype(torch.bfloat16):
                gate = GateLinear(hidden, experts, out_dtype=torch.float32, force_fp32_compute=True, prefix="gate")
            out[text] = str(gate.weight.dtype).removeprefix("torch.")
        finally:
            cls.is_cuda, cls.get_device_capability = saved
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capabilities", nargs="+")
    ap.add_argument("--hidden", type=int, default=2688)
    ap.add_argument("--experts", type=int, default=128)
    args = ap.parse_args(argv)
    out = vllm_oracle.json_stdout()
    out.write(json.dumps(dtypes(args.capabilities, args.hidden, args.experts)) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
