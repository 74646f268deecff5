"""Measured rows -> cases the step model predicts: used by benchmarks/fit_perf.py and
benchmarks/perf_accuracy.py. Takes the rows and the mapping (benchmarks/data/perf/rows.yaml) as
data; the scripts read the files. Each case carries the planner's exact shape and KV pool for the
row's model, GPU, layout and release.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from planner import releases
from planner.budget import Settings
from planner.errors import PlannerError
from planner.hardware import Catalogue
from planner.perf.capacity import admission
from planner.perf.service import Workload, closed_loop, static_batch_s
from planner.perf.shape import StepShape, inspection_of, step_shape
from planner.perf.step import Coefficients, StepLoad, step_s
from planner.plan import Request, evaluate
from planner.target import gpu_families


@dataclass(frozen=True)
class Case:
    id: str
    subset: str
    model: str
    """The row's model name."""
    planner_model: str
    gpu: str
    tp: int
    pp: int
    family: str
    """vLLM release family (v0, v1)."""
    gpu_family: str
    version: str
    kind: str
    """closed (closed-loop concurrency, TTFT/TPOT measured) or static (one offline batch, wall time)."""
    input_len: int
    output_len: int
    load: int
    """Concurrency (closed) or batch size (static)."""
    measured: dict[str, float]
    shape: StepShape
    max_num_batched_tokens: int
    kv_limited: bool
    admissible: int
    caveats: tuple[str, ...] = field(default=())
    queued: bool = False
    """The measured figures show the requests waiting for admission: decoding is under half of the
    measured end-to-end time (TTFT + (O - 1) x TPOT), so by Little's law fewer than half the clients
    ran at once; the server held fewer than its KV pool and max_num_seqs would (a lower limit than
    the row states). Like a KV-limited row, it queues: not a latency to fit."""

    implausible: str = ""
    """Why the measured figures are faster than the hardware allows (empty: they are not): see
    `implausible_reason`. Not fitted; scored apart, with its error, never left out silently."""

    @property
    def over_capacity(self) -> bool:
        """Not predicted as a latency: the KV pool cannot hold the load, or the row shows a queue."""
        return self.kv_limited or self.queued


PEAK_SHARE = 0.9
"""Share of every datasheet peak (HBM bandwidth, dense tensor rate, the link's one-way bandwidth in
the all-reduces) above which a measured step is taken as physically implausible. vLLM's steps
reach about 60-71% of HBM bandwidth on Hopper and 40-46% of dense peak in prefill (the data's
README); a row that needs 90% of the peaks in every step did less work than it states (prompts
served from the prefix cache, shorter prompts than the stated length)."""
_PEAKS = Coefficients(1.0, 1.0, 0.0, 0.0, 0.0, 0.0, link_fraction=1.0)


def implied_step(isl: int, osl: int, concurrency: int, ttft_ms: float, tpot_ms: float) -> StepLoad:
    """The mean step a closed-loop row's own figures imply: x = C / e2e requests per second, the
    decode batch x (O - 1) TPOT and x I TPOT prompt tokens per step (Little's law)."""
    tau = tpot_ms * 1e-3
    x = concurrency / (ttft_ms * 1e-3 + (osl - 1) * tau)
    return StepLoad(x * (osl - 1) * tau, isl + osl / 2, x * isl * tau, isl / 2)


def implausible_reason(
    shape: StepShape, kind: str, isl: int, osl: int, load: int, m: dict[str, float], prefill_tokens_per_step: int
) -> str:
    """Why the row's measured time is under what the planner's bytes and FLOPs take at PEAK_SHARE
    of the datasheet peaks, or "" where it is not."""
    if kind == "static":
        ideal = static_batch_s(shape, _PEAKS, load, isl, osl, prefill_tokens_per_step)
        need = ideal / m["latency_s"]
    else:
        ideal = step_s(shape, _PEAKS, implied_step(isl, osl, load, m["ttft_ms"], m["tpot_ms"]))
        need = ideal / (m["tpot_ms"] * 1e-3)
    if need <= PEAK_SHARE:
        return ""
    return (
        f"physically implausible: the measured load needs {100 * need:.0f}% of the datasheet bandwidth, "
        f"tensor rate and link in every step (vLLM reaches about 60-70%); likely prefix-cache hits"
    )


def family_of(version: str, families: dict[str, Any]) -> str:
    v = releases.parse_version(version)
    for name, f in families.items():
        last = f.get("last")
        if releases.parse_version(f["first"]) <= v and (last is None or v <= releases.parse_version(last)):
            return name
    raise PlannerError(f"vLLM {version} is in no release family of rows.yaml: add it to `families`")


def gpu_family_of(compute_capability: str | None) -> str:
    return gpu_families().perf_of(compute_capability)


def _version(row: dict[str, Any], mapping: dict[str, Any]) -> str | None:
    if row.get("engine_version"):
        return row["engine_version"]
    if row["subset"].startswith("llm-inference-bench"):
        return "0.5.0"  # 0.5.x-0.6.x by its pinned wheels (the row's caveat); one family either way
    return mapping["version_by_date"].get(row.get("measured_date"))


def skip_reason(row: dict[str, Any], mapping: dict[str, Any]) -> str | None:
    """Why a row cannot be used, or None."""
    if row["subset"] in mapping["excluded_subsets"]:
        return mapping["excluded_subsets"][row["subset"]]
    if not row.get("measured_with_vllm", True) or row.get("engine") != "vllm":
        return "not measured with vLLM"
    if row["model"] not in mapping["models"]:
        return f"model {row['model']} not bundled (no config.json in profiles/models/)"
    if row["gpu"] not in mapping["gpus"]:
        return f"GPU {row['gpu']!r} not mapped to the catalogue"
    if _version(row, mapping) is None:
        return "no engine version and no measurement date to infer it"
    if (row.get("attention_dp") or 1) > 1:
        return "attention data parallelism (DP attention over several TP groups) is not modelled"
    return None


@functools.cache
def _model(name: str) -> Any:
    from planner.api import load_model  # the benchmarks' edge: the bundled profiles

    return load_model(name)


def build_case(row: dict[str, Any], mapping: dict[str, Any], catalogue: Catalogue) -> Case:
    m = mapping["models"][row["model"]]
    gpu = catalogue.get(mapping["gpus"][row["gpu"]])
    version = _version(row, mapping)
    family = family_of(version, mapping["families"])
    fam = mapping["families"][family]
    rel = releases.get(fam.get("budget_release") or version)
    w = row["workload"]
    static = "batch" in w
    mml = m.get("max_model_len")
    settings = Settings(tp=row["tp"], pp=row.get("pp") or 1, max_model_len=mml)
    req = Request(_model(m["planner_model"]), settings, rel, dtype=m.get("dtype"), quantization=m.get("quantization"))
    b = evaluate(req, gpu, settings.tp, settings.pp)
    shape = step_shape(req.model.spec, inspection_of(req, settings.tp, settings.pp), gpu)
    isl, osl = int(w["isl"]), int(w["osl"])
    load = int(w["batch"] if static else w["concurrency"])
    if static:  # V0 without chunked prefill: whole prompts, max(max_model_len, 2048) tokens a step
        mnbt = max(b.max_model_len, 2048)
        measured = {"latency_s": row["metrics"]["batch_latency_s"]}
        limited = load * (isl + osl) > b.kv_cache_tokens
        adm = b.kv_cache_tokens // (isl + osl)
        queued = False
    else:
        mnbt = b.max_num_batched_tokens
        measured = {k: row["metrics"][k] for k in ("ttft_ms", "tpot_ms")}
        a = admission(b.num_blocks, b.block_size, b.max_num_seqs, isl, osl)
        limited, adm = load > a.steady, a.steady
        decode_ms = (osl - 1) * measured["tpot_ms"]
        queued = decode_ms < 0.5 * (decode_ms + measured["ttft_ms"])
    odd = (
        ""
        if limited or queued
        else implausible_reason(shape, "closed" if not static else "static", isl, osl, load, measured, mnbt)
    )
    return Case(
        row["id"],
        row["subset"],
        row["model"],
        m["planner_model"],
        gpu.name,
        settings.tp,
        settings.pp,
        family,
        gpu_family_of(gpu.compute_capability),
        version,
        "static" if static else "closed",
        isl,
        osl,
        load,
        measured,
        shape,
        mnbt,
        limited,
        adm,
        tuple(row.get("caveats") or ()) + ((odd,) if odd else ()),
        queued=queued,
        implausible=odd,
    )


def cases(
    rows: list[dict[str, Any]], mapping: dict[str, Any], catalogue: Catalogue
) -> tuple[list[Case], dict[str, int]]:
    """The usable rows as cases (duplicates, the same measurement listed twice, dropped), and a
    count of the others by reason."""
    out, skipped, seen = [], {}, set()
    for row in rows:
        reason = skip_reason(row, mapping)
        key = (
            row["model"],
            row["gpu"],
            row["tp"],
            row.get("engine_version"),
            str(row["workload"]),
            str(row["metrics"]),
        )
        if reason is None and key in seen:
            reason = "duplicate of an earlier row (same setup and figures)"
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        seen.add(key)
        out.append(build_case(row, mapping, catalogue))
    return out, skipped


def predict(case: Case, c: Coefficients) -> dict[str, float]:
    """The case's measured metrics, predicted."""
    if case.kind == "static":
        return {
            "latency_s": static_batch_s(
                case.shape, c, case.load, case.input_len, case.output_len, case.max_num_batched_tokens
            )
        }
    s = closed_loop(case.shape, c, Workload(case.input_len, case.output_len, case.max_num_batched_tokens), case.load)
    return {"ttft_ms": s.ttft_s * 1e3, "tpot_ms": s.tpot_s * 1e3}
