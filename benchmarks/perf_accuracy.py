"""Predicted vs measured on every usable row of benchmarks/data/perf/: in-sample (the bundled
coefficients), leave-one-model-out and leave-one-GPU-out (refitted without the held-out rows),
median |error| by set and metric, and the over-KV-capacity rows counted apart (never reported as
a latency).

    python benchmarks/perf_accuracy.py            # the summary table (markdown)
    python benchmarks/perf_accuracy.py --rows     # and every row
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit_perf  # noqa: E402

from planner.perf import coefficients as co  # noqa: E402

METRICS = ("ttft", "tpot", "throughput")


def _median(results, metric, caveated=None, implausible=False):
    e = [
        abs(err[metric])
        for c, err in results
        if metric in err and bool(c.implausible) == implausible and (caveated is None or bool(c.caveats) == caveated)
    ]
    return f"{100 * statistics.median(e):.1f}% ({len(e)})" if e else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", action="store_true", help="print every row's prediction")
    a = ap.parse_args(argv)
    cases, skipped = fit_perf.load_cases()
    sets = {s.name: s for s in co.bundled()}
    print(
        "| set | validation | TTFT | TPOT/ITL | throughput | TTFT, rows without caveats | TPOT, rows without caveats |"
    )
    print("|---|---|---|---|---|---|---|")
    every, odd = [], {}
    for (family, gfam), g in sorted(fit_perf.groups(cases).items()):
        coef = sets[f"{family}-{gfam}"].coefficients
        runs = {
            "in-sample": [(c, fit_perf.errors(c, coef)) for c in g if not c.over_capacity],
            "leave-one-model-out": fit_perf.held_out(g, family, "model"),
        }
        if len({c.gpu for c in g}) > 1:
            runs["leave-one-GPU-out"] = fit_perf.held_out(g, family, "gpu")
        for name, res in runs.items():
            print(
                f"| {family}-{gfam} | {name} | "
                + " | ".join(_median(res, m) for m in METRICS)
                + f" | {_median(res, 'ttft', False)} | {_median(res, 'tpot', False)} |"
            )
        every += [(name, c, e) for name, res in runs.items() for c, e in res]
        odd[f"{family}-{gfam}"] = runs
    _cross_family(cases, sets)
    limited = [c for c in cases if c.over_capacity]
    print(
        f"\nrows used: {len(cases)} ({sum(not c.over_capacity for c in cases)} predicted as latencies, "
        f"{sum(bool(c.implausible) for c in cases)} of them faster than the hardware allows and scored apart; "
        f"{len(limited)} over KV capacity or queued for admission: reported as such, no latency)"
    )
    for reason, n in sorted(skipped.items()):
        print(f"rows not used: {n}: {reason}")
    _limited_table(limited)
    _implausible_table(odd)
    if a.rows:
        for name, c, e in every:
            print(
                name,
                c.id,
                c.gpu,
                f"tp{c.tp}",
                c.input_len,
                c.output_len,
                c.load,
                {k: round(v, 3) for k, v in e.items()},
            )
    return 0


def _cross_family(cases, sets):
    """V0 rows: the Hopper set applied to the A100 rows and back (another GPU family entirely)."""
    v0 = [c for c in cases if c.family == "v0" and not c.over_capacity]
    for src, dst in (("hopper", "ampere"), ("ampere", "hopper")):
        coef = sets.get(f"v0-{src}")
        rows = [c for c in v0 if c.gpu_family == dst]
        if coef and rows:
            res = [(c, fit_perf.errors(c, coef.coefficients)) for c in rows]
            cells = f"- | - | {_median(res, 'throughput')} | - | -"
            print(f"| v0-{src} applied to {dst} | other GPU family (datasheet figures) | {cells} |")


def _implausible_table(runs_by_set):
    """The rows faster than the hardware allows (calibration.implausible_reason): not fitted and not in
    the medians above; their errors here, so that nothing is left out unseen."""
    for name, runs in runs_by_set.items():
        rows = {c.id: c for res in runs.values() for c, _ in res if c.implausible}
        if not rows:
            continue
        print(f"\n{name}: {len(rows)} rows faster than the datasheet allows at 90% of its peaks (not fitted):")
        for split, res in runs.items():
            cells = ", ".join(f"{m} {_median(res, m, implausible=True)}" for m in METRICS)
            print(f"  {split}: median |error| {cells}")
        for c in rows.values():
            print(f"  {c.model} {c.gpu} TP{c.tp} {c.input_len}x{c.output_len} C{c.load}: {c.implausible}")


def _limited_table(limited):
    if not limited:
        return
    print("\nover KV capacity or queued for admission (measured TTFT shows the queue):")
    for c in limited:
        m = ", ".join(f"{k} {v:g}" for k, v in c.measured.items())
        shape = f"{c.model} {c.gpu} TP{c.tp} {c.input_len}x{c.output_len} load {c.load}"
        why = f"admissible {c.admissible}" if c.kv_limited else "measured mostly waiting for admission"
        print(f"  {shape}: {why}; measured {m}")


if __name__ == "__main__":
    sys.exit(main())
