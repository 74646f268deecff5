"""Process handling of `verify`: a fake server (a small python script) that exits during start-up,
one that never becomes healthy before the deadline, one that spawns children (some escaping the
process group, some ignoring SIGTERM), a port already in use, and Ctrl-C. After each, no process of
the fake may remain and the port must be free. The fake also serves the endpoints verify reads, so
test_verify_command.py runs the whole flow on it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

from planner.errors import PlannerError
from planner.verify import server as srv_mod
from planner.verify.server import Server, ServerSpec, alive_in_group, descendants, free_port, port_in_use

FAKE_SERVER = r'''
"""A stand-in for vLLM's API server. FAKE_MODE: ok | exit | hang | kvfail. Takes vLLM's flags.
FAKE_TERM_DELAY: on SIGTERM, take that long to shut down (as vLLM does); FAKE_REQUEST_S: seconds per request;
FAKE_TEMP_FILE: leave a file in the temp folder, as vLLM leaves its vllm_dist_* files and sockets."""
import json, os, signal, subprocess, sys, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode = os.environ.get("FAKE_MODE", "ok")
args = sys.argv[1:]
port = int(args[args.index("--port") + 1]) if "--port" in args else 8000
marker = os.environ.get("FAKE_MARKER", "fake")
pid = os.getpid()

def log(line):
    print(line, flush=True)

def child(extra=""):
    # Children like vLLM's engine core and workers; one may leave the group, one may ignore SIGTERM.
    code = "import signal, time\n" + extra + "time.sleep(600)\n"
    return subprocess.Popen([sys.executable, "-c", code, marker])

log(f"(APIServer pid={pid}) INFO 11-26 00:15:40 [api_utils.py:347]  version 0.32.0")
if os.environ.get("FAKE_TERM_DELAY"):
    def slow_exit(signum, frame):
        log("fake: SIGTERM, shutting down slowly")
        time.sleep(float(os.environ["FAKE_TERM_DELAY"]))
        os._exit(0)
    signal.signal(signal.SIGTERM, slow_exit)
if os.environ.get("FAKE_TEMP_FILE"):
    open(os.path.join(tempfile.gettempdir(), f"vllm_dist_{pid}"), "w").close()
children = [child()]
if os.environ.get("FAKE_ESCAPE"):
    children.append(child("import os; os.setsid()\n"))
if os.environ.get("FAKE_IGNORE_TERM"):
    children.append(child("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"))
log(f"(Worker pid={pid}) INFO 11-26 00:16:10 [cpu_model_runner.py:68] Starting to load model x...")
time.sleep(float(os.environ.get("FAKE_DELAY", "0.3")))

if mode == "exit":
    log("Traceback (most recent call last):")
    log('  File "fake.py", line 1, in <module>')
    log("RuntimeError: fake start-up crash")
    sys.exit(3)
if mode == "kvfail":
    est, mml = os.environ.get("FAKE_EST", "2048"), os.environ.get("FAKE_MML", "4096")
    log(f"(EngineCore pid={pid}) ERROR 11-26 00:16:18 [core.py:1] ValueError: To serve at least one request with "
        f"the model's max seq len ({mml}), (0.50 GiB KV cache is needed, which is larger than the available KV "
        f"cache memory (0.25 GiB). Based on the available memory, the estimated maximum model length is {est}. "
        "Try increasing `gpu_memory_utilization`.")
    time.sleep(float(os.environ.get("FAKE_LINGER", "0.5")))
    sys.exit(1)
if os.environ.get("FAKE_TRACEBACK"):  # a logged exception the server survives
    log("Traceback (most recent call last):")
    log("OSError: optional feature unavailable")
if mode == "hang":
    while True:
        time.sleep(1)

tokens = int(os.environ.get("FAKE_TOKENS", "1048576"))
mml = int(os.environ.get("FAKE_MML", "512"))
conc = float(os.environ.get("FAKE_CONC", "2048"))
blocks = int(os.environ.get("FAKE_BLOCKS", "8192"))
completion_cut = int(os.environ.get("FAKE_CUT", "0"))
log(f"(Worker pid={pid}) INFO 11-26 00:16:18 [cpu_worker.py:260] "
    "Explicitly set (1.0/15.46) GiB for KV cache on node 0.")
log(f"(EngineCore pid={pid}) INFO 11-26 00:16:18 [kv_cache_utils.py:2327] CPU KV cache size: {tokens:,} tokens, "
    f"Maximum concurrency for {mml:,} tokens per request: {conc:.2f}x")
state = {"running": 0, "preempted": 0}
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def reply(self, code, body, ctype="application/json"):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/health":
            self.reply(200, "")
        elif self.path == "/version":
            self.reply(200, json.dumps({"version": "0.32.0"}))
        elif self.path == "/v1/models":
            self.reply(200, json.dumps({"data": [{"id": "served-name"}]}))
        elif self.path == "/metrics":
            self.reply(200, "\n".join([
                "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
                f'vllm:cache_config_info{{block_size="128",engine="0",gpu_memory_utilization="0.92",'
                f'kv_cache_memory_bytes="1073741824",kv_cache_size_tokens="{tokens}",'
                f'kv_cache_max_concurrency="{conc}",num_gpu_blocks="{blocks}",num_cpu_blocks="None"}} 1.0',
                f'vllm:num_requests_running{{engine="0"}} {state["running"]}',
                'vllm:num_requests_waiting{engine="0"} 0.0',
                f'vllm:num_preemptions_total{{engine="0"}} {state["preempted"]}',
                f'vllm:kv_cache_usage_perc{{engine="0"}} {state["running"] * 4 / (blocks - 1)}',
            ]) + "\n", "text/plain")
        else:
            self.reply(404, "{}")
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if req.get("model") != "served-name":
            return self.reply(404, json.dumps({"error": "no such model"}))
        with lock:
            state["running"] += 1
        time.sleep(float(os.environ.get("FAKE_REQUEST_S", "0.6")))
        with lock:
            state["running"] -= 1
        out = req["max_tokens"] - completion_cut
        self.reply(200, json.dumps({"usage": {"prompt_tokens": len(req["prompt"]), "completion_tokens": out}}))

server = ThreadingHTTPServer(("127.0.0.1", port), H)
log("INFO:     Application startup complete.")
server.serve_forever()
'''


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    path = tmp_path / "fake_vllm.py"
    path.write_text(FAKE_SERVER)
    return path


def processes_with(marker: str) -> list[int]:
    """Live processes whose command line carries the marker (whatever their group)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmd and state not in ("Z", "X"):
            out.append(int(name))
    return out


def spec_for(fake: Path, tmp_path: Path, marker: str, timeout_s: float = 30.0, port: int | None = None) -> ServerSpec:
    port = port or free_port()
    return ServerSpec(
        [sys.executable, str(fake), "--model", "x", "--port", str(port), marker],
        port,
        {"FAKE_MARKER": marker},
        timeout_s,
        tmp_path / "server.log",
    )


def run_fake(fake: Path, tmp_path: Path, monkeypatch, timeout_s: float = 30.0, **env: str):
    marker = f"fake-{uuid.uuid4().hex}"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    spec = spec_for(fake, tmp_path, marker, timeout_s)
    phases: list[str] = []
    with Server(spec, lambda phase, t, changed: phases.append(phase) if changed else None) as s:
        result = s.start()
        during = processes_with(marker)
        pgid = s.proc.pid
        started = list(phases)
    assert phases == started + ["stopping the server"]  # the stop is announced, once
    return result, started, marker, pgid, during, spec


def assert_nothing_left(marker: str, pgid: int, port: int) -> None:
    assert processes_with(marker) == []
    assert alive_in_group(pgid) == []
    assert not port_in_use(port)


def test_server_that_exits_during_startup(fake, tmp_path, monkeypatch):
    result, phases, marker, pgid, during, spec = run_fake(fake, tmp_path, monkeypatch, FAKE_MODE="exit")
    assert result.outcome in ("failed", "exited")  # the traceback is read as a failure
    assert "fake start-up crash" in result.error
    assert phases[0] == "starting" and "loading weights" in phases
    assert_nothing_left(marker, pgid, spec.port)
    assert "RuntimeError: fake start-up crash" in spec.log_path.read_text()


def test_server_exit_without_a_traceback_reports_the_status(fake, tmp_path, monkeypatch):
    script = tmp_path / "quiet.py"
    script.write_text("import sys; print('bad flag --foo', flush=True); sys.exit(2)\n")
    marker = f"quiet-{uuid.uuid4().hex}"
    spec = ServerSpec([sys.executable, str(script), marker], free_port(), {}, 30.0, None)
    with Server(spec) as s:
        result = s.start()
    assert result.outcome == "exited" and result.exit_code == 2
    assert "status 2" in result.error and "bad flag --foo" in result.error
    assert processes_with(marker) == []


def test_server_never_healthy_times_out_and_leaves_nothing(fake, tmp_path, monkeypatch):
    t0 = time.monotonic()
    result, phases, marker, pgid, during, spec = run_fake(
        fake, tmp_path, monkeypatch, timeout_s=3.0, FAKE_MODE="hang", FAKE_ESCAPE="1"
    )
    assert result.outcome == "timeout"
    assert "not healthy after 3 s" in result.error and "loading weights" in result.error
    assert len(during) >= 3  # the server, a child, and a child that left the process group
    assert time.monotonic() - t0 < 40
    assert_nothing_left(marker, pgid, spec.port)


def test_children_ignoring_sigterm_are_killed(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(srv_mod, "STOP_GRACE_S", 1.0)
    result, _, marker, pgid, during, spec = run_fake(
        fake, tmp_path, monkeypatch, timeout_s=2.0, FAKE_MODE="hang", FAKE_IGNORE_TERM="1"
    )
    assert result.outcome == "timeout" and len(during) >= 3
    assert_nothing_left(marker, pgid, spec.port)


def test_healthy_server_is_ready_then_stopped(fake, tmp_path, monkeypatch):
    result, phases, marker, pgid, during, spec = run_fake(fake, tmp_path, monkeypatch, FAKE_ESCAPE="1")
    assert result.outcome == "ready" and result.error is None
    assert result.figures.kv_cache_tokens == 1048576 and result.figures.max_concurrency == 2048.0
    assert phases == ["starting", "loading weights", "kv cache", "ready"]
    assert_nothing_left(marker, pgid, spec.port)


def test_a_traceback_the_server_survives_still_ends_ready(fake, tmp_path, monkeypatch):
    result, phases, marker, pgid, _, spec = run_fake(fake, tmp_path, monkeypatch, FAKE_TRACEBACK="1")
    assert result.outcome == "ready" and phases[-1] == "failed"
    assert_nothing_left(marker, pgid, spec.port)


def test_port_in_use_is_bad_input_and_starts_nothing(fake, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        marker = f"fake-{uuid.uuid4().hex}"
        spec = spec_for(fake, tmp_path, marker, port=port)
        with pytest.raises(PlannerError, match=f"port {port} is in use"):
            with Server(spec) as s:
                s.start()
        assert s.proc is None and processes_with(marker) == []


def test_port_bound_on_all_addresses_counts_as_in_use():
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        assert port_in_use(busy.getsockname()[1])


def test_ctrl_c_during_startup_stops_everything(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "hang")
    marker = f"fake-{uuid.uuid4().hex}"
    spec = spec_for(fake, tmp_path, marker)

    def interrupt(phase, elapsed, changed):
        if phase == "loading weights":
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread

    with pytest.raises(KeyboardInterrupt):
        with Server(spec, interrupt) as s:
            s.start()
    assert_nothing_left(marker, s.proc.pid, spec.port)


def test_sigterm_to_verify_becomes_an_interrupt(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "hang")
    marker = f"fake-{uuid.uuid4().hex}"
    spec = spec_for(fake, tmp_path, marker)

    def term(phase, elapsed, changed):
        if phase == "loading weights":
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with Server(spec, term) as s:
            s.start()
    assert signal.getsignal(signal.SIGTERM) == before
    assert_nothing_left(marker, s.proc.pid, spec.port)


def test_a_signal_during_a_normal_stop_waits_for_the_stop(fake, tmp_path, monkeypatch):
    # SIGTERM (or the terminal closing) while the server is being stopped after a good run: the stop
    # finishes, then the interrupt comes.
    marker = f"fake-{uuid.uuid4().hex}"
    monkeypatch.setenv("FAKE_TERM_DELAY", "1")
    spec = spec_for(fake, tmp_path, marker)

    def hang_up(phase, elapsed, changed):
        if phase == "stopping the server":
            os.kill(os.getpid(), signal.SIGHUP)

    before = signal.getsignal(signal.SIGHUP)
    with pytest.raises(KeyboardInterrupt, match="SIGHUP"):
        with Server(spec, hang_up) as s:
            assert s.start().outcome == "ready"
    assert signal.getsignal(signal.SIGHUP) == before
    assert_nothing_left(marker, s.proc.pid, spec.port)
    assert "shutting down slowly" in spec.log_path.read_text()  # it was stopped, not abandoned
    assert s.stop() == [] and s.stop() is s.stop()  # once: later calls signal nothing


def test_missing_launcher_is_bad_input(tmp_path):
    spec = ServerSpec([str(tmp_path / "no-such-vllm")], free_port(), {}, 5.0, None)
    with pytest.raises(PlannerError, match="cannot run"):
        with Server(spec) as s:
            s.start()


def test_descendants_follow_the_tree():
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in descendants(os.getpid())
        assert os.getpid() in descendants(os.getppid())
    finally:
        child.kill()
        child.wait()
