"""Small statistics the checks share, in NumPy and ``math`` only.

Importing ``scipy.stats`` costs about 0.35 s and ``scipy.special`` 0.2 s; an unchanged re-check of a whole dataset
has a 2 s budget, so the few functions we need are written here (and tested against SciPy).
"""

from __future__ import annotations

import math

import numpy as np


def gammaincc(a: float, x: float) -> float:
    """Regularised upper incomplete gamma function Q(a, x) (Numerical Recipes' series / continued fraction)."""
    if x < 0 or a <= 0:
        raise ValueError("gammaincc needs a > 0 and x >= 0")
    if x == 0:
        return 1.0
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        # Series for P(a, x), which converges fast below a + 1.
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefactor))
    # Lentz's continued fraction for Q(a, x).
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_prefactor) * h)


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for a chi-square variable with ``dof`` degrees of freedom."""
    return gammaincc(dof / 2.0, max(statistic, 0.0) / 2.0)


def chi2_contingency(table: np.ndarray) -> tuple[float, float, int, np.ndarray]:
    """Pearson's chi-square test of independence (no continuity correction), like SciPy's with ``correction=False``.

    Returns (statistic, p-value, degrees of freedom, expected counts).
    """
    table = np.asarray(table, dtype=np.float64)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected > 0, (table - expected) ** 2 / expected, 0.0)
    statistic = float(terms.sum())
    dof = (table.shape[0] - 1) * (table.shape[1] - 1)
    return statistic, chi2_sf(statistic, dof) if dof > 0 else 1.0, dof, expected
