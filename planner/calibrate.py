"""A user's own start-ups as measured terms: `vllm-planner calibrate LOG_OR_REPORT...`.

Each input (a raw vLLM start-up log, or a `vllm-planner verify --json` report) is replayed through the
planner with the shared terms (profiles/vllm/overheads.yaml), exactly as it ran: model, GPU, TP/PP,
utilization, context, batch limits, runner, release. What the start-up measured then replaces the
three terms vLLM measures on the GPU, for that GPU, interconnect (TP > 1), TP, runner and release:

- the activation peak: `activation_offset_gib` = printed peak (less the CUDA-graph estimate, which
  0.27+ prints inside it) - modelled peak;
- the CUDA-graph estimate: the release's line scaled by printed / modelled estimate (only where the
  release subtracts one and the log prints it);
- non-torch memory: what the budget identity leaves once the weights, the measured activation and
  graph terms, the runner's buffers and the printed KV memory are taken from the requested memory
  (`tp1`, `tp1_pp`, or at TP > 1 the interconnect's buffers at that TP), so that the same setup
  planned again gives the log's KV memory.

Several start-ups of the same hardware and release give the median of each term. The result is an
overlay document with the schema of overheads.yaml (calibration sets with a `match`), read by later
plans through the same checked loader (planner/overlay.py). Pure: text and parsed documents in,
documents out; planner/calibrate_io.py reads and writes the files.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any

from planner.errors import PlannerError
from planner.units import GIB
from planner.verify.logconfig import log_settings
from planner.verify.logparse import parse_log


@dataclass(frozen=True)
class Startup:
    """One start-up to calibrate from: the replay record (planner/calibration.py) and what it printed."""

    name: str
    record: dict[str, Any]
    activation_gib: float | None
    """The profile run's peak without the CUDA-graph estimate."""
    cudagraph_estimate_gib: float | None
    kv_cache_gib: float
    weights_gib: float | None = None
    start: str | None = None
    """'cold' (it compiled at start-up: an empty torch.compile cache), 'warm' (it loaded the compiled
    graphs from the cache), None where the log says neither (start_state)."""
    cudagraph_pool_gib: float | None = None
    """The CUDA-graph pool it captured ('Graph capturing finished ..., took X GiB', 'CUDA graph pool memory')."""


@dataclass(frozen=True)
class Measured:
    """What one start-up says about the terms, next to what the shared terms predicted (GiB)."""

    startup: Startup
    gpu: str
    interconnect: str | None
    tp: int
    pp: int
    version: str
    runner: str
    terms: dict[str, Any]
    predicted_kv_gib: float


def _gpu(names: tuple[str, ...], given: str | None, total_gib: float | None, name: str):
    from planner.hardware import load_catalogue

    cat = load_catalogue()
    if given:
        gpu = cat.get(given)
    else:
        gpu = next((g for g in (_try(cat, n) for n in names) if g is not None), None)
        if gpu is None:
            raise PlannerError(f"{name}: the log does not name its GPU; pass --gpu NAME (see `vllm-planner gpus`)")
    if total_gib is not None and abs(total_gib * GIB - gpu.memory_bytes) > 0.02 * gpu.memory_bytes:
        raise PlannerError(
            f"{name}: the log's GPU has {total_gib:.2f} GiB, the {gpu.name} {gpu.memory_bytes / GIB:.2f} GiB; "
            "pass the --gpu it ran on"
        )
    return gpu


def _try(cat, name: str):
    try:
        return cat.get(name)
    except PlannerError:
        return None


_COLD = re.compile(r"Compiling a graph for (?:compile range|dynamic shape)|Cache the graph of ")
_WARM = re.compile(r"Directly load the compiled graph\(s\) for ")


def start_state(text: str) -> str | None:
    """'cold' where vLLM compiled its graph at start-up (an empty torch.compile cache: 'Compiling a graph
    for compile range (1, N) takes S s', 'Cache the graph of compile range ... for later use'), 'warm'
    where it loaded them ('Directly load the compiled graph(s) for ... from the cache'), else None
    (--enforce-eager, or a log that prints neither)."""
    if _WARM.search(text):
        return "warm"
    return "cold" if _COLD.search(text) else None


def startup_from_log(text: str, name: str, gpu: str | None = None, model: str | None = None, interconnect=None):
    """A raw vLLM start-up log as a Startup; a log of a failed start or not a vLLM log is an error."""
    fig, conf = parse_log(text), log_settings(text)
    if fig.vllm_version is None and conf.model is None:
        raise PlannerError(f"{name}: not a vLLM start-up log (no version or engine config line)")
    if fig.phase == "failed" or fig.error:
        raise PlannerError(f"{name}: a failed start-up ({fig.error or 'no KV cache'}); calibrate from one that started")
    if fig.available_kv_gib is None or fig.requested_gib is None or fig.total_gib is None:
        raise PlannerError(f"{name}: the log does not print the KV cache memory and the memory it requested")
    if fig.kv_cache_memory_bytes_mode:
        raise PlannerError(f"{name}: started with --kv-cache-memory-bytes, which skips the measured terms")
    g = _gpu(conf.gpu_names, gpu, fig.total_gib, name)
    model = model or conf.model
    if not model or model.startswith("/"):
        raise PlannerError(f"{name}: the log names the model by a local path ({model}); pass --model NAME")
    version = fig.vllm_version
    if version is None:
        raise PlannerError(f"{name}: the log does not print the vLLM version")
    record = {
        "model": model,
        "vllm_version": version,
        "gpu": g.name,
        "gpu_total_gib": fig.total_gib,
        "compute_capability": g.compute_capability,
        "interconnect": interconnect or g.interconnect_class,
        "tp": conf.tp or 1,
        "pp": conf.pp or 1,
        "max_model_len": conf.max_model_len or fig.max_concurrency_tokens,
        "gpu_memory_utilization": fig.gpu_memory_utilization or conf.gpu_memory_utilization or 0.9,
        "dtype": conf.dtype,
        "kv_cache_dtype": conf.kv_cache_dtype or "auto",
        "quantization": conf.quantization,
        "max_num_seqs": conf.max_num_seqs,
        "max_num_batched_tokens": conf.max_num_batched_tokens,
        "enforce_eager": bool(conf.enforce_eager),
        "env": {"VLLM_USE_V2_MODEL_RUNNER": {"v1": "0", "v2": "1"}[fig.model_runner]} if fig.model_runner else {},
    }
    act = fig.activation_peak_gib
    if act is not None and fig.consumed_gib is not None and fig.cudagraph_estimate_gib is not None:
        act -= fig.cudagraph_estimate_gib  # 0.27+ print the estimate inside the peak
    return Startup(
        name,
        record,
        act,
        fig.cudagraph_estimate_gib,
        fig.available_kv_gib,
        fig.weights_gib,
        None if conf.enforce_eager else start_state(text),
        fig.cudagraph_actual_gib,
    )


def measure(s: Startup, budget, coefficients) -> Measured:
    """The terms that make the replayed budget give the start-up's own figures. `budget` is the replay
    with the shared terms, `coefficients` the shared set it used."""
    st = budget.stages[0]
    r = s.record
    _check_replay(s, st)
    # a cold start's peak holds the release's modelled cold-start extra: the overlay keeps warm terms
    cold = st.cold_extra_bytes if s.start == "cold" else 0
    act = st.activation_bytes + cold if s.activation_gib is None else s.activation_gib * GIB
    terms: dict[str, Any] = {"activation_offset_gib": round((act - cold - st.activation_bytes) / GIB, 4)}
    graphs = st.cudagraph_bytes
    if st.cudagraph_bytes and s.cudagraph_estimate_gib:
        scale = s.cudagraph_estimate_gib * GIB / st.cudagraph_bytes
        terms["cudagraph_const_gib"] = round(coefficients.cudagraph_const_gib * scale, 5)
        terms["cudagraph_per_layer_gib"] = round(coefficients.cudagraph_per_layer_gib * scale, 6)
        graphs = s.cudagraph_estimate_gib * GIB
    requested = st.available_kv_bytes + st.weights_bytes + st.activation_bytes + st.non_torch_bytes
    requested += st.cudagraph_bytes + st.runner_buffers_bytes
    non_torch = requested - st.weights_bytes - act - graphs - st.runner_buffers_bytes - s.kv_cache_gib * GIB
    tp, pp = r["tp"], r["pp"]
    link = r["interconnect"] if tp > 1 else None
    if tp == 1:
        terms["non_torch_gib"] = {"tp1" if pp == 1 else "tp1_pp": round(non_torch / GIB, 4)}
    else:
        comm = dict((k, (a, b)) for k, a, b in coefficients.non_torch_comm_gib)
        extra = comm.get(link, (0.0, 0.0))[1]
        at2 = non_torch / GIB - coefficients.non_torch_gib["tp1"] - extra * (tp - 2)
        terms["non_torch_comm_gib"] = {link: {"tp2": round(at2, 4), "per_extra_tp": extra}}
    predicted = (st.available_kv_bytes - cold) / GIB  # the first-start figure for a cold start
    return Measured(s, r["gpu"], link, tp, pp, budget_version(budget, r), budget.model_runner, terms, predicted)


def _check_replay(s: Startup, st) -> None:
    """The replay must be the start-up: the same weights, and a KV pool the GPU can hold."""
    weights = st.weights_bytes / GIB
    if s.weights_gib is not None and abs(weights - s.weights_gib) > max(0.05, 0.05 * s.weights_gib):
        raise PlannerError(
            f"{s.name}: the start-up loaded {s.weights_gib:.2f} GiB of weights, {s.record['model']} at TP "
            f"{s.record['tp']} has {weights:.2f}; pass the --model it ran"
        )
    requested = s.record["gpu_memory_utilization"] * (s.record.get("gpu_total_gib") or 0) or None
    pool = st.available_kv_bytes + st.activation_bytes + st.non_torch_bytes + st.cudagraph_bytes
    requested = requested or (pool + st.weights_bytes + st.runner_buffers_bytes) / GIB
    if s.kv_cache_gib + weights > 1.02 * requested:
        raise PlannerError(
            f"{s.name}: {s.kv_cache_gib:.2f} GiB of KV cache and {weights:.2f} GiB of weights do not fit the "
            f"{s.record['gpu']} at utilization {s.record['gpu_memory_utilization']}; pass the --gpu it ran on"
        )


def budget_version(budget, r: dict) -> str:
    from planner.releases import format_version, parse_version

    return format_version(parse_version(r["vllm_version"].split()[0]))


def _median_terms(ms: list[Measured]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in ms[0].terms:
        vals = [m.terms[k] for m in ms if k in m.terms]
        if isinstance(vals[0], dict):
            inner = {}
            for kk in vals[0]:
                xs = [v[kk] for v in vals if kk in v]
                inner[kk] = (
                    {f: round(statistics.median(x[f] for x in xs), 4) for f in xs[0]}
                    if isinstance(xs[0], dict)
                    else round(statistics.median(xs), 4)
                )
            out[k] = inner
        else:
            out[k] = round(statistics.median(vals), 6)
    return out


def overlay_sets(measured: list[Measured], today: str) -> list[dict]:
    """One calibration set per GPU, interconnect, TP, PP layout, runner and release minor: the median terms."""
    from planner.releases import parse_version

    groups: dict[tuple, list[Measured]] = {}
    for m in measured:
        v = parse_version(m.version)
        groups.setdefault((m.gpu, m.interconnect, m.tp, m.pp > 1, m.runner, v[:2]), []).append(m)
    sets = []
    for (gpu, link, tp, with_pp, runner, minor), ms in sorted(groups.items(), key=lambda kv: str(kv[0])):
        versions = sorted({m.version for m in ms}, key=parse_version)
        pp_part, link_part = ("-pp" if with_pp else ""), ("-" + link if link else "")
        name = f"calibration-{gpu}-tp{tp}{pp_part}{link_part}-{runner}-{minor[0]}.{minor[1]}"
        sets.append(
            {
                "name": name,
                "from": f"{minor[0]}.{minor[1]}.0",
                "until": f"{minor[0]}.{minor[1] + 1}.0",
                "runner": runner,
                "match": {"gpu": gpu, "interconnect": link, "tp": tp},
                "startups": len(ms),
                **_start_keys(ms),
                "validated": versions,
                "source": f"vllm-planner calibrate, {today}: {', '.join(m.startup.name for m in ms)}",
                "coefficients": _median_terms(ms),
            }
        )
    return sets


def _start_keys(ms: list[Measured]) -> dict[str, Any]:
    """How many of the start-ups were cold (their cold-start extra taken out of the terms), and the
    median captured CUDA-graph pool where the logs print it."""
    out: dict[str, Any] = {}
    cold = sum(m.startup.start == "cold" for m in ms)
    if cold:
        out["cold_startups"] = cold
    pools = [m.startup.cudagraph_pool_gib for m in ms if m.startup.cudagraph_pool_gib is not None]
    if pools:
        out["captured_pool_gib"] = round(statistics.median(pools), 3)
    return out


def merge(existing: list[dict], new: list[dict]) -> list[dict]:
    """The overlay's sets with `new` in: a new set replaces the one of the same name, the others stay."""
    names = {x["name"] for x in new}
    return [x for x in existing if x.get("name") not in names] + new


def check_consistent(startups: list[Startup]) -> None:
    """One GPU name must mean one GPU: start-ups that name the same GPU with totals more than 1% apart
    contradict each other (a different card under the same name)."""
    seen: dict[str, tuple[float, str]] = {}
    for s in startups:
        gpu, total = s.record["gpu"], s.record.get("gpu_total_gib")
        if total is None:
            continue
        if gpu in seen and abs(seen[gpu][0] - total) > 0.01 * total:
            raise PlannerError(
                f"{s.name} and {seen[gpu][1]} both say {gpu} but report {total:.2f} and {seen[gpu][0]:.2f} GiB; "
                "calibrate each GPU with its own --gpu"
            )
        seen.setdefault(gpu, (total, s.name))


def show(path, sets) -> list[str]:
    """`calibrate --show`: one line per calibration set."""
    from planner.overheads import describe_match

    if not sets:
        return [f"no calibration overlay at {path}; write one with `vllm-planner calibrate LOG`"]
    lines = [f"calibration overlay {path}:"]
    for x in sets:
        terms = ", ".join(f"{k} {_short(v)}" for k, v in x.terms.items())
        extra = f", {x.cold_startups} cold" if x.cold_startups else ""
        pool = f"; captured CUDA-graph pool {x.captured_pool_gib:g} GiB" if x.captured_pool_gib is not None else ""
        lines.append(
            f"  {describe_match(x)}: {x.startups} start-up{'s' if x.startups != 1 else ''}{extra}; {terms}{pool}"
        )
    return lines


def _short(v) -> str:
    if hasattr(v, "items"):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    if hasattr(v, "tp2"):
        return f"{{tp2: {v.tp2:g}, per_extra_tp: {v.per_extra_tp:g}}}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _argv_value(argv: list[str], flag: str):
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def startup_from_report(
    doc: dict,
    name: str,
    gpu: str | None = None,
    model: str | None = None,
    interconnect=None,
    v2_env=None,
    log_text: str | None = None,
):
    """A `vllm-planner verify --json` report as a Startup: its GPU is the report's `gpu` (the plan's
    catalogue GPU) unless --gpu names another (a report written before it carried one needs --gpu); the
    runner is `v2_env`, VLLM_USE_V2_MODEL_RUNNER as the plan reads it. `log_text`: the server log the
    report names, where it is still there (warm or cold start, the captured pool)."""
    obs = {e.get("name"): e.get("observed") for e in doc.get("entries") or [] if isinstance(e, dict)}
    if (doc.get("startup") or {}).get("outcome") != "ready" or obs.get("kv_cache_gib") is None:
        why = (doc.get("startup") or {}).get("error") or "no KV cache memory observed"
        raise PlannerError(f"{name}: the report is of a failed start-up ({why}); calibrate from one that started")
    gpu = gpu or doc.get("gpu")
    if not gpu:
        raise PlannerError(
            f"{name}: this verify report (older than reports that carry 'gpu') does not name its GPU; pass --gpu NAME"
        )
    g = _gpu((), gpu, None, name)
    argv = [str(a) for a in doc.get("serve_argv") or []]
    num = lambda flag, tp=int: (lambda v: tp(v) if v is not None else None)(_argv_value(argv, flag))  # noqa: E731
    util = obs.get("gpu_memory_utilization") or num("--gpu-memory-utilization", float) or 0.9
    record = {
        "model": model or doc.get("model"),
        "vllm_version": str(doc.get("vllm_version") or ""),
        "gpu": g.name,
        "gpu_total_gib": None,
        "gpu_catalogue": g.name,
        "compute_capability": g.compute_capability,
        "interconnect": interconnect or g.interconnect_class,
        "tp": num("--tensor-parallel-size") or 1,
        "pp": num("--pipeline-parallel-size") or 1,
        "max_model_len": obs.get("max_model_len") or num("--max-model-len"),
        "gpu_memory_utilization": util,
        "dtype": _argv_value(argv, "--dtype"),
        "kv_cache_dtype": _argv_value(argv, "--kv-cache-dtype") or "auto",
        "quantization": _argv_value(argv, "--quantization"),
        "max_num_seqs": num("--max-num-seqs"),
        "max_num_batched_tokens": num("--max-num-batched-tokens"),
        "enforce_eager": "--enforce-eager" in argv,
        "env": {"VLLM_USE_V2_MODEL_RUNNER": v2_env} if v2_env else {},
    }
    act = obs.get("activation_gib")
    fig = parse_log(log_text) if log_text else None
    start = start_state(log_text) if log_text and not record["enforce_eager"] else None
    pool = fig.cudagraph_actual_gib if fig else None
    return Startup(
        name, record, act, obs.get("cudagraph_gib"), obs["kv_cache_gib"], obs.get("weights_gib"), start, pool
    )
