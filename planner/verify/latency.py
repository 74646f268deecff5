"""What one streamed request took, and what the load's requests took together: the server-sent events
of an OpenAI `/v1/completions` stream read as they arrive (`read_stream`), and the per-request times
summed up as `vllm bench serve` does (`summarize`).

Per request: TTFT is the time to the first chunk that carries a choice (a token; its text may be
empty, as a random model's token often decodes to nothing), ITL the gaps between successive such
chunks, TPOT (end-to-end - TTFT) / (output tokens - 1), the output tokens from the stream's final
usage chunk. Over the load: mean, p50, p90 and p99 of each, and the output and total tokens/s and
requests/s over the load's wall time. Standard library only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import IO, Any, Callable, Optional


@dataclass(frozen=True)
class Stream:
    """One streamed completion, timed from just before the request was sent."""

    ttft_s: Optional[float]
    itl_s: tuple[float, ...]
    e2e_s: float
    usage: dict[str, Any]
    """The final chunk's usage (prompt_tokens, completion_tokens), empty when none came."""
    done: bool
    """The stream ended with `data: [DONE]`."""
    error: Optional[str] = None


def read_stream(body: IO[bytes], t0: float, deadline: float, clock: Callable[[], float] = time.monotonic) -> Stream:
    """Read `data:` events until `[DONE]`, the end of the body, or the deadline (each read is bounded by
    the connection's own timeout)."""
    first: Optional[float] = None
    last = t0
    gaps: list[float] = []
    usage: dict[str, Any] = {}
    while True:
        line = body.readline()
        now = clock()
        if not line:
            return Stream(first, tuple(gaps), now - t0, usage, False, "the stream ended before [DONE]")
        data = line.strip()
        if data.startswith(b"data:"):
            data = data[5:].strip()
            if data == b"[DONE]":
                return Stream(first, tuple(gaps), now - t0, usage, True)
            try:
                event = json.loads(data)
            except ValueError:
                return Stream(first, tuple(gaps), now - t0, usage, False, f"not JSON in the stream: {data[:80]!r}")
            if isinstance(event, dict) and event.get("error"):
                return Stream(first, tuple(gaps), now - t0, usage, False, f"error in the stream: {event['error']}")
            if isinstance(event, dict) and event.get("choices"):
                if first is None:
                    first = now - t0
                else:
                    gaps.append(now - last)
                last = now
            if isinstance(event, dict) and isinstance(event.get("usage"), dict):
                usage = event["usage"]
        if now > deadline:
            return Stream(first, tuple(gaps), now - t0, usage, False, "timed out while streaming")


def tpot_s(ttft: Optional[float], e2e: float, output_tokens: int) -> Optional[float]:
    """Time per output token after the first; None for a single token or no first token."""
    if ttft is None or output_tokens < 2:
        return None
    return (e2e - ttft) / (output_tokens - 1)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def stats(values: list[float], scale: float = 1.0, digits: int = 2) -> Optional[dict[str, float]]:
    """mean, p50, p90, p99 of `values` x `scale`; None when there are none."""
    if not values:
        return None
    xs = [v * scale for v in values]
    out = {"mean": sum(xs) / len(xs)} | {f"p{q}": percentile(xs, q) for q in (50, 90, 99)}
    return {k: round(v, digits) for k, v in out.items()}


@dataclass(frozen=True)
class Timed:
    """One completed request's times and token counts."""

    ttft_s: Optional[float]
    itl_s: tuple[float, ...]
    e2e_s: float
    prompt_tokens: int
    output_tokens: int
    start_s: float = 0.0
    """When it was sent, on the clock of `summarize`'s window."""

    def token_times(self) -> list[float]:
        """When each streamed token arrived (the first at TTFT, then the gaps)."""
        if self.ttft_s is None:
            return []
        out = [self.start_s + self.ttft_s]
        for gap in self.itl_s:
            out.append(out[-1] + gap)
        return out


def _in_window(done: list[Timed], window: tuple[float, float]) -> tuple[float, float, float, float]:
    """(output tokens, prompt tokens, requests, seconds) within the window: tokens by their arrival, a
    prompt at its first token, a request at its end."""
    lo, hi = window
    out = sum(lo <= x <= hi for t in done for x in t.token_times())
    prompts = sum(t.prompt_tokens for t in done if t.ttft_s is not None and lo <= t.start_s + t.ttft_s <= hi)
    ends = sum(lo <= t.start_s + t.e2e_s <= hi for t in done)
    return out, prompts, ends, hi - lo


def summarize(done: list[Timed], seconds: float, window: Optional[tuple[float, float]] = None) -> dict[str, Any]:
    """The load's measured latency and throughput (`ttft_ms`, `tpot_ms`, `itl_ms`: mean and percentiles
    in ms; `e2e_latency_s` in s; tokens/s and requests/s over `seconds`, the load's wall time, or what
    arrived within `window` (start, end), a closed loop's steady part, when it is given and not empty)."""
    out_tokens = sum(t.output_tokens for t in done)
    all_tokens = out_tokens + sum(t.prompt_tokens for t in done)
    requests = len(done)
    if window is not None and window[1] > window[0] and done:
        out_tokens, prompts, requests, seconds = _in_window(done, window)
        all_tokens = out_tokens + prompts
    tpots = [x for t in done if (x := tpot_s(t.ttft_s, t.e2e_s, t.output_tokens)) is not None]
    rate = lambda n: round(n / seconds, 3) if seconds > 0 and done else None  # noqa: E731
    return {
        "requests": len(done),
        "ttft_ms": stats([t.ttft_s for t in done if t.ttft_s is not None], 1e3),
        "tpot_ms": stats(tpots, 1e3, 3),
        "itl_ms": stats([g for t in done for g in t.itl_s], 1e3, 3),
        "e2e_latency_s": stats([t.e2e_s for t in done], 1.0, 4),
        "output_tokens_per_s": rate(out_tokens),
        "total_tokens_per_s": rate(all_tokens),
        "requests_per_s": rate(requests),
        "seconds": round(seconds, 3),
    }
