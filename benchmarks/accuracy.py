"""Replay every real vLLM start-up of the calibration sets through the planner and print, per case
and in aggregate, the error of weights, activation peak, KV-cache GiB and KV tokens: in-sample, and
cross-validated by leaving one GPU class out and by leaving one source out (the coefficients fitted
on the start-ups are refitted without the held-out cases; see fit_overheads.fit_measured_terms).

    python benchmarks/accuracy.py [--markdown] [--cases] [--write-ranges]

The union of three files, all in benchmarks/data/ so that a clone reproduces the tables:
- calibration/vllm-startup-h100.jsonl: 65 start-ups of vLLM 0.15-0.19 on H100 (llm-d sweep);
- public-startups.jsonl: public logs and the H200 verify runs (public-replay.yaml completes them);
- calibration/vllm-startup-recent.jsonl: 25 start-ups of 0.21-0.30 on other GPUs
  (recent-replay.yaml: which bundled model replays each row, warm or cold, why a row is skipped).

Each case is planned exactly as it ran: same model, GPU total, TP/PP, utilization, max_model_len,
dtype, KV dtype, quantization, release, GPU family and interconnect. A cold row (first start on an
empty compile cache) is compared with the plan's cold figure, a warm one with the warm figure. Where
a row prints no KV GiB, its KV tokens stand in (exactly proportional for the dense models here).
Targets (issue #11): in-sample median |KV error| <= 0.5%, none > 3%; leave-one-GPU-class-out median
<= 3%.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import planner.overheads as oh  # noqa: E402
from planner.calibration import release_for, replay_budget  # noqa: E402
from planner.errors import PlannerError  # noqa: E402
from planner.releases import parse_version  # noqa: E402
from planner.units import GIB  # noqa: E402

DATA = REPO / "benchmarks" / "data"
H100 = DATA / "calibration" / "vllm-startup-h100.jsonl"
PUBLIC = DATA / "public-startups.jsonl"
RECENT = DATA / "calibration" / "vllm-startup-recent.jsonl"


def pct(pred: float, obs: float) -> float:
    return 100.0 * (pred - obs) / obs if obs else float("nan")


def _version(text: str) -> str:
    import re

    return re.match(r"v?(\d+\.\d+\.\d+)", text.strip()).group(1)


def load_cases() -> tuple[list[dict], list[tuple[str, str]]]:
    """Every replayable start-up as a record for planner.calibration, with `set`, `gpu_class`,
    `source` and `start` (warm/cold); and the rows left out, with the reason."""
    cases, skipped = [], []
    for line in H100.read_text().splitlines():
        r = json.loads(line)
        if r.get("kv_cache_gib") is None:
            continue  # a failed start-up
        cases.append(
            {
                **r,
                "set": "h100",
                "gpu_class": "H100",
                "source": "llm-d-sweep",
                # the sweep's logs compile at start-up ('Compiling a graph for compile range (1, 8192)
                # takes N s', 'Cache the graph ... for later use', no 'Directly load ... from the cache')
                "start": "cold",
                "compute_capability": "9.0",
                "interconnect": "nvls",
            }
        )
    overlay = yaml.safe_load((DATA / "public-replay.yaml").read_text())["rows"]
    for line in PUBLIC.read_text().splitlines():
        r = json.loads(line)
        key = Path(r.get("log_file") or "").name
        o = overlay.get(key) or overlay.get("vllm-0.26.0-h200" if key.startswith("vllm-0.26.0-h200") else key)
        if o is None or "skip" in o:
            skipped.append((f"public {key}", (o or {}).get("skip", "no replay entry")))
            continue
        cases.append({**r, **{k: v for k, v in o.items() if k != "why"}, "set": "public"})
    recent = yaml.safe_load((DATA / "calibration" / "recent-replay.yaml").read_text())
    for i, line in enumerate(RECENT.read_text().splitlines(), 1):
        r = json.loads(line)
        o = recent["rows"].get(i, {"skip": "no replay entry"})
        if "skip" in o:
            skipped.append((f"recent line {i} {r['model'][:40]}", o["skip"]))
            continue
        rec = {
            **r,
            **recent["defaults"],
            **{k: v for k, v in o.items() if k != "why"},
            "set": "recent",
            "vllm_version": _version(r["vllm_version"]),
        }
        rec["pp"] = rec.get("pp") or 1
        rec["kv_cache_dtype"] = r.get("kv_cache_dtype") or "auto"
        cases.append(rec)
    return cases, skipped


def label(r: dict) -> str:
    text = (
        f"{r['model']} tp{r['tp']}pp{r['pp']} {r['max_model_len']} {r.get('dtype') or ''} kv={r.get('kv_cache_dtype')} "
        f"q={r.get('quantization') or '-'} v{_version(r['vllm_version'])}"
    )
    if r["set"] != "h100":
        text += f" {r['gpu_class']}"
    if r.get("max_num_seqs") and r["max_num_seqs"] != 1024:
        text += f" seqs={r['max_num_seqs']}"
    text += "".join(f" {k}={v}" for k, v in (r.get("env") or {}).items())
    return text + (" COLD" if r["start"] == "cold" else "")


def replay(r: dict) -> dict:
    """(predicted, observed) per figure; the KV figure is the cold one for a cold row."""
    b = replay_budget(r)
    st = b.stages[0]
    cold = r["start"] == "cold"
    kv_bytes = st.available_kv_bytes
    tokens = b.kv_cache_tokens
    if cold:
        warm_bytes = kv_bytes
        kv_bytes -= getattr(st, "cold_extra_bytes", 0)
        tokens = getattr(b, "kv_cache_tokens_cold", None) or int(tokens * max(kv_bytes, 0) / warm_bytes)
    out = {
        "weights": (round(st.weights_bytes / GIB, 2), r.get("weights_gib")),
        # from 0.27 the printed "peak activation" holds the CUDA-graph estimate too
        "activation": (
            round(
                (
                    st.activation_bytes
                    + (st.cudagraph_bytes if release_for(r).budget_formula == "total_consumed" else 0)
                    + (getattr(st, "cold_extra_bytes", 0) if cold else 0)  # a cold start's peak holds it
                )
                / GIB,
                2,
            ),
            r.get("activation_peak_gib"),
        ),
        "kv_gib": (round(kv_bytes / GIB, 2), r.get("kv_cache_gib")),
        "kv_tokens": (tokens, r.get("kv_cache_tokens")),
        "budget": b,
    }
    kv_obs = r.get("kv_cache_gib")
    out["kv_err"] = pct(kv_bytes / GIB, kv_obs) if kv_obs else pct(tokens, r["kv_cache_tokens"])
    out["kv_err_gib"] = (
        (kv_bytes / GIB - kv_obs) if kv_obs else (tokens - r["kv_cache_tokens"]) * b.kv_bytes_per_token / GIB
    )
    return out


@contextlib.contextmanager
def coefficient_sets(sets: list[dict]):
    """Plan with these overhead sets instead of profiles/vllm/overheads.yaml (a fold's refit)."""
    from planner.overhead_table import table_from_doc

    path = REPO / "profiles" / "vllm" / "overheads.yaml"
    doc = {**yaml.safe_load(path.read_text()), "sets": sets}
    table = table_from_doc(doc, path, oh._first())  # the fold's sets pass the same checks as the file
    saved = oh._table
    oh._table = lambda: table  # type: ignore[assignment]
    oh.coefficients.cache_clear()
    try:
        yield
    finally:
        oh._table = saved
        oh.coefficients.cache_clear()


def raw_sets() -> list[dict]:
    """The coefficient sets of profiles/vllm/overheads.yaml as plain dicts (what the refit edits)."""
    return copy.deepcopy(yaml.safe_load((REPO / "profiles" / "vllm" / "overheads.yaml").read_text())["sets"])


def replay_all(cases: list[dict]) -> list[tuple[dict, dict | None, str | None]]:
    out = []
    for r in cases:
        try:
            out.append((r, replay(r), None))
        except PlannerError as exc:
            out.append((r, None, str(exc)))
    return out


def cross_validate(cases: list[dict], key: str) -> tuple[dict[int, float], list[str]]:
    """Hold out each value of `key` (gpu_class or source) in turn, refit the measured terms on the
    rest, replay the held-out cases. Returns {case index: KV error %} and the fold notes."""
    from fit_measured import fit_measured_terms

    base_sets = raw_sets()
    errors, errors_gib, notes = {}, {}, []
    for held in sorted({r[key] for r in cases}):
        train = [r for r in cases if r[key] != held]
        sets, fold_notes = fit_measured_terms(train, base_sets)
        with coefficient_sets(sets):
            for i, r in enumerate(cases):
                if r[key] == held:
                    try:
                        res = replay(r)
                        errors[i] = res["kv_err"]
                        errors_gib[i] = res["kv_err_gib"]
                    except PlannerError:
                        pass
        notes.append(f"{held}: " + ("; ".join(fold_notes) or "every measured term refitted"))
    cross_validate.gib = errors_gib  # type: ignore[attr-defined]
    return errors, notes


CATALOGUE = {
    "H100": ["H100-SXM-80GB"],
    "H200": ["H200"],
    "A100": ["A100-40GB-SXM", "A100-80GB-SXM"],
    "L4": ["L4"],
    "A10": ["A10"],
    "GH200": ["GH200"],
    "RTX-A6000": ["RTX-A6000"],
    "RTX-A5000": ["RTX-A5000"],
}
"""The catalogue names (profiles/gpus.yaml) each GPU class of the start-ups stands for."""
FAMILIES = [("0.10.0", "0.20.0"), ("0.20.0", "0.27.0"), ("0.27.0", None)]
"""Release families of the ranges: the estimate-free budget (to 0.19), the V1 graph estimate
(0.20-0.26), the consumed-memory formula and the V2 runner's estimate (0.27+)."""


def _has_cold_term(r: dict) -> bool:
    c = oh.coefficients(_version(r["vllm_version"]))
    return bool(c.cold_const_gib or c.cold_per_token_bytes)


def write_ranges(ok: list, errors_gib: dict[int, float]) -> None:
    """profiles/vllm/uncertainty.yaml from the held-out errors in GiB, per family: each start-up's larger
    miss with its GPU class left out or with its source left out."""
    fams = []
    for lo, hi in FAMILIES:
        inside = lambda r: (
            parse_version(lo) <= parse_version(_version(r["vllm_version"]))
            and (  # noqa: E731
                hi is None or parse_version(_version(r["vllm_version"])) < parse_version(hi)
            )
        )
        idx = [k for k, (_, r, _) in enumerate(ok) if inside(r) and k in errors_gib]
        # a cold start of a release with no cold-start term is planned by the warm figure too
        warm_like = lambda r: r["start"] == "warm" or not _has_cold_term(r)  # noqa: E731
        warm = sorted(abs(errors_gib[k]) for k in idx if warm_like(ok[k][1]) and ok[k][1]["tp"] == 1)
        warm_tp = sorted(abs(errors_gib[k]) for k in idx if warm_like(ok[k][1]) and ok[k][1]["tp"] > 1)
        cold = sorted(abs(errors_gib[k]) for k in idx if ok[k][1]["start"] == "cold" and _has_cold_term(ok[k][1]))
        bound = lambda e: max(0.05, e[-1] if len(e) < 10 else e[int(0.9 * (len(e) - 1))]) if e else None  # noqa: E731
        err = bound(warm) or 0.5
        tp_err = max(bound(warm_tp) or err, err)
        family_cold = _has_cold_term({"vllm_version": lo})
        cold_err = bound(cold) or (round(err + 0.5, 3) if family_cold else err)
        gpus = sorted({n for k in idx for n in CATALOGUE.get(ok[k][1]["gpu_class"], [ok[k][1]["gpu_class"]])})
        links = sorted({ok[k][1].get("interconnect") or "nvls" for k in idx if ok[k][1]["tp"] > 1})
        fam = {
            "from": lo,
            **({"until": hi} if hi else {}),
            "error_gib": round(err, 3),
            "tp_error_gib": round(tp_err, 3),
            "cold_error_gib": round(cold_err, 3),
            "cases": len(warm),
            "tp_cases": len(warm_tp),
            "cold_cases": len(cold),
            "gpus": gpus,
            "interconnects": links,
            "source": f"held-out KV error (the larger of leave-one-GPU-class-out and leave-one-source-out) "
            f"of {len(warm)} warm TP 1, {len(warm_tp)} warm TP > 1 "
            f"(tp_error_gib, at least error_gib) and {len(cold)} cold start-ups "
            f"({'max' if len(warm) < 10 else '90th percentile'}, at least 0.05 GiB); "
            + (
                "no cold-start term in this family (its cold start-ups counted with the warm): the warm error"
                if not family_cold
                else ("no cold start-up: warm error + 0.5 GiB" if not cold else "cold: the same on the cold rows")
            ),
        }
        fams.append(fam)
    path = REPO / "profiles" / "vllm" / "uncertainty.yaml"
    header = (
        "# Written by benchmarks/accuracy.py --write-ranges: the KV-cache range of a plan, +- error_gib per GPU,\n"
        "# from cross-validated error on real start-ups (planner/uncertainty.py). outside_factor widens it where\n"
        "# the plan's release, GPU or TP interconnect has no start-up in the family.\n"
    )
    path.write_text(header + yaml.safe_dump({"outside_factor": 2.0, "families": fams}, sort_keys=False))
    print(f"wrote {path}")


def _fmt(pair, digits=2, thousands=False):
    pred, obs = pair
    if obs is None:
        return (f"{pred:,}/-" if thousands else f"{pred:.{digits}f}/-"), "-"
    text = f"{pred:,}/{obs:,}" if thousands else f"{pred:.{digits}f}/{obs:.{digits}f}"
    return text, f"{pct(pred, obs):+.2f}%"


def _stats(errs: list[float]) -> str:
    a = [abs(e) for e in errs]
    if not a:
        return "no cases"
    over3, over8 = sum(e > 3 for e in a), sum(e > 8 for e in a)
    return f"median {statistics.median(a):.2f}%, max {max(a):.2f}%, over 3%: {over3}, over 8%: {over8} (n={len(a)})"


def main(argv=None) -> int:
    """The shared terms only: a calibration overlay in the user's config folder is not read."""
    from planner import overlay

    with overlay.suspended():
        return _main(argv)


def _main(argv=None) -> int:
    from tabulate import tabulate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the README)")
    ap.add_argument("--cases", action="store_true", help="print the per-case table (in-sample)")
    ap.add_argument("--no-cv", action="store_true", help="skip the cross-validation")
    ap.add_argument(
        "--write-ranges", action="store_true", help="write profiles/vllm/uncertainty.yaml from the CV errors"
    )
    a = ap.parse_args(argv)
    fmt = "github" if a.markdown else "simple"
    cases, skipped = load_cases()
    results = replay_all(cases)
    if a.cases:
        table = []
        for r, res, err in results:
            if res is None:
                table.append([label(r), "-", "-", "-", "-", "-", "-", f"not replayed: {err}"])
                continue
            w, we = _fmt(res["weights"])
            act, _ = _fmt(res["activation"])
            kv, kve = _fmt(res["kv_gib"])
            tok, toke = _fmt(res["kv_tokens"], thousands=True)
            table.append([label(r), w, we, act, kv, kve, tok, toke])
        print(
            tabulate(
                table,
                headers=[
                    "case",
                    "weights GiB pred/obs",
                    "err",
                    "activation GiB",
                    "KV GiB pred/obs",
                    "err",
                    "KV tokens pred/obs",
                    "err",
                ],
                tablefmt=fmt,
                disable_numparse=True,
            )
        )
        print()
    ok = [(i, r, res) for i, (r, res, _) in enumerate(results) if res is not None]
    insample = {i: res["kv_err"] for i, r, res in ok}
    cv, cv_gib = {}, {}
    if not a.no_cv:
        for key in ("gpu_class", "source"):
            cv[key] = cross_validate([r for _, r, _ in ok], key)
            cv_gib[key] = dict(cross_validate.gib)  # type: ignore[attr-defined]
        if a.write_ranges:  # a user's start-up is unseen by GPU class and by source alike: the larger miss
            write_ranges(
                ok,
                {
                    k: max(cv_gib["gpu_class"].get(k, 0.0), cv_gib["source"].get(k, 0.0), key=abs)
                    for k in cv_gib["gpu_class"].keys() | cv_gib["source"].keys()
                },
            )
    new = lambda r: parse_version(_version(r["vllm_version"])) >= (0, 27, 0)  # noqa: E731
    groups = [
        ("all", lambda r: True),
        ("H100 set (0.15-0.19)", lambda r: r["set"] == "h100"),
        ("other GPUs, <= 0.26", lambda r: r["set"] != "h100" and not new(r)),
        ("0.27-0.30, warm", lambda r: new(r) and r["start"] == "warm"),
        ("0.27-0.30, cold", lambda r: new(r) and r["start"] == "cold"),
    ]
    rows = []
    for name, pick in groups:
        idx = [k for k, (i, r, _) in enumerate(ok) if pick(r)]
        row = [name, _stats([insample[ok[k][0]] for k in idx])]
        for key in ("gpu_class", "source"):
            if key in cv:
                row.append(_stats([cv[key][0][k] for k in idx if k in cv[key][0]]))
        rows.append(row)
    headers = ["KV-cache error (absolute)", "in-sample"] + (
        ["leave one GPU class out", "leave one source out"] if cv else []
    )
    print(tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True))
    w = [abs(pct(*res["weights"])) for _, _, res in ok if res["weights"][1]]
    print(f"\nweights |error|: median {statistics.median(w):.2f}%, max {max(w):.2f}% (n={len(w)})")
    print(f"cases replayed: {len(ok)}; rows left out: {len(skipped) + len(results) - len(ok)}")
    if not a.cases:
        worst = sorted(ok, key=lambda t: -abs(insample[t[0]]))[:8]
        print("\nlargest in-sample KV errors:")
        for i, r, res in worst:
            line = f"  {insample[i]:+6.2f}%  {label(r)}"
            for key in cv:
                k = next(k for k, t in enumerate(ok) if t[0] == i)
                if k in cv[key][0]:
                    line += f"   [{key} out: {cv[key][0][k]:+.2f}%]"
            print(line)
    if "gpu_class" in cv:
        errs = cv["gpu_class"][0]
        print("\nlargest leave-one-GPU-class-out KV errors:")
        for k in sorted(errs, key=lambda k: -abs(errs[k]))[:6]:
            print(f"  {errs[k]:+6.2f}%  {label(ok[k][1])}  [in-sample {insample[ok[k][0]]:+.2f}%]")
    for key, (_, notes) in cv.items():
        print(f"\nfolds by {key}:")
        for n in notes:
            print(f"  {n}")
    for what, why in skipped:
        print(f"left out: {what}: {why}")
    for r, res, err in results:
        if res is None:
            print(f"not replayed: {label(r)}: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
