"""TTFT percentiles under Poisson arrivals from the service model's prefill queue. Pure.

`kingman_ttft_percentiles_ms` (what sizing reports): the service model's mean TTFT is fixed parts (request
overhead, half a step, the prompt's own chunk steps) plus the mean wait W of the prompt-token queue
for the steps' budget, Kingman's heavy-traffic mean (planner/perf/service.py). The wait's
distribution is taken as the same approximation's: an arrival finds the budget free with
probability 1 - rho and waits nothing, else an exponential wait of mean W / rho (the heavy-traffic
limit of a G/G/1 wait, whatever the service variability; its mean is W, so the percentiles keep
the model's mean TTFT). The rest of the TTFT is taken as fixed (the step in flight at its mean).
Not validated: no calibration row (benchmarks/data/perf) measures a TTFT p90 or p99, only means
(and medians of TPOT/ITL in rows that are not used). Their range (`percentile_ranges`) is the mean
TTFT's held-out error band carried over (the fixed part and the wait scale with the same step
model); it does not cover an error in the tail's shape, which no data bounds.

The exact M/D/1 waiting-time distribution the Kingman tail is compared with lives with the tests
(tests/md1_reference.py).
"""

from __future__ import annotations

import math

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
_MAX_RHO = 0.999  # beyond this the tail is too long to be worth a number


def kingman_wait_quantile(q: float, rho: float, mean_wait: float) -> float:
    """The q-quantile of a wait of mean `mean_wait` at load rho: 0 with probability 1 - rho, else
    exponential of mean mean_wait / rho."""
    if rho <= 0 or q <= 1 - rho or mean_wait <= 0:
        return 0.0
    return mean_wait / rho * math.log(rho / (1 - q))


def kingman_ttft_percentiles_ms(ttft_ms: float, wait_ms: float, rho: float) -> dict[str, float] | None:
    """p50/p90/p99 TTFT (ms) of a mean TTFT `ttft_ms` of which `wait_ms` is the mean prefill-queue
    wait at load `rho` (None where the queue is saturated or at its edge)."""
    if not (math.isfinite(ttft_ms) and 0 <= rho < _MAX_RHO) or not 0 <= wait_ms < ttft_ms:
        return None
    fixed = ttft_ms - wait_ms
    return {name: round(fixed + kingman_wait_quantile(q, rho, wait_ms), 1) for name, q in QUANTILES.items()}


def percentile_ranges(
    percentiles_ms: dict[str, float] | None, ttft_ms: float | None, ttft_ms_range: list[float] | None
) -> dict[str, list[float]] | None:
    """Each percentile's range: the mean TTFT's relative range (its held-out error band) applied to
    it. The tail's shape adds an error no measured tail bounds; the range leaves it out, and says so."""
    if percentiles_ms is None or not ttft_ms or ttft_ms_range is None:
        return None
    lo, hi = ttft_ms_range[0] / ttft_ms, ttft_ms_range[1] / ttft_ms
    return {name: [round(v * lo, 1), round(v * hi, 1)] for name, v in percentiles_ms.items()}
