"""Real GPU start-ups: vLLM 0.26.0 on an H200, run by `vllm-planner verify --load-format dummy`
(benchmarks/data/device-logs/, records in benchmarks/data/public-startups.jsonl).

The figures each log printed are checked in tests/test_logparse.py (its DEVICE table) and the records
against their logs there too; here the replay checks the plan against them, including which model
runner vLLM chose. Part of the 0.26 coefficients were set from these runs (the records'
notes say which), so the replay bound here is a regression guard, not an accuracy claim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.calibration import replay_budget
from planner.verify.logparse import parse_file

REPO = Path(__file__).resolve().parent.parent
RECORDS = [
    r
    for r in map(json.loads, (REPO / "benchmarks" / "data" / "public-startups.jsonl").read_text().splitlines())
    if "/device-logs/" in (r.get("log_file") or "")
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: Path(r["log_file"]).name)
def test_device_startup_replay(record: dict) -> None:
    figures = parse_file(REPO / record["log_file"])
    b = replay_budget(record)
    assert b.model_runner == figures.model_runner == record["model_runner"]
    assert b.weights_gib == pytest.approx(figures.weights_gib, abs=0.02)
    assert b.cudagraph_gib == pytest.approx(figures.cudagraph_estimate_gib or 0.0, abs=0.02)
    assert b.kv_cache_gib == pytest.approx(figures.available_kv_gib, rel=0.005)
    assert b.kv_cache_tokens == pytest.approx(figures.kv_cache_tokens, rel=0.005)
    assert b.max_concurrency == pytest.approx(figures.max_concurrency, rel=0.005)
