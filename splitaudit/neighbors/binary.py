"""Hamming-radius search over 64-bit perceptual hashes with a faiss binary index.

One index over every decoded image (or one per shard of them, merged exactly), queried with each image's hash and
with its mirrored hash (so a horizontally flipped copy is found), in chunks so memory stays bounded even when a
uniform dataset produces many candidates. The index is an exhaustive ``IndexBinaryFlat``, or for a big base whose
hashes spread out a multi-index hash (:mod:`.multi_index`), which returns exactly the same matches. A candidate is
kept when the pHash distance is within ``max_phash`` and the dHash distance *in the same orientation* is within ``max_dhash``: two independent hashes must agree, which is what keeps
distinct photos apart at radii where either hash alone starts to collide (see docs/thresholds.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..features.hashing import codes, hamming
from .columns import Columns
from .multi_index import MultiIndex, plan

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
    searcher = _searcher(phash[base], max_phash, method)
    found: list[tuple[np.ndarray, ...]] = []
    for flipped, (q_p, q_d) in enumerate(((phash, dhash), (phash_flip, dhash_flip))):
        for start in range(0, len(rows), _QUERY_CHUNK):
            q_rows = rows[start : start + _QUERY_CHUNK]
            qi, ti, dist = searcher(q_p[q_rows])
            q, t = q_rows[qi], base[ti]
            keep = q != t
            q, t, dist = q[keep], t[keep], dist[keep]
            dd = hamming(q_d[q], dhash[t])
            keep = dd <= max_dhash
            found.append((q[keep], t[keep], dist[keep].astype(np.int64), dd[keep], np.full(int(keep.sum()), bool(flipped))))
    return tuple(np.concatenate(c) for c in zip(*found))


def choose_index(base_phash: np.ndarray, max_phash: int) -> str:
    """``"mih"`` where multi-index hashing is predicted to be several times cheaper than the exhaustive scan (a big
    base whose hashes spread out: :func:`.multi_index.plan`), else ``"flat"``."""
    return "mih" if plan(base_phash, max_phash) is not None else "flat"


def _searcher(base_phash: np.ndarray, radius: int, method: str) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """``search(query hashes) -> (query position, base position, distance)`` of every match within ``radius``."""
    # "mih" forces the multi-index (the cheapest parts that can search this radius) even where the scan is cheaper.
    parts = plan(base_phash, radius, force=method == "mih") if method != "flat" else None
    if parts is not None:
        return MultiIndex(base_phash, radius, parts).search
    import faiss  # imported here: faiss costs start-up time that runs without a search should not pay

    index = faiss.IndexBinaryFlat(64)
    index.add(codes(base_phash))

    def search(queries: np.ndarray) -> tuple[np.ndarray, ...]:
        # faiss keeps distances strictly below the radius, hence the +1.
        lims, dist, labels = index.range_search(codes(queries), radius + 1)
        return np.repeat(np.arange(len(queries)), np.diff(lims).astype(np.int64)), labels, dist

    return search


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
