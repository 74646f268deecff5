"""The Python API: `load_model`, `inspect` and `plan`. The CLI is a thin layer over these.

>>> import planner
>>> m = planner.load_model("Qwen/Qwen3-8B")
>>> r = planner.inspect(m, tp=2, kv_cache_dtype="fp8")
>>> r.kv_bytes_per_token_per_gpu
36864
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from planner import inspection
from planner import plan as plan_step
from planner.budget import Settings
from planner.errors import PlannerError
from planner.hardware import GPU, Catalogue
from planner.inspection import Inspection, Model, check_parallel, kv_dtype_bytes, resolve_dtype
from planner.models import sources
from planner.models.normalize import WEIGHTS_BY_FORMULA_UNSUPPORTED, normalize
from planner.models.tensors import classify, from_spec
from planner.plan import PlanResult, Request
from planner.units import GIB

__all__ = [
    "Inspection",
    "Model",
    "Plan",
    "check_parallel",
    "inspect",
    "kv_dtype_bytes",
    "load_model",
    "make_plan",
    "plan",
    "resolve_dtype",
    "with_serve_command",
]


def _with_known_architecture(e: PlannerError, config: dict) -> PlannerError:
    """An unknown model_type whose `architectures` names a class vLLM builds from another model_type (a
    reference or re-export config, e.g. sgl-project's DeepSeek-V4 with model_type deepseek_ref): say so."""
    archs = config.get("architectures") or []
    if not str(e).startswith("unknown model_type") or not archs or not isinstance(archs[0], str):
        return e
    known = sources.bundled_model_types(archs[0])
    if not known:
        return e
    return PlannerError(
        f"model_type {config.get('model_type')!r} is not one vLLM's config registry or transformers knows (vLLM "
        f"would need the checkpoint's own configuration code); its architecture {archs[0]} is built from model_type "
        f"{' or '.join(map(repr, known))} configs: use the upstream checkpoint's config.json"
    )


def load_model(name: str) -> Model:
    """Resolve a bundled id/alias, a local config.json or checkpoint folder, or a Hub id."""
    src = sources.resolve(name)
    try:
        spec = normalize(src.config, quant_files=src.quant_files)
    except PlannerError as e:
        raise _with_known_architecture(e, src.config) from None
    quirks = set(src.meta.get("checkpoint_quirks") or ())
    if "rotary_inv_freq" in quirks:
        spec = dataclasses.replace(spec, checkpoint_rotary_buffers=True)
    if src.header_tensors:
        tensors = tuple(classify(t.name, t.shape, t.dtype, spec.num_layers) for t in src.header_tensors)
        if not any(t.loaded and t.numel for t in tensors):  # e.g. only an MTP layer, or empty shapes
            raise PlannerError(
                f"{src.model_id}: its safetensors files hold no tensor vLLM loads for {spec.architecture}: "
                "pass the folder of the complete checkpoint"
            )
        tensor_source: Literal["formula", "safetensors", "none"] = "safetensors"
    elif spec.model_type in WEIGHTS_BY_FORMULA_UNSUPPORTED:
        tensors, tensor_source = (), "none"
    else:
        tensors, tensor_source = tuple(from_spec(spec)), "formula"
    return Model(src.model_id, src.source, spec, tensors, tensor_source, dict(src.meta))


def inspect(
    model: Model | str,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype: str | None = None,
    quantization: str | None = None,
    kv_cache_dtype: str | None = None,
    kv_auto_from_checkpoint: bool = True,
) -> Inspection:
    """`planner.inspection.inspect` for a loaded `Model` or a name `load_model` resolves."""
    return inspection.inspect(
        load_model(model) if isinstance(model, str) else model,
        tp=tp,
        pp=pp,
        dtype=dtype,
        quantization=quantization,
        kv_cache_dtype=kv_cache_dtype,
        kv_auto_from_checkpoint=kv_auto_from_checkpoint,
    )


# ---- plans ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A plan (`planner.plan.PlanResult`: budget, layout, rejected layouts, fixes) with its
    `vllm serve` command, which the launch step renders: what `vllm-planner plan` prints."""

    result: PlanResult
    serve_command: str
    fix_commands: tuple[str, ...] = ()
    """The `vllm serve` line of each fix in `result.fixes`, in order."""

    def __getattr__(self, name: str) -> Any:  # budget, gpu, rejected, fixes, binding, pin_kv_cache
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.result, name)

    def to_json(self) -> dict[str, Any]:
        """`plan --json`: the budget's keys, then vllm_serve_command, binding, rejected_layouts, fixes."""
        out = self.result.to_json()
        for entry, command in zip(out["fixes"], self.fix_commands):
            entry["vllm_serve_command"] = command
        keys = list(out)
        at = keys.index("binding")
        return {
            **{k: out[k] for k in keys[:at]},
            "vllm_serve_command": self.serve_command,
            **{k: out[k] for k in keys[at:]},
        }


def _fix_command(f: Any, req: Request) -> str:
    """The `vllm serve` line of one fix: the request with the fix's flags, on the fix's budget."""
    from planner.launch.flags import plan_serve_config, serve_command

    flags = {k: v for k, v in f.flags.items() if k in ("kv_cache_dtype", "max_model_len")}
    fixed = dataclasses.replace(
        req,
        settings=dataclasses.replace(req.settings, **flags),
        quantization=f.flags.get("quantization", req.quantization),
    )
    return serve_command(plan_serve_config(f.budget, fixed))


def with_serve_command(result: PlanResult, req: Request, expert_parallel: bool | None = None) -> Plan:
    """The plan with the `vllm serve` line that carries it (the KV pool pinned when asked and it fits;
    --enable-expert-parallel as asked, None: the launch step's default)."""
    from planner.launch.flags import plan_serve_config, serve_command

    b = result.budget
    pin = min(st.available_kv_bytes for st in b.stages) if result.pin_kv_cache and b.fits else None
    return Plan(
        result,
        serve_command(plan_serve_config(b, req, pin_kv_cache_bytes=pin, expert_parallel=expert_parallel)),
        tuple(_fix_command(f, req) for f in result.fixes),
    )


def make_plan(
    req: Request,
    gpu: GPU | None,
    catalogue: Catalogue | None,
    tp: int | None = None,
    pp: int | None = None,
    pin_kv_cache: bool = False,
    expert_parallel: bool | None = None,
) -> Plan:
    """`planner.plan.make_plan` with the serve command: the smallest layout that fits on one GPU type."""
    result = plan_step.make_plan(req, gpu, catalogue, tp, pp, pin_kv_cache=pin_kv_cache)
    return with_serve_command(result, req, expert_parallel)


def _installed_release() -> str | None:
    from planner import releases
    from planner.installed import default_release

    return default_release(releases.supported_range())[0]


def _gpu(catalogue: Catalogue, gpu: str | None, memory_gib: float | None, interconnect: str | None) -> GPU:
    """The GPU `plan` targets: a catalogue entry, its memory and interconnect class overridden if given."""
    from planner.hardware import INTERCONNECT_CLASSES, with_memory

    if gpu is None:
        raise PlannerError("name a GPU (gpu='H100'; see `vllm-planner gpus`) or plan for device='cpu'")
    target = catalogue.get(gpu) if memory_gib is None else with_memory(catalogue.get(gpu), memory_gib)
    if interconnect is not None:
        if interconnect not in INTERCONNECT_CLASSES:
            raise PlannerError(f"unknown interconnect {interconnect!r}: one of {', '.join(INTERCONNECT_CLASSES)}")
        target = dataclasses.replace(target, interconnect_class=interconnect)
    return target


def plan(
    model: Model | str,
    *,
    gpu: str | None = None,
    device: Literal["cuda", "cpu"] = "cuda",
    tp: int | None = None,
    pp: int | None = None,
    vllm_version: str | None = None,
    gpu_memory_gib: float | None = None,
    gpu_file: str | None = None,
    cpu_kvcache_gib: float | None = None,
    dtype: str | None = None,
    quantization: str | None = None,
    concurrency: int | None = None,
    pin_kv_cache: bool = False,
    interconnect: str | None = None,
    **settings: Any,
) -> Plan:
    """Plan `model` on one GPU type (or the CPU backend), as `vllm-planner plan` does.

    `vllm_version` None: the installed vllm distribution's release (package metadata), else the
    newest. `interconnect` overrides the catalogue's interconnect class (nvls, nvlink, pcie_p2p, pcie).

    `settings` are the `Settings` fields (max_model_len, max_num_seqs, max_num_batched_tokens,
    gpu_memory_utilization, kv_cache_dtype, enforce_eager, kv_cache_memory_bytes, block_size,
    allow_long_max_model_len, enable_prefix_caching, model_runner), validated at construction.

        >>> p = planner.api.plan("qwen3-8b", gpu="H100", vllm_version="0.19.0", max_model_len=32768)
        >>> p.budget.kv_cache_tokens, p.serve_command
    """
    from pathlib import Path

    from planner import releases
    from planner.hardware import load_catalogue

    unknown = set(settings) - ({f.name for f in dataclasses.fields(Settings)} - {"tp", "pp"})
    if unknown:
        raise PlannerError(f"unknown plan setting(s) {', '.join(sorted(unknown))}: see planner.budget.Settings")
    catalogue = load_catalogue(Path(gpu_file) if gpu_file else None)
    target = _gpu(catalogue, gpu, gpu_memory_gib, interconnect) if device != "cpu" else None
    if device == "cpu" and (cpu_kvcache_gib is None or not cpu_kvcache_gib > 0):
        raise PlannerError("device='cpu' needs cpu_kvcache_gib (VLLM_CPU_KVCACHE_SPACE, in GiB, above 0)")
    req = Request(
        load_model(model) if isinstance(model, str) else model,
        Settings(tp=tp or 1, pp=pp or 1, **settings),
        releases.get(vllm_version if vllm_version is not None else _installed_release()),
        dtype=dtype,
        quantization=quantization,
        concurrency=concurrency,
        device=device,
        cpu_kvcache_bytes=int(cpu_kvcache_gib * GIB) if cpu_kvcache_gib else None,
    )
    return make_plan(req, target, catalogue, tp, pp, pin_kv_cache=pin_kv_cache)
