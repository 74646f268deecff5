"""Read vLLM's Prometheus `/metrics` text: the KV-cache configuration (`vllm:cache_config_info`) and
the load gauges (`vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`,
`vllm:num_preemptions_total`, the token counters `vllm:prompt_tokens_total`,
`vllm:generation_tokens_total`, the finished requests `vllm:request_success_total`), and the latency
histograms' sums and counts (TTFT, TPOT, ITL, end-to-end, queue) for vLLM's own mean over a load.
Pure standard library; the text format is simple enough to parse here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

# name{label="value",...} value [timestamp]; the label block is optional.
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_]\w*)="(?P<value>(?:[^"\\]|\\.)*)"')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _unescape(text: str) -> str:
    return re.sub(r'\\[\\"n]', lambda m: _ESCAPES[m.group(0)], text)


def parse(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition; comments and malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        m = _SAMPLE.match(line) if line and not line.startswith("#") else None
        if not m:
            continue
        try:
            value = float(m["value"])
        except ValueError:
            continue
        labels = {lm["key"]: _unescape(lm["value"]) for lm in _LABEL.finditer(m["labels"] or "")}
        out.append(Sample(m["name"], labels, value))
    return out


def total(samples: list[Sample], name: str) -> Optional[float]:
    """Sum over label sets (one per engine / model); None when the metric is absent."""
    values = [s.value for s in samples if s.name == name]
    return sum(values) if values else None


def peak(samples: list[Sample], name: str) -> Optional[float]:
    """Largest value over label sets (a usage fraction is per engine, not additive)."""
    values = [s.value for s in samples if s.name == name]
    return max(values) if values else None


def _num(labels: dict[str, str], key: str) -> Optional[float]:
    try:
        return float(labels[key])
    except (KeyError, ValueError):  # absent, or 'None' for an unset option
        return None


def _int(labels: dict[str, str], key: str) -> Optional[int]:
    v = _num(labels, key)
    return int(v) if v is not None else None


@dataclass(frozen=True)
class CacheConfig:
    """The labels of `vllm:cache_config_info` (vLLM's CacheConfig as strings; numbers parsed)."""

    num_gpu_blocks: Optional[int] = None
    block_size: Optional[int] = None
    kv_cache_size_tokens: Optional[int] = None
    kv_cache_memory_bytes: Optional[int] = None
    kv_cache_max_concurrency: Optional[float] = None
    gpu_memory_utilization: Optional[float] = None
    cache_dtype: Optional[str] = None
    labels: dict[str, str] = field(default_factory=dict)


def cache_config(samples: list[Sample]) -> Optional[CacheConfig]:
    info = next((s for s in samples if s.name == "vllm:cache_config_info"), None)
    if info is None:
        return None
    lb = info.labels
    return CacheConfig(
        num_gpu_blocks=_int(lb, "num_gpu_blocks"),
        block_size=_int(lb, "block_size"),
        kv_cache_size_tokens=_int(lb, "kv_cache_size_tokens"),
        kv_cache_memory_bytes=_int(lb, "kv_cache_memory_bytes"),
        kv_cache_max_concurrency=_num(lb, "kv_cache_max_concurrency"),
        gpu_memory_utilization=_num(lb, "gpu_memory_utilization"),
        cache_dtype=lb.get("cache_dtype"),
        labels=dict(lb),
    )


@dataclass(frozen=True)
class LoadGauges:
    """One reading of the gauges watched while the load runs."""

    running: Optional[float]
    waiting: Optional[float]
    preemptions: Optional[float]
    """Counter since start-up (vLLM exports it as `vllm:num_preemptions_total`)."""
    kv_cache_usage: Optional[float]
    """Fraction of KV blocks in use, 0..1 (`vllm:kv_cache_usage_perc`, despite the name)."""
    tokens: Optional[float] = None
    """Prompt plus generated tokens processed since start-up (counters), for the load's tokens/s."""
    histograms: dict[str, tuple[float, float]] = field(default_factory=dict)
    """(sum, count) of vLLM's latency histograms (SERVER_LATENCY), for its own view of the load's latency."""
    finished: Optional[float] = None
    """Requests finished since start-up, any reason (`vllm:request_success_total`), for a load driver
    that reports only at its end (vllm bench serve)."""


def load_gauges(samples: list[Sample]) -> LoadGauges:
    counters = [total(samples, n) for n in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total")]
    return LoadGauges(
        running=total(samples, "vllm:num_requests_running"),
        waiting=total(samples, "vllm:num_requests_waiting"),
        preemptions=total(samples, "vllm:num_preemptions_total"),
        kv_cache_usage=peak(samples, "vllm:kv_cache_usage_perc"),
        tokens=None if all(c is None for c in counters) else sum(c or 0.0 for c in counters),
        histograms=histograms(samples),
        finished=total(samples, "vllm:request_success_total"),
    )


# figure -> (vLLM's histogram names, newest first; scale of its seconds to the figure's unit)
SERVER_LATENCY = {
    "ttft_ms": (("vllm:time_to_first_token_seconds",), 1e3),
    "tpot_ms": (("vllm:request_time_per_output_token_seconds",), 1e3),
    "itl_ms": (("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"), 1e3),
    "e2e_latency_s": (("vllm:e2e_request_latency_seconds",), 1.0),
    "queue_ms": (("vllm:request_queue_time_seconds",), 1e3),
}


def histograms(samples: list[Sample]) -> dict[str, tuple[float, float]]:
    """(sum, count) of each latency histogram the server exports, summed over engines."""
    out = {}
    for names, _ in SERVER_LATENCY.values():
        for name in names:
            s, n = total(samples, name + "_sum"), total(samples, name + "_count")
            if s is not None and n is not None:
                out[name] = (s, n)
    return out


def server_means(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """vLLM's own mean of each figure over what it observed between two readings (the load's requests)."""
    out = {}
    for figure, (names, scale) in SERVER_LATENCY.items():
        name = next((n for n in names if n in after), None)
        if name is None:
            continue
        s0, n0 = before.get(name, (0.0, 0.0))
        s1, n1 = after[name]
        if n1 > n0:
            out[figure] = round((s1 - s0) / (n1 - n0) * scale, 3)
    return out
