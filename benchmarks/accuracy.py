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


def pct(pred: float, obs: float) -> float:
    return 100.0 * (pred - obs) / obs if obs else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=Path, default=DEFAULT)
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    a = ap.parse_args(argv)
    rows, skipped = [], []
    for line in a.calibration.read_text().splitlines():
        r = json.loads(line)
        if r.get("kv_cache_gib") is None:
            continue  # a failed start-up: nothing to compare
        label = f"{r['model']} tp{r['tp']}pp{r['pp']} {r['max_model_len']} {r.get('dtype') or ''} kv={r.get('kv_cache_dtype')} q={r.get('quantization') or '-'} {r['vllm_version'].split()[0]}"
        try:
            res = replay(r)
        except PlannerError as exc:
            skipped.append((label, str(exc)))
            continue
        rows.append((label, res))
    from tabulate import tabulate

    table = []
    for label, res in rows:
        w, act, kv, tok = res["weights"], res["activation"], res["kv_gib"], res["kv_tokens"]
        table.append([label, f"{w[0]:.2f}/{w[1]:.2f}", f"{pct(*w):+.2f}%", f"{act[0]:.2f}/{act[1]:.2f}",
                      f"{kv[0]:.2f}/{kv[1]:.2f}", f"{pct(*kv):+.2f}%", f"{tok[0]:,}/{tok[1]:,}", f"{pct(*tok):+.2f}%"])
    headers = ["case", "weights GiB pred/obs", "err", "activation GiB", "KV GiB pred/obs", "err", "KV tokens pred/obs", "err"]
    print(tabulate(table, headers=headers, tablefmt="github" if a.markdown else "simple", disable_numparse=True))
    kv_err = [abs(pct(*res["kv_gib"])) for _, res in rows]
    tok_err = [abs(pct(*res["kv_tokens"])) for _, res in rows]
    w_err = [abs(pct(*res["weights"])) for _, res in rows]
    act_err = [abs(res["activation"][0] - res["activation"][1]) for _, res in rows]
    print()
    print(f"cases replayed: {len(rows)}; not replayed (model not bundled or not modelled): {len(skipped)}")
    print(f"KV-cache GiB  |error|: median {statistics.median(kv_err):.2f}%, max {max(kv_err):.2f}%, over 3%: {sum(e > 3 for e in kv_err)}")
    print(f"KV tokens     |error|: median {statistics.median(tok_err):.2f}%, max {max(tok_err):.2f}%")
    print(f"weights       |error|: median {statistics.median(w_err):.2f}%, max {max(w_err):.2f}%")
    print(f"activation    |error|: median {statistics.median(act_err):.3f} GiB, max {max(act_err):.3f} GiB")
    for label, why in skipped:
        print(f"skipped: {label}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
