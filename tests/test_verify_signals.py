"""`vllm-planner verify` run as its own process and signalled as a user, a terminal or a job scheduler
would: SIGINT, SIGTERM, SIGHUP or SIGQUIT during the start-up, the load or the tokenizer generation,
and a second signal while the server is being stopped. Afterwards no process of the server's tree
may be alive (read from /proc: every descendant seen before the signal, and anything in their
sessions, so children that left the process group count too), and the temp folder must be empty.
The server is the fake of test_verify_server.py; test_verify_e2e.py does the same to the real one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from test_verify_bench import fake_python  # noqa: F401 (fixture)
from test_verify_command import fake, tiny  # noqa: F401 (fixtures)
from test_verify_server import processes_with

REPO = Path(__file__).resolve().parent.parent
CPU = ["--device", "cpu", "--cpu-kvcache-gib", "1", "--max-model-len", "512", "--enforce-eager"]
# verify with a shorter SIGTERM grace, so a server that ignores SIGTERM is killed within the test's time
BOOT = (
    "import sys; from planner.verify import server; server.STOP_GRACE_S = float(sys.argv[1]); "
    "from planner.cli import run; run(sys.argv[2:])"
)


# ---- /proc, read independently of planner.verify.server ---------------------------------------


def proc_table() -> dict[int, dict[str, object]]:
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2 :].split()
        out[int(name)] = {"state": f[0], "ppid": int(f[1]), "sid": int(f[3]), "start": f[19]}
    return out


def tree(root: int) -> dict[int, dict[str, object]]:
    """Every descendant of `root` now, with its start time (a pid reused later is another process)."""
    table, out, todo = proc_table(), {}, [root]
    while todo:
        parent = todo.pop()
        for pid, p in table.items():
            if p["ppid"] == parent and pid not in out:
                out[pid] = p
                todo.append(pid)
    return out


def left_behind(seen: dict[int, dict[str, object]]) -> list[int]:
    """Live processes that are one of `seen`, or share a session that one of them led (the server's)."""
    own = proc_table()[os.getpid()]["sid"]
    sessions = {p["sid"] for p in seen.values()} - {own}
    return [
        pid
        for pid, p in proc_table().items()
        if p["state"] not in ("Z", "X") and ((pid in seen and seen[pid]["start"] == p["start"]) or p["sid"] in sessions)
    ]


# ---- verify in a process of its own ------------------------------------------------------------


class Verify:
    """`vllm-planner verify ARGS` as a child process; its stderr is collected as it comes."""

    def __init__(self, args: list[str], tmp: Path, grace: float = 2.0, **env: str) -> None:
        # verify's own temp folder, short enough that it lends the server one (a socket path has ~107 bytes)
        self.tmpdir = Path(tempfile.mkdtemp(prefix="vp-test-"))
        environ = {**os.environ, "TMPDIR": str(self.tmpdir), "PYTHONPATH": str(REPO), **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BOOT, str(grace), "verify", *args],
            cwd=REPO,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err: list[str] = []
        self._reader = threading.Thread(
            target=lambda: self.err.extend(iter(self.proc.stderr.readline, "")), daemon=True
        )
        self._reader.start()

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.err)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"no {text!r} from verify (status {self.proc.poll()}):\n{''.join(self.err)[-3000:]}")
            time.sleep(0.05)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"verify did not exit after the signal:\n{''.join(self.err)[-3000:]}")
        self._reader.join(5)
        return code

    def leftovers(self) -> list[str]:
        """What is left in the temp folder verify was given (which then goes)."""
        left = sorted(os.listdir(self.tmpdir))
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        return left

    @property
    def stderr(self) -> str:
        return "".join(self.err)


def assert_clean(v: Verify, seen: dict, marker: str) -> None:
    code = v.finish()
    assert code == 130 and "vllm-planner: interrupted" in v.stderr, v.stderr[-3000:]
    assert "Traceback" not in v.stderr
    assert left_behind(seen) == [] and processes_with(marker) == []
    assert v.leftovers() == []  # no temp folder, nothing the server left there, no empty log


SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_during_startup(tiny, fake, tmp_path, sig):
    # A server that never becomes healthy, with a child that left its process group (setsid).
    v = Verify(
        [str(tiny), *CPU, "--vllm-command", fake, "--timeout", "60", "--report", str(tmp_path / "r.json")],
        tmp_path,
        FAKE_MODE="hang",
        FAKE_ESCAPE="1",
        FAKE_TEMP_FILE="1",
    )
    v.wait_for("] loading weights")
    seen = tree(v.proc.pid)
    assert len(seen) >= 3  # the server, its child, the child in a session of its own
    v.send(sig)
    assert_clean(v, seen, fake.split()[-1])
    assert "stopping the server" in v.stderr
    assert "Starting to load model" in (tmp_path / "r.log").read_text()  # the log is kept beside the report
    assert f"server log: {tmp_path / 'r.log'}" in v.stderr


def test_second_and_third_signal_while_stopping_do_not_abort_the_stop(tiny, fake, tmp_path):
    # The server takes 1.5 s to shut down and its child ignores SIGTERM: only the SIGKILL after the
    # grace (2 s here) ends it. A SIGTERM and a SIGHUP sent meanwhile must not cut the stop short.
    v = Verify(
        [str(tiny), *CPU, "--vllm-command", fake, "--timeout", "60"],
        tmp_path,
        FAKE_MODE="hang",
        FAKE_TERM_DELAY="1.5",
        FAKE_IGNORE_TERM="1",
        FAKE_TEMP_FILE="1",
    )
    v.wait_for("] loading weights")
    seen = tree(v.proc.pid)
    v.send(signal.SIGTERM)
    v.wait_for("stopping the server")
    time.sleep(0.3)
    v.send(signal.SIGTERM)
    time.sleep(0.3)
    v.send(signal.SIGHUP)
    code = v.finish()
    assert code == 130 and left_behind(seen) == [], v.stderr[-3000:]
    assert processes_with(fake.split()[-1]) == []
    logs = v.leftovers()  # without --report the log is the one file kept, and named
    assert len(logs) == 1 and logs[0].endswith(".log") and f"server log: {v.tmpdir / logs[0]}" in v.stderr


def test_signal_during_the_load(tiny, fake, tmp_path):
    v = Verify(
        [
            str(tiny),
            *CPU,
            "--vllm-command",
            fake,
            "--timeout",
            "60",
            "--requests",
            "3",
            "--report",
            str(tmp_path / "r.json"),
        ],
        tmp_path,
        FAKE_REQUEST_S="60",
    )
    v.wait_for("verify: load: 3 request(s)")
    time.sleep(0.5)
    seen = tree(v.proc.pid)
    v.send(signal.SIGQUIT)
    assert_clean(v, seen, fake.split()[-1])
    assert not (tmp_path / "r.json").exists()  # no report of a run that did not finish


FAKE_PYTHON = """#!{python}
# A stand-in for vLLM's python whose tokenizer builder never finishes.
import sys, time
if sys.argv[1:2] == ["-c"] and "tokenizers" in sys.argv[2]:
    time.sleep(600)
sys.exit(1)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_signal_while_the_tokenizer_is_generated(tiny, tmp_path, sig):
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    v = Verify(
        [
            str(tiny),
            *CPU,
            "--load-format",
            "dummy",
            "--vllm-command",
            f"{python} -m vllm.entrypoints.openai.api_server",
            "--timeout",
            "60",
        ],
        tmp_path,
    )
    deadline = time.monotonic() + 60

    def tokenizer_child() -> set[int]:  # the long-lived one, not the release check before it (it exits at once)
        return (set(processes_with(str(python))) & set(processes_with("tokenizers"))) - {v.proc.pid}

    while not tokenizer_child() and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = tree(v.proc.pid)
    assert seen, v.stderr
    v.send(sig)
    assert_clean(v, seen, str(python))


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_during_vllm_bench_serve(tiny, fake_python, tmp_path, sig):
    # The load driver is vLLM's benchmark (a stand-in that hangs with two children, one in a session of
    # its own, and leaves a file in its temp folder): it goes with the server, and so does its folder.
    from test_verify_bench import SERVER_MODULE

    v = Verify(
        [str(tiny), *CPU, "--vllm-command", f"{fake_python} -m {SERVER_MODULE}", "--timeout", "60"]
        + ["--requests", "2", "--load-driver", "vllm-bench", "--report", str(tmp_path / "r.json")],
        tmp_path,
        FAKE_BENCH="hang",
    )
    v.wait_for("(vllm bench serve)")
    deadline = time.monotonic() + 30
    while len(processes_with("fake-bench-child")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = tree(v.proc.pid)
    assert len(processes_with("fake-bench-child")) == 2, v.stderr
    v.send(sig)
    assert_clean(v, seen, str(fake_python))
    assert processes_with("fake-bench-child") == [] and not (tmp_path / "r.json").exists()
