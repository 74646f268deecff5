"""Per start-up, the budget's terms as modelled beside what the log printed, for the start-ups of the
recent log format (0.2x: "Desired GPU memory utilization is (u, R GiB). Actual usage is A GiB for consumed
memory (weights + non-torch), P GiB for peak activation, ..."), in-sample and with the start-up's source
held out (the measured terms refitted without it, as accuracy.py's leave-one-source-out does).

    python benchmarks/term_breakdown.py [--from 0.27.0]

Columns (GiB): consumed = what the 0.27+ formula charges as the free-memory drop (modelled: weights, the
V2 runner's buffers and non-torch; printed: R - P - KV, the identity every full log closes); peak = the
transient headroom plus the CUDA-graph estimate (modelled: activation, estimate and, for a cold row, the
cold-start extra); est = the CUDA-graph estimate (printed where the log has it); pool = the captured pool
the log printed (not a budget term); kv = KV GiB and its error. Shows which term misses where, which the
KV error alone hides (two terms can miss in opposite directions and leave the KV right).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import accuracy as acc  # noqa: E402
from tabulate import tabulate  # noqa: E402

from planner.releases import parse_version  # noqa: E402
from planner.units import GIB  # noqa: E402


def row(r: dict) -> list[str]:
    """One start-up's modelled/printed terms under the coefficients in force."""
    res = acc.replay(r)
    st = res["budget"].stages[0]
    cold = getattr(st, "cold_extra_bytes", 0) if r["start"] == "cold" else 0
    consumed = (st.weights_bytes + st.runner_buffers_bytes + st.non_torch_bytes) / GIB
    peak = (st.activation_bytes + max(st.cudagraph_bytes, 0) + cold) / GIB
    req, p, kv = r.get("requested_gib"), r.get("activation_peak_gib"), r.get("kv_cache_gib")
    printed = req - p - kv if None not in (req, p, kv) else None
    pair = lambda m, o: f"{m:.2f}/{o:.2f}" if o is not None else f"{m:.2f}/-"  # noqa: E731
    return [
        acc.label(r)[:70],
        pair(consumed, printed),
        pair(peak, p),
        pair(max(st.cudagraph_bytes, 0) / GIB, r.get("cudagraph_estimate_gib")),
        "-" if r.get("cudagraph_gib") is None else f"{r['cudagraph_gib']:.2f}",
        f"{res['kv_gib'][0]:.2f}",
        f"{res['kv_err']:+.2f}%",
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="since", default="0.27.0", help="first release shown (default 0.27.0)")
    a = ap.parse_args(argv)
    from fit_measured import fit_measured_terms

    cases, _ = acc.load_cases()
    shown = [
        r
        for r in cases
        if r["set"] == "recent" and parse_version(acc._version(r["vllm_version"])) >= parse_version(a.since)
    ]
    head = ["case", "consumed m/p", "peak m/p", "est m/p", "pool p", "kv m", "kv err"]
    print("in-sample")
    print(tabulate([row(r) for r in shown], head, disable_numparse=True))
    base = acc.raw_sets()
    for source in sorted({r["source"] for r in shown}):
        sets, notes = fit_measured_terms([r for r in cases if r["source"] != source], base)
        with acc.coefficient_sets(sets):
            rows = [row(r) for r in shown if r["source"] == source]
        print(f"\nsource {source} held out ({'; '.join(notes) or 'every measured term refitted'})")
        print(tabulate(rows, head, disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
