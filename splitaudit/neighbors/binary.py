"""Hamming-radius search over 64-bit perceptual hashes with a faiss binary index.

One index over every decoded image (or one per shard of them, merged exactly), queried with each image's hash and
with its mirrored hash (so a horizontally flipped copy is found), in chunks so memory stays bounded even when a
uniform dataset produces many candidates. The index is an exhaustive ``IndexBinaryFlat``, or for a big base whose
hashes spread out a multi-index hash (``IndexBinaryMultiHash``), which returns exactly the same matches (see
:func:`choose_index`). A candidate is kept when the pHash distance is within ``max_phash`` and the dHash
distance *in the same orientation* is within ``max_dhash``: two independent hashes must agree, which is what keeps
distinct photos apart at radii where either hash alone starts to collide (see docs/thresholds.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..features.hashing import codes, hamming
from .columns import Columns

_QUERY_CHUNK = 8192
#: Multi-index hashing: the 64 bits are cut into MIH_TABLES disjoint parts of MIH_BITS bits (63 bits used). Two
#: codes within Hamming distance r differ in at most r // MIH_TABLES bits of one of the parts (pigeonhole), so
#: probing every key within that many flips of each part finds every match: the search is exact, and the candidates
#: are then checked with the full 64-bit distance. Pays off only on a big base (below, the exhaustive scan at
#: ~3e9 code pairs/s on 2 cores is as fast) whose hashes do not pile up in a few buckets (then exhaustive is cheaper).
MIH_TABLES, MIH_BITS, MIH_MAX_FLIPS = 3, 21, 2
MIH_MIN = 300_000
#: Cost of one bucket probe or one candidate relative to one exhaustive code comparison (faiss 1.15 on the 2-core
#: development machine, 1.1M random codes: ~200-300 ns against ~0.3-0.7 ns), and the speed-up the estimate must
#: promise before the hash index is used.
_MIH_COST, _MIH_MARGIN = 300, 2


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


Starmap = Callable[..., list]


def hash_pairs(
    phash: np.ndarray,
    dhash: np.ndarray,
    phash_flip: np.ndarray,
    dhash_flip: np.ndarray,
    valid: np.ndarray,
    *,
    max_phash: int,
    max_dhash: int,
    shards: np.ndarray | None = None,
    starmap: Starmap | None = None,
    method: str = "auto",
) -> HashPairs:
    """All pairs of valid rows whose hashes agree within the radii, in either orientation.

    ``shards`` (e.g. each row's split) splits the *base* of the search: every shard's index is searched with every
    valid row, and the shards' pairs are merged exactly (a pair is found in the shard of its target, and the merge
    keeps the same closest match whatever the order the shards come back in). ``starmap(fn, shared, tasks)`` runs
    the shard searches (one task each, e.g. on Ray; default: here, one after another). ``method`` is the index:
    ``"flat"`` (exhaustive), ``"mih"`` (multi-index hashing) or ``"auto"`` (:func:`choose_index`); all give the same
    pairs.
    """
    rows = np.flatnonzero(valid)
    if len(rows) < 2:
        return HashPairs.empty()
    bases = [rows] if shards is None else [rows[shards[rows] == s] for s in np.unique(shards[rows])]
    shared = (phash, dhash, phash_flip, dhash_flip, rows)
    if method not in ("auto", "flat", "mih"):
        raise ValueError(f"unknown binary index method {method!r}")
    tasks = [(base, max_phash, max_dhash, method) for base in bases]
    found = starmap(shard_pairs, shared, tasks) if starmap is not None else [shard_pairs(*shared, *t) for t in tasks]
    return closest_pairs(found)


def shard_pairs(phash: np.ndarray, dhash: np.ndarray, phash_flip: np.ndarray, dhash_flip: np.ndarray, rows: np.ndarray,
                base: np.ndarray, max_phash: int, max_dhash: int, method: str = "auto") -> tuple[np.ndarray, ...]:
    """Matches of every row of ``rows`` (queries, as is and mirrored) among the rows of ``base``: ``(query, target,
    phash distance, dhash distance, flipped)`` columns, a match per direction and orientation."""
    import faiss  # imported here: faiss costs start-up time that runs without a search should not pay

    if method == "auto":
        method = choose_index(phash[base], max_phash)
    if method == "mih" and max_phash // MIH_TABLES > MIH_MAX_FLIPS:
        method = "flat"  # too many keys to probe per part: the exhaustive scan is cheaper
    if method == "mih":
        index = faiss.IndexBinaryMultiHash(64, MIH_TABLES, MIH_BITS)
        index.nflip = max_phash // MIH_TABLES
    else:
        index = faiss.IndexBinaryFlat(64)
    index.add(codes(phash[base]))
    found: list[tuple[np.ndarray, ...]] = []
    for flipped, (q_p, q_d) in enumerate(((phash, dhash), (phash_flip, dhash_flip))):
        for start in range(0, len(rows), _QUERY_CHUNK):
            q_rows = rows[start : start + _QUERY_CHUNK]
            # faiss keeps distances strictly below the radius, hence the +1.
            lims, dist, labels = index.range_search(codes(q_p[q_rows]), max_phash + 1)
            q = np.repeat(q_rows, np.diff(lims).astype(np.int64))
            t = base[labels]
            keep = q != t
            q, t, dist = q[keep], t[keep], dist[keep]
            dd = hamming(q_d[q], dhash[t])
            keep = dd <= max_dhash
            found.append((q[keep], t[keep], dist[keep].astype(np.int64), dd[keep], np.full(int(keep.sum()), bool(flipped))))
    return tuple(np.concatenate(c) for c in zip(*found))


def choose_index(base_phash: np.ndarray, max_phash: int) -> str:
    """``"mih"`` where multi-index hashing is predicted to be several times cheaper than the exhaustive scan, else
    ``"flat"``. The prediction counts, per query, the keys probed and the expected candidates: for each part, the
    mean size of the bucket a base hash falls in (piled-up hashes, e.g. many near-uniform images, make it large),
    times the keys probed around it."""
    n, flips = len(base_phash), max_phash // MIH_TABLES
    if n < MIH_MIN or flips > MIH_MAX_FLIPS:
        return "flat"
    probes = sum(math.comb(MIH_BITS, i) for i in range(flips + 1))
    # faiss reads the code's bits from the first byte's lowest bit on: the little-endian view of the code's bytes.
    bits = codes(base_phash).view("<u8").ravel()
    candidates = 0.0
    for t in range(MIH_TABLES):
        _, size = np.unique((bits >> np.uint64(t * MIH_BITS)) & np.uint64((1 << MIH_BITS) - 1), return_counts=True)
        candidates += (float(np.sum(size.astype(np.float64) ** 2)) / n - 1) * probes + 1
    return "mih" if (MIH_TABLES * probes + candidates) * _MIH_COST * _MIH_MARGIN < n else "flat"


def closest_pairs(found: Sequence[tuple[np.ndarray, ...]]) -> HashPairs:
    """Merge :func:`shard_pairs` outputs: one row per pair ``a < b``, its closest match.

    Each pair appears up to four times (both directions, both orientations); ties in the summed distance go to the
    orientation first and then to the match whose query is the smaller row, so the result does not depend on how
    the search was sharded or in which order the shards finished.
    """
    q, t, dp, dd, fl = (np.concatenate(c) for c in zip(*found))
    lo, hi = np.minimum(q, t), np.maximum(q, t)
    order = np.lexsort((q, fl, dp + dd, hi, lo))
    lo, hi, dp, dd, fl = lo[order], hi[order], dp[order], dd[order], fl[order]
    first = np.ones(len(lo), dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return HashPairs(lo[first], hi[first], dp[first], dd[first], fl[first])
