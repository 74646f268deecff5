"""Put the planned load on a local vLLM server: N requests at once through `/v1/completions`, each
at the planned context length (prompt plus output), while a watcher reads `/metrics` for waiting
and preempted requests and KV-cache usage.

Prompts are lists of token ids, so their length is exact whatever the tokenizer; `min_tokens` and
`ignore_eos` make each request produce exactly its output length (vLLM silently shortens
`max_tokens` when prompt + output exceeds max_model_len, so the usage counts are checked). Each
answer is streamed, so every request's time to the first token and the gaps between tokens are
measured as they arrive (planner/verify/latency.py), and summed up beside the counts.
Bounded on purpose: local addresses only, at most MAX_REQUESTS threads, one request each. While it
runs, `progress` hears every PROGRESS_S seconds how many requests are done and the tokens/s.
Standard library only (threads + urllib).
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import urlsplit

from planner.errors import PlannerError
from planner.verify import latency, metrics
from planner.verify.server import http

MAX_REQUESTS = 4096
DEFAULT_OUTPUT_TOKENS = 128
"""Output per request, at most a quarter of the context: decoding is the slow part, while the KV
cache holds prompt and output alike, so the context length is what loads it."""
FIRST_TOKEN_ID = 3
"""Prompt ids start above the usual special ids (0-2)."""
PROGRESS_S = 10.0
READ_TIMEOUT_S = 300.0
"""No byte of a streamed answer for this long (or the load's timeout, if shorter) fails the request."""
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the local server: no proxy


@dataclass(frozen=True)
class LoadSpec:
    base_url: str
    model: str
    """The served model name (`/v1/models`)."""
    requests: int
    context_tokens: int
    vocab_size: int
    output_tokens: Optional[int] = None
    timeout_s: float = 1800.0
    poll_s: float = 0.5
    rounds: int = 1
    """Requests each of the `requests` senders makes, one after the other. 1: one burst, all at once at the
    full context. More: a closed loop at that concurrency; its first round ramps up (sender i asks for
    (i + 1) / N of the output, so the next rounds start spread out, as in a steady loop) and is not measured."""

    @property
    def split(self) -> tuple[int, int]:
        """(prompt, output) tokens summing to the context."""
        out = self.output_tokens or max(1, min(DEFAULT_OUTPUT_TOKENS, self.context_tokens // 4))
        out = min(out, self.context_tokens - 1)
        return self.context_tokens - out, out


@dataclass(frozen=True)
class RequestResult:
    ok: bool
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    error: Optional[str] = None
    ttft_s: Optional[float] = None
    """Time to the first streamed token."""
    itl_s: tuple[float, ...] = ()
    """Gaps between successive streamed tokens."""
    round: int = 0
    started: float = 0.0
    """When it was sent (time.monotonic)."""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    completed: int
    prompt_tokens: int
    output_tokens: int
    seconds: float
    max_running: Optional[float]
    max_waiting: Optional[float]
    preemptions: Optional[float]
    """Preemptions during the load (counter difference)."""
    peak_kv_cache_usage: Optional[float]
    """Largest KV-cache usage fraction seen by the watcher (sampled, so it may miss the very peak)."""
    errors: list[str] = field(default_factory=list)
    """The first few distinct failures."""
    latency: Optional[dict] = None
    """Measured TTFT, TPOT, ITL, end-to-end and tokens/s of the completed requests (latency.summarize)."""
    rounds: int = 1
    """Requests per sender (LoadSpec.rounds); `completed` counts the senders whose every request completed."""
    driver: str = "builtin"
    """What sent and timed the requests: 'builtin' (this module) or 'vllm bench serve' (planner/verify/bench.py)."""

    @property
    def complete(self) -> bool:
        return self.requests > 0 and self.completed == self.requests


@dataclass(frozen=True)
class LoadProgress:
    """What the load has done so far (told every PROGRESS_S seconds)."""

    seconds: float
    requests: int
    done: int
    """Requests answered (well or not)."""
    running: Optional[float]
    waiting: Optional[float]
    tokens_per_s: Optional[float]
    """Prompt plus generated tokens per second since the last report (vLLM's counters), else the
    tokens of the answered requests over the whole load; None before any is known."""


def check_local(base_url: str) -> None:
    host = urlsplit(base_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise PlannerError(f"the load goes to the local server only, not {host!r}")


def prompt_ids(index: int, length: int, vocab_size: int) -> list[int]:
    """Distinct random prompts per request: shared prefixes would let prefix caching share blocks."""
    rng = random.Random(index)
    hi = max(FIRST_TOKEN_ID + 1, vocab_size - 1)
    return [rng.randrange(FIRST_TOKEN_ID, hi) for _ in range(length)]


def _one(spec: LoadSpec, index: int, start: Optional[threading.Barrier], round_: int = 0) -> RequestResult:
    prompt, output = spec.split
    if round_ == 0 and spec.rounds > 1:  # the closed loop's ramp
        output = max(1, round(output * (index + 1) / spec.requests))
    body = json.dumps(
        {
            "model": spec.model,
            "prompt": prompt_ids(index + round_ * spec.requests, prompt, spec.vocab_size),
            "max_tokens": output,
            "min_tokens": output,
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    if start is not None:
        start.wait()
    t0 = time.monotonic()
    try:
        status, s = _stream(spec.base_url + "/v1/completions", body, t0, spec.timeout_s)
    except (OSError, ValueError) as e:  # refused, reset, or a read past the timeout
        error = f"HTTP 0: {type(e).__name__}: {e}"
        return RequestResult(False, 0, 0, time.monotonic() - t0, error, round=round_, started=t0)
    if isinstance(s, bytes):
        text = s.decode("utf-8", "replace")[:300] or "no answer"
        return RequestResult(False, 0, 0, time.monotonic() - t0, f"HTTP {status}: {text}", round=round_, started=t0)
    p, c = int(s.usage.get("prompt_tokens") or 0), int(s.usage.get("completion_tokens") or 0)
    ok = s.error is None and (p, c) == (prompt, output)
    error = s.error or (None if ok else f"got {p}+{c} tokens, asked {prompt}+{output}")
    return RequestResult(ok, p, c, s.e2e_s, error, s.ttft_s, s.itl_s, round_, t0)


def _stream(url: str, body: bytes, t0: float, timeout_s: float) -> tuple[int, latency.Stream | bytes]:
    """POST a streamed completion: (200, the timed stream), or (status, the error body)."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        resp = _OPENER.open(req, timeout=min(timeout_s, READ_TIMEOUT_S))
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    with resp:
        if resp.headers.get_content_type() == "application/json":  # a server that does not stream: e2e only
            usage = json.loads(resp.read()).get("usage") or {}
            return resp.status, latency.Stream(None, (), time.monotonic() - t0, usage, True)
        return resp.status, latency.read_stream(resp, t0, t0 + timeout_s)


class Watcher(threading.Thread):
    """Reads /metrics until stopped: peaks of running, waiting and KV usage; preemptions."""

    def __init__(self, spec: LoadSpec) -> None:
        super().__init__(daemon=True)
        self.spec = spec
        self.stop_event = threading.Event()
        self.readings: list[metrics.LoadGauges] = []
        self.latest: Optional[tuple[float, metrics.LoadGauges]] = None

    def read(self) -> Optional[metrics.LoadGauges]:
        status, raw = http(self.spec.base_url + "/metrics", timeout=5.0)
        return metrics.load_gauges(metrics.parse(raw.decode("utf-8", "replace"))) if status == 200 else None

    def run(self) -> None:
        while not self.stop_event.wait(self.spec.poll_s):
            g = self.read()
            if g:
                self.readings.append(g)
                self.latest = (time.monotonic(), g)  # one assignment: the reporter never sees half of it


def _peak(values: list[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def check_spec(spec: LoadSpec) -> None:
    """One-line errors for a load that cannot be sent (either driver)."""
    check_local(spec.base_url)
    if not 1 <= spec.requests <= MAX_REQUESTS:
        raise PlannerError(f"--requests {spec.requests}: give 1 to {MAX_REQUESTS}")
    if spec.context_tokens < 2:
        raise PlannerError(f"a context of {spec.context_tokens} tokens leaves no room for prompt and output")
    if not 1 <= spec.rounds <= MAX_REQUESTS // spec.requests:
        raise PlannerError(f"--rounds {spec.rounds}: give 1 to {MAX_REQUESTS // spec.requests} at this concurrency")


def run_load(spec: LoadSpec, progress: Optional[Callable[[LoadProgress], None]] = None) -> LoadResult:
    check_spec(spec)
    watcher = Watcher(spec)
    before = watcher.read()
    n = spec.requests
    results: list[Optional[RequestResult]] = [None] * (n * spec.rounds)  # round r of sender i at r * n + i
    # Release every first request at the same moment; the timeout breaks the barrier rather than hang.
    start = threading.Barrier(n + 1, timeout=120)

    def work(i: int) -> None:
        for r in range(spec.rounds):
            try:
                results[r * n + i] = _one(spec, i, start if r == 0 else None, r)
            except Exception as e:  # a thread's failure is a failed request, never a lost one
                results[r * n + i] = RequestResult(False, 0, 0, 0.0, f"{type(e).__name__}: {e}", round=r)
            if not results[r * n + i].ok:  # this sender stops: its later rounds are failed, not lost
                for later in range(r + 1, spec.rounds):
                    results[later * n + i] = RequestResult(
                        False, 0, 0, 0.0, "not sent: an earlier one failed", round=later
                    )
                return

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(spec.requests)]
    for t in threads:
        t.start()
    watcher.start()
    t0 = time.monotonic()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass  # some thread failed before sending: its result says why
    _wait(threads, t0 + spec.timeout_s + 5, Reporter(spec, results, watcher, t0, before, progress))
    seconds = time.monotonic() - t0
    watcher.stop_event.set()
    watcher.join(timeout=10)
    final = watcher.read()
    return _summarize(spec, results, seconds, before, watcher.readings + ([final] if final else []), final)


class Reporter:
    """Tells `progress` about the load every PROGRESS_S seconds."""

    def __init__(
        self,
        spec: LoadSpec,
        results: list[Optional[RequestResult]],
        watcher: Watcher,
        t0: float,
        before: Optional[metrics.LoadGauges],
        progress: Optional[Callable[[LoadProgress], None]],
    ) -> None:
        self.spec, self.results, self.watcher, self.t0, self.progress = spec, results, watcher, t0, progress
        self.before = before
        self.next = t0 + PROGRESS_S
        # (time, token counter) at the last report, first the reading taken before the load
        self.mark = (t0, before.tokens) if before is not None and before.tokens is not None else None

    def __call__(self, now: float) -> None:
        if self.progress is None or now < self.next:
            return
        self.next = now + PROGRESS_S
        done = [r for r in list(self.results) if r is not None]
        latest = self.watcher.latest
        last = latest[1] if latest else metrics.LoadGauges(None, None, None, None)
        count = len(done)
        if not self.results:  # a driver that reports only at its end: the server's count of finished requests
            first = self.before.finished if self.before is not None else None
            count = int(last.finished - first) if last.finished is not None and first is not None else 0
        total = len(self.results) or self.spec.requests * self.spec.rounds
        self.progress(
            LoadProgress(now - self.t0, total, count, last.running, last.waiting, self._rate(now, done, latest))
        )

    def _rate(
        self, now: float, done: list[RequestResult], latest: Optional[tuple[float, metrics.LoadGauges]]
    ) -> Optional[float]:
        if latest is not None and latest[1].tokens is not None:
            at, tokens = latest[0], latest[1].tokens
            mark, self.mark = self.mark, (at, tokens)
            return (tokens - mark[1]) / (at - mark[0]) if mark is not None and at > mark[0] else None
        tokens = sum(r.prompt_tokens + r.completion_tokens for r in done)
        return tokens / (now - self.t0) if done else None


def _wait(threads: list[threading.Thread], deadline: float, tick: Callable[[float], None]) -> None:
    """Join the request threads until the deadline, ticking about once a second."""
    for t in threads:
        while t.is_alive() and time.monotonic() < deadline:
            t.join(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            tick(time.monotonic())


def _summarize(
    spec: LoadSpec,
    results: list[Optional[RequestResult]],
    seconds: float,
    before: Optional[metrics.LoadGauges],
    readings: list[metrics.LoadGauges],
    final: Optional[metrics.LoadGauges] = None,
) -> LoadResult:
    done = [r for r in results if r is not None]
    errors: list[str] = []
    for r in done:
        if r.error and r.error not in errors and len(errors) < 5:
            errors.append(r.error)
    if len(done) < len(results):
        errors.append(f"{len(results) - len(done)} request(s) still running after {spec.timeout_s:g} s")
    n = spec.requests
    return result_of(
        spec,
        sum(all(r is not None and r.ok for r in results[i::n]) for i in range(n)),
        seconds,
        errors,
        _measured(spec, done, seconds),
        (before, readings, final),
    )


Gauges = tuple[Optional[metrics.LoadGauges], list[metrics.LoadGauges], Optional[metrics.LoadGauges]]
"""(the reading before the load, every reading during it, the one after it)."""


def result_of(
    spec: LoadSpec, completed: int, seconds: float, errors: list[str], measured: dict, gauges: Gauges, driver: str = ""
) -> LoadResult:
    """The load's record: what a driver measured, beside the peaks and counters the watcher read."""
    before, readings, final = gauges
    first = before.preemptions if before and before.preemptions is not None else 0.0
    last = _peak([g.preemptions for g in readings])
    if before is not None and final is not None:  # vLLM's own view, from its histograms
        measured["server"] = metrics.server_means(before.histograms, final.histograms)
    measured["driver"] = driver or "builtin"
    prompt, output = spec.split
    return LoadResult(
        requests=spec.requests,
        completed=completed,
        prompt_tokens=prompt,
        output_tokens=output,
        seconds=round(seconds, 2),
        max_running=_peak([g.running for g in readings]),
        max_waiting=_peak([g.waiting for g in readings]),
        preemptions=None if last is None else last - first,
        peak_kv_cache_usage=_peak([g.kv_cache_usage for g in readings]),
        errors=errors,
        latency=measured,
        rounds=spec.rounds,
        driver=driver or "builtin",
    )


def _measured(spec: LoadSpec, done: list[RequestResult], seconds: float) -> dict:
    """The latency summary: every request of a burst; a closed loop's rounds after the ramp, its rates
    over the window in which every sender runs a measured request."""
    timed = lambda rs: [  # noqa: E731
        latency.Timed(r.ttft_s, r.itl_s, r.seconds, r.prompt_tokens, r.completion_tokens, r.started) for r in rs
    ]
    if spec.rounds == 1:
        return latency.summarize(timed([r for r in done if r.ok]), seconds) | {"rounds": 1}
    ramp = [r for r in done if r.round == 0]
    last = [r for r in done if r.round == spec.rounds - 1]
    window = None
    if ramp and last and all(r.ok for r in ramp + last):
        window = (max(r.started + r.seconds for r in ramp), min(r.started + r.seconds for r in last))
    steady = timed([r for r in done if r.ok and r.round > 0])
    return latency.summarize(steady, seconds, window) | {"rounds": spec.rounds}
