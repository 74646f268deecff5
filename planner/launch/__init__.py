"""Launch configurations from a plan: the `vllm serve` flags (shell-quoted, valid for the targeted
release), the `--config` YAML, `LLM(...)` keyword arguments, and the deployment formats (docker,
compose, Kubernetes, LeaderWorkerSet, production-stack Helm values, KServe) filled from the
templates in `deploy/templates/`.

    from planner.launch import build, render
    d = build(plan_result, request)          # replicas, nodes, sizes
    print(render("k8s", d))
"""

import importlib
from typing import Any

# Names load on first use (PEP 562): `plan` needs only the flags, not the deployment formats,
# and every command pays for what it imports.
_WHERE = {
    "Deployment": "deployment",
    "Var": "deployment",
    "build": "deployment",
    "ServeConfig": "flags",
    "config_yaml": "flags",
    "llm_kwargs": "flags",
    "llm_source": "flags",
    "serve_argv": "flags",
    "serve_command": "flags",
    "serve_config": "flags",
    "FORMATS": "formats",
    "render": "formats",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'planner.launch' has no attribute {name!r}")
    return getattr(importlib.import_module(f"planner.launch.{_WHERE[name]}"), name)
