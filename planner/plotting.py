"""The drawings a user asks for with `--plot FILE.svg` or `FILE.png`: a plan's per-GPU memory budget as
a stacked bar per pipeline stage (weights, activation peak, non-torch, CUDA graphs, KV cache), the
first start on an empty torch.compile cache beside the warm one; and perf's throughput-vs-latency
curve over concurrency. Drawn from the results as they are (a `Budget`, `PerfResult`s), never
recomputed.

matplotlib is an optional extra (`pip install 'vllm-planner[plot]'`), imported here only, and only
when a plot is asked for: a plain plan never loads it. `check_target` runs before any work (the file
name, an existing file without --force, matplotlib present), `write_*` renders into memory and hands
the bytes to planner/output.py (private temporary file, rename; a symlink is replaced, not followed).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.errors import PlannerError
from planner.output import atomic_write
from planner.units import GIB

if TYPE_CHECKING:
    from planner.budget import Budget
    from planner.perf.result import PerfResult

FORMATS = {".svg": "svg", ".png": "png"}
INSTALL_HINT = "--plot needs matplotlib: pip install 'vllm-planner[plot]'"
# fixed ids, no date, text kept as text: the same plan draws the same SVG, and its labels can be read back
_RC = {"svg.fonttype": "none", "svg.hashsalt": "vllm-planner", "font.size": 9}
_METADATA = {"svg": {"Date": None}, "png": {"Software": "vllm-planner"}}
# (term, label, colour); the cold-start extra only on the cold bar
TERMS = (
    ("weights", "weights", "#4c72b0"),
    ("activation", "activation peak (estimated)", "#dd8452"),
    ("cold_extra", "first-start compile extra (estimated)", "#c44e52"),
    ("non_torch", "non-torch (estimated)", "#8172b3"),
    ("cudagraph", "CUDA graphs (estimated)", "#937860"),
    ("runner_buffers", "V2 runner buffers", "#da8bc3"),
    ("kv", "KV cache", "#55a868"),
)


def _matplotlib() -> Any:
    try:
        import matplotlib
        import matplotlib.ticker
        from matplotlib.figure import Figure  # noqa: F401  (the renderers come with it)
    except ImportError:
        raise PlannerError(INSTALL_HINT) from None
    return matplotlib


def check_target(name: str, force: bool) -> tuple[Path, str]:
    """(path, format) for `--plot NAME`, or a one-line error before anything is computed."""
    path = Path(name)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PlannerError(f"--plot {name}: give a file name ending in .svg or .png")
    if path.is_dir():
        raise PlannerError(f"--plot {name} is a folder: give a file name such as {path / 'plot.svg'}")
    if not path.parent.is_dir():
        raise PlannerError(f"--plot {name}: the folder {path.parent} does not exist: create it or choose another")
    if os.path.lexists(path) and not force:
        raise PlannerError(f"--plot {name} exists: pass --force to replace it, or choose another file name")
    _matplotlib()
    return path, fmt


def _render(fig: Any, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, metadata=_METADATA[fmt], dpi=150, bbox_inches="tight")
    return buf.getvalue()


# ---- the memory budget ------------------------------------------------------------------------


def budget_bars(b: Budget) -> list[dict[str, Any]]:
    """One bar per stage and start (warm, cold): its label and the GiB of each term, from the budget's
    stage figures (the cold start's extra comes out of the KV memory, as the budget charges it)."""
    bars = []
    for i, s in enumerate(b.stages or ()):
        common = {
            "weights": s.weights_bytes,
            "activation": s.activation_bytes,
            "non_torch": s.non_torch_bytes,
            "cudagraph": s.cudagraph_bytes,
            "runner_buffers": s.runner_buffers_bytes,
        }
        stage = f"stage {i}" if len(b.stages) > 1 else "per GPU"
        for start, extra in (("warm", 0), ("cold", s.cold_extra_bytes)):
            terms = {**common, "cold_extra": extra, "kv": s.available_kv_bytes - extra}
            bars.append(
                {
                    "id": f"{i}-{start}",
                    "label": f"{stage}\n{'warm start' if start == 'warm' else 'first start'}",
                    "gib": {k: v / GIB for k, v in terms.items()},
                }
            )
    return bars


def _kv_range(b: Budget) -> str:
    lo, hi = b.kv_cache_gib_range
    return f" (estimated, range {lo:.2f}-{hi:.2f})" if "kv_cache_gib" in b.estimated and lo != hi else ""


def draw_budget(b: Budget) -> Any:
    _matplotlib()
    from matplotlib.figure import Figure

    bars = budget_bars(b)
    fig = Figure(figsize=(max(4.5, 1.4 * len(bars) + 2.5), 5.0))
    ax = fig.add_subplot()
    xs = list(range(len(bars)))
    bottoms = [0.0] * len(bars)
    for term, label, colour in TERMS:
        heights = [max(0.0, bar["gib"][term]) for bar in bars]
        if not any(heights):
            continue
        drawn = ax.bar(xs, heights, 0.6, bottom=bottoms, label=label, color=colour, edgecolor="white")
        for x, bar, rect, h in zip(xs, bars, drawn.patches, heights):
            rect.set_gid(f"seg-{bar['id']}-{term}")
            if h >= 0.04 * b.memory.requested_bytes / GIB:
                ax.text(x, bottoms[x] + h / 2, f"{h:.2f}", ha="center", va="center", fontsize=7, color="white")
        bottoms = [lo + h for lo, h in zip(bottoms, heights)]
    for x, bar in zip(xs, bars):
        if bar["gib"]["kv"] < 0:
            ax.text(x, bottoms[x], f"KV short by\n{-bar['gib']['kv']:.2f} GiB", ha="center", va="bottom", color="red")
    requested, total = b.memory.requested_bytes / GIB, b.memory.total_bytes / GIB
    side = ax.get_yaxis_transform()  # x in the axes' fraction, y in GiB
    if requested > 0:  # the CPU backend: no device total, the KV space is set on its own
        ax.axhline(requested, color="black", linestyle="--", linewidth=1, gid="requested")
        ax.text(0.01, requested, f"requested {requested:.2f} GiB", va="bottom", fontsize=7, transform=side)
    if total > requested:
        ax.axhline(total, color="grey", linestyle=":", linewidth=1, gid="total")
        ax.text(0.01, total, f"device {total:.2f} GiB", va="bottom", fontsize=7, transform=side)
    ax.set_xticks(xs, [bar["label"] for bar in bars])
    ax.set_ylabel("GiB per GPU" if requested > 0 else "GiB (CPU backend: the KV space is VLLM_CPU_KVCACHE_SPACE)")
    ax.set_ylim(0, max(bottoms + [total]) * 1.12)
    ax.set_title(
        f"{b.model} on {b.gpu}, TP {b.tp} x PP {b.pp}, vLLM {b.vllm_version}\n"
        f"KV {b.kv_cache_gib:.2f} GiB warm{_kv_range(b)}, {b.kv_cache_gib_cold:.2f} GiB first start; "
        f"{'fits' if b.fits else 'does NOT fit'}",
        fontsize=9,
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return fig


def write_budget(b: Budget, path: Path, fmt: str) -> Path:
    with _matplotlib().rc_context(_RC):
        return atomic_write(path, _render(draw_budget(b), fmt))


# ---- the throughput-vs-latency curve ----------------------------------------------------------


def curve_points(rows: list[PerfResult]) -> list[dict[str, Any]]:
    """The curve's points: the rows whose load the KV pool holds (the others have no latency)."""
    out = []
    for r in rows:
        j = r.to_json()
        if j["tpot_ms"] is None or j["output_tokens_per_s"] is None:
            continue
        out.append({k: j[k] for k in ("concurrency", "ttft_ms", "tpot_ms", "output_tokens_per_s")})
        out[-1] |= {k: j[k] for k in ("tpot_ms_range", "ttft_ms_range", "output_tokens_per_s_range")}
    return out


def _errors(points: list[dict[str, Any]], key: str) -> list[list[float]] | None:
    if any(p[key + "_range"] is None for p in points):
        return None
    return [[p[key] - p[key + "_range"][0] for p in points], [p[key + "_range"][1] - p[key] for p in points]]


def draw_curve(rows: list[PerfResult]) -> Any:
    _matplotlib()
    from matplotlib.figure import Figure

    if not rows:
        raise PlannerError("no curve to draw: the model fits no concurrency on this GPU")
    pts, first = curve_points(rows), rows[0]
    over = [r.concurrency for r in rows if r.to_json()["tpot_ms"] is None]
    fig = Figure(figsize=(10.0, 4.4))
    left, right = fig.subplots(1, 2)
    tpot = [p["tpot_ms"] for p in pts]
    tput = [p["output_tokens_per_s"] for p in pts]
    left.errorbar(
        tpot,
        tput,
        xerr=_errors(pts, "tpot_ms"),
        yerr=_errors(pts, "output_tokens_per_s"),
        fmt="none",
        ecolor="#bbbbbb",
        elinewidth=1,
        capsize=2,
    )
    left.plot(tpot, tput, marker="o", color="#4c72b0", gid="curve-tpot")
    for p in pts:
        left.annotate(
            f"{p['concurrency']}",
            (p["tpot_ms"], p["output_tokens_per_s"]),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=7,
        )
    left.set_xlabel("TPOT = ITL, ms (estimated)")
    left.set_ylabel(f"output tokens/s per replica ({first.tp * first.pp} GPU)")
    left.set_title("throughput against latency (labels: concurrency)", fontsize=9)
    conc = [p["concurrency"] for p in pts]
    right.errorbar(
        conc,
        [p["ttft_ms"] for p in pts],
        yerr=_errors(pts, "ttft_ms"),
        fmt="none",
        ecolor="#bbbbbb",
        elinewidth=1,
        capsize=2,
    )
    right.plot(conc, [p["ttft_ms"] for p in pts], marker="o", color="#dd8452", gid="curve-ttft")
    right.set_xscale("log", base=2)
    right.xaxis.set_major_formatter(_matplotlib().ticker.ScalarFormatter())
    right.set_xlabel("concurrency (closed loop)")
    right.set_ylabel("TTFT, ms (estimated)")
    note = f"; over KV capacity from {min(over)} (admissible {first.max_concurrency_kv})" if over else ""
    right.set_title(f"time to first token{note}", fontsize=9)
    fig.suptitle(
        f"{first.model} on {first.gpu}, TP {first.tp} x PP {first.pp}, vLLM {first.vllm_version}: "
        f"input {first.input_len:,}, output {first.output_len:,} tokens; estimated, bars: the fit's "
        "held-out 10th-90th percentile",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def write_curve(rows: list[PerfResult], path: Path, fmt: str) -> Path:
    with _matplotlib().rc_context(_RC):
        return atomic_write(path, _render(draw_curve(rows), fmt))
