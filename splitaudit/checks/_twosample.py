"""Two-sample statistics for the distribution checks, in NumPy and ``math`` only.

``image-properties`` and the property probe of ``split-distinguishability`` run on every audit, ``--backbone none``
re-checks included, whose budget has no room for importing ``scipy.stats`` (~0.35 s) or scikit-learn (~0.5 s).
Each function here is tested against SciPy / scikit-learn in tests/test_distribution.py.
"""

from __future__ import annotations

import math

import numpy as np


def midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (``scipy.stats.rankdata``'s default)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(x)
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], n]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(n)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (the limit of sqrt(n) * D)."""
    if x < 0.18:
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = (-1) ** (k - 1) * math.exp(-2.0 * k * k * x * x)
        total += term
        if abs(term) < 1e-17:
            break
    return min(1.0, max(0.0, 2.0 * total))


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided two-sample Kolmogorov-Smirnov test: (D, p-value).

    The p-value is the asymptotic one with Stephens' small-sample correction (Numerical Recipes' ``kstwo``);
    for the sample sizes this package tests (>= 10 a side) it agrees with SciPy's exact value within a factor of
    a few in the far tail and errs on the conservative side there.
    """
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return 0.0, 1.0
    grid = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, grid, side="right") / n - np.searchsorted(b, grid, side="right") / m)))
    en = math.sqrt(n * m / (n + m))
    return d, kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """First Wasserstein distance between two 1-D samples (the area between their CDFs)."""
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    if len(a) == 0 or len(b) == 0:
        return 0.0
    grid = np.sort(np.concatenate([a, b]))
    widths = np.diff(grid)
    fa = np.searchsorted(a, grid[:-1], side="right") / len(a)
    fb = np.searchsorted(b, grid[:-1], side="right") / len(b)
    return float(np.sum(np.abs(fa - fb) * widths))


def fisher_exact(table: np.ndarray) -> float:
    """Two-sided p-value of Fisher's exact test on a 2x2 table of counts (as SciPy: the sum of the probabilities
    of all tables with the same margins that are no more likely than the observed one)."""
    (a, b), (c, d) = np.asarray(table, dtype=np.int64)
    r1, r2, c1 = a + b, c + d, a + c
    n = r1 + r2
    lo, hi = max(0, c1 - r2), min(r1, c1)
    k = np.arange(lo, hi + 1)
    lg = np.vectorize(math.lgamma)
    logp = (lg(r1 + 1) - lg(k + 1) - lg(r1 - k + 1) + lg(r2 + 1) - lg(c1 - k + 1) - lg(r2 - c1 + k + 1)
            - (math.lgamma(n + 1) - math.lgamma(c1 + 1) - math.lgamma(n - c1 + 1)))
    observed = logp[a - lo]
    p = float(np.exp(logp[logp <= observed + 1e-7]).sum())
    return min(1.0, p)


def mann_whitney(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mann-Whitney U of ``x`` against ``y`` (pairs where x > y, ties half) and its two-sided p-value from the
    normal approximation with tie correction and continuity correction (SciPy's ``method="asymptotic"``)."""
    n1, n2 = len(x), len(y)
    ranks = midranks(np.concatenate([x, y]))
    u = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    n = n1 + n2
    _, counts = np.unique(np.concatenate([x, y]), return_counts=True)
    tie = float((counts**3 - counts).sum())
    sd = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1)))) if n > 1 else 0.0
    if sd == 0:
        return u, 1.0
    z = (abs(u - n1 * n2 / 2.0) - 0.5) / sd
    return u, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def logistic_fit(x: np.ndarray, y: np.ndarray, *, c: float = 1.0, iterations: int = 50) -> tuple[np.ndarray, float]:
    """L2-penalised binary logistic regression with balanced class weights (scikit-learn's objective with
    ``C=c, class_weight="balanced"``; the intercept is not penalised), fitted by Newton's method. Returns
    (weights, intercept). For the few property columns of the property probe this is exact and fast."""
    n, d = x.shape
    y = y.astype(np.float64)
    pos = y.sum()
    sw = np.where(y > 0, n / (2 * max(pos, 1)), n / (2 * max(n - pos, 1)))
    xa = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = np.full(d + 1, 1.0 / c)
    reg[-1] = 0.0
    sign = 2 * y - 1

    def objective(v: np.ndarray) -> float:
        return float(np.sum(sw * np.logaddexp(0.0, -sign * (xa @ v))) + 0.5 * np.sum(reg * v * v))

    current = objective(w)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(xa @ w, -35, 35)))
        grad = xa.T @ (sw * (p - y)) + reg * w
        hess = (xa * (sw * p * (1 - p))[:, None]).T @ xa + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6:  # backtracking: separable data must not make a full Newton step overshoot
            trial = objective(w - t * step)
            if trial <= current:
                break
            t /= 2
        w = w - t * step
        improved = current - trial
        current = trial
        if np.max(np.abs(t * step)) < 1e-8 or improved < 1e-10 * max(1.0, abs(current)):
            break
    return w[:-1], float(w[-1])
