"""Read the memory figures and the start-up phase out of vLLM start-up logs (0.10 to 0.33).

`parse_log(text)` / `parse_file(path)` return every figure the log printed as a `StartupFigures`;
`LogFollower` takes the same log one line at a time and reports phase changes (`PHASES`) for a live
progress display. `parse_log` is a `LogFollower` fed the whole text, so every log format is described
once, in `_RULES`.

Format strings and the versions that print them were read from the released vLLM wheels (see
`shared/reference/vllm-memory.md` §2.4, §2.5, §11). Pure standard library; no I/O except `parse_file`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, Optional

from planner.verify.logrecords import _Record, _records, _root_exception, _Tracebacks

PHASES = ("starting", "loading weights", "profiling", "kv cache", "cuda graphs", "ready", "failed")
_TERMINAL = ("ready", "failed")


@dataclass(frozen=True)
class StartupFigures:
    """What one vLLM start-up log printed. None: the log did not print it (version, log level, crash)."""

    vllm_version: Optional[str] = None
    """From 'vLLM API server version X', the 0.2x banner 'version X', or 'Initializing a V1 LLM engine (vX)'."""
    device_name: Optional[str] = None
    """'GPU', 'CPU', 'XPU' or 'GPU + host' (HiSparse, 0.32+), from the '<device> KV cache size' line."""
    weights_gib: Optional[float] = None
    """'Model loading took X GiB' (first worker to print it), all three V1 formats and the V2-runner one."""
    activation_peak_gib: Optional[float] = None
    """DEBUG 'torch peak memory increase'; else 'P GiB for peak activation' (0.27+: P also holds the applied
    CUDA-graph estimate, so it is not the same quantity as the DEBUG value)."""
    non_torch_gib: Optional[float] = None
    """DEBUG 'non-torch forward increase memory', or 'N GiB for non-torch memory' (0.10.2-0.26 only)."""
    consumed_gib: Optional[float] = None
    """0.27+ 'total consumed (from mem_get_info)' or 'A GiB for consumed memory'; CPU: memory used by non-KV."""
    non_kv_cache_gib: Optional[float] = None
    """DEBUG 'Total non KV cache memory' from the 'Memory profiling takes' line."""
    cudagraph_estimate_gib: Optional[float] = None
    """'Estimated CUDA graph memory: X GiB total' (0.18+), or the '(estimated)' part of the pool line."""
    cudagraph_actual_gib: Optional[float] = None
    """'Graph capturing finished ..., took X GiB', 'CUDA graph pool memory: X GiB (actual)', 'G GiB for CUDAGraph'."""
    available_kv_gib: Optional[float] = None
    """'Available KV cache memory' (minimum over workers), the kv_cache_memory_bytes reservation, or CPU '(X/T) GiB'."""
    kv_cache_tokens: Optional[int] = None
    """'KV cache size: N tokens'; the minimum when the line is printed per worker / PP stage (0.10.0-0.11.0)."""
    kv_cache_tokens_all: tuple[int, ...] = ()
    """Every 'KV cache size' token count, in log order (one per worker config in 0.10.0-0.11.0)."""
    max_concurrency: Optional[float] = None
    """'Maximum concurrency ... : C x'; the minimum when printed per worker."""
    max_concurrency_tokens: Optional[int] = None
    """The M of 'Maximum concurrency for M tokens per request' (= max_model_len)."""
    requested_gib: Optional[float] = None
    """total x gpu_memory_utilization (DEBUG 'requested memory', 'Desired GPU memory utilization is (u, R GiB)')."""
    total_gib: Optional[float] = None
    """Device memory as torch sees it (snapshot / 'Free memory on device (F/T GiB)'); CPU: NUMA node memory."""
    init_free_gib: Optional[float] = None
    """Free device memory at the worker's start snapshot ('Free memory on device (F/T GiB)' or DEBUG lines)."""
    gpu_memory_utilization: Optional[float] = None
    """From 'non-default args', DEBUG 'Requested memory: u (util)' or 'Desired GPU memory utilization is (u, R GiB)'."""
    kv_cache_memory_bytes_mode: Optional[bool] = None
    """True: KV size given by kv_cache_memory_bytes (or the CPU explicit size); False: profiled; None: unknown."""
    auto_fit_max_model_len: Optional[int] = None
    """'Auto-fit max_model_len: reduced from A to B' -> B, or '... full model context length N fits' -> N (0.14+)."""
    error: Optional[str] = None
    """Why start-up failed, whole message on one line: a KV-cache / memory error, CUDA OOM, else the last exception."""
    error_estimated_max_model_len: Optional[int] = None
    """'the estimated maximum model length is N' from the KV-cache fit error."""
    phase: Optional[str] = None
    """The last start-up phase reached (one of PHASES)."""
    model_runner: Optional[str] = None
    """'v2' after 'Using V2 Model Runner' (0.16+); 'v1' when the V1 runner's 'Starting to load model'
    (GPU or CPU runner) is printed without it."""


# --------------------------------------------------------------------------------------------------
# Accumulating figures.

_NUM = r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?"
_INT_FIELDS = {"kv_cache_tokens", "max_concurrency_tokens", "auto_fit_max_model_len", "error_estimated_max_model_len"}
_FIELD_NAMES = {f.name for f in fields(StartupFigures)}


def _number(name: str, raw: str) -> float | int:
    raw = raw.replace(",", "")  # '476,016 tokens', 'for 8,192 tokens'
    return int(raw) if name in _INT_FIELDS else float(raw)


# Printed by every worker / PP stage: vLLM sizes the pool from the smallest, so keep the minimum.
_MIN_FIELDS = {"available_kv_gib", "max_concurrency"}


class _Figures:
    """Mutable collector behind StartupFigures: the first value seen for a field wins (minimum for _MIN_FIELDS)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.tokens: list[int] = []
        self.specific_error: Optional[str] = None
        self.exceptions: list[str] = []  # final lines of tracebacks, continuation lines joined

    def put(self, name: str, value: object) -> None:
        old = self.values.get(name)
        if old is None:
            self.values[name] = value
        elif name in _MIN_FIELDS and value is not None:
            self.values[name] = min(old, value)

    def put_groups(self, m: re.Match[str]) -> None:
        """Store every named group that is a StartupFigures field."""
        for name, raw in m.groupdict().items():
            if raw is not None and name in _FIELD_NAMES:
                self.put(name, raw if name in ("vllm_version", "device_name") else _number(name, raw))

    def build(self, phase: Optional[str]) -> StartupFigures:
        v = dict(self.values)
        if self.tokens:
            v.update(kv_cache_tokens=min(self.tokens), kv_cache_tokens_all=tuple(self.tokens))
        v["error"] = self.specific_error or (_root_exception(self.exceptions) if phase == "failed" else None)
        return StartupFigures(**v, phase=phase)


# --------------------------------------------------------------------------------------------------
# The rules: one regex per log line shape, the phase it announces, and what it stores.


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    phase: Optional[str]  # the phase this line shows the start-up has reached, if any
    take: Callable[[re.Match[str], _Figures], None]


def _store(m: re.Match[str], fig: _Figures) -> None:
    fig.put_groups(m)


def _kv_size(m: re.Match[str], fig: _Figures) -> None:
    fig.put("device_name", m["device"])
    fig.tokens.append(int(m["tokens"].replace(",", "")))
    if m["conc"]:  # 0.28+: concurrency on the same line
        _concurrency(m, fig)


def _concurrency(m: re.Match[str], fig: _Figures) -> None:
    fig.put("max_concurrency_tokens", _number("max_concurrency_tokens", m["mml"]))
    fig.put("max_concurrency", float(m["conc"]))


def _mode(explicit: bool) -> Callable[[re.Match[str], _Figures], None]:
    def take(m: re.Match[str], fig: _Figures) -> None:
        fig.put_groups(m)
        fig.put("kv_cache_memory_bytes_mode", explicit)

    return take


def _cpu_kv(m: re.Match[str], fig: _Figures) -> None:
    _mode(m["how"] == "Explicitly")(m, fig)


def _auto_fit(m: re.Match[str], fig: _Figures) -> None:
    fig.put("auto_fit_max_model_len", int(m["fit"] or m["full"] or m["derived"]))


def _runner(name: str) -> Callable[[re.Match[str], _Figures], None]:
    def take(m: re.Match[str], fig: _Figures) -> None:
        if fig.values.get("model_runner") != "v2":  # the V2 line comes first and wins
            fig.values["model_runner"] = name

    return take


def _error(m: re.Match[str], fig: _Figures) -> None:
    if fig.specific_error is None:
        fig.specific_error = m.string.strip()
        estimated = re.search(r"estimated maximum model length is (\d+)", m.string)
        fig.put("error_estimated_max_model_len", estimated and int(estimated[1]))


_EXC_TYPE = r"^(?:[\w.]+: )?"


def _r(pattern: str, phase: Optional[str] = None, take=_store) -> _Rule:
    return _Rule(re.compile(pattern.replace("NUM", _NUM).replace("EXC", _EXC_TYPE)), phase, take)


_RULES: tuple[_Rule, ...] = (
    # --- starting
    _r(
        r"(?:vLLM (?:API )?server version |[█▀▄]\s+version |Initializing a V1 LLM engine \(v)"
        r"(?P<vllm_version>[^\s,)]+)",
        "starting",
    ),
    _r(r"non-default args: .*'gpu_memory_utilization': (?P<gpu_memory_utilization>NUM)"),
    _r(r"init memory snapshot: .*free_memory=(?P<init_free_gib>NUM)GiB, total_memory=(?P<total_gib>NUM)GiB"),
    _r(r"worker requested memory: (?P<requested_gib>NUM) ?GiB"),
    _r(r"Using V2 Model Runner", None, _runner("v2")),
    # --- loading weights
    _r(r"Starting to load model", "loading weights", _runner("v1")),
    _r(r"Starting to load model|Loading safetensors checkpoint shards|Loading weights took", "loading weights"),
    # 0.10-0.11.0 '%.4f GiB and', 0.11.1-0.13 '%.4f GiB memory and', 0.14+ '%s GiB memory and', V2 '%s GiB and'
    _r(r"Model loading took (?P<weights_gib>NUM) GiB", "profiling"),
    # --- profiling
    _r(r"Estimated CUDA graph memory: (?P<cudagraph_estimate_gib>NUM) GiB total"),
    # 0.21+ info line: 'The current --gpu-memory-utilization=0.9764 is equivalent to ...'
    _r(r"The current --gpu-memory-utilization=(?P<gpu_memory_utilization>NUM) is equivalent to"),
    _r(
        r"Initial free memory: (?P<init_free_gib>NUM) GiB; Requested memory: (?P<gpu_memory_utilization>NUM) "
        r"\(util\), (?P<requested_gib>NUM) GiB"
    ),
    # 0.10-0.26 end with 'non-torch forward increase memory', 0.27+ with 'total consumed (from mem_get_info)'
    _r(
        r"Memory profiling takes NUM seconds\. Total non KV cache memory: (?P<non_kv_cache_gib>NUM) ?GiB; "
        r"torch peak memory increase: (?P<activation_peak_gib>NUM) ?GiB; (?:non-torch forward increase memory: "
        r"(?P<non_torch_gib>NUM) ?GiB|total consumed \(from mem_get_info\): (?P<consumed_gib>NUM) ?GiB)"
    ),
    # --- kv cache
    _r(r"Available KV cache memory: (?P<available_kv_gib>NUM) GiB", "kv cache", _mode(False)),
    _r(
        r"Initial free memory (?P<init_free_gib>NUM) ?GiB, reserved (?P<available_kv_gib>NUM) ?GiB memory for "
        r"KV Cache as specified by kv_cache_memory_bytes",
        "kv cache",
        _mode(True),
    ),
    _r(
        r"(?P<how>Explicitly|Auto) set \((?P<available_kv_gib>NUM)/(?P<total_gib>NUM)\) GiB for KV cache on node"
        r"(?: \d+, with (?P<requested_gib>NUM) GiB requested memory for the worker\. (?P<consumed_gib>NUM) GiB)?",
        "kv cache",
        _cpu_kv,
    ),
    # 0.10-0.27 'GPU KV cache size: N tokens'; 0.28+ adds the concurrency; 0.30+ '%s' device, 0.32+ 'GPU + host'
    _r(
        r"(?P<device>\w+(?: \+ host)?) KV cache size: (?P<tokens>[\d,]+) tokens(?:, Maximum concurrency for "
        r"(?P<mml>[\d,]+) tokens per request: (?P<conc>NUM)x)?",
        "kv cache",
        _kv_size,
    ),
    _r(r"^Maximum concurrency for (?P<mml>[\d,]+) tokens per request: (?P<conc>NUM)x", "kv cache", _concurrency),
    _r(
        r"Auto-fit max_model_len: (?:reduced from \d+ to (?P<fit>\d+)|full model context length (?P<full>\d+) "
        r"fits|attention-free model, using derived max_model_len=(?P<derived>\d+))",
        None,
        _auto_fit,
    ),
    # --- cuda graphs (0.19's 'Capturing a cudagraph on' during the estimate is deliberately not matched)
    _r(r"Capturing CUDA graph", "cuda graphs"),
    _r(r"Graph capturing finished in NUM secs, took (?P<cudagraph_actual_gib>NUM) GiB", "cuda graphs"),
    _r(
        r"CUDA graph pool memory: (?P<cudagraph_actual_gib>NUM) GiB \(actual\), "
        r"(?P<cudagraph_estimate_gib>NUM) GiB \(estimated\)"
    ),
    # The post-warm-up suggestion (0.10.2+) and the start-up check error share their head.
    _r(
        r"Free memory on device(?: \S+)? \((?P<init_free_gib>NUM)/(?P<total_gib>NUM) GiB\) on startup"
        r"(?:\. Desired GPU memory utilization is| is less than desired GPU memory utilization) "
        r"\((?P<gpu_memory_utilization>NUM), (?P<requested_gib>NUM) GiB\)"
    ),
    _r(
        r"Actual usage is (?P<weights_gib>NUM) GiB for weight, (?P<activation_peak_gib>NUM) GiB for peak "
        r"activation, (?P<non_torch_gib>NUM) GiB for non-torch memory, and (?P<cudagraph_actual_gib>NUM) GiB"
    ),
    _r(
        r"Actual usage is (?P<consumed_gib>NUM) GiB for consumed memory \(weights \+ non-torch\), "
        r"(?P<activation_peak_gib>NUM) GiB for peak activation, and (?P<cudagraph_actual_gib>NUM) GiB"
    ),
    # --- ready
    _r(r"Application startup complete|Uvicorn running on|Starting vLLM (?:API )?server", "ready"),
    # --- failed: memory errors, as the exception line prints them (EXC: optional 'ValueError: ' etc., which
    # also keeps the indented source lines of a traceback from matching). 'models's' is the 0.10-0.21 typo.
    _r(r"EXCTo serve at least one request with the models?'s max seq len", "failed", _error),
    _r(r"EXC(?:No available memory for the cache blocks|Cannot auto-fit max_model_len)", "failed", _error),
    _r(r"EXC(?:CUDA (?:error: )?out of memory|OutOfMemoryError\b)", "failed", _error),
    _r(r"EXCFree memory on device .* on startup is less than", "failed", _error),
    _r(
        r"EXC(?:Available memory on node .* is less than requested memory for kv|The worker already uses)",
        "failed",
        _error,
    ),  # CPU worker
)


# --------------------------------------------------------------------------------------------------
# Public API.


class LogFollower:
    """Follows a start-up log line by line; `feed` returns the new phase when it changes, else None.

    Phases only move forward (workers of one engine print the same step at different times); 'ready'
    and 'failed' are final. An exception ending a traceback before 'ready' counts as 'failed'.
    """

    def __init__(self) -> None:
        self.phase: Optional[str] = None
        self._figures = _Figures()
        self._tracebacks = _Tracebacks()

    def feed(self, line: str) -> Optional[str]:
        before = self.phase
        for rec in _records(line):
            self._feed_record(rec)
        return self.phase if self.phase != before else None

    def figures(self) -> StartupFigures:
        """Everything read so far."""
        return self._figures.build(self.phase)

    def _feed_record(self, rec: _Record) -> None:
        if not rec.text:
            return
        self._advance("starting")
        if self.phase == "ready":
            return  # serving-time messages and shutdown tracebacks are not start-up figures
        for rule in _RULES:
            m = rule.regex.search(rec.text)
            if m:
                rule.take(m, self._figures)
                self._advance(rule.phase)
        if self._tracebacks.feed(rec, self._figures.exceptions):
            self._advance("failed")

    def _advance(self, phase: Optional[str]) -> None:
        if phase is None or self.phase in _TERMINAL:
            return
        if self.phase is None or phase == "failed" or PHASES.index(phase) > PHASES.index(self.phase):
            self.phase = phase


def follow(lines: Iterable[str]) -> LogFollower:
    """Feed every line to a new LogFollower and return it."""
    follower = LogFollower()
    for line in lines:
        follower.feed(line)
    return follower


def parse_log(text: str) -> StartupFigures:
    """The figures a whole start-up log printed."""
    return follow(text.splitlines()).figures()


def parse_file(path: str | Path) -> StartupFigures:
    """`parse_log` of a log file, plain or gzip-compressed (undecodable bytes replaced)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        import gzip

        raw = gzip.decompress(raw)
    return parse_log(raw.decode("utf-8", errors="replace"))
