"""Run a vLLM server for verification: start it in its own process group, follow its log live by
phase (`LogFollower`), wait for `/health` until a deadline, and stop the whole group afterwards.

vLLM's API server spawns an engine-core process, which spawns workers; signalling only the API
server can leave those running (and holding the memory and the port's neighbours). So the server
starts a new session (process group = its pid), and `stop` signals the group and every descendant,
then waits until /proc shows none of them alive and the port is free. `Server` is a context manager:
leaving the block stops everything, on success, failure, timeout and Ctrl-C, SIGTERM, SIGHUP or
SIGQUIT alike (`interrupts`); the stop is shielded from further signals and runs once.

Standard library only; HTTP goes to 127.0.0.1 through an opener that ignores proxy settings.
"""

from __future__ import annotations

import collections
import errno
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Literal, Optional

from planner.errors import PlannerError
from planner.verify.interrupts import handled, shielded
from planner.verify.logparse import LogFollower, StartupFigures

HOST = "127.0.0.1"
HEALTH_INTERVAL_S = 1.0
FAILED_GRACE_S = 10.0
"""After the log shows a failure, keep reading this long (or until exit) to collect vLLM's whole error."""
STOP_GRACE_S = 20.0
"""SIGTERM first (vLLM shuts its engine down cleanly), SIGKILL for whatever is left after this."""
TAIL_LINES = 60

# A proxy set in the environment must not see (or break) requests to the local server.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str, data: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET (or a JSON POST with `data`); status 0 when nothing answered."""
    headers = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


# ---- ports ------------------------------------------------------------------------------------


def port_in_use(port: int, host: str = HOST) -> bool:
    """Something listens on the port, or it cannot be bound (bound to another address, e.g. 0.0.0.0)."""
    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port_free(port: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while port_in_use(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# ---- processes (via /proc; no psutil) ---------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    state: str
    start: int
    """Start time in clock ticks since boot: with the pid, it names one process (pids are reused)."""


def processes() -> list[ProcInfo]:
    """Every process /proc shows; empty where there is no /proc."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # 'pid (comm) state ppid pgrp ...': comm may hold spaces and parentheses, so cut at the last ')'.
        rest = stat[stat.rindex(")") + 2 :].split()
        out.append(ProcInfo(int(name), int(rest[1]), int(rest[2]), rest[0], int(rest[19])))
    return out


Known = dict[int, int]
"""pid -> start time of processes seen in the server's tree."""


def alive_in_group(pgid: int, also: Known | set[int] = frozenset()) -> list[int]:
    """Live (not zombie) pids in the process group, plus those of `also` still alive (for a Known
    map: still the same process, not a reused pid)."""
    if not os.path.isdir("/proc"):  # no /proc (macOS): ask the kernel about the group as a whole
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    return [p.pid for p in processes() if (p.pgid == pgid or _is_known(p, also)) and p.state not in ("Z", "X")]


def _is_known(p: ProcInfo, also: Known | set[int]) -> bool:
    if isinstance(also, dict):
        return also.get(p.pid) == p.start
    return p.pid in also


def descendants(pid: int) -> Known:
    """Children, grandchildren... with their start times: catches any that moved to a process group
    (or session) of their own."""
    table = processes()
    children: dict[int, list[ProcInfo]] = collections.defaultdict(list)
    for p in table:
        children[p.ppid].append(p)
    out: Known = {}
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c.pid not in out:
                out[c.pid] = c.start
                todo.append(c.pid)
    return out


def _signal_all(pgid: int, known: Known, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in [p.pid for p in processes() if _is_known(p, known)]:  # never a reused pid
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# ---- the server -------------------------------------------------------------------------------

Outcome = Literal["ready", "failed", "exited", "timeout"]


@dataclass(frozen=True)
class ServerSpec:
    argv: list[str]
    """The whole command line, program first."""
    port: int
    env: dict[str, str] = field(default_factory=dict)
    """Added to this process's environment."""
    timeout_s: float = 900.0
    log_path: Optional[Path] = None
    """Where the server's whole output goes (it is also followed live)."""


@dataclass(frozen=True)
class Startup:
    """How the start-up ended, and what its log printed."""

    outcome: Outcome
    seconds: float
    figures: StartupFigures
    exit_code: Optional[int]
    error: Optional[str]
    """vLLM's own error text when it printed one; else what went wrong, in a line."""
    log_tail: list[str]
    pid: Optional[int] = None
    """The server's pid, which is also its process group."""


Progress = Callable[[str, float, bool], None]
"""progress(phase, elapsed seconds, changed): on every phase change, and about every 10 s between."""


class Server:
    """`with Server(spec) as s: s.start()`; leaving the block stops the server and all it spawned."""

    def __init__(self, spec: ServerSpec, progress: Optional[Progress] = None) -> None:
        self.spec = spec
        self.progress = progress
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.follower = LogFollower()
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self._following = True  # the reader hands lines to start() only while it follows the start-up
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._reader: Optional[threading.Thread] = None
        self._signals = ExitStack()
        self._t0 = time.monotonic()
        self._stopped: Optional[list[int]] = None
        self.known_pids: Known = {}
        """Every process seen in the server's tree (also those that left its group and were orphaned)."""

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.spec.port}"

    def elapsed(self) -> float:
        """Seconds since start()."""
        return time.monotonic() - self._t0

    # -- context manager: SIGTERM, SIGHUP, SIGQUIT become KeyboardInterrupt, like Ctrl-C, so a killed
    # `verify` still cleans up
    def __enter__(self) -> Server:
        self._signals.enter_context(handled())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self._signals.close()

    # -- start
    def start(self) -> Startup:
        """Launch and follow the start-up until healthy, failed, exited or past the deadline."""
        if port_in_use(self.spec.port):
            raise PlannerError(f"port {self.spec.port} is in use: stop what listens there or pass another --port")
        t0 = self._t0 = time.monotonic()
        self._launch()
        outcome = self._follow(t0)
        self._following = False
        return self._result(outcome, time.monotonic() - t0)

    def _launch(self) -> None:
        log = _open_log(self.spec.log_path) if self.spec.log_path else None
        try:
            with shielded():  # a signal now must not lose the pid that stop() needs
                self.proc = subprocess.Popen(
                    self.spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **self.spec.env},
                    start_new_session=True,
                )  # own session: stop() signals it whole
        except OSError as e:
            if log:
                log.close()
            raise PlannerError(f"cannot run {self.spec.argv[0]!r}: {e.strerror or e}: check --vllm-command") from None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout, log), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes], log: Optional[IO[bytes]]) -> None:
        # Always drain the pipe (a full pipe would block the server), long after start-up too.
        try:
            for raw in iter(stream.readline, b""):
                if log:
                    log.write(raw)
                    log.flush()
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if self._following:
                    self._tail.append(line)
                    self._lines.put(line)
        finally:
            if log:
                log.close()
            self._lines.put(None)

    def _follow(self, t0: float) -> Outcome:
        assert self.proc is not None
        deadline = t0 + self.spec.timeout_s
        next_health, next_beat = t0, t0 + 10.0
        failed_at: Optional[float] = None
        while True:
            self._drain(t0, 0.25)
            now = time.monotonic()
            if self.follower.phase == "failed":
                failed_at = failed_at or now
                if self.exit_status() is not None or now - failed_at > FAILED_GRACE_S:
                    self._drain(t0, 1.0)
                    return "failed"
            elif self.exit_status() is not None:
                self._drain(t0, 1.0)  # the rest of the output (children may hold the pipe open)
                return "failed" if self.follower.phase == "failed" else "exited"
            if now >= next_health:  # also after a logged failure: a traceback that was not fatal
                next_health = now + HEALTH_INTERVAL_S
                self.known_pids |= descendants(self.proc.pid)  # before a parent's death orphans them
                if http(self.base_url + "/health", timeout=2.0)[0] == 200:
                    self._drain(t0, 0.2)
                    return "ready"
            if now > deadline:
                return "timeout"
            if self.progress and now >= next_beat:
                next_beat = now + 10.0
                self.progress(self.follower.phase or "starting", now - t0, False)

    def _drain(self, t0: float, wait_s: float) -> None:
        """Feed the follower every line that arrives within `wait_s`."""
        end = time.monotonic() + wait_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                return
            if line is None:
                self._lines.put(None)  # end of output: keep the marker for later calls
                time.sleep(max(0.0, min(0.05, end - time.monotonic())))
                if time.monotonic() >= end:
                    return
                continue
            changed = self.follower.feed(line)
            if changed and self.progress:
                self.progress(changed, time.monotonic() - t0, True)

    def exit_status(self) -> Optional[int]:
        """The server's exit status once it has exited (-N: killed by signal N), without reaping it:
        until stop() its zombie keeps the pid, and so the process group's number, from being reused."""
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.proc.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def _result(self, outcome: Outcome, seconds: float) -> Startup:
        figures = self.follower.figures()
        code = self.exit_status()
        error = None
        if outcome == "failed":
            error = figures.error or "the log shows a failure"
        elif outcome == "exited":
            last = next((ln.strip() for ln in reversed(self._tail) if ln.strip()), "no output")
            error = f"the server exited with status {code} during start-up: {last}"
        elif outcome == "timeout":
            error = (
                f"not healthy after {self.spec.timeout_s:g} s (last phase: {self.follower.phase or 'none'}); "
                "raise --timeout if the start-up was still progressing"
            )
        return Startup(outcome, seconds, figures, code, error, list(self._tail), self.proc.pid if self.proc else None)

    # -- stop
    def stop(self) -> list[int]:
        """Stop the group and every descendant; wait until none is alive and the port is free.
        Returns the pids that survived (empty unless something ignores even SIGKILL). Runs once (a
        second call returns the first one's answer: the group's number may belong to another by then)
        and is shielded: a signal meanwhile neither aborts it nor is lost."""
        if self.proc is None:
            return []
        with shielded():
            if self._stopped is None:
                if self.progress:
                    self.progress("stopping the server", self.elapsed(), True)
                self._stopped = self._stop_all()
        return self._stopped

    def _stop_all(self) -> list[int]:
        assert self.proc is not None
        pgid = self.proc.pid
        self.known_pids |= descendants(pgid)
        left: list[int] = []
        for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 10.0)):
            self.known_pids |= descendants(pgid)
            _signal_all(pgid, self.known_pids, sig)
            left = self._wait_gone(pgid, grace)
            if not left:
                break
        if self._reader:
            self._reader.join(timeout=5.0)
        wait_port_free(self.spec.port)
        return left

    def _wait_gone(self, pgid: int, grace: float) -> list[int]:
        assert self.proc is not None
        deadline = time.monotonic() + grace
        while True:
            self.proc.poll()  # reap our direct child, or it stays a zombie
            left = alive_in_group(pgid, self.known_pids)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)


def _open_log(path: Path) -> IO[bytes]:
    """The server log, truncated, private (0600) and never written through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.fdopen(os.open(path, flags, 0o600), "wb")
    except OSError as e:
        raise PlannerError(f"cannot write the server log {path}: {e.strerror or e}") from None
