"""Mean and 95% confidence interval over a few seeds (Student's t), for compare's tables and
bands.

Note [Intervals from a few seeds]
With 5 seeds the sample standard deviation is itself uncertain, so the half-width of a 95%
interval for the mean is t_{0.975, n-1} s / sqrt(n) with Student's t (2.776 for n = 5), not
1.96 s / sqrt(n). The quantile comes from integrating t's density (Simpson's rule) and
bisection: exact to far below the printed digits for any n, with nothing to install.
"""

from __future__ import annotations

import functools
import math
import statistics

__all__ = ["t_quantile", "mean_ci"]


def _t_cdf(x: float, df: int) -> float:
    """P(T <= x) for x >= 0, T ~ Student's t with df degrees of freedom."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(t: float) -> float:
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))

    n = 2000  # Simpson intervals (even)
    h = x / n
    total = density(0.0) + density(x) + sum(
        (4 if i % 2 else 2) * density(i * h) for i in range(1, n))
    return 0.5 + total * h / 3


@functools.lru_cache(maxsize=None)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with df >= 1 degrees of freedom, for p in [0.5, 1)."""
    if not 0.5 <= p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df >= 1, got p={p}, df={df}")
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def mean_ci(values: list[float | None], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of its `level` confidence interval) of the values that are not None;
    (nan, nan) without any, half-width 0 with one."""
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return mean, 0.0
    half = t_quantile(0.5 + level / 2, len(values) - 1) * statistics.stdev(values)
    return mean, half / math.sqrt(len(values))
