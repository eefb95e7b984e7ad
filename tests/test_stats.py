"""Our SciPy-free chi-square agrees with SciPy's (the reference implementation)."""

import numpy as np
import pytest
from scipy import special, stats

from splitaudit.checks._stats import chi2_contingency, chi2_sf, gammaincc


@pytest.mark.parametrize("a", [0.5, 1.0, 2.5, 10.0, 49.5, 300.0])
@pytest.mark.parametrize("x", [0.0, 0.01, 0.7, 3.0, 12.0, 80.0, 400.0])
def test_gammaincc_matches_scipy(a, x):
    assert gammaincc(a, x) == pytest.approx(special.gammaincc(a, x), rel=1e-9, abs=1e-300)


def test_chi2_sf_tail_and_contingency_match_scipy():
    for stat, dof in [(0.5, 1), (3.84, 1), (30.0, 9), (250.0, 99), (1e4, 20)]:
        assert chi2_sf(stat, dof) == pytest.approx(stats.chi2.sf(stat, dof), rel=1e-9, abs=1e-300)
    rng = np.random.default_rng(3)
    for _ in range(20):
        table = rng.integers(0, 200, size=(2, rng.integers(2, 12))).astype(float)
        table = table[:, table.sum(axis=0) > 0]
        ours = chi2_contingency(table)
        ref = stats.chi2_contingency(table, correction=False)
        assert ours[0] == pytest.approx(ref[0], rel=1e-12)
        assert ours[1] == pytest.approx(ref[1], rel=1e-8, abs=1e-300)
        assert ours[2] == ref[2]
