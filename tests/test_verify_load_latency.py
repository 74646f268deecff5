"""The stream reader and the load's latency summary (planner/verify/latency.py), on recorded event
streams with a clock that moves as the lines are read."""

from __future__ import annotations

import io
import json

import pytest

from planner.verify import latency

TOKEN = b'data: {"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":"","logprobs":null}]}\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}\n'


def clock(times: list[float]):
    it = iter(times)
    return lambda: next(it)


@pytest.mark.parametrize(
    "lines, times, ttft, itl, done, error",
    [
        # first token at 0.25 s, then two 0.05 s gaps; the blank separator lines advance the clock too
        (
            [TOKEN, b"\n", TOKEN, b"\n", TOKEN, b"\n", USAGE, b"\n", b"data: [DONE]\n"],
            [0.25, 0.25, 0.30, 0.30, 0.35, 0.35, 0.36, 0.36, 0.37],
            0.25,
            (0.05, 0.05),
            True,
            None,
        ),
        # SSE comments and other fields are no tokens
        ([b": ping\n", b"event: x\n", TOKEN, USAGE, b"data: [DONE]\n"], [0.1, 0.2, 0.4, 0.5, 0.6], 0.4, (), True, None),
        ([TOKEN, b""], [0.1, 0.2], 0.1, (), False, "the stream ended before [DONE]"),
        ([TOKEN, b"data: {oops\n"], [0.1, 0.2], 0.1, (), False, "not JSON in the stream"),
        ([b'data: {"error":{"message":"boom"}}\n'], [0.1], None, (), False, "error in the stream: {'message': 'boom'}"),
        ([TOKEN, TOKEN, TOKEN], [0.1, 0.2, 9.0], 0.1, (0.1, 8.8), False, "timed out while streaming"),
    ],
    ids=["tokens", "comments", "cut", "bad JSON", "error event", "deadline"],
)
def test_read_stream(lines, times, ttft, itl, done, error):
    s = latency.read_stream(io.BytesIO(b"".join(lines)), 0.0, 5.0, clock(times))
    assert s.ttft_s == ttft and s.itl_s == pytest.approx(itl) and s.done is done
    assert (s.error or "").startswith(error or "") and (error is None) == (s.error is None)
    assert s.e2e_s == times[len(lines) - 1]  # the clock at the last line read
    if done:
        assert s.usage == json.loads(USAGE[5:])["usage"]


@pytest.mark.parametrize(
    "values, q, expected",
    [([1.0], 99, 1.0), ([1, 2, 3, 4], 50, 2.5), ([1, 2, 3, 4], 90, 3.7), ([4, 1, 3, 2], 0, 1), ([1, 2], 100, 2)],
)
def test_percentile_is_numpys_linear(values, q, expected):
    assert latency.percentile(values, q) == pytest.approx(expected)


def test_summarize_two_requests():
    done = [
        latency.Timed(0.2, (0.01, 0.03), 0.24, 100, 3),  # TPOT (0.24 - 0.2) / 2 = 20 ms
        latency.Timed(0.4, (0.02, 0.02), 0.44, 100, 3),
    ]
    m = latency.summarize(done, seconds=0.5)
    assert m["ttft_ms"] == {"mean": 300.0, "p50": 300.0, "p90": 380.0, "p99": 398.0}
    assert m["tpot_ms"]["mean"] == pytest.approx(20.0) and m["itl_ms"]["p50"] == pytest.approx(20.0)
    assert m["e2e_latency_s"]["mean"] == pytest.approx(0.34)
    assert (m["output_tokens_per_s"], m["total_tokens_per_s"], m["requests_per_s"]) == (12.0, 412.0, 4.0)


def test_single_token_outputs_have_no_tpot_and_no_requests_no_figures():
    m = latency.summarize([latency.Timed(0.2, (), 0.2, 10, 1)], 1.0)
    assert m["tpot_ms"] is None and m["itl_ms"] is None and m["ttft_ms"]["mean"] == 200.0
    empty = latency.summarize([], 1.0)
    assert empty["requests"] == 0 and all(empty[k] is None for k in ("ttft_ms", "tpot_ms", "output_tokens_per_s"))
