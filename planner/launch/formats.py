"""The deployment formats: each turns a `Deployment` into one file's text, or raises a PlannerError
naming the format that can express the plan.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Callable

from planner.errors import PlannerError
from planner.launch import templates as tpl
from planner.launch.deployment import PORT, Deployment, Var, Word
from planner.launch.escape import comment, escape
from planner.launch.flags import ServeConfig, config_yaml, flag_argv, llm_source

HF_SECRET = {"name": "hf-token", "key": "token"}


# ---- words in each launcher's quoting -----------------------------------------------------------


def sh(word: Word) -> str:
    """A shell word: values single-quoted, our variables double-quoted."""
    if isinstance(word, Var):
        return f'"${word.name}"'
    if word.startswith("$HOME/"):
        return '"$HOME"' + shlex.quote(word[len("$HOME") :])
    return shlex.quote(word)


def sh_join(words: list[Word], wrap: bool = False) -> str:
    """Shell words; with `wrap`, each option starts a continued line."""
    quoted = [sh(w) for w in words]
    if not wrap:
        return " ".join(quoted)
    return "".join((" \\\n    " if q.startswith("-") and i else " " if i else "") + q for i, q in enumerate(quoted))


def kube(word: Word) -> str:
    """A Kubernetes command/args item: `$` doubled so only our `$(VAR)` references expand."""
    return f"$({word.name})" if isinstance(word, Var) else word.replace("$", "$$")


def kube_sh(words: list[Word]) -> str:
    """Shell text inside a Kubernetes `sh -c` item: shell-quoted, then `$` doubled for the kubelet."""
    return " ".join(f'"${w.name}"' if isinstance(w, Var) else shlex.quote(w).replace("$", "$$") for w in words)


def compose_word(word: str) -> str:
    return word.replace("$", "$$")


# ---- what a format can express ------------------------------------------------------------------


def _where(d: Deployment) -> str:
    b = d.budget
    return f"one replica of {d.model} (TP {b.tp} x PP {b.pp}) spans {d.nodes} nodes of {d.gpus_per_node} GPUs"


def require_single_node(d: Deployment, fmt: str, instead: str) -> None:
    if d.multinode:
        raise PlannerError(f"--format {fmt} cannot express this plan: {_where(d)}; use --format {instead}")


def require_gpu(d: Deployment, fmt: str) -> dict[str, Any]:
    """The accelerator entry of sizing.yaml for the plan's GPU vendor."""
    if d.device == "cpu" or d.gpu is None:
        raise PlannerError(
            f"--format {fmt} runs the CUDA image on GPUs; a CPU-backend plan has --format serve, yaml or python"
        )
    acc = d.sizing["accelerators"].get(d.gpu.vendor)
    if acc is None:
        raise PlannerError(
            f"--format {fmt} uses the CUDA image vllm/vllm-openai; {d.gpu.name} is {d.gpu.vendor}: "
            "use --format serve, yaml or python with that vendor's vLLM build"
        )
    return acc


def require_fit(d: Deployment) -> None:
    b = d.budget
    if not b.fits:
        raise PlannerError(
            f"the plan does not fit ({b.error or 'see vllm-planner plan'}): vLLM would not start; "
            "apply one of the changes `vllm-planner plan` lists, then emit"
        )


# ---- headers ------------------------------------------------------------------------------------


def title(d: Deployment) -> str:
    b = d.budget
    where = f"{b.gpu}" if d.gpu else "the vLLM CPU backend"
    layout = f"TP {b.tp} x PP {b.pp}" + (f" over {d.nodes} nodes" if d.multinode else "")
    return f"vllm-planner: {d.model} on {where}, vLLM {d.release.version}, {layout}"


def plan_lines(d: Deployment) -> list[str]:
    b = d.budget
    out = [
        title(d),
        f"Plan per GPU: {b.weights_gib:g} GiB weights, {b.kv_cache_gib:g} GiB KV cache = {b.kv_cache_tokens:,} tokens, "
        f"{b.max_concurrency:g} requests of {b.max_model_len:,} tokens at once; replicas: {d.replicas}.",
    ]
    if d.pinned_kv:
        out.append(
            "--kv-cache-memory-bytes pins each GPU's KV pool to the plan's figure, so the server's KV cache "
            "matches the plan exactly (vLLM then skips its own memory profiling)."
        )
    return out


# ---- serve, yaml, python ----------------------------------------------------------------------


def _env_exports(cfg: ServeConfig) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in cfg.env)


def _script(d: Deployment, launch: list[Word], file: str) -> str:
    """serve/single.sh, serve/mp.sh or serve/ray.sh with `launch` (e.g. `vllm serve`) in front of the flags."""
    name = f"serve/{d.backend or 'single'}.sh"
    words = [*launch, d.model, *flag_argv(d.config.args)]
    others = "1" if d.nodes == 2 else f"1 to {d.nodes - 1}"
    values = {
        "title": escape(title(d)),
        "env_exports": _env_exports(d.config),
        "nodes": str(d.nodes),
        "port": str(PORT),
        "other_ranks": others,
        "file": file,
        "command": sh_join(words, wrap=True),
        "leader_command": sh_join(words + d.node_args(0, Var("MASTER_ADDR")), wrap=True),
        "worker_command": sh_join(words + d.node_args(Var("NODE_RANK"), Var("MASTER_ADDR")), wrap=True),
    }
    lines = tpl.fill_text(tpl.template_text(name), values, name).split("\n")
    notes = [comment(line) for line in plan_lines(d)[1:]]
    return "\n".join(lines[:2] + notes + lines[2:])


def render_serve(d: Deployment) -> str:
    return _script(d, ["vllm", "serve"], "serve.sh")


def render_yaml(d: Deployment) -> str:
    head = plan_lines(d) + ["", "vllm serve --config config.yaml   (flags on the command line override this file)"]
    if d.backend == "mp":
        head.append(
            "Each node adds --node-rank N --master-addr <node 0 address> on the command line, and --headless "
            "on every node but node 0 (see serve.sh)."
        )
    if d.backend == "ray":
        head.append(f"Start a Ray cluster over the {d.nodes} nodes first; run this on its head node (see serve.sh).")
    if d.config.env:
        head.append("Environment: " + " ".join(f"{k}={shlex.quote(v)}" for k, v in d.config.env))
    return config_yaml(d.config, head)


def render_python(d: Deployment) -> str:
    cfg = d.config
    head = plan_lines(d)
    if d.multinode:
        cfg = ServeConfig(
            cfg.model,
            tuple(a for a in cfg.args if a[0] not in ("nnodes", "distributed-executor-backend"))
            + (("distributed-executor-backend", "ray", f"the engine spans {d.nodes} nodes through Ray"),),
            cfg.env,
        )
        head.append(
            f"Start a Ray cluster over the {d.nodes} nodes first (ray start --head; ray start --address=...), "
            "then run this on its head node."
        )
    head.append("The LLM class's defaults differ from vllm serve's: the plan's batch limits are given explicitly.")
    return llm_source(cfg, head)


# ---- docker, compose --------------------------------------------------------------------------


def _docker_options(d: Deployment) -> list[Word]:
    doc = tpl.documents("docker/run.yaml")[0]
    rows = doc["multi_node" if d.multinode else "single_node"]
    values = {"docker_gpus": str(d.gpus_per_node), "port": PORT}
    opts = [str(tpl.fill_text(str(w), values, "docker/run.yaml")) for row in rows for w in row]
    return opts[:-2] + [w for k, v in _cache_env(d) for w in ("--env", f"{k}={v}")] + opts[-2:]  # before --entrypoint


def render_docker(d: Deployment) -> str:
    require_gpu(d, "docker")
    if d.backend == "ray":
        raise PlannerError(
            f"--format docker writes one `docker run` per node with vLLM's --nnodes flags, which vLLM "
            f"{d.release.version} lacks (0.11.1+): {_where(d)}; use --format serve (a Ray cluster) or lws"
        )
    opts = _docker_options(d)
    launch: list[Word] = ["docker", "run", "--rm", *opts]
    return _script(d, [*launch, d.release.docker_image, "serve"], "docker.sh")


def _labels(d: Deployment) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": d.name,
        "app.kubernetes.io/managed-by": "vllm-planner",
    }


def _common_values(d: Deployment, acc: dict[str, Any]) -> dict[str, Any]:
    b = d.budget
    period = d.sizing["startup"]["period_s"]
    return {
        "name": d.name,
        "replicas": d.replicas,
        "nodes": d.nodes,
        "gpus_per_pod": d.gpus_per_node,
        "port": PORT,
        "image": d.release.docker_image,
        "gpu_resource": acc["resource"],
        "labels": _labels(d),
        "selector": {"app.kubernetes.io/instance": d.name},
        "annotations": {
            "vllm-planner/model": d.model,
            "vllm-planner/plan": title(d).removeprefix("vllm-planner: "),
            "vllm-planner/kv-cache-tokens": str(b.kv_cache_tokens),
        },
        "shm_size": f"{d.shm_gib}Gi",
        "cache_size": f"{d.cache_gib}Gi",
        "cpu": d.cpu,
        "memory": f"{d.memory_gib}Gi",
        "cache_access_modes": ["ReadWriteOnce"] if d.replicas == 1 else ["ReadWriteMany"],
        "startup_s": d.startup_s,
        "startup_period_s": period,
        "startup_failure_threshold": d.startup_s // period,
        "progress_deadline_s": d.startup_s + 600,
        "node_selector": _node_selector(d, acc),
        "env": _kube_env(d),
        "resource_requests": {"cpu": str(d.cpu), "memory": f"{d.memory_gib}Gi", acc["resource"]: str(d.gpus_per_node)},
        "resource_limits": {"memory": f"{d.memory_gib}Gi", acc["resource"]: str(d.gpus_per_node)},
    }


def render_compose(d: Deployment) -> str:
    acc = require_gpu(d, "compose")
    require_single_node(d, "compose", "lws (Kubernetes) or --format docker (one `docker run` per node)")
    values = _common_values(d, acc)
    values.update(
        serve_args=[compose_word(w) for w in [d.model, *flag_argv(d.config.args)]],
        compose_env=["HF_TOKEN"] + [f"{k}={compose_word(v)}" for k, v in [*d.config.env, *_cache_env(d)]],
        host_cache="${HOME}/.cache/huggingface",
    )
    return tpl.render("compose/compose.yaml", values, plan_lines(d)[1:])


# ---- Kubernetes ---------------------------------------------------------------------------------


def _device_name(d: Deployment, acc: dict[str, Any]) -> str | None:
    assert d.gpu is not None
    names = (d.gpu.name, *d.gpu.aliases)
    return next((a for a in names if a.startswith(tuple(acc["device_name_prefixes"]))), None)


def _node_selector(d: Deployment, acc: dict[str, Any]) -> Any:
    device = _device_name(d, acc)
    if not acc.get("product_label") or device is None:
        return tpl.OMIT
    return {acc["product_label"]: device.replace(" ", "-")}


def _cache_env(d: Deployment) -> list[tuple[str, str]]:
    """VLLM_CACHE_ROOT on the persistent model-cache mount of the k8s, lws, docker and compose files:
    the compile cache survives a restart, so only the very first start is a cold one."""
    return [("VLLM_CACHE_ROOT", d.sizing["cache"]["vllm_cache_root"])]


def _kube_env(d: Deployment, cache: bool = True) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {**HF_SECRET, "optional": True}}}]
    pairs = [*d.config.env, *(_cache_env(d) if cache else [])]
    return env + [{"name": k, "value": kube(v)} for k, v in pairs]  # the kubelet expands $(VAR) in values


def render_k8s(d: Deployment) -> str:
    acc = require_gpu(d, "k8s")
    require_single_node(d, "k8s", "lws (a LeaderWorkerSet: one leader and worker pods per replica)")
    values = _common_values(d, acc)
    values["serve_args"] = [kube(w) for w in [d.model, *flag_argv(d.config.args)]]
    return tpl.render("k8s/deployment.yaml", values, plan_lines(d)[1:])


def render_lws(d: Deployment) -> str:
    acc = require_gpu(d, "lws")
    if not d.multinode:
        raise PlannerError(
            f"--format lws is for a replica that spans nodes; {d.model} (TP {d.budget.tp} x PP "
            f"{d.budget.pp}) fits on one node: use --format k8s (a Deployment)"
        )
    values = _common_values(d, acc)
    words = [d.model, *flag_argv(d.config.args)]
    leader = words + d.node_args(0, Var("LWS_LEADER_ADDRESS"))
    worker = words + d.node_args(Var("LWS_WORKER_INDEX"), Var("LWS_LEADER_ADDRESS"))
    values.update(
        leader_args=[kube(w) for w in leader],
        worker_args=[kube(w) for w in worker],
        leader_args_shell=kube_sh(leader),
        leader_labels={**_labels(d), "role": "leader"},
        leader_selector={"leaderworkerset.sigs.k8s.io/name": d.name, "role": "leader"},
    )
    return tpl.render(f"lws/{'native' if d.backend == 'mp' else 'ray'}.yaml", values, plan_lines(d)[1:])


# ---- Helm (production-stack), KServe ----------------------------------------------------------------

_HELM_KEYS = {
    "max-model-len": ("maxModelLen", int),
    "tensor-parallel-size": ("tensorParallelSize", int),
    "max-num-seqs": ("maxNumSeqs", int),
    "gpu-memory-utilization": ("gpuMemoryUtilization", float),
    "dtype": ("dtype", str),
}


def _helm_vllm_config(d: Deployment) -> dict[str, Any]:
    out: dict[str, Any] = {"enablePrefixCaching": True}  # the chart writes --no-enable-prefix-caching otherwise
    extra: list[str] = []
    for flag, value, _ in d.config.args:
        if flag in _HELM_KEYS and value is not None:
            key, cast = _HELM_KEYS[flag]
            out[key] = cast(value)
        else:
            extra += flag_argv([(flag, value, "")])
    if extra:  # the chart passes these to the container's args, where the kubelet expands $(VAR)
        out["extraArgs"] = [kube(w) for w in extra]
    return out


def render_helm(d: Deployment) -> str:
    acc = require_gpu(d, "helm")
    require_single_node(d, "helm", "lws (the production-stack chart runs one node per replica)")
    values = _common_values(d, acc)
    repo, tag = d.release.docker_image.rsplit(":", 1)
    selector = _node_selector(d, acc)
    terms = (
        tpl.OMIT
        if selector is tpl.OMIT
        else [{"matchExpressions": [{"key": k, "operator": "In", "values": [v]} for k, v in selector.items()]}]
    )
    values.update(
        short_name=d.name.removeprefix("vllm-"),
        image_repository=repo,
        image_tag=tag,
        model=kube(d.model),
        node_selector_terms=terms,
        vllm_config=_helm_vllm_config(d),
        extra_env=_kube_env(d, cache=False)[1:] or tpl.OMIT,
    )
    return tpl.render("helm/values.yaml", values, plan_lines(d)[1:])


def render_kserve(d: Deployment) -> str:
    acc = require_gpu(d, "kserve")
    require_single_node(d, "kserve", "lws (the InferenceService here runs one node per replica)")
    values = _common_values(d, acc)
    values["env"] = _kube_env(d, cache=False)  # the runtime mounts no model cache of ours
    args = [f"--model_name={d.name}", f"--model_id={d.model}"]
    flags = d.config.args
    if not any(f == "dtype" for f, _, _ in flags):
        flags = flags + (("dtype", "auto", ""),)
    args += [f"--{f}" if v is None else f"--{f}={v}" for f, v, _ in flags]
    values["kserve_args"] = [kube(a) for a in args]
    return tpl.render("kserve/inferenceservice.yaml", values, plan_lines(d)[1:])


# ---- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    name: str
    filename: str
    render: Callable[[Deployment], str]
    help: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format(
            "serve", "serve.sh", render_serve, "the `vllm serve` command line (per node when a replica spans nodes)"
        ),
        Format("yaml", "config.yaml", render_yaml, "the file for `vllm serve --config`, each setting with why"),
        Format("python", "llm.py", render_python, "the LLM(...) keyword arguments"),
        Format("docker", "docker.sh", render_docker, "`docker run` of vllm/vllm-openai pinned to the release"),
        Format("compose", "compose.yaml", render_compose, "a Docker Compose file (one host)"),
        Format("k8s", "k8s.yaml", render_k8s, "Kubernetes PVC, Deployment and Service"),
        Format("lws", "lws.yaml", render_lws, "a LeaderWorkerSet for a replica that spans nodes"),
        Format("helm", "helm-values.yaml", render_helm, "values for the vLLM production-stack Helm chart"),
        Format("kserve", "kserve.yaml", render_kserve, "a KServe InferenceService on the Hugging Face runtime"),
    ]
}


def render(fmt: str, d: Deployment) -> str:
    if fmt not in FORMATS:
        raise PlannerError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    require_fit(d)
    return FORMATS[fmt].render(d)
