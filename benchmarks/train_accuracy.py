"""Predicted vs measured training memory on published runs (benchmarks/data/training/).

    python benchmarks/train_accuracy.py [--json] [--breakdown]

For a measured peak: the planner's reserved footprint per GPU against the measured figure (the
middle of a published range; inside the range counts as 0%). For a longest context: the planner's
`max_seq_len` against the one reached. For an OOM: whether the planner says it fits. Prints every
record, the median and worst absolute error, every "fits" the measurement contradicts (a run that
used more than the card, or an OOM) and every "does not fit" it contradicts (a run that fitted its
card, or a longest context the planner puts below the one reached); `--breakdown` splits each
measured peak into the planner's parts beside the measurement. None of these records was used to set
a constant: all are held out, so leaving one source out (`by_source`: each publisher's records
replayed with the others' in hand) gives the same figures as the plain replay. The constants the
model does take from measurements come from sources outside this set
(profiles/training/frameworks.yaml names them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from planner.api import load_model  # noqa: E402
from planner.hardware import load_catalogue  # noqa: E402
from planner.training import TrainingConfig, estimate_training, load_training_profile  # noqa: E402
from planner.units import GIB  # noqa: E402

DATA = REPO / "benchmarks" / "data" / "training" / "published-runs.jsonl"


def records() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def _model(ref: str):
    path = REPO / ref
    return load_model(str(path) if path.exists() else ref)


def replay(rec: dict) -> dict:
    model = _model(rec["model"])
    gpu = load_catalogue().get(rec["gpu"]) if rec.get("gpu") else None
    mem = gpu.memory_bytes if gpu else None
    if rec.get("card_gib"):  # a card the catalogue lacks, as torch reports its total memory
        mem = int(rec["card_gib"] * GIB)
    if rec.get("torch_memory_gib"):  # torch's allocator capped: the card holds the cap and the CUDA context
        mem = int((rec["torch_memory_gib"] + load_training_profile().reserved.cuda_context_gib) * GIB)
    settings = dict(rec["settings"])
    if gpu is not None and gpu.interconnect_class and "interconnect" not in settings:
        settings["interconnect"] = gpu.interconnect_class  # how the catalogue GPU's ranks talk (NCCL's memory)
    if rec["kind"] == "oom":
        settings["seq_len"] = rec["seq_len"]
    e = estimate_training(model.spec, model.tensors, TrainingConfig(**settings), gpu_memory_bytes=mem, with_fixes=False)
    out = {"id": rec["id"], "kind": rec["kind"], "gpu": rec.get("gpu") or rec.get("torch_memory_gib")}
    if rec["kind"] == "peak":
        out["breakdown_gib"] = breakdown(e)
        lo, hi = rec["measured_gib"]
        pred = _predicted_peak(e, rec.get("peak", "nvidia-smi")) / GIB
        ref = (lo + hi) / 2
        err = 0.0 if lo <= pred <= hi else (pred - ref) / ref
        out |= {
            "peak": {"nvidia-smi": "reserved", "torch_reserved": "torch-rsv", "torch_allocated": "torch-alc"}[
                rec.get("peak", "nvidia-smi")
            ],
            "predicted_gib": round(pred, 2),
            "measured_gib": rec["measured_gib"],
            "error": err,
            "allocated_gib": round(e.total_bytes / GIB, 2),
            "bad_fit": bool(mem and e.fits and hi * GIB > mem),
            "ran_but_no_fit": bool(mem and not e.fits and hi * GIB <= mem),
        }
    elif rec["kind"] == "max_seq_len":
        pred = e.max_seq_len or 0
        out |= {
            "predicted_tokens": pred,
            "measured_tokens": rec["measured_tokens"],
            "error": (pred - rec["measured_tokens"]) / rec["measured_tokens"],
            "bad_fit": pred > rec["measured_tokens"] * 1.0,
            "ran_but_no_fit": pred < rec["measured_tokens"],
        }
    else:
        out |= {"predicted_fits": e.fits, "error": None, "bad_fit": bool(e.fits), "ran_but_no_fit": False}
    return out


def _predicted_peak(e, peak: str) -> int:
    """The planner's figure for the peak a source measured: nvidia-smi (the reserved footprint, the
    default), torch_reserved (max_memory_reserved: without the CUDA context and NCCL's buffers) or
    torch_allocated (max_memory_allocated)."""
    if peak == "torch_allocated":
        return e.total_bytes
    outside = sum(v for k, v in e.reserved_breakdown.items() if k.startswith(("CUDA context", "NCCL")))
    return e.reserved_bytes - (outside if peak == "torch_reserved" else 0)


def breakdown(e) -> dict[str, float]:
    """The planner's parts of a peak per GPU (GiB): model states by kind, what the peak phase adds
    (activations, the loss's tensors, communication buffers and other transients) and the reserved
    overhead (allocator cache, CUDA context, NCCL)."""
    st, g = e.states, lambda n: round(n / GIB, 2)
    phase = max(e.phase_bytes, key=e.phase_bytes.get)
    act = e.activation_breakdown
    loss = act.get("loss and final norm", 0)
    out = {
        "weights": g(st.weights + st.master_weights + st.quantized_base + st.quant_scales + st.adapter_weights),
        "optimizer": g(st.optimizer + st.adapter_optimizer),
        "gradients (all)": g(st.gradients + st.adapter_gradients),
        "activations held (all)": g(e.activation_bytes - loss),
        "logits/loss held": g(loss),
        "comm buffers": g(e.comm_buffer_bytes),
        "temporaries (loss backward / workspace / dequant / comm)": g(e.temporary_bytes),
        f"peak phase ({phase}) over the persistent states": g(e.phase_bytes[phase]),
        "allocated peak": g(e.total_bytes),
    }
    return out | {k.removesuffix(" (est.)"): g(v) for k, v in e.reserved_breakdown.items() if "allocated" not in k}


def source_of(rec: dict) -> str:
    """The publisher a record comes from (its `publisher`, else the URL's host)."""
    return rec.get("publisher") or rec["url"].removeprefix("https://").partition("/")[0]


def summary(rows: list[dict]) -> dict:
    errs = [abs(r["error"]) for r in rows if r["error"] is not None]
    return {
        "records": len(rows),
        "median_abs_error": statistics.median(errs) if errs else None,
        "worst_abs_error": max(errs) if errs else None,
        "fits_contradicted_by_measurement": [r["id"] for r in rows if r["bad_fit"]],
        "no_fit_where_the_run_fitted": [r["id"] for r in rows if r["ran_but_no_fit"]],
    }


def by_source(recs: list[dict], rows: list[dict]) -> dict[str, dict]:
    """Leave-one-source-out: each source's records as the held-out set. No constant is fitted on
    these records, so a held-out replay is the plain one."""
    out: dict[str, list[dict]] = {}
    for rec, row in zip(recs, rows, strict=True):
        out.setdefault(source_of(rec), []).append(row)
    return {k: summary(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--breakdown", action="store_true", help="each measured peak's parts as the planner has them")
    a = p.parse_args(argv)
    recs = records()
    rows = [replay(r) for r in recs]
    s, per_source = summary(rows), by_source(recs, rows)
    if a.json:
        print(json.dumps({"rows": rows, "summary": s, "by_source": per_source}, indent=2))
        return 0
    for r in rows:
        if r["kind"] == "peak":
            what = f"{r['peak'][:9]:9s} {r['predicted_gib']:7.2f} GiB vs measured {r['measured_gib']}"
        elif r["kind"] == "max_seq_len":
            what = f"max seq {r['predicted_tokens']:>7,} vs measured {r['measured_tokens']:,}"
        else:
            what = f"planner says fits={r['predicted_fits']} where the run OOMed"
        err = "" if r["error"] is None else f"{100 * r['error']:+6.1f}%"
        print(f"{r['id']:40s} {what:52s} {err}{'  FITS-BUT-OOM' if r['bad_fit'] else ''}")
        if a.breakdown and r["kind"] == "peak":
            for k, v in r["breakdown_gib"].items():
                print(f"    {k:60s} {v:8.2f}")
            print(
                f"    {'measured minus predicted reserved':60s} {sum(r['measured_gib']) / 2 - r['predicted_gib']:8.2f}"
            )
    for src, x in per_source.items():
        med = "-" if x["median_abs_error"] is None else f"{100 * x['median_abs_error']:.1f}%"
        worst = "-" if x["worst_abs_error"] is None else f"{100 * x['worst_abs_error']:.1f}%"
        print(f"held out {src}: {x['records']} records, median |error| {med}, worst {worst}")
    print(
        f"median |error| {100 * s['median_abs_error']:.1f}%, worst {100 * s['worst_abs_error']:.1f}% over "
        f"{s['records']} records; fits the measurement contradicts: {s['fits_contradicted_by_measurement'] or 'none'}"
    )
    ran = s["no_fit_where_the_run_fitted"]
    print(
        f"'does not fit' where the run fitted (conservative; a longest context below the one reached counts): "
        f"{len(ran)} of {s['records']}{': ' + ', '.join(ran) if ran else ''}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
