"""Hamming-radius search over 64-bit perceptual hashes with a faiss binary index.

One exhaustive ``IndexBinaryFlat`` over every decoded image, queried with each image's hash and with its mirrored
hash (so a horizontally flipped copy is found), in chunks so memory stays bounded even when a uniform dataset
produces many candidates. A candidate is kept when the pHash distance is within ``max_phash`` and the dHash
distance *in the same orientation* is within ``max_dhash``: two independent hashes must agree, which is what keeps
distinct photos apart at radii where either hash alone starts to collide (see docs/thresholds.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..features.hashing import codes, hamming
from .columns import Columns

_QUERY_CHUNK = 8192


@dataclass(frozen=True)
class HashPairs(Columns):
    """Candidate pairs over record indices, ``a < b``, with their distances (columns of equal length)."""

    a: np.ndarray
    b: np.ndarray
    phash: np.ndarray
    dhash: np.ndarray
    flipped: np.ndarray

    @classmethod
    def empty(cls) -> HashPairs:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z, np.zeros(0, dtype=bool))


def hash_pairs(
    phash: np.ndarray,
    dhash: np.ndarray,
    phash_flip: np.ndarray,
    dhash_flip: np.ndarray,
    valid: np.ndarray,
    *,
    max_phash: int,
    max_dhash: int,
) -> HashPairs:
    """All pairs of valid rows whose hashes agree within the radii, in either orientation."""
    import faiss  # imported here: faiss costs start-up time that runs without a search should not pay

    rows = np.flatnonzero(valid)
    if len(rows) < 2:
        return HashPairs.empty()
    index = faiss.IndexBinaryFlat(64)
    index.add(codes(phash[rows]))
    found: list[tuple[np.ndarray, ...]] = []
    for flipped, (q_p, q_d) in enumerate(((phash, dhash), (phash_flip, dhash_flip))):
        for start in range(0, len(rows), _QUERY_CHUNK):
            q_rows = rows[start : start + _QUERY_CHUNK]
            # faiss keeps distances strictly below the radius, hence the +1.
            lims, dist, labels = index.range_search(codes(q_p[q_rows]), max_phash + 1)
            q = np.repeat(q_rows, np.diff(lims).astype(np.int64))
            t = rows[labels]
            keep = q != t
            q, t, dist = q[keep], t[keep], dist[keep]
            dd = hamming(q_d[q], dhash[t])
            keep = dd <= max_dhash
            found.append((q[keep], t[keep], dist[keep].astype(np.int64), dd[keep], np.full(int(keep.sum()), bool(flipped))))
    a, b, dp, dd, fl = (np.concatenate(c) for c in zip(*found))
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    # Each pair appears up to four times (both directions, both orientations): keep its closest match.
    order = np.lexsort((fl, dp + dd, hi, lo))
    lo, hi, dp, dd, fl = lo[order], hi[order], dp[order], dd[order], fl[order]
    first = np.ones(len(lo), dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return HashPairs(lo[first], hi[first], dp[first], dd[first], fl[first])
