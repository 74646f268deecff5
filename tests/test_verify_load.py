"""The planned load: N requests at once, each exactly the context length, against an in-process fake
of vLLM's /v1/completions and /metrics."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from planner.errors import PlannerError
from planner.verify import load as load_mod
from planner.verify.load import LoadSpec, prompt_ids, run_load


class Fake:
    def __init__(
        self,
        cut: int = 0,
        status: int = 200,
        preempt: int = 0,
        delays: tuple[float, ...] = (),
        counters: bool = False,
        first_s: float = 0.6,
        stall_after: int | None = None,
        end: str = "done",
        streams: bool = True,
        gap_s: float | None = None,
    ) -> None:
        self.cut, self.status, self.preempt = cut, status, preempt
        self.delays = list(delays)  # seconds per request, in arrival order; then 1.2
        self.counters = counters  # export vLLM's token counters
        self.first_s = first_s  # of a request's time, until its first token; the rest spread over the others
        self.stall_after = stall_after  # tokens streamed before the answer stalls for 30 s
        self.end = end  # "done": [DONE] after the usage chunk; "cut": the body just ends; "error": an error event
        self.streams = streams  # False: one JSON answer, as a server that ignores "stream" sends
        self.gap_s = gap_s  # seconds per token after the first (then a request's time follows its output)
        self.running = self.peak = self.preemptions = self.tokens = 0
        self.bodies: list[dict] = []
        self.lock = threading.Lock()


def serve(fake: Fake) -> ThreadingHTTPServer:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # chunked answers, as vLLM's server streams them

        def log_message(self, *a):
            pass

        def send(self, code: int, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def event(self, payload: str) -> None:
            data = f"data: {payload}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def do_GET(self):
            with fake.lock:
                lines = [
                    f"vllm:num_requests_running {fake.running}",
                    "vllm:num_requests_waiting 0",
                    f"vllm:num_preemptions_total {fake.preemptions}",
                    f"vllm:kv_cache_usage_perc {fake.running / 10}",
                ]
                if fake.counters:
                    lines += [
                        f'vllm:prompt_tokens_total{{engine="0"}} {fake.tokens * 3 / 4}',
                        f'vllm:generation_tokens_total{{engine="0"}} {fake.tokens / 4}',
                    ]
            self.send(200, "\n".join(lines))

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with fake.lock:
                fake.bodies.append(body)
                fake.running += 1
                fake.peak = max(fake.peak, fake.running)
                delay = fake.delays.pop(0) if fake.delays else 1.2
            # 1.2 s in all: long enough for the watcher (0.5 s) to see every request running
            try:
                self.answer(body, delay)
            finally:
                with fake.lock:
                    fake.running -= 1
                    fake.preemptions += fake.preempt
                    fake.tokens += len(body["prompt"]) + body["max_tokens"]

        def answer(self, body: dict, delay: float) -> None:
            if fake.status != 200 or not fake.streams:
                time.sleep(delay)
                if fake.status != 200:
                    return self.send(fake.status, '{"error": "boom"}')
                usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": body["max_tokens"] - fake.cut}
                return self.send(200, json.dumps({"usage": usage}))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            n = body["max_tokens"] - fake.cut
            first = min(delay, fake.first_s)
            time.sleep(first)
            for i in range(n):
                if i:
                    time.sleep(fake.gap_s if fake.gap_s is not None else (delay - first) / max(1, n - 1))
                if fake.stall_after is not None and i == fake.stall_after:
                    time.sleep(30)
                self.event(json.dumps({"choices": [{"index": 0, "text": "" if i % 3 else "x"}], "usage": None}))
            if fake.end == "error":
                self.event(json.dumps({"error": {"message": "engine died", "code": 500}}))
            usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": n}
            self.event(json.dumps({"choices": [], "usage": usage}))
            if fake.end != "cut":
                self.event("[DONE]")
            self.wfile.write(b"0\r\n\r\n")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture
def server():
    started = []

    def start(**kw) -> tuple[Fake, str]:
        fake = Fake(**kw)
        httpd = serve(fake)
        started.append(httpd)
        return fake, f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for h in started:
        h.shutdown()
        h.server_close()


def spec(url: str, n: int = 4, ctx: int = 512, **kw) -> LoadSpec:
    return LoadSpec(url, "m", n, ctx, vocab_size=1024, **kw)


def test_every_request_at_the_context_length_at_once(server):
    fake, url = server()
    r = run_load(spec(url, n=6))
    assert r.complete and r.completed == 6 and r.errors == []
    assert (r.prompt_tokens, r.output_tokens) == (384, 128)  # output: a quarter of the context, at most 128
    assert fake.peak == 6 and r.max_running == 6
    assert r.preemptions == 0 and r.peak_kv_cache_usage == pytest.approx(0.6)
    b = fake.bodies[0]
    assert len(b["prompt"]) + b["max_tokens"] == 512 and b["min_tokens"] == b["max_tokens"] and b["ignore_eos"]
    assert all(3 <= t < 1023 for body in fake.bodies for t in body["prompt"])
    assert len({tuple(body["prompt"][:8]) for body in fake.bodies}) == 6  # no shared prefixes


def test_shortened_outputs_do_not_count_as_complete(server):
    _, url = server(cut=1)
    r = run_load(spec(url, n=2))
    assert not r.complete and r.completed == 0
    assert r.errors == ["got 384+127 tokens, asked 384+128"]


def test_http_errors_and_preemptions_are_reported(server):
    _, url = server(status=500, preempt=1)
    r = run_load(spec(url, n=3))
    assert r.completed == 0 and "HTTP 500" in r.errors[0]
    assert r.preemptions == 3


def test_unreachable_server_fails_every_request():
    r = run_load(spec("http://127.0.0.1:9", n=2, timeout_s=5))
    assert r.completed == 0 and r.errors and r.errors[0].startswith("HTTP 0")
    assert r.preemptions is None and r.max_running is None


def test_bounds():
    with pytest.raises(PlannerError, match="local server only"):
        run_load(spec("http://example.com:8000"))
    with pytest.raises(PlannerError, match="--requests 0"):
        run_load(spec("http://127.0.0.1:9", n=0))
    with pytest.raises(PlannerError, match="no room"):
        run_load(spec("http://127.0.0.1:9", ctx=1))


def test_split_and_prompts():
    assert spec("u", ctx=100).split == (75, 25)
    assert spec("u", ctx=8192).split == (8064, 128)
    assert spec("u", ctx=2).split == (1, 1)
    assert spec("u", ctx=512, output_tokens=600).split == (1, 511)
    assert prompt_ids(1, 10, 1024) == prompt_ids(1, 10, 1024) != prompt_ids(2, 10, 1024)


@pytest.mark.parametrize("counters", [True, False], ids=["vLLM's token counters", "answered requests"])
def test_progress_while_the_load_runs(server, monkeypatch, counters):
    monkeypatch.setattr(load_mod, "PROGRESS_S", 0.5)
    _, url = server(delays=(0.2, 3.0), counters=counters)  # one request answers at once, one runs 3 s
    seen = []
    r = run_load(spec(url, n=2), seen.append)
    assert r.complete and seen and all(p.requests == 2 for p in seen)
    assert seen[0].seconds >= 0.5 and seen[0].done == 1  # the first report after PROGRESS_S: the quick one is done
    assert [p.seconds for p in seen] == sorted(p.seconds for p in seen)
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    waiting_on_the_slow_one = [p for p in seen if p.done == 1 and p.running == 1]
    assert len(waiting_on_the_slow_one) >= 2
    if counters:  # the rate since the last report: 512 tokens in the first interval, then none
        assert seen[0].tokens_per_s > 0 and waiting_on_the_slow_one[-1].tokens_per_s == 0
    else:  # no counters: the answered tokens over the whole load
        last = waiting_on_the_slow_one[-1]
        assert last.tokens_per_s == pytest.approx(512 / last.seconds, rel=0.2)


def test_streamed_requests_measure_ttft_tpot_itl_and_throughput(server):
    fake, url = server(first_s=0.5)  # 0.5 s to the first token, then 127 gaps over the remaining 0.7 s
    r = run_load(spec(url, n=3))
    assert r.complete and all(b["stream"] and b["stream_options"] == {"include_usage": True} for b in fake.bodies)
    m = r.latency
    assert m["requests"] == 3
    assert 500 <= m["ttft_ms"]["mean"] < 700 and m["ttft_ms"]["p50"] <= m["ttft_ms"]["p99"]
    gap_ms = 700 / 127
    assert gap_ms * 0.9 < m["tpot_ms"]["mean"] < gap_ms * 1.6  # sleeps overshoot, never undershoot
    assert gap_ms * 0.9 < m["itl_ms"]["p50"] < gap_ms * 1.6  # empty-text chunks count: they are tokens
    assert 1.2 <= m["e2e_latency_s"]["mean"] < 1.6
    assert m["output_tokens_per_s"] == pytest.approx(3 * 128 / r.seconds, rel=0.02)
    assert m["requests_per_s"] == pytest.approx(3 / r.seconds, rel=0.02)
    assert m["total_tokens_per_s"] == pytest.approx(3 * 512 / r.seconds, rel=0.02)


@pytest.mark.parametrize(
    "fake_kw, timeout_s, error",
    [
        ({"end": "cut"}, 60, "the stream ended before [DONE]"),
        ({"end": "error"}, 60, "error in the stream: {'message': 'engine died', 'code': 500}"),
        ({"stall_after": 5}, 2, "HTTP 0: TimeoutError"),
    ],
    ids=["no [DONE]", "an error event", "a stalled stream"],
)
def test_a_broken_stream_is_a_failed_request(server, fake_kw, timeout_s, error):
    _, url = server(**fake_kw)
    t0 = time.monotonic()
    r = run_load(spec(url, n=2, timeout_s=timeout_s))
    assert r.completed == 0 and r.errors and r.errors[0].startswith(error), r.errors
    assert r.latency["requests"] == 0 and r.latency["ttft_ms"] is None and r.latency["output_tokens_per_s"] is None
    assert time.monotonic() - t0 < 20  # the stall is cut by the read timeout, not waited out


def test_a_server_that_does_not_stream_gives_end_to_end_only(server):
    _, url = server(streams=False)
    r = run_load(spec(url, n=2))
    assert r.complete and r.latency["requests"] == 2 and 1.2 <= r.latency["e2e_latency_s"]["mean"] < 1.6
    assert r.latency["ttft_ms"] is None and r.latency["tpot_ms"] is None and r.latency["itl_ms"] is None


def test_a_closed_loop_ramps_up_then_measures_its_steady_rounds(server):
    fake, url = server(first_s=0.2, gap_s=0.004)  # a full request: 0.2 s + 127 x 4 ms
    r = run_load(spec(url, n=4, rounds=3))
    assert r.complete and r.completed == 4 and r.rounds == 3 and len(fake.bodies) == 12
    ramp = sorted(b["max_tokens"] for b in fake.bodies[:4])
    assert ramp == [32, 64, 96, 128] and all(b["max_tokens"] == 128 for b in fake.bodies[4:])
    assert len({tuple(b["prompt"][:8]) for b in fake.bodies}) == 12  # no shared prefixes across rounds either
    m = r.latency
    assert m["rounds"] == 3 and m["requests"] == 8  # the ramp is not measured
    assert 200 <= m["ttft_ms"]["mean"] < 400 and 4.0 <= m["tpot_ms"]["mean"] < 8.0  # sleeps overshoot on a busy CPU
    # four senders, each a request of 128 tokens after another, at the measured request time
    steady = 4 * 128 / m["e2e_latency_s"]["mean"]
    assert steady * 0.75 < m["output_tokens_per_s"] < steady * 1.15
    assert m["seconds"] < r.seconds * 0.75  # the rates are over the window where all four run measured requests


def test_a_closed_loop_sender_stops_at_its_first_failure(server):
    _, url = server(status=500)
    r = run_load(spec(url, n=2, rounds=3))
    assert (
        r.completed == 0
        and r.rounds == 3
        and r.errors[:2] == ['HTTP 500: {"error": "boom"}', "not sent: an earlier one failed"]
    )
    assert r.latency["requests"] == 0 and r.latency["output_tokens_per_s"] is None
    with pytest.raises(PlannerError, match="--rounds 0"):
        run_load(spec(url, n=2, rounds=0))
