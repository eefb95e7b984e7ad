"""The orientation-copy candidates: the pairs of a brute-force pass over every pair, in the same order."""

import numpy as np

from splitaudit.features.orientation import candidate_pairs


def _every_pair(phash, dhash, orientation, ok, blank):
    """Reference: every pair a < b of usable rows with equal hashes and different tags, grouped by first appearance."""
    groups: dict = {}
    for i in np.flatnonzero(ok & ~blank).tolist():
        groups.setdefault((int(phash[i]), int(dhash[i])), []).append(i)
    pairs = []
    for members in groups.values():
        for x, i in enumerate(members):
            for j in members[x + 1:]:
                if orientation[i] != orientation[j]:
                    pairs.append((i, j))
    return pairs


def test_same_pairs_as_every_pair_compared():
    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(1, 400))
        # Few distinct hash values so that groups collide, share a phash with another dhash, and mix tags.
        phash = rng.integers(0, 12, n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15 % 2**63)
        dhash = rng.integers(0, 3, n).astype(np.uint64) + np.uint64(2**63)
        orientation = np.where(rng.random(n) < 0.15 * (trial % 3), rng.integers(2, 9, n), 1)
        ok, blank = rng.random(n) < 0.9, rng.random(n) < 0.1
        a, b = candidate_pairs(phash, dhash, orientation, ok, blank)
        assert a.dtype == b.dtype == np.int64
        assert list(zip(a.tolist(), b.tolist())) == _every_pair(phash, dhash, orientation, ok, blank)
        if trial % 3 == 0:
            assert len(a) == 0  # no tagged image: no pair
    # A tagged image alone in its group, or grouped only with the same tag, gives nothing.
    a, b = candidate_pairs(np.array([5, 5, 7], np.uint64), np.array([1, 1, 1], np.uint64), np.array([6, 6, 3]),
                           np.ones(3, bool), np.zeros(3, bool))
    assert len(a) == 0
