"""`main`: run one command line; the output is written at the end, so that a reader that stops
early or a full disk cannot hide the exit status."""

from __future__ import annotations

import argparse
import io
import sys
from typing import Any, Callable, NoReturn, Sequence

from planner.cli.parser import build_parser, command_of, wants_help
from planner.errors import PlannerError


def _run(argv: Sequence[str] | None) -> int:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = build_parser(command_of(argv), with_help=wants_help(argv)).parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except PlannerError as exc:
        print(f"vllm-planner: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vllm-planner: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help and --version (argparse's errors are PlannerErrors, see Parser)
        return exc.code if isinstance(exc.code, int) else 0


def _drop_stdout(stream: Any) -> None:
    """Point the process's stdout at /dev/null, so that Python's flush at exit does not fail again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass


def _write_out(stream: Any, text: str, code: int) -> int:
    """Write the command's output; the exit status survives a reader that stopped early."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:  # `| head`: the verdict (fits 0, misfit 1) still stands
        _drop_stdout(stream)
        return code
    except OSError as exc:  # `> /dev/full`, a closed stdout
        _drop_stdout(stream)
        print(
            f"vllm-planner: error: cannot write the output ({exc.strerror or exc}): "
            "check where stdout goes (a full disk?)",
            file=sys.stderr,
        )
        return 2
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 success (plan: it fits), 1 a plan that does not fit, 2 bad input or unwritable
    output. Internal errors are not caught: they are bugs, and a traceback shows where."""
    real, buffer = sys.stdout, io.StringIO()
    sys.stdout = buffer  # written at the end, so that a write error cannot hide the exit status
    try:
        code = _run(argv)
    finally:
        sys.stdout = real
    return _write_out(real, buffer.getvalue(), code)


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """The process entry (`vllm-planner`, `python -m planner`): `main`, then exit with its status. An
    interrupted run has cleaned up before it returns 130; from then on a second SIGTERM or SIGHUP (while
    the interpreter joins the load's threads at exit) must not turn that status into a kill."""
    code = main(argv)
    if code == 130:
        import signal

        for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_IGN)
    sys.exit(code)
