"""Refit the shared coefficients of `planner.overheads` on real vLLM start-ups and write
`profiles/vllm/overheads.yaml`.

    python benchmarks/fit_overheads.py [--calibration ../shared/calibration/vllm-startup-h100.jsonl] [--write]

Only the physics lives in code (which tensors exist at the profile run's peak); this script fits
how many copies of each are alive, by least squares over every model together (never per model):
- activation: max(forward, sampler + MoE workspace) + vision, with forward = c0 + 2*hidden + mlp
  and sampler = s0 + s1*logits + s2*hidden (see fit_activation);
- non-torch: the mean growth per layout class (TP 1, TP 1 with PP, TP >= 2);
- CUDA-graph estimate: const + per-layer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from planner.api import load_model, resolve_dtype  # noqa: E402
from planner.budget import resolve_lengths  # noqa: E402
from planner.calibration import release_for, settings_for, target_for  # noqa: E402
from planner.dtypes import torch_dtype_bytes  # noqa: E402
from planner.errors import PlannerError  # noqa: E402
from planner.overheads import GIB, Coefficients, Features, ProfileShape, activation_peak_bytes, features  # noqa: E402
from planner.releases import parse_version  # noqa: E402

OLDER_SAMPLER_FROM = "0.12.0"
"""First release whose dummy sampler sorts the logits by default (FlashInfer's sampler opt-in from 0.12;
0.10-0.11 use it wherever it is installed: the `flashinfer-sampler` set)."""
DEFAULT_CALIBRATION = REPO / "benchmarks" / "data" / "calibration" / "vllm-startup-h100.jsonl"


def lstsq(rows: list[list[float]], y: list[float]) -> list[float]:
    """Ordinary least squares by the normal equations (a handful of unknowns; no numpy needed)."""
    n = len(rows[0])
    a = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    b = [sum(r[i] * yy for r, yy in zip(rows, y)) for i in range(n)]
    for i in range(n):  # Gauss-Jordan with partial pivoting and a tiny ridge for rank deficiency
        a[i][i] += 1e-9
        p = max(range(i, n), key=lambda k: abs(a[k][i]))
        a[i], a[p], b[i], b[p] = a[p], a[i], b[p], b[i]
        for k in range(n):
            if k != i and a[i][i]:
                f = a[k][i] / a[i][i]
                a[k] = [x - f * z for x, z in zip(a[k], a[i])]
                b[k] -= f * b[i]
    return [b[i] / a[i][i] if a[i][i] else 0.0 for i in range(n)]


def cudagraph_estimate(r: dict) -> float | None:
    """vLLM's "Estimated CUDA graph memory: X GiB total" (what 0.20+ subtracts). The records keep
    the captured pool in `cudagraph_gib` and the estimate in their notes."""
    m = re.search(r"estimated CUDA graph memory ([0-9.]+) GiB", r.get("notes") or "", re.IGNORECASE)
    return float(m.group(1)) if m else None


def cases(path: Path):
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("activation_peak_gib") is None or r.get("weights_gib") is None:
            continue
        try:
            model = load_model(r["model"])
        except PlannerError:
            print(f"skip {r['model']}: not bundled", file=sys.stderr)
            continue
        yield r, model


def shape_for(r: dict, model) -> ProfileShape:
    """The profile run vLLM did for this case: its release's batch defaults on that GPU."""
    _, tokens, seqs = resolve_lengths(model, settings_for(r), target_for(r), release_for(r))
    dtype = resolve_dtype(model.spec, r.get("dtype"))
    return ProfileShape.of(tokens, seqs, r["tp"], torch_dtype_bytes(dtype), last_stage=r["pp"] == 1)


def fit_activation(samples: list[tuple[Features, float, bool]]) -> dict[str, float]:
    """Sequential fit, one physical term at a time (each from the cases it dominates):
    1. sampler: dense models whose last stage samples, 16-bit: act = s0 + s1*logits + s2*hidden;
    2. forward: stages without a sampler: act - (2*hidden + mlp) = const;
    3. MoE workspace: MoE models, (act - dense prediction) / workspace."""
    dense_sampler = [
        (f, y) for f, y, b16 in samples if f.sampler_bytes and not f.moe_workspace_bytes and b16 and not f.vision_bytes
    ]
    c = lstsq(
        [[1.0, f.sampler_bytes / GIB, f.hidden_bytes / GIB] for f, _ in dense_sampler], [y for _, y in dense_sampler]
    )
    coef = {"sampler_const_gib": c[0], "sampler_logits": c[1], "sampler_hidden": c[2]}
    forward = [y - (2 * f.hidden_bytes + f.mlp_bytes) / GIB for f, y, _ in samples if not f.sampler_bytes]
    coef["forward_const_gib"] = statistics.median(forward) if forward else 0.0
    probe = Coefficients(
        **{**coef, "moe_workspace": 0.0, "vision": 0.0},
        non_torch_gib={},
        cudagraph_const_gib=0,
        cudagraph_per_layer_gib=0,
        source="",
    )
    moe = [
        (y * GIB - activation_peak_bytes(f, probe)) / f.moe_workspace_bytes
        for f, y, _ in samples
        if f.moe_workspace_bytes and f.sampler_bytes
    ]
    coef["moe_workspace"] = max(0.0, statistics.median(moe)) if moe else 0.0
    # One vision case is too few to fit: the encoder batch counts once, as the physics says.
    coef["vision"] = 1.0
    return coef


def refit_sampler(path: Path, versions: list[str], base: dict) -> float | None:
    """Copies of the logits for releases whose dummy sampler run held more of them."""
    vals = []
    for r, model in cases(path):
        if r["vllm_version"].split()[0] not in versions:
            continue
        f = features(model.spec, shape_for(r, model))
        if f.sampler_bytes and not f.moe_workspace_bytes:
            rest = base["sampler_const_gib"] + base["sampler_hidden"] * f.hidden_bytes / GIB
            vals.append((r["activation_peak_gib"] - rest) / (f.sampler_bytes / GIB))
    return statistics.median(vals) if vals else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION)
    ap.add_argument("--write", action="store_true", help="write profiles/vllm/overheads.yaml")
    ap.add_argument(
        "--version",
        default="v0.19.0",
        help="fit the base set on this release's start-ups (the profile run changed across releases)",
    )
    ap.add_argument(
        "--base-from", default="0.17.0", help="first release the base set covers (checked on 0.17-0.19 start-ups)"
    )
    ap.add_argument("--older", default="v0.15.0,v0.16.0", help="releases before --base-from whose sampler is refitted")
    ap.add_argument(
        "--measured",
        action="store_true",
        help="refit the terms measured off the H100 set (fit_measured_terms) on every replayable start-up",
    )
    a = ap.parse_args(argv)
    if a.measured:
        return write_measured(a.write)
    act_samples, nt, graphs = [], {"tp1": [], "tp1_pp": [], "tp2": [], "extra": []}, []
    for r, model in cases(a.calibration):
        if r["vllm_version"].split()[0] != a.version:
            continue
        shape = shape_for(r, model)
        f = features(model.spec, shape)
        act_samples.append((f, r["activation_peak_gib"], shape.dtype_bytes == 2))
        if r.get("non_torch_gib") is not None:
            key = (
                "tp1"
                if r["tp"] == 1 and r["pp"] == 1
                else "tp1_pp"
                if r["tp"] == 1
                else "tp2"
                if r["tp"] == 2
                else "extra"
            )
            nt[key].append((r["tp"], r["non_torch_gib"]))
        estimate = cudagraph_estimate(r)
        if estimate is not None:
            graphs.append((model.spec.num_layers / r["pp"], estimate))
    coef = fit_activation(act_samples)
    tp2 = statistics.median(v for _, v in nt["tp2"])
    extra = statistics.median((v - tp2) / (tp - 2) for tp, v in nt["extra"]) if nt["extra"] else 0.0
    g = lstsq([[1.0, n] for n, _ in graphs], [y for _, y in graphs])
    out = {
        **{k: round(v, 4) for k, v in coef.items()},
        "non_torch_gib": {
            "tp1": round(statistics.median(v for _, v in nt["tp1"]), 3),
            "tp1_pp": round(statistics.median(v for _, v in nt["tp1_pp"]), 3) if nt["tp1_pp"] else 0.0,
            "tp2": round(tp2, 3),
            "per_extra_tp": round(extra, 4),
        },
        "cudagraph_const_gib": round(g[0], 4),
        "cudagraph_per_layer_gib": round(g[1], 5),
    }
    # terms the H100 set does not measure (interconnects, graph shapes, cold start) are fitted by
    # --measured on the other start-ups and kept here as they are
    current = yaml.safe_load((REPO / "profiles" / "vllm" / "overheads.yaml").read_text())
    old_base = next(x for x in current["sets"] if x["name"] == "base")["coefficients"]
    out = {**{k: v for k, v in old_base.items() if k not in out}, **out}
    base_versions = sorted({r["vllm_version"].split()[0] for r, _ in cases(a.calibration)})
    older = [v for v in a.older.split(",") if v]
    sets = [
        {
            "name": "base",
            "from": a.base_from,
            "validated": [v.lstrip("v") for v in base_versions if v not in older],
            "source": f"fit on {a.calibration.name}: {len(act_samples)} text-model start-ups of vLLM {a.version} "
            f"on H100, {datetime.date.today()}",
            "coefficients": out,
        }
    ]
    if older:
        refit = refit_sampler(a.calibration, older, out)
        if refit is not None:
            sets.insert(
                0,
                {
                    "name": "older-sampler",
                    "from": OLDER_SAMPLER_FROM,
                    "until": a.base_from,
                    "base": "base",
                    "validated": [v.lstrip("v") for v in older],
                    "source": f"sampler copies refitted on the {', '.join(older)} start-ups of "
                    f"{a.calibration.name}; other terms from the base set",
                    "coefficients": {"sampler_logits": round(refit, 4)},
                },
            )
    path = REPO / "profiles" / "vllm" / "overheads.yaml"
    # Sets measured elsewhere (later releases, runner overlays) are kept as they are; the base set keeps
    # the end of its range where a later set takes over.
    kept = [x for x in yaml.safe_load(path.read_text())["sets"] if x["name"] not in ("base", "older-sampler")]
    sets[:0] = [x for x in kept if x["name"] == "flashinfer-sampler"]  # before the sets it precedes in time
    kept = [x for x in kept if x["name"] != "flashinfer-sampler"]
    later = [x["from"] for x in kept if "runner" not in x]
    if later:
        sets[-1] = {
            **{k: v for k, v in sets[-1].items() if k != "coefficients"},
            "until": min(later, key=parse_version),
            "coefficients": sets[-1]["coefficients"],
        }
    doc = {
        "sets": [*sets[:-1], *[x for x in kept if "runner" not in x], sets[-1], *[x for x in kept if "runner" in x]],
        "capture_max_size": current["capture_max_size"],
    }
    print(yaml.safe_dump(doc, sort_keys=False))
    if a.write:
        header = "# Fitted by benchmarks/fit_overheads.py: shared coefficients of planner/overheads.py (estimates).\n"
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
        print(f"wrote {path}", file=sys.stderr)
    return 0


# ---- the terms measured on the other GPUs and releases (vllm-startup-recent.jsonl and the public logs) ----

HIDDEN_EXPONENTS = (0.0,)
"""Candidate powers of hidden / 4096 for the per-layer graph cost, chosen by the fit where the
training cases have more than one hidden size. Only 0: the H100 set's V1 estimates (hidden 2,304 to
8,192) grow with the layers, not the hidden size, and the one 0.30 case that suggests a power
(Qwen3-32B on a GH200, 0.5 would fit it) would move every 70B plan by more than a GiB."""
UNINFORMED_FULL_SHARE = 0.5
"""Share of the CUDA-graph estimate that follows the FULL graphs, where no training case varies the
graph shape (a fold without one): the midpoint, not a value seen in the held-out case."""


def _set(sets: list[dict], name: str) -> dict:
    return next(x for x in sets if x["name"] == name)["coefficients"]


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


def fit_measured_terms(train: list[dict], sets: list[dict]) -> tuple[list[dict], list[str]]:
    """Refit, on the `train` start-ups only, the terms that the H100 set cannot fix: the 0.27+
    consumed memory (non-torch at TP 1 and the per-token forward term), the V2 runner's CUDA-graph
    estimate (0.29+), the FULL-graph share of the V1 estimate, the cold-start extra and the PCIe
    communication buffers. Returns new sets (the others unchanged) and notes on terms that the
    training cases do not determine (and what stands in)."""
    import copy

    from planner import comm_buffers
    from planner import overheads as oh

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
    v = lambda r: parse_version(r["vllm_version"])  # noqa: E731
    base = _set(sets, "base")
    consumed = _set(sets, "consumed-0.27")
    # (B) V2 graph estimate from 0.29: k x layers x mix(full share)
    pts = [
        (t, r["cudagraph_estimate_gib"])
        for r, t in terms
        if v(r) >= (0, 29, 0)
        and t["runner"] == "v2"
        and r.get("cudagraph_estimate_gib") is not None
        and r["start"] == "warm"
    ]
    g2 = _set(sets, "runner-v2-graph-estimate")
    if pts:
        works = [oh.GraphShape.of(t["seqs"], t["tokens"]).work for t, _ in pts]
        shares = [i / 20 for i in range(21)] if len({w[0] for w in works}) > 1 else [UNINFORMED_FULL_SHARE]
        if len(shares) == 1:
            notes.append("V2 graph estimate: one graph shape, FULL share uninformed (0.5)")
        widths = HIDDEN_EXPONENTS if len({t["hidden"] for t, _ in pts}) > 1 else (0.0,)
        best = None
        for e in widths:
            for s in shares:
                x = [
                    t["layers"] * (t["hidden"] / 4096) ** e * (s * w[0] + (1 - s) * w[1])
                    for (t, _), w in zip(pts, works)
                ]
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
    else:
        # what the planner knew before any 0.29+ start-up: the 0.26 V1 line
        older = _set(sets, "h200-0.26")
        g2.update(
            cudagraph_const_gib=older["cudagraph_const_gib"],
            cudagraph_per_layer_gib=older["cudagraph_per_layer_gib"],
            cudagraph_full_share=UNINFORMED_FULL_SHARE,
            cudagraph_hidden_exponent=0.0,
        )
        notes.append("V2 graph estimate: no 0.29+ case, the 0.26 V1 line stands in")
    # (C) V1 estimate's FULL share: V1 cases with a printed estimate and a graph shape off the envelope
    ws = []
    for r, t in terms:
        full, pw = oh.GraphShape.of(t["seqs"], t["tokens"]).work
        if t["runner"] == "v1" and r.get("cudagraph_estimate_gib") and abs(full - pw) > 1e-6 and (0, 20, 0) <= v(r):
            c = oh.coefficients(r["vllm_version"], "v1")
            ref = c.cudagraph_const_gib + c.cudagraph_per_layer_gib * t["layers"]
            ws.append(((r["cudagraph_estimate_gib"] / ref) - pw) / (full - pw))
    if ws:
        base["cudagraph_full_share"] = round(min(1.0, max(0.0, statistics.mean(ws))), 3)
    else:
        base["cudagraph_full_share"] = UNINFORMED_FULL_SHARE
        notes.append("V1 graph estimate: no case off the 51+51 envelope, FULL share uninformed (0.5)")
    # (A) 0.27+ consumed memory at TP 1: extra = non-torch + per-token x tokens
    pts = []
    for r, t in terms:
        if v(r) >= (0, 27, 0) and r["tp"] == 1 and r["start"] == "warm" and r.get("kv_cache_gib") is not None:
            st = t["st"]
            extra = (
                t["requested"]
                - st.weights_bytes
                - st.runner_buffers_bytes
                - t["graphs_used"]
                - t["phys"]
                - r["kv_cache_gib"] * GIB
            )
            pts.append((t["tokens"], extra / GIB))
    if len({p[0] for p in pts}) > 1:
        c0, c1 = lstsq([[1.0, tok] for tok, _ in pts], [y for _, y in pts])
        if c0 < 0:  # memory is not negative: the line through the origin
            c0, c1 = 0.0, sum(tok * y for tok, y in pts) / sum(tok * tok for tok, _ in pts)
        consumed["non_torch_gib"] = {"tp1": round(c0, 4), "tp1_pp": round(c0, 4)}
        consumed["forward_per_token_bytes"] = round(c1 * GIB)
        consumed["forward_const_gib"] = 0.0
    elif pts:
        per = base["forward_const_gib"] * GIB / 8192  # the H100 set's forward term, read per token
        c0 = statistics.mean(y - per * tok / GIB for tok, y in pts)
        consumed["non_torch_gib"] = {"tp1": round(c0, 4), "tp1_pp": round(c0, 4)}
        consumed["forward_per_token_bytes"] = round(per)
        consumed["forward_const_gib"] = 0.0
        notes.append("0.27+ consumed: one batch size, per-token term from the H100 set")
    else:
        consumed["non_torch_gib"] = {k: base["non_torch_gib"][k] for k in ("tp1", "tp1_pp")}
        consumed["forward_per_token_bytes"] = 0
        consumed["forward_const_gib"] = base["forward_const_gib"]
        notes.append("0.27+ consumed: no case, the H100 (0.19) terms stand in")
    # (E) PCIe communication buffers at TP >= 2 (0.27+ cases, where consumed memory is printed whole)
    comm = []
    for r, t in terms:
        if (
            r["tp"] >= 2
            and r.get("interconnect", "").startswith("pcie")
            and v(r) >= (0, 27, 0)
            and r["start"] == "warm"
            and r.get("kv_cache_gib") is not None
        ):
            st = t["st"]
            extra = (
                t["requested"]
                - st.weights_bytes
                - st.runner_buffers_bytes
                - t["graphs_used"]
                - t["phys"]
                - r["kv_cache_gib"] * GIB
            )
            tp1 = consumed["non_torch_gib"]["tp1"] + consumed["forward_per_token_bytes"] * t["tokens"] / GIB
            comm.append(extra / GIB - tp1 - base["non_torch_comm_gib"]["pcie"]["per_extra_tp"] * (r["tp"] - 2))
    # The buffers themselves are not fitted: NCCL's and custom all-reduce's documented sizes
    # (planner/comm_buffers.py); the PCIe cases above only check them.
    for name, version in (("base", "0.19.0"), ("consumed-0.27", "0.27.0")):
        terms_set = _set(sets, name)
        comm_set = copy.deepcopy(terms_set.get("non_torch_comm_gib") or base["non_torch_comm_gib"])
        for k in comm_buffers.classes():
            comm_set[k]["tp2"] = comm_buffers.tp2_gib(k, version)
        terms_set["non_torch_comm_gib"] = comm_set
    fit_measured_terms.pcie_check = (  # type: ignore[attr-defined]
        f"PCIe TP 2 start-ups attribute {statistics.mean(comm):.3f} GiB to communication buffers; the mechanism "
        f"gives {comm_buffers.tp2_gib('pcie', '0.27.0'):.3f} without P2P, {comm_buffers.tp2_gib('pcie_p2p', '0.27.0'):.3f} with"
        if comm
        else ""
    )
    # (D) cold start: the warm - cold KV difference of the same job
    pairs = []
    for r, t in terms:
        if r["start"] != "cold":
            continue
        warm = next(
            (
                w
                for w, _ in terms
                if w["start"] == "warm"
                and w["model"] == r["model"]
                and w["gpu_class"] == r["gpu_class"]
                and w["vllm_version"] == r["vllm_version"]
                and w["tp"] == r["tp"]
            ),
            None,
        )
        if warm is None:
            continue
        per_token = t["b"].kv_bytes_per_token
        if r.get("kv_cache_gib") is not None and warm.get("kv_cache_gib") is not None:
            delta = warm["kv_cache_gib"] - r["kv_cache_gib"]
        else:
            delta = (warm["kv_cache_tokens"] - r["kv_cache_tokens"]) * per_token / GIB
        pairs.append((t["tokens"], delta))
    if len({p[0] for p in pairs}) > 1:
        c0, c1 = lstsq([[1.0, tok] for tok, _ in pairs], [y for _, y in pairs])
        base["cold_const_gib"], base["cold_per_token_bytes"] = round(c0, 4), round(c1 * GIB)
    elif pairs:
        base["cold_const_gib"], base["cold_per_token_bytes"] = round(statistics.mean(y for _, y in pairs), 4), 0
        notes.append("cold start: one batch size, constant only")
    else:
        base["cold_const_gib"], base["cold_per_token_bytes"] = 0.0, 0
        notes.append("cold start: no pair, none predicted")
    return sets, notes


def write_measured(write: bool) -> int:
    """fit_measured_terms on every start-up benchmarks/accuracy.py replays (twice: the second pass
    sees the first's graph estimates), into profiles/vllm/overheads.yaml."""
    import copy

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


if __name__ == "__main__":
    sys.exit(main())
