"""The measured terms the H100 set cannot fix, fitted on the other start-ups (the recent 0.21-0.30 set
and the public logs): the V2 runner's CUDA-graph estimate (0.29+), the V1 estimate's FULL-graph share,
the 0.27+ consumed memory at TP 1, the 0.27+ cold-start extra; the communication buffers at TP >= 2 are
not fitted but built from their documented sizes (planner/comm_buffers.py). benchmarks/accuracy.py
refits these without each held-out GPU class or source; `fit_overheads.py --measured` writes them.
"""

from __future__ import annotations

import copy
import statistics
import sys

import yaml
from fit_overheads import REPO, load_model, lstsq, shape_for

from planner.errors import PlannerError
from planner.releases import parse_version
from planner.units import GIB

HIDDEN_EXPONENTS = (0.0,)
"""Candidate powers of hidden / 4096 for the per-layer graph cost, chosen by the fit where the
training cases have more than one hidden size. Only 0: the H100 set's V1 estimates (hidden 2,304 to
8,192) grow with the layers, not the hidden size, and the one 0.30 case that suggests a power
(Qwen3-32B on a GH200, 0.5 would fit it) would move every 70B plan by more than a GiB."""
UNINFORMED_FULL_SHARE = 0.5
"""Share of the CUDA-graph estimate that follows the FULL graphs, where no training case varies the
graph shape (a fold without one): the midpoint, not a value seen in the held-out case. The V1 runner
extrapolates both modes alike (first capture + (graphs - 1) x the second's increment), so neither
mode's share is favoured."""
V2_PROCEDURE_FULL_SHARE = 1.0
"""The same where the V2 runner (0.29+) measured the estimate, read from its procedure instead
(v1/worker/gpu/cudagraph_utils.py profile_cudagraph_memory, 0.30): the PIECEWISE graphs are
captured for real into one shared pool, largest first, so the smaller sizes reuse the largest's
memory and the PIECEWISE part hardly grows with the capture sizes; the FULL graphs are extrapolated
linearly, first capture + (graphs - 1) x the second largest's increment, so the estimate grows with
the FULL graphs' sizes and count: all of the shape dependence is theirs."""


def _set(sets: list[dict], name: str) -> dict:
    return next(x for x in sets if x["name"] == name)["coefficients"]


def _version(r: dict) -> tuple:
    return parse_version(r["vllm_version"])


def _case_terms(r: dict) -> dict:
    """What one replayed start-up says about the measured terms: the budget identity's parts with the
    current coefficients, and the physics-only activation (no forward constant)."""
    import dataclasses
    import math

    from accuracy import replay_budget  # the same replay as the benchmark

    from planner import overheads as oh

    b = replay_budget(r)
    st = b.stages[0]
    model = load_model(r["model"])
    shape = shape_for(r, model)
    c = oh.coefficients(b.vllm_version if hasattr(b, "vllm_version") else r["vllm_version"], b.model_runner)
    phys = oh.activation_peak_bytes(
        oh.features(model.spec, shape), dataclasses.replace(c, forward_const_gib=0.0, forward_per_token_bytes=0.0)
    )
    requested = (
        st.available_kv_bytes
        + st.weights_bytes
        + st.activation_bytes
        + st.non_torch_bytes
        + st.cudagraph_bytes
        + st.runner_buffers_bytes
    )
    printed = r.get("cudagraph_estimate_gib")
    graphs_used = printed * GIB if printed is not None and st.cudagraph_bytes else st.cudagraph_bytes
    return {
        "b": b,
        "st": st,
        "tokens": b.max_num_batched_tokens,
        "seqs": b.max_num_seqs,
        "phys": phys,
        "requested": requested,
        "graphs_used": graphs_used,
        "layers": math.ceil(model.spec.num_layers / r["pp"]),
        "hidden": model.spec.hidden_size,
        "runner": b.model_runner,
    }


def _charged_gib(r: dict, t: dict) -> float:
    """What a 0.27+ start-up charged beyond the weights, the runner's buffers, the graph estimate, the
    physics-only activation and its KV cache (GiB)."""
    st = t["st"]
    extra = t["requested"] - st.weights_bytes - st.runner_buffers_bytes - t["graphs_used"] - t["phys"]
    return (extra - r["kv_cache_gib"] * GIB) / GIB


def _v2_graph_estimate(terms: list, sets: list[dict], notes: list[str]) -> None:
    """(B) the V2 graph estimate from 0.29: k x layers x mix(full share)."""
    from planner import overheads as oh

    pts = [
        (t, r["cudagraph_estimate_gib"])
        for r, t in terms
        if _version(r) >= (0, 29, 0)
        and t["runner"] == "v2"
        and r.get("cudagraph_estimate_gib") is not None
        and r["start"] == "warm"
    ]
    g2 = _set(sets, "runner-v2-graph-estimate")
    pools = not pts
    if not pts:
        # the graphs the 0.29+ procedure captures are the ones the V2 runner captured before it
        # estimated them: its pools where a start-up printed one ('Graph capturing finished ..., took X GiB')
        pts = [
            (t, r["cudagraph_actual_gib"])
            for r, t in terms
            if t["runner"] == "v2" and r.get("cudagraph_actual_gib") is not None and r["start"] in ("warm", "cold")
        ]
        if pts:
            notes.append(
                "V2 graph estimate: no 0.29+ case, the per-graph cost from the V2 runner's captured pools (0.26), "
                "the FULL share from the 0.29+ procedure (1.0)"
            )
    if not pts:
        # what the planner knew before any V2 start-up: the 0.26 V1 line
        older = _set(sets, "h200-0.26")
        g2.update(
            cudagraph_const_gib=older["cudagraph_const_gib"],
            cudagraph_per_layer_gib=older["cudagraph_per_layer_gib"],
            cudagraph_full_share=UNINFORMED_FULL_SHARE,
            cudagraph_hidden_exponent=0.0,
        )
        notes.append("V2 graph estimate: no 0.29+ case, the 0.26 V1 line stands in")
        return
    works = [oh.GraphShape.of(t["seqs"], t["tokens"]).work for t, _ in pts]
    shape_varies = len({w[0] for w in works}) > 1
    shares = [i / 20 for i in range(21)] if shape_varies and not pools else [V2_PROCEDURE_FULL_SHARE]
    if len(shares) == 1 and not pools:
        notes.append("V2 graph estimate: one graph shape, FULL share from the procedure (1.0)")
    widths = HIDDEN_EXPONENTS if len({t["hidden"] for t, _ in pts}) > 1 else (0.0,)
    best = None
    for e in widths:
        for s in shares:
            x = [t["layers"] * (t["hidden"] / 4096) ** e * (s * w[0] + (1 - s) * w[1]) for (t, _), w in zip(pts, works)]
            k = sum(xi * y for xi, (_, y) in zip(x, pts)) / sum(xi * xi for xi in x)
            sse = sum((k * xi - y) ** 2 for xi, (_, y) in zip(x, pts))
            if best is None or sse < best[0] - 1e-12:
                best = (sse, k, s, e)
    g2.update(
        cudagraph_const_gib=0.0,
        cudagraph_per_layer_gib=round(best[1], 5),
        cudagraph_full_share=best[2],
        cudagraph_hidden_exponent=best[3],
    )


def _v1_full_share(terms: list, sets: list[dict], notes: list[str]) -> None:
    """(C) the V1 estimate's FULL share: V1 cases with a printed estimate and a graph shape off the envelope."""
    from planner import overheads as oh

    base, ws = _set(sets, "base"), []
    for r, t in terms:
        full, pw = oh.GraphShape.of(t["seqs"], t["tokens"]).work
        if (
            t["runner"] == "v1"
            and r.get("cudagraph_estimate_gib")
            and abs(full - pw) > 1e-6
            and (0, 20, 0) <= _version(r)
        ):
            c = oh.coefficients(r["vllm_version"], "v1")
            ref = c.cudagraph_const_gib + c.cudagraph_per_layer_gib * t["layers"]
            ws.append(((r["cudagraph_estimate_gib"] / ref) - pw) / (full - pw))
    if ws:
        base["cudagraph_full_share"] = round(min(1.0, max(0.0, statistics.mean(ws))), 3)
    else:
        base["cudagraph_full_share"] = UNINFORMED_FULL_SHARE
        notes.append("V1 graph estimate: no case off the 51+51 envelope, FULL share uninformed (0.5)")


def _consumed(terms: list, sets: list[dict], notes: list[str]) -> None:
    """(A) the 0.27+ consumed memory at TP 1: extra = non-torch + per-token x tokens."""
    base, consumed = _set(sets, "base"), _set(sets, "consumed-0.27")
    pts = [
        (t["tokens"], _charged_gib(r, t))
        for r, t in terms
        if _version(r) >= (0, 27, 0) and r["tp"] == 1 and r["start"] == "warm" and r.get("kv_cache_gib") is not None
    ]
    if len({p[0] for p in pts}) > 1:
        c0, c1 = lstsq([[1.0, tok] for tok, _ in pts], [y for _, y in pts])
        if c0 < 0:  # memory is not negative: the line through the origin
            c0, c1 = 0.0, sum(tok * y for tok, y in pts) / sum(tok * tok for tok, _ in pts)
        per, const = round(c1 * GIB), 0.0
    elif pts:
        per = base.get("forward_per_token_bytes", 0) + base["forward_const_gib"] * GIB / 8192  # the H100 set's
        c0, per, const = statistics.mean(y - per * tok / GIB for tok, y in pts), round(per), 0.0
        notes.append("0.27+ consumed: one batch size, per-token term from the H100 set")
    else:
        consumed["non_torch_gib"] = {k: base["non_torch_gib"][k] for k in ("tp1", "tp1_pp")}
        consumed["forward_per_token_bytes"] = base.get("forward_per_token_bytes", 0)
        consumed["forward_const_gib"] = base["forward_const_gib"]
        notes.append("0.27+ consumed: no case, the H100 (0.19) terms stand in")
        return
    consumed["non_torch_gib"] = {"tp1": round(c0, 4), "tp1_pp": round(c0, 4)}
    consumed["forward_per_token_bytes"] = per
    consumed["forward_const_gib"] = const


def _communication(terms: list, sets: list[dict]) -> str:
    """(E) the buffers at TP >= 2 are not fitted: NCCL's and custom all-reduce's documented sizes
    (planner/comm_buffers.py) for the base (0.19) and 0.27+ sets. Returns what the PCIe TP cases
    (0.27+, where consumed memory is printed whole) attribute to them, as a check."""
    from planner import comm_buffers

    base, consumed = _set(sets, "base"), _set(sets, "consumed-0.27")
    comm = []
    for r, t in terms:
        pcie = r.get("interconnect", "").startswith("pcie")
        if (
            r["tp"] >= 2
            and pcie
            and _version(r) >= (0, 27, 0)
            and r["start"] == "warm"
            and r.get("kv_cache_gib") is not None
        ):
            tp1 = consumed["non_torch_gib"]["tp1"] + consumed["forward_per_token_bytes"] * t["tokens"] / GIB
            comm.append(_charged_gib(r, t) - tp1 - base["non_torch_comm_gib"]["pcie"]["per_extra_tp"] * (r["tp"] - 2))
    for name, version in (("base", "0.19.0"), ("consumed-0.27", "0.27.0")):
        terms_set = _set(sets, name)
        comm_set = copy.deepcopy(terms_set.get("non_torch_comm_gib") or base["non_torch_comm_gib"])
        for k in comm_buffers.classes():
            comm_set[k]["tp2"] = comm_buffers.tp2_gib(k, version)
        terms_set["non_torch_comm_gib"] = comm_set
    if not comm:
        return ""
    off, p2p = comm_buffers.tp2_gib("pcie", "0.27.0"), comm_buffers.tp2_gib("pcie_p2p", "0.27.0")
    return (
        f"PCIe TP 2 start-ups attribute {statistics.mean(comm):.3f} GiB to communication buffers; the mechanism "
        f"gives {off:.3f} without P2P, {p2p:.3f} with"
    )


def _warm_twin(r: dict, terms: list) -> dict | None:
    same = ("model", "gpu_class", "vllm_version", "tp")
    return next((w for w, _ in terms if w["start"] == "warm" and all(w[k] == r[k] for k in same)), None)


def _cold_start(terms: list, sets: list[dict], notes: list[str]) -> None:
    """(D) the cold start of 0.27+: the warm - cold KV difference of the same job, fitted into the
    consumed-0.27 set. Before 0.27 the base set has none: its own start-ups (the H100 set's 0.15-0.19
    logs, the H200 0.26 verify runs) compiled at start-up ('Compiling a graph for compile range',
    'Cache the graph ... for later use', no 'Directly load ... from the cache'), forward-bound ones
    among them, and the terms fitted on them reproduce them with no cold-start extra."""
    consumed, pairs = _set(sets, "consumed-0.27"), []
    for r, t in terms:
        warm = _warm_twin(r, terms) if r["start"] == "cold" and _version(r) >= (0, 27, 0) else None
        if warm is None:
            continue
        if r.get("kv_cache_gib") is not None and warm.get("kv_cache_gib") is not None:
            delta = warm["kv_cache_gib"] - r["kv_cache_gib"]
        else:
            delta = (warm["kv_cache_tokens"] - r["kv_cache_tokens"]) * t["b"].kv_bytes_per_token / GIB
        pairs.append((t["tokens"], delta))
    if len({p[0] for p in pairs}) > 1:
        c0, c1 = lstsq([[1.0, tok] for tok, _ in pairs], [y for _, y in pairs])
        consumed["cold_const_gib"], consumed["cold_per_token_bytes"] = round(c0, 4), round(c1 * GIB)
    elif pairs:
        consumed["cold_const_gib"] = round(statistics.mean(y for _, y in pairs), 4)
        consumed["cold_per_token_bytes"] = 0
        notes.append("cold start: one batch size, constant only")
    else:
        consumed["cold_const_gib"], consumed["cold_per_token_bytes"] = 0.0, 0
        notes.append("cold start: no 0.27+ warm/cold pair, none predicted")


def fit_measured_terms(train: list[dict], sets: list[dict]) -> tuple[list[dict], list[str]]:
    """Refit, on the `train` start-ups only, the terms that the H100 set cannot fix (see the module).
    Returns new sets (the others unchanged) and notes on terms that the training cases do not
    determine (and what stands in); `fit_measured_terms.pcie_check` says what the PCIe cases measure."""
    sets = copy.deepcopy(sets)
    notes: list[str] = []
    terms = []
    for r in train:
        if r["set"] == "h100":
            continue  # the base set's own fit
        try:
            terms.append((r, _case_terms(r)))
        except PlannerError:
            continue
    _v2_graph_estimate(terms, sets, notes)
    _v1_full_share(terms, sets, notes)
    _consumed(terms, sets, notes)
    fit_measured_terms.pcie_check = _communication(terms, sets)  # type: ignore[attr-defined]
    _cold_start(terms, sets, notes)
    return sets, notes


def write_measured(write: bool) -> int:
    """fit_measured_terms on every start-up benchmarks/accuracy.py replays (twice: the second pass
    sees the first's graph estimates), into profiles/vllm/overheads.yaml."""
    from accuracy import coefficient_sets, load_cases

    from planner import overheads as oh

    path = REPO / "profiles" / "vllm" / "overheads.yaml"
    doc = yaml.safe_load(path.read_text())
    cases_all, _ = load_cases()
    sets = copy.deepcopy(doc["sets"])
    for _ in range(2):
        with coefficient_sets(sets):
            sets, notes = fit_measured_terms(cases_all, sets)
    for n in [*notes, fit_measured_terms.pcie_check]:  # type: ignore[attr-defined]
        if n:
            print(f"note: {n}", file=sys.stderr)
    doc["sets"] = sets
    text = yaml.safe_dump(doc, sort_keys=False)
    print(text)
    if write:
        path.write_text(
            "# Fitted by benchmarks/fit_overheads.py: shared coefficients of planner/overheads.py (estimates).\n" + text
        )
        print(f"wrote {path}", file=sys.stderr)
        oh.coefficients.cache_clear()
    return 0
