"""The Hamming-radius search's multi-index hash gives exactly the exhaustive index's pairs, and is chosen only where
it pays (a big base whose hashes spread out)."""

from __future__ import annotations

import numpy as np
import pytest

from splitaudit.features.hashing import hamming
from splitaudit.neighbors.binary import choose_index, hash_pairs
from splitaudit.neighbors.multi_index import MultiIndex, widths


def _codes_with_near_pairs(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Random codes with 300 planted pairs at every pHash distance from 0 to 10 (past the radii tested), dHash a
    few bits apart; independent codes for the mirrored images, a few of them planted too."""
    rng = np.random.default_rng(seed)
    ph, dh, ph_f, dh_f = (rng.integers(0, 2**64, n, dtype=np.uint64) for _ in range(4))
    pairs = rng.choice(n, 600, replace=False).reshape(-1, 2)
    for j, (x, y) in enumerate(pairs):
        bits = [np.uint64(1) << np.uint64(b) for b in rng.choice(64, j % 11, replace=False)]
        mask = np.bitwise_or.reduce(bits) if bits else np.uint64(0)
        ph[y], dh[y] = ph[x] ^ mask, dh[x] ^ (mask >> np.uint64(2))
        if j % 5 == 0:  # a mirrored copy: y's mirrored hashes near x's hashes
            ph_f[y], dh_f[y] = ph[x] ^ mask, dh[x]
    return ph, dh, ph_f, dh_f


@pytest.mark.parametrize("max_phash,max_dhash", [(6, 12), (8, 10), (2, 4)])
def test_multi_index_hash_equals_exhaustive(max_phash: int, max_dhash: int) -> None:
    ph, dh, ph_f, dh_f = _codes_with_near_pairs(20_000, seed=max_phash)
    valid = np.random.default_rng(0).random(len(ph)) > 0.02
    split = np.random.default_rng(1).integers(0, 3, len(ph))
    flat = hash_pairs(ph, dh, ph_f, dh_f, valid, max_phash=max_phash, max_dhash=max_dhash, method="flat")
    assert len(flat) > 50 and flat.phash.max() == max_phash  # pairs up to the radius, some across the edge left out
    for kw in ({"method": "mih"}, {"method": "mih", "shards": split}):
        got = hash_pairs(ph, dh, ph_f, dh_f, valid, max_phash=max_phash, max_dhash=max_dhash, **kw)
        for name, column in flat.to_arrays().items():
            np.testing.assert_array_equal(getattr(got, name), column, err_msg=f"{name} {kw}")


def test_choose_index() -> None:
    rng = np.random.default_rng(2)
    n = 1_000_000
    spread = rng.integers(0, 2**64, n, dtype=np.uint64)
    assert choose_index(spread, 6) == "mih"
    assert choose_index(spread, 30) == "flat"  # more than 2 flips per part even with 8 parts: too many keys to probe
    assert choose_index(spread[:5000], 6) == "flat"  # a small base: the exhaustive scan is as fast
    piled = rng.integers(0, 2**64, 500, dtype=np.uint64)[rng.integers(0, 500, n)]  # e.g. many near-blank images
    assert choose_index(piled, 6) == "flat"


def test_choose_index_counts_the_buckets_probed() -> None:
    """Bursts of near-identical hashes (200 images within 2 bits of each of 5,000 shots, as video frames or product
    series give): a hash's own bucket is full, the buckets one flip away nearly empty. Predicting every probed bucket
    as full as the hash's own one chose the exhaustive scan here; the multi-index searched 2-2.7x faster (scratch
    runs, docs/scale.md)."""
    rng = np.random.default_rng(4)
    base = np.repeat(rng.integers(0, 2**64, 5_000, dtype=np.uint64), 200)
    flips = rng.integers(0, 64, (len(base), 2)).astype(np.uint64)
    base ^= (np.uint64(1) << flips[:, 0]) | (np.uint64(1) << flips[:, 1])
    assert choose_index(base, 6) == "mih"
    q, b, d = MultiIndex(base, 6, widths(4)).search(base[:300])
    assert ((d <= 6) & (d == hamming(base[q], base[b]))).all() and set(q.tolist()) == set(range(300))


def test_multi_index_reports_each_pair_once() -> None:
    """A pair within the radius in several parts (here: identical hashes) is reported once, by the first part."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**64, 5000, dtype=np.uint64)
    base[100:110] = base[0]
    q, b, d = MultiIndex(base, 6, widths(4)).search(base[:1])
    assert sorted(b.tolist()) == [0, *range(100, 110)] and (q == 0).all() and (d == 0).all()


def test_unknown_method() -> None:
    z = np.zeros(3, np.uint64)
    with pytest.raises(ValueError, match="binary index method"):
        hash_pairs(z, z, z, z, np.ones(3, bool), max_phash=6, max_dhash=12, method="hnsw")
