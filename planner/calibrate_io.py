"""The I/O edge of `vllm-planner calibrate`: read logs and verify reports, replay them against the
shared terms, and write the user's calibration overlay atomically (planner/output.py); an existing
file that is not a calibration overlay is replaced only with --force. The pure part is planner/calibrate.py.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
from pathlib import Path

import yaml

from planner import calibrate, overhead_table, overheads, overlay
from planner.errors import PlannerError
from planner.output import atomic_write, prepare_dir

HEADER = (
    "# vllm-planner calibration overlay (written by `vllm-planner calibrate`): measured terms of your own\n"
    "# start-ups, by GPU, interconnect, TP, runner and release; same schema as profiles/vllm/overheads.yaml.\n"
)


def read_startup(path: Path, gpu=None, model=None, interconnect=None) -> calibrate.Startup:
    """A log (plain or gzip) or a verify report (JSON); anything else is a one-line error."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PlannerError(f"cannot read {path}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            raise PlannerError(f"{path}: a damaged gzip file") from None
    text = raw.decode("utf-8", errors="replace")
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or "entries" not in doc or "startup" not in doc:
            raise PlannerError(f"{path}: not a vLLM start-up log or a `vllm-planner verify --json` report")
        env = os.environ.get("VLLM_USE_V2_MODEL_RUNNER")
        return calibrate.startup_from_report(doc, str(path), gpu, model, interconnect, env, _report_log(doc, path))
    return calibrate.startup_from_log(text, str(path), gpu, model, interconnect)


def _report_log(doc: dict, path: Path) -> str | None:
    """The text of the server log a verify report names (absolute, or beside the report), if it is still there."""
    log = (doc.get("startup") or {}).get("log")
    if not isinstance(log, str) or not log:
        return None
    for p in (Path(log), path.parent / Path(log).name):
        try:
            raw = p.read_bytes()
        except OSError:
            continue
        if raw[:2] == b"\x1f\x8b":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError):
                return None
        return raw.decode("utf-8", errors="replace")
    return None


def measure_all(startups: list[calibrate.Startup]) -> list[calibrate.Measured]:
    from planner.calibration import release_for, replay_budget

    out = []
    with overlay.suspended():
        for s in startups:
            b = replay_budget(s.record)
            c = overheads.coefficients(release_for(s.record).version, b.model_runner)
            out.append(calibrate.measure(s, b, c))
    return out


def _existing_sets(path: Path, force: bool) -> list[dict]:
    if not path.exists():
        return []
    try:
        overhead_table.load(path, overheads._first(), calibration=True)
    except PlannerError as e:
        if force:
            return []
        raise PlannerError(f"{path} is not a calibration overlay ({e}); pass --force to replace it") from None
    return yaml.safe_load(path.read_text())["sets"]


def run(paths: list[Path], out: Path | None, force: bool, gpu=None, model=None, interconnect=None) -> list[str]:
    """Calibrate from `paths`, write the overlay, return the lines to print."""
    startups = [read_startup(p, gpu, model, interconnect) for p in paths]
    calibrate.check_consistent(startups)
    measured = measure_all(startups)
    target = out or overlay.default_path()
    sets = calibrate.merge(_existing_sets(target, force), calibrate.overlay_sets(measured, str(datetime.date.today())))
    doc = {"sets": sets}
    overhead_table.table_from_doc(doc, target, overheads._first(), calibration=True)  # what a plan will read
    prepare_dir(target.parent)
    atomic_write(target, HEADER + yaml.safe_dump(doc, sort_keys=False))
    lines = []
    for m in measured:
        logged = m.startup.kv_cache_gib
        err = 100 * (m.predicted_kv_gib - logged) / logged
        lines.append(
            f"{m.startup.name}: {m.gpu} TP {m.tp}{' over ' + m.interconnect if m.interconnect else ''}, vLLM "
            f"{m.version} ({m.runner.upper()} runner){_start_text(m.startup)}: KV cache {logged:.2f} GiB logged, "
            f"{m.predicted_kv_gib:.2f} predicted by the shared terms ({err:+.2f}%)"
        )
    lines.append(f"wrote {target} ({len(sets)} calibration set{'s' if len(sets) != 1 else ''}); later plans use it")
    return lines


def _start_text(s: calibrate.Startup) -> str:
    pool = f", captured a {s.cudagraph_pool_gib:.2f} GiB CUDA-graph pool" if s.cudagraph_pool_gib is not None else ""
    if s.start == "cold":
        return (
            f", a cold start (it compiled at start-up: an empty torch.compile cache; compared with the first-start "
            f"figure, the overlay keeps warm terms){pool}"
        )
    if s.start == "warm":
        return f", a warm start (compiled graphs loaded from the cache){pool}"
    return f", warm or cold not printed (taken as warm){pool}"


def show(path: Path | None) -> list[str]:
    target = path or overlay.default_path()
    if not target.exists():
        return calibrate.show(target, ())
    return calibrate.show(target, overhead_table.load(target, overheads._first(), calibration=True).sets)
