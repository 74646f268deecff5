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
    2. forward: stages without a sampler: act - (2*hidden + mlp) = per_token x tokens (the forward
       pass's other transients - attention projections and outputs, compile and allocator workspaces -
       grow with the profile's tokens; the H100 set runs one token count, and the 0.30 start-ups at
       2,048 and 8,192 tokens leave no constant: fit_measured's consumed-0.27 term);
    3. MoE workspace: MoE models, (act - dense prediction) / workspace."""
    dense_sampler = [
        (f, y) for f, y, b16 in samples if f.sampler_bytes and not f.moe_workspace_bytes and b16 and not f.vision_bytes
    ]
    c = lstsq(
        [[1.0, f.sampler_bytes / GIB, f.hidden_bytes / GIB] for f, _ in dense_sampler], [y for _, y in dense_sampler]
    )
    coef = {"sampler_const_gib": c[0], "sampler_logits": c[1], "sampler_hidden": c[2]}
    forward = [(y * GIB - 2 * f.hidden_bytes - f.mlp_bytes) / f.tokens for f, y, _ in samples if not f.sampler_bytes]
    coef["forward_const_gib"] = 0.0
    coef["forward_per_token_bytes"] = round(statistics.median(forward)) if forward else 0
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
        from fit_measured import write_measured

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
        "vision_blocks": current["vision_blocks"],
    }
    print(yaml.safe_dump(doc, sort_keys=False))
    if a.write:
        header = "# Fitted by benchmarks/fit_overheads.py: shared coefficients of planner/overheads.py (estimates).\n"
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
