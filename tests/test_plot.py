"""`--plot`: the plan's memory budget as stacked bars and perf's throughput-vs-latency curve, drawn to
SVG and read back: every bar segment's height is its budget figure on one scale, a warm bar whose terms
fill the requested memory ends on the requested line, the curve's vertices are the perf table's points
under one linear map. Then the refusals, and matplotlib kept off the plan path."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from planner import plotting, releases  # noqa: E402
from planner.api import load_model, plan  # noqa: E402
from planner.budget import Settings  # noqa: E402
from planner.errors import PlannerError  # noqa: E402
from planner.hardware import load_catalogue  # noqa: E402
from planner.perf.api import curve  # noqa: E402
from planner.plan import Request  # noqa: E402
from planner.units import GIB  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
BUDGET_FIELDS = {
    "weights": "weights_bytes",
    "activation": "activation_bytes",
    "non_torch": "non_torch_bytes",
    "cudagraph": "cudagraph_bytes",
    "runner_buffers": "runner_buffers_bytes",
}


def read_svg(path: Path) -> ET.Element:
    return ET.fromstring(path.read_text())


def vertices(root: ET.Element, gid: str) -> list[tuple[float, float]]:
    g = root.find(f".//{SVG}g[@id='{gid}']")
    assert g is not None, f"no element {gid}"
    d = g.find(f"{SVG}path").get("d")
    return [(float(x), float(y)) for x, y in re.findall(r"[ML] (-?[\d.]+) (-?[\d.]+)", d)]


def segments(root: ET.Element) -> dict[tuple[str, str], tuple[float, float]]:
    """(bar id, term) -> (top y, bottom y) in SVG units (y grows downwards)."""
    out = {}
    for g in root.iter(f"{SVG}g"):
        m = re.fullmatch(r"seg-(\d+-(?:warm|cold))-(\w+)", g.get("id", ""))
        if m:
            ys = [y for _, y in vertices(root, g.get("id"))]
            out[(m[1], m[2])] = (min(ys), max(ys))
    return out


def texts(root: ET.Element) -> str:
    return "\n".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


# (plan arguments, the warm bars end on the requested line, a KV shortfall is drawn)
BUDGETS = [
    (dict(gpu="H100", vllm_version="0.19.0", pp=2), True, False),  # two stages, a compile extra on the first start
    (dict(gpu="H100", vllm_version="0.30.0", tp=2), True, False),  # CUDA graphs and the V2 runner's buffers
    (dict(gpu="H100", vllm_version="0.19.0", enforce_eager=True), True, False),  # eager: the first start is the warm
    (dict(gpu="H100", vllm_version="0.19.0", gpu_memory_gib=16, tp=1, max_model_len=4096), False, True),  # does not fit
    (dict(device="cpu", cpu_kvcache_gib=4, vllm_version="0.19.0", max_model_len=4096), False, False),  # CPU backend
]


@pytest.mark.parametrize("kw, fills_requested, short", BUDGETS, ids=["pp2", "tp2-graphs", "eager", "short", "cpu"])
def test_budget_bars_are_the_budget_figures(tmp_path, kw, fills_requested, short):
    b = plan("qwen3-8b", **kw).budget
    path, fmt = plotting.check_target(str(tmp_path / "budget.svg"), force=False)
    plotting.write_budget(b, path, fmt)
    root = read_svg(path)
    seg = segments(root)
    expected = {}  # (bar, term) -> bytes, from the budget's stage fields
    for i, stage in enumerate(b.stages):
        for start, extra in (("warm", 0), ("cold", stage.cold_extra_bytes)):
            terms = {t: getattr(stage, f) for t, f in BUDGET_FIELDS.items()}
            terms |= {"cold_extra": extra, "kv": max(0, stage.available_kv_bytes - extra)}
            expected |= {(f"{i}-{start}", t): v for t, v in terms.items()}
    drawn_terms = {t for (_, t), v in expected.items() if v}
    assert {k for k in expected if k[1] in drawn_terms} == set(seg)  # a term that is 0 everywhere is left out
    heights = {k: seg[k][1] - seg[k][0] for k in seg}
    scale = max(heights.values()) / (max(expected[k] for k in seg) / GIB)  # SVG units per GiB
    for k in seg:
        assert heights[k] == pytest.approx(scale * expected[k] / GIB, abs=0.02), k
    # the binding stage's first start is the budget's own cold figure
    assert min(s.available_kv_bytes - s.cold_extra_bytes for s in b.stages) / GIB == pytest.approx(
        b.kv_cache_gib_cold, abs=0.006
    )
    words = texts(root)
    lo, hi = b.kv_cache_gib_range
    span = f" (estimated, range {lo:.2f}-{hi:.2f})" if lo != hi else ""  # a CPU pool is exact
    assert f"KV {b.kv_cache_gib:.2f} GiB warm{span}, {b.kv_cache_gib_cold:.2f} GiB first start" in words
    assert bool(span) is (kw.get("device") != "cpu")
    assert ("does NOT fit" in words) is not b.fits and "first start" in words and "warm start" in words
    legend = {label: term in drawn_terms for term, label, _ in plotting.TERMS}
    assert {label: label in words for label in legend} == legend  # the legend names what is drawn, only that
    tops = [min(t for (bar, _), (t, _) in seg.items() if bar == f"{i}-warm") for i in range(len(b.stages))]
    if fills_requested:
        line = vertices(root, "requested")[0][1]
        assert all(t == pytest.approx(line, abs=0.05) for t in tops)
    if short:  # the bar goes past the requested line by the shortfall, and says so
        line = vertices(root, "requested")[0][1]
        over = -b.stages[0].available_kv_bytes / GIB
        assert line - tops[0] == pytest.approx(scale * over, abs=0.05)
        assert f"KV short by\n{over:.2f} GiB".replace("\n", "") in words.replace("\n", "")
    if kw.get("device") == "cpu":
        assert root.find(f".//{SVG}g[@id='requested']") is None and "CPU backend" in words


def test_png_is_a_png(tmp_path):
    b = plan("qwen3-8b", gpu="H100", vllm_version="0.19.0").budget
    path, fmt = plotting.check_target(str(tmp_path / "b.PNG"), force=False)
    assert fmt == "png"
    plotting.write_budget(b, path, fmt)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def table():
    req = Request(load_model("qwen3-8b"), Settings(max_model_len=8192), releases.get("0.18.0"))
    return curve(req, load_catalogue().get("H100"), 1024, 256)


def test_curve_points_are_the_perf_table(tmp_path, table):
    path, fmt = plotting.check_target(str(tmp_path / "curve.svg"), force=False)
    plotting.write_curve(table, path, fmt)
    root = read_svg(path)
    rows = [r.to_json() for r in table]
    held = [j for j in rows if j["tpot_ms"] is not None]
    assert len(held) < len(rows)  # the table runs past the KV limit: those rows have no point
    for gid, xkey, ykey in (("curve-tpot", "tpot_ms", "output_tokens_per_s"), ("curve-ttft", None, "ttft_ms")):
        pts = vertices(root, gid)
        assert len(pts) == len(held)
        xs = [j[xkey] if xkey else __import__("math").log2(j["concurrency"]) for j in held]
        ys = [j[ykey] for j in held]
        lo, hi = xs.index(min(xs)), xs.index(max(xs))
        ax = (pts[hi][0] - pts[lo][0]) / (xs[hi] - xs[lo])
        ylo, yhi = ys.index(min(ys)), ys.index(max(ys))
        ay = (pts[yhi][1] - pts[ylo][1]) / (ys[yhi] - ys[ylo])
        for (px, py), x, y in zip(pts, xs, ys):
            assert px == pytest.approx(pts[lo][0] + ax * (x - xs[lo]), abs=0.05)
            assert py == pytest.approx(pts[ylo][1] + ay * (y - ys[ylo]), abs=0.05)
        assert ay < 0  # higher figures drawn higher
    words = texts(root)
    first_over = min(j["concurrency"] for j in rows if j["tpot_ms"] is None)
    assert f"over KV capacity from {first_over} (admissible {rows[0]['max_concurrency_kv']})" in words
    assert "estimated" in words and "10th-90th percentile" in words


@pytest.mark.parametrize(
    "name, message",
    [
        ("plot.pdf", "give a file name ending in .svg or .png"),
        ("plot", "give a file name ending in .svg or .png"),
        ("missing/plot.svg", "the folder"),
    ],
)
def test_bad_targets_are_one_line(tmp_path, name, message):
    with pytest.raises(PlannerError, match=re.escape(message)):
        plotting.check_target(str(tmp_path / name), force=False)


def test_an_existing_file_needs_force_and_a_symlink_is_replaced_not_followed(tmp_path):
    b = plan("qwen3-8b", gpu="H100", vllm_version="0.19.0").budget
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "plot.svg"
    link.symlink_to(victim)
    with pytest.raises(PlannerError, match="pass --force"):
        plotting.check_target(str(link), force=False)
    path, fmt = plotting.check_target(str(link), force=True)
    plotting.write_budget(b, path, fmt)
    assert victim.read_text() == "keep me" and not link.is_symlink() and link.read_text().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.svg", "victim.txt"]  # no temp file left


def test_without_matplotlib_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(PlannerError) as e:
        plotting.check_target(str(tmp_path / "p.svg"), force=False)
    assert str(e.value) == "--plot needs matplotlib: pip install 'vllm-planner[plot]'"


def test_a_plan_never_loads_matplotlib_or_the_plotting_module():
    code = (
        "import sys; from planner.cli import main; main(['plan', 'qwen3-8b', '--gpu', 'H100', '--json']); "
        "print(sorted(m for m in ('matplotlib', 'planner.plotting') if m in sys.modules), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr[-2000:]


# ---- the command line ------------------------------------------------------------------------

PLAN = ["plan", "qwen3-8b", "--gpu", "H100", "--vllm-version", "0.19.0"]
PERF = ["perf", "qwen3-8b", "--gpu", "H100", "--vllm-version", "0.18.0", "--input-len", "1024", "--output-len", "256"]
PERF += ["--concurrency", "8", "--max-model-len", "8192"]


@pytest.mark.parametrize("argv", [PLAN, PERF], ids=["plan", "perf"])
def test_plot_writes_the_file_and_keeps_the_output(tmp_path, capsys, argv):
    from planner.cli import main

    code = main(argv + ["--json"])
    plain = capsys.readouterr().out
    target = tmp_path / "out.svg"
    assert main(argv + ["--json", "--plot", str(target)]) == code == 0
    out, err = capsys.readouterr()
    assert out == plain and err.strip().splitlines()[-1] == f"plot: {target}"  # the JSON is unchanged
    root = read_svg(target)
    assert root.find(f".//{SVG}g[@id='{'seg-0-warm-kv' if argv is PLAN else 'curve-tpot'}']") is not None


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--plot", "x.pdf"], "--plot x.pdf: give a file name ending in .svg or .png"),
        (["--plot", "there.svg"], "--plot there.svg exists: pass --force to replace it, or choose another file name"),
        (["--plot", "no/such/x.svg"], "--plot no/such/x.svg: the folder no/such does not exist"),
    ],
    ids=["extension", "existing", "no folder"],
)
@pytest.mark.parametrize("argv", [PLAN, PERF], ids=["plan", "perf"])
def test_plot_refusals_are_one_line_exit_2_and_write_nothing(tmp_path, monkeypatch, capsys, argv, extra, message):
    from planner.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "there.svg").write_text("mine")
    assert main(argv + extra) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and message in err
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == ["there.svg"] and (tmp_path / "there.svg").read_text() == "mine"
    )


def test_plot_without_matplotlib_and_with_an_inventory(tmp_path, capsys, monkeypatch):
    from planner.cli import main

    assert main(PLAN[:2] + ["--inventory", "8xH100", "--plot", str(tmp_path / "x.svg")]) == 2
    assert "plan one GPU type with --gpu, without --inventory" in capsys.readouterr().err
    sizing = ["--request-rate", "5", "--input-len", "1024", "--output-len", "256"]
    assert main(PLAN + sizing + ["--plot", str(tmp_path / "x.svg")]) == 2
    assert "without --request-rate (sizing)" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for argv in (PLAN, PERF):
        assert main(argv + ["--plot", str(tmp_path / "x.svg")]) == 2
        out, err = capsys.readouterr()
        assert (
            out == ""
            and err.strip() == "vllm-planner: error: --plot needs matplotlib: pip install 'vllm-planner[plot]'"
        )
    assert list(tmp_path.iterdir()) == []
