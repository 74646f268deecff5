"""Launch configurations from a plan: the `vllm serve` flags (shell-quoted, valid for the targeted
release), the `--config` YAML, `LLM(...)` keyword arguments, and the deployment formats (docker,
compose, Kubernetes, LeaderWorkerSet, production-stack Helm values, KServe) filled from the
templates in `deploy/templates/`.

    from planner.launch import build, render
    d = build(plan_result, request)          # replicas, nodes, sizes
    print(render("k8s", d))
"""

from planner.launch.deployment import Deployment, Var, build
from planner.launch.flags import ServeConfig, config_yaml, llm_kwargs, llm_source, serve_argv, serve_command, serve_config
from planner.launch.formats import FORMATS, render

__all__ = [
    "FORMATS", "Deployment", "ServeConfig", "Var", "build", "config_yaml", "llm_kwargs", "llm_source", "render",
    "serve_argv", "serve_command", "serve_config",
]
