"""The parser: one line per subcommand in COMMANDS, each built by its module's register function.

Only the subcommand being run is imported and built in full (the server, the load driver, the
deployment formats, training and perf are heavy to import, and `plan` must stay fast); the others
are listed with their help line. Without a subcommand (`--help`) every one is built.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, NoReturn, Sequence

from planner.errors import PlannerError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (its default prints the whole usage first) and no silent
    prefix abbreviations (`--max-num` must not quietly mean one of two flags)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise PlannerError(f"{message} (see `{self.prog} --help`)")


# name -> ("module:function" that adds the subcommand's options to its parser, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("planner.cli.info:register_inspect", "parameters, weight bytes and KV bytes per token per GPU"),
    "models": ("planner.cli.info:register_models", "list the bundled models"),
    "dtypes": ("planner.cli.info:register_dtypes", "the number formats: range, precision, bytes per parameter"),
    "plan": ("planner.cli.plan:register", "vLLM's per-GPU memory budget, KV tokens, concurrency and layout"),
    "gpus": ("planner.cli.info:register_gpus", "list the GPU catalogue"),
    "emit": (
        "planner.cli.emit:register",
        "launch configs from a plan: vllm serve, config YAML, python, docker, compose, Kubernetes, "
        "LeaderWorkerSet, Helm, KServe",
    ),
    "verify": ("planner.cli.verify:register", "start vLLM with the plan, put the planned load on it, compare"),
    "train": ("planner.cli.train:register", "training / fine-tuning memory per GPU: full, LoRA, QLoRA"),
    "perf": (
        "planner.cli.perf:register",
        "throughput and latency (TTFT, TPOT/ITL, tokens/s) of a plan at a load, with ranges",
    ),
    "calibrate": ("planner.cli.calibrate:register", "your start-up logs or verify reports as later plans' terms"),
}


def _register(p: argparse.ArgumentParser, where: str) -> None:
    module, function = where.split(":")
    getattr(importlib.import_module(module), function)(p)


def build_parser(command: str | None = None, with_help: bool = True) -> argparse.ArgumentParser:
    """The whole parser; with `command`, the other subcommands are listed by name and help only.
    `with_help=False` (a command line that asks for no help) skips reading the flags' help from the
    field docstrings (planner/cli/fieldhelp.py)."""
    from planner import __version__
    from planner.cli import fieldhelp

    fieldhelp.enable(with_help)
    parser = Parser(
        prog="vllm-planner",
        description="Capacity planning for serving LLMs with vLLM. Exit status: "
        "0 success (plan: it fits), 1 a plan that does not fit, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (where, text) in COMMANDS.items():
        p = sub.add_parser(name, help=text)
        if command in (None, name):
            _register(p, where)
    return parser


def wants_help(argv: Sequence[str]) -> bool:
    return "-h" in argv or "--help" in argv


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None
