"""TTFT percentiles under Poisson arrivals from the service model's prefill queue. Pure.

`kingman_ttft_percentiles_ms` (what sizing reports): the service model's mean TTFT is fixed parts (request
overhead, half a step, the prompt's own chunk steps) plus the mean wait W of the prompt-token queue
for the steps' budget, Kingman's heavy-traffic mean (planner/perf/service.py). The wait's
distribution is taken as the same approximation's: an arrival finds the budget free with
probability 1 - rho and waits nothing, else an exponential wait of mean W / rho (the heavy-traffic
limit of a G/G/1 wait, whatever the service variability; its mean is W, so the percentiles keep
the model's mean TTFT). The rest of the TTFT is taken as fixed (the step in flight at its mean).
Not validated: no calibration row (benchmarks/data/perf) measures a TTFT p90 or p99, only means
(and medians of TPOT/ITL in rows that are not used), so these are estimates with no measured range.

`ttft_percentiles_ms`, `md1_wait_cdf`, `md1_wait_quantile`: the exact M/D/1 waiting-time
distribution (Poisson arrivals, a constant service D, the whole remainder of the TTFT as D plus the
wait), the light-variability reference the Kingman tail is compared with in tests:

    P(W <= u D) = (1 - rho) sum_{k=0}^{floor(u)} e^{rho (u - k)} (-rho (u - k))^k / k!

The sum alternates and cancels badly for large u, so it is taken in decimal arithmetic with as
many digits as its largest term needs.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
_MAX_RHO = 0.999  # beyond this the tail is too long to be worth a number


def md1_wait_cdf(u: float, rho: float) -> float:
    """P(wait <= u service times) in an M/D/1 queue of load rho (0 <= rho < 1)."""
    if u < 0:
        return 0.0
    if rho <= 0:
        return 1.0
    with localcontext() as ctx:
        ctx.prec = 30 + int(2 * rho * u / math.log(10))
        r, uu = Decimal(repr(rho)), Decimal(repr(u))
        grow, step = (r * uu).exp(), (-r).exp()
        total, fact = grow, Decimal(1)  # the k = 0 term
        for k in range(1, math.floor(u) + 1):
            fact *= k
            grow *= step  # e^{rho (u - k)}
            total += grow * (r * (k - uu)) ** k / fact
        return float(min(max((1 - r) * total, Decimal(0)), Decimal(1)))


def md1_wait_quantile(q: float, rho: float) -> float:
    """The q-quantile of the M/D/1 wait, in service times."""
    if rho <= 0 or q <= 1 - rho:
        return 0.0  # an arrival that finds the queue empty waits nothing: probability 1 - rho
    lo, hi = 0.0, max(1.0, rho / (2 * (1 - rho)))
    while md1_wait_cdf(hi, rho) < q:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-3 * max(hi, 1e-9):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if md1_wait_cdf(mid, rho) < q else (lo, mid)
    return (lo + hi) / 2


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


def ttft_percentiles_ms(ttft_ms: float, fixed_ms: float, rho: float) -> dict[str, float] | None:
    """p50/p90/p99 TTFT (ms) for a mean TTFT made of `fixed_ms`, a prompt's chunk steps D and an
    M/D/1 wait of load `rho` (None where the queue is saturated or at its edge)."""
    if not (math.isfinite(ttft_ms) and 0 <= rho < _MAX_RHO) or ttft_ms <= fixed_ms:
        return None
    service_ms = (ttft_ms - fixed_ms) / (1 + rho / (2 * (1 - rho)))
    return {name: round(fixed_ms + service_ms * (1 + md1_wait_quantile(q, rho)), 1) for name, q in QUANTILES.items()}
