"""Replay every real vLLM start-up of the calibration set through the planner and print, per case
and in aggregate, the error of weights, activation peak, KV-cache GiB and KV tokens.

    python benchmarks/accuracy.py [--calibration PATH] [--markdown]

Each case is planned exactly as it ran: same model, GPU total, TP/PP, utilization, max_model_len,
dtype, KV dtype, quantization and vLLM release. Targets (issue #3): median |KV-cache error| < 0.5%,
no case over 3%.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from planner.calibration import replay  # noqa: E402
from planner.errors import PlannerError  # noqa: E402

DEFAULT = REPO.parent / "shared" / "calibration" / "vllm-startup-h100.jsonl"
INDEPENDENT = REPO / "benchmarks" / "data" / "public-startups.jsonl"


def pct(pred: float, obs: float) -> float:
    return 100.0 * (pred - obs) / obs if obs else float("nan")


def _fmt(pair, digits=2, thousands=False):
    pred, obs = pair
    if obs is None:
        return f"{pred:,.{digits}f}/-" if not thousands else f"{pred:,}/-", "-"
    text = f"{pred:,}/{obs:,}" if thousands else f"{pred:.{digits}f}/{obs:.{digits}f}"
    return text, f"{pct(pred, obs):+.2f}%"


def replay_file(path: Path, require_gpu: bool) -> tuple[list, list]:
    rows, skipped = [], []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("kv_cache_gib") is None or (require_gpu and not (r.get("gpu_total_gib") or r.get("gpu_catalogue"))):
            continue  # a failed start-up, or a log that does not say which GPU: nothing to compare
        label = f"{r['model']} tp{r['tp']}pp{r['pp']} {r['max_model_len']} {r.get('dtype') or ''} kv={r.get('kv_cache_dtype')} q={r.get('quantization') or '-'} {r['vllm_version'].split()[0]}"
        if require_gpu:
            label += f" {r.get('gpu_catalogue') or r.get('gpu')}"
        if r.get("max_num_seqs") and r["max_num_seqs"] != 1024:
            label += f" seqs={r['max_num_seqs']}"
        label += "".join(f" {k}={v}" for k, v in (r.get("env") or {}).items())
        try:
            rows.append((label, replay(r)))
        except PlannerError as exc:
            skipped.append((label, str(exc)))
    return rows, skipped


def report(rows: list, skipped: list, markdown: bool) -> None:
    from tabulate import tabulate

    table = []
    for label, res in rows:
        w, we = _fmt(res["weights"])
        act, _ = _fmt(res["activation"])
        kv, kve = _fmt(res["kv_gib"])
        tok, toke = _fmt(res["kv_tokens"], thousands=True)
        table.append([label, w, we, act, kv, kve, tok, toke])
    headers = ["case", "weights GiB pred/obs", "err", "activation GiB", "KV GiB pred/obs", "err", "KV tokens pred/obs", "err"]
    print(tabulate(table, headers=headers, tablefmt="github" if markdown else "simple", disable_numparse=True))

    def errs(key, absolute=False):
        vals = [res[key] for _, res in rows if res[key][1] is not None]
        return [abs(p - o) if absolute else abs(pct(p, o)) for p, o in vals] or [float("nan")]

    kv_err, tok_err, w_err, act_err = errs("kv_gib"), errs("kv_tokens"), errs("weights"), errs("activation", True)
    print()
    print(f"cases replayed: {len(rows)}; not replayed (model not bundled or not modelled): {len(skipped)}")
    print(f"KV-cache GiB  |error|: median {statistics.median(kv_err):.2f}%, max {max(kv_err):.2f}%, over 3%: {sum(e > 3 for e in kv_err)}")
    print(f"KV tokens     |error|: median {statistics.median(tok_err):.2f}%, max {max(tok_err):.2f}%")
    print(f"weights       |error|: median {statistics.median(w_err):.2f}%, max {max(w_err):.2f}%")
    print(f"activation    |error|: median {statistics.median(act_err):.3f} GiB, max {max(act_err):.3f} GiB")
    for label, why in skipped:
        print(f"skipped: {label}: {why}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=Path, default=DEFAULT)
    ap.add_argument("--independent", type=Path, default=INDEPENDENT,
                    help="real start-up logs of other GPUs and releases, outside the calibration fit")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the README)")
    a = ap.parse_args(argv)
    report(*replay_file(a.calibration, require_gpu=False), a.markdown)
    if a.independent.is_file():
        print("\nOther start-up logs (benchmarks/data/public-startups.jsonl): not in the calibration fit; the 0.26.0 H200\n"
              "runs set the 0.26 CUDA-graph and V2-sampler terms (each record's notes says which), the others are unfitted.\n")
        report(*replay_file(a.independent, require_gpu=True), a.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
