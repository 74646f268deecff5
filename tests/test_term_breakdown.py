"""benchmarks/term_breakdown.py on the real 0.30 start-ups: the printed consumed memory is the log's own
identity (R - P - KV), and the modelled terms stay within what the logs print, per term."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import accuracy as acc  # noqa: E402
import term_breakdown as tb  # noqa: E402

CASES = [c for c in acc.load_cases()[0] if c["set"] == "recent" and c["start"] == "warm" and c.get("requested_gib")]


@pytest.mark.parametrize("r", CASES, ids=lambda r: acc.label(r)[:60])
def test_terms_against_the_log(r):
    _, consumed, peak, est, _, _, err = tb.row(r)
    m, p = (float(x) for x in consumed.split("/"))
    assert p == pytest.approx(r["requested_gib"] - r["activation_peak_gib"] - r["kv_cache_gib"], abs=0.006)
    assert abs(m - p) < 0.35  # weights exact; V2 buffers and non-torch within the held-out range
    mp, pp = (float(x) for x in peak.split("/"))
    assert abs(mp - pp) < 0.6
    assert abs(float(err.rstrip("%"))) < 3.0


def test_every_source_held_out_prints():
    assert tb.main(["--from", "0.30.0"]) == 0
