"""Refit the shared coefficients of `planner.overheads` on real vLLM start-ups and write
`profiles/vllm/overheads.yaml`.

    python benchmarks/fit_overheads.py [--calibration ../shared/calibration/vllm-startup-h100.jsonl] [--write]

Only the physics lives in code (which tensors exist at the profile run's peak); this script fits
how many copies of each are alive, by least squares over every model together (never per model):
- activation: max(forward, sampler) with forward = c0 + c1*hidden + c2*mlp and
  sampler = s0 + s1*logits + s2*hidden, fitted by alternating the branch assignment;
- non-torch: the mean growth per layout class (TP 1, TP 1 with PP, TP >= 2);
- CUDA-graph estimate: const + per-layer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from planner.api import inspect, load_model, resolve_dtype  # noqa: E402
from planner.dtypes import torch_dtype_bytes  # noqa: E402
from planner.errors import PlannerError  # noqa: E402
from planner.overheads import GIB, ProfileShape, features  # noqa: E402

DEFAULT_CALIBRATION = REPO.parent / "shared" / "calibration" / "vllm-startup-h100.jsonl"


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
    # H100 with `vllm serve`: max_num_batched_tokens 8192, max_num_seqs 1024 (release defaults).
    tokens, seqs = 8192, 1024
    dtype = resolve_dtype(model.spec, r.get("dtype"))
    return ProfileShape(tokens=tokens, sampler_rows=min(seqs, tokens), tp=r["tp"],
                        dtype_bytes=torch_dtype_bytes(dtype), has_sampler=r["pp"] == 1)


def fit_activation(samples):
    # start: the sampler branch wherever there is a sampler
    branch = ["s" if f.sampler_bytes else "f" for f, _ in samples]
    coef = {}
    for _ in range(20):
        fw = [(f, y) for (f, y), b in zip(samples, branch) if b == "f"]
        sm = [(f, y) for (f, y), b in zip(samples, branch) if b == "s"]
        if fw:
            c = lstsq([[1.0, f.hidden_bytes / GIB, f.mlp_bytes / GIB] for f, _ in fw], [y for _, y in fw])
            coef.update(forward_const_gib=c[0], forward_hidden=c[1], forward_mlp=c[2])
        if sm:
            c = lstsq([[1.0, f.sampler_bytes / GIB, f.hidden_bytes / GIB] for f, _ in sm], [y for _, y in sm])
            coef.update(sampler_const_gib=c[0], sampler_logits=c[1], sampler_hidden=c[2])
        new = []
        for f, _ in samples:
            fwd = coef.get("forward_const_gib", 0) + coef.get("forward_hidden", 0) * f.hidden_bytes / GIB + coef.get("forward_mlp", 0) * f.mlp_bytes / GIB
            smp = coef.get("sampler_const_gib", 0) + coef.get("sampler_logits", 0) * f.sampler_bytes / GIB + coef.get("sampler_hidden", 0) * f.hidden_bytes / GIB
            new.append("s" if f.sampler_bytes and smp >= fwd else "f")
        if new == branch:
            break
        branch = new
    return coef


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION)
    ap.add_argument("--write", action="store_true", help="write profiles/vllm/overheads.yaml")
    a = ap.parse_args(argv)
    act_samples, nt, graphs = [], {"tp1": [], "tp1_pp": [], "tp2": [], "extra": []}, []
    for r, model in cases(a.calibration):
        shape = shape_for(r, model)
        f = features(model.spec, shape)
        if model.spec.vision is None:  # vision dummy runs are fitted separately below
            act_samples.append((f, r["activation_peak_gib"]))
        if r.get("non_torch_gib") is not None:
            key = "tp1" if r["tp"] == 1 and r["pp"] == 1 else "tp1_pp" if r["tp"] == 1 else "tp2" if r["tp"] == 2 else "extra"
            nt[key].append((r["tp"], r["non_torch_gib"]))
        if r.get("cudagraph_gib") is not None:
            graphs.append((model.spec.num_layers / r["pp"], r["cudagraph_gib"]))
    coef = fit_activation(act_samples)
    tp2 = statistics.median(v for _, v in nt["tp2"])
    extra = statistics.median((v - tp2) / (tp - 2) for tp, v in nt["extra"]) if nt["extra"] else 0.0
    g = lstsq([[1.0, n] for n, _ in graphs], [y for _, y in graphs])
    out = {
        **{k: round(v, 4) for k, v in coef.items()},
        "vision": 0.0,
        "non_torch_gib": {"tp1": round(statistics.median(v for _, v in nt["tp1"]), 3),
                          "tp1_pp": round(statistics.median(v for _, v in nt["tp1_pp"]), 3) if nt["tp1_pp"] else 0.0,
                          "tp2": round(tp2, 3), "per_extra_tp": round(extra, 4)},
        "cudagraph_const_gib": round(g[0], 4), "cudagraph_per_layer_gib": round(g[1], 5),
    }
    doc = {"source": f"fit on {a.calibration.name} ({len(act_samples)} text-model start-ups) on {datetime.date.today()}",
           "coefficients": out}
    print(yaml.safe_dump(doc, sort_keys=False))
    if a.write:
        path = REPO / "profiles" / "vllm" / "overheads.yaml"
        header = "# Fitted by benchmarks/fit_overheads.py: shared coefficients of planner/overheads.py (estimates).\n"
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
