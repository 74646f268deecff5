"""Fit the step model's coefficients per vLLM release family x GPU family on the measured rows,
and write profiles/perf/coefficients.yaml with provenance and the held-out (leave-one-model-out)
error bands the `perf` command prints as ranges.

    python benchmarks/fit_perf.py            # writes profiles/perf/coefficients.yaml
    python benchmarks/fit_perf.py --check    # fits and prints, writes nothing

Data: benchmarks/data/perf/vllm-measured.jsonl (copied from ../shared/perf, sources in
SOURCE-README.md) and benchmarks/data/perf/rows.yaml (how rows map onto bundled models).
Rows whose KV pool cannot hold the load (over KV capacity) are not fitted: they queue or preempt.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from planner.hardware import load_catalogue  # noqa: E402
from planner.perf import calibration as cal  # noqa: E402
from planner.perf import fitting  # noqa: E402
from planner.perf.step import Coefficients  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "perf"
OUT = ROOT / "profiles" / "perf" / "coefficients.yaml"
# The all-reduce latency and the request overhead are fitted only where rows pin them: the V0
# offline batches have no API in the loop and (here) no TP > 1 rows on most models.
USED = {"v1": fitting.FITTED, "v0": fitting.FITTED[:4]}


def load_cases() -> tuple[list[cal.Case], dict[str, int]]:
    rows = [json.loads(line) for line in (DATA / "vllm-measured.jsonl").read_text().splitlines() if line.strip()]
    mapping = yaml.safe_load((DATA / "rows.yaml").read_text())
    return cal.cases(rows, mapping, load_catalogue())


def groups(cases: list[cal.Case]) -> dict[tuple[str, str], list[cal.Case]]:
    out: dict[tuple[str, str], list[cal.Case]] = {}
    for c in cases:
        out.setdefault((c.family, c.gpu_family), []).append(c)
    return out


def fit_group(cases: list[cal.Case], family: str) -> Coefficients:
    """Fitted on the rows predicted as latencies that the hardware can physically run (see
    calibration.implausible_reason: those are scored apart, not fitted)."""
    return fitting.fit([c for c in cases if not (c.over_capacity or c.implausible)], USED[family])


def errors(case: cal.Case, coef: Coefficients) -> dict[str, float]:
    """measured / predicted - 1 per metric: ttft, tpot, throughput (closed-loop rows: derived from
    the measured TTFT and TPOT as concurrency / e2e; static rows: the batch's tokens / wall time)."""
    p = cal.predict(case, coef)
    if case.kind == "static":
        return {"throughput": p["latency_s"] / case.measured["latency_s"] - 1}
    m, o = case.measured, case.output_len
    e2e_m, e2e_p = m["ttft_ms"] + (o - 1) * m["tpot_ms"], p["ttft_ms"] + (o - 1) * p["tpot_ms"]
    return {
        "ttft": m["ttft_ms"] / p["ttft_ms"] - 1,
        "tpot": m["tpot_ms"] / p["tpot_ms"] - 1,
        "throughput": e2e_p / e2e_m - 1,
    }


def held_out(cases: list[cal.Case], family: str, key: str = "model") -> list[tuple[cal.Case, dict[str, float]]]:
    """Leave one `key` (model or gpu) out: fit on the others, predict the held-out rows."""
    out = []
    for value in sorted({getattr(c, key) for c in cases}):
        train = [c for c in cases if getattr(c, key) != value]
        if not [c for c in train if not (c.over_capacity or c.implausible)]:
            continue
        coef = fit_group(train, family)
        out += [(c, errors(c, coef)) for c in cases if getattr(c, key) == value and not c.over_capacity]
    return out


def bands(results: list[tuple[cal.Case, dict[str, float]]]) -> dict[str, Any]:
    out = {}
    for metric in ("ttft", "tpot", "throughput"):
        e = sorted(err[metric] for c, err in results if metric in err and not c.implausible)
        if len(e) < 5:
            continue
        q = statistics.quantiles(e, n=10)
        out[metric] = {
            "median_abs": round(statistics.median(abs(x) for x in e), 4),
            "p10": round(q[0], 4),
            "p90": round(q[-1], 4),
            "rows": len(e),
        }
    return out


def describe(cases: list[cal.Case]) -> str:
    models = sorted({c.model for c in cases})
    subsets = sorted({c.subset for c in cases})
    fitted = sum(not (c.over_capacity or c.implausible) for c in cases)
    odd = sum(bool(c.implausible) for c in cases)
    return (
        f"{fitted} rows of {', '.join(subsets)} "
        f"({len(cases) - fitted - odd} over KV capacity or queued for admission, {odd} faster than the "
        f"hardware allows: not fitted); "
        f"models: {', '.join(models)}"
    )


def coefficient_sets(cases: list[cal.Case], mapping_families: dict[str, Any]) -> list[dict[str, Any]]:
    sets = []
    for (family, gfam), g in sorted(groups(cases).items()):
        coef = fit_group(g, family)
        fam = mapping_families[family]
        sets.append(
            {
                "name": f"{family}-{gfam}",
                "release_family": family,
                "releases": {"first": fam["first"], "last": fam.get("last")},
                "engine": fam["engine"],
                "gpu_family": gfam,
                "fitted_releases": sorted({c.version for c in g}),
                "fitted_gpus": sorted({c.gpu for c in g}),
                "fitted_on": describe(g),
                "coefficients": {k: round(getattr(coef, k), 6) for k in fitting.FITTED}
                | {"link_fraction": coef.link_fraction},
                "fitted": list(USED[family]),
                "held_out_error": bands(held_out(g, family)),
            }
        )
    return sets


HEADER = """\
# Performance coefficients of the step model (planner/perf/step.py), one set per vLLM release
# family x GPU family. Written by benchmarks/fit_perf.py from benchmarks/data/perf/ (public measured
# rows, sources in SOURCE-README.md); do not edit by hand, rerun the script.
#   coefficients      the fitted constants (`fitted` lists which; the rest keep their start values)
#   held_out_error    leave-one-model-out error, measured / predicted - 1: the ranges `perf` prints
#   fitted_releases   the releases the rows were measured on; other releases of the family are
#                     reported as extrapolated, as are GPUs not in fitted_gpus
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fit and print; write nothing")
    a = ap.parse_args(argv)
    cases, skipped = load_cases()
    mapping = yaml.safe_load((DATA / "rows.yaml").read_text())
    doc = {
        "schema_version": 1,
        "data": "benchmarks/data/perf/vllm-measured.jsonl",
        "rows_used": len(cases),
        "rows_not_used": skipped,
        "sets": coefficient_sets(cases, mapping["families"]),
    }
    text = HEADER + yaml.safe_dump(doc, sort_keys=False, width=110)
    if a.check:
        print(text)
    else:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text)
        print(f"wrote {OUT.relative_to(ROOT)}: {len(doc['sets'])} sets from {len(cases)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
