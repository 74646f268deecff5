"""Signals during `verify`: SIGINT, SIGTERM, SIGHUP and SIGQUIT all interrupt the run the same way,
as a KeyboardInterrupt (`Interrupted`) in the main thread, so that every `finally` stops the server
and removes the temp folder. The first signal interrupts; clean-up runs `shielded()`, where a signal
is only noted, so a second SIGTERM, or the terminal closing (SIGHUP) while Ctrl-C's clean-up runs,
cannot cut `Server.stop()` short and leave vLLM running. A signal noted inside a shield while nothing
was interrupted yet (a SIGTERM during a normal stop) is raised when the shield ends.

`run_child` runs a short helper process (the tokenizer builder, the vLLM version probe) so that an
interrupt kills and reaps it instead of orphaning it.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A KeyboardInterrupt that says which signal caused it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    depth = 0  # nesting of handled()
    shield = 0  # nesting of shielded()
    pending: Optional[int] = None  # the first signal received
    raised = False  # an Interrupted has been raised: the run is unwinding, later signals are ignored
    saved: dict[int, object] = {}


_state = _State()


def _handle(signum: int, frame: object) -> None:
    if _state.pending is None:
        _state.pending = signum
    if _state.shield or _state.raised:
        return
    _state.raised = True
    raise Interrupted(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def handled() -> Iterator[None]:
    """Inside: the four signals interrupt (re-entrant; a no-op outside the main thread, where Python
    cannot set handlers). The previous handlers come back when the outermost block ends."""
    if not _in_main_thread():
        yield
        return
    if _state.depth == 0:
        _state.pending, _state.raised = None, False
        _state.saved = {s: signal.signal(s, _handle) for s in SIGNALS}
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            for s, old in _state.saved.items():
                signal.signal(s, old)  # type: ignore[arg-type]


@contextmanager
def shielded() -> Iterator[None]:
    """Inside: signals are noted, not raised (clean-up, and starting a process whose pid must be kept)."""
    _state.shield += 1
    try:
        yield
    finally:
        _state.shield -= 1
    # Reached only when the body did not raise: deliver a signal that arrived meanwhile.
    if _state.shield == 0 and _state.depth and _state.pending is not None and not _state.raised:
        _state.raised = True
        raise Interrupted(_state.pending)


def run_child(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """subprocess.run(argv, capture_output=True, text=True, timeout=...), but the child is killed and
    reaped whatever ends the wait (an interrupt included), and its pid is never lost in between."""
    proc: Optional[subprocess.Popen[str]] = None
    try:
        with shielded():
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        if proc is not None:
            with shielded():
                proc.kill()
                proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
