"""The exact M/D/1 waiting-time distribution (Poisson arrivals, a constant service D): the light-variability
reference the planner's Kingman TTFT tail (planner/perf/ttft_percentiles.py) is tested against.

    P(W <= u D) = (1 - rho) sum_{k=0}^{floor(u)} e^{rho (u - k)} (-rho (u - k))^k / k!

The sum alternates and cancels badly for large u, so it is taken in decimal arithmetic with as
many digits as its largest term needs."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

from planner.perf.ttft_percentiles import _MAX_RHO, QUANTILES


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


def ttft_percentiles_ms(ttft_ms: float, fixed_ms: float, rho: float) -> dict[str, float] | None:
    """p50/p90/p99 TTFT (ms) for a mean TTFT made of `fixed_ms`, a prompt's chunk steps D and an
    M/D/1 wait of load `rho` (None where the queue is saturated or at its edge)."""
    if not (math.isfinite(ttft_ms) and 0 <= rho < _MAX_RHO) or ttft_ms <= fixed_ms:
        return None
    service_ms = (ttft_ms - fixed_ms) / (1 + rho / (2 * (1 - rho)))
    return {name: round(fixed_ms + service_ms * (1 + md1_wait_quantile(q, rho)), 1) for name, q in QUANTILES.items()}
