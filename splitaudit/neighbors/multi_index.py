"""Exact Hamming-radius search over 64-bit hashes by multi-index hashing (Norouzi et al., 2012), in NumPy.

The 64 bits are cut into T disjoint parts. Two hashes within distance r differ in at most r // T bits of one of
the parts (pigeonhole), so probing, in each part's table, every key within that many flips of the query's key finds
every match; each candidate is then checked with the full 64-bit distance. The tables are sorted arrays (a bucket
is a slice), so probing and checking are whole-array NumPy operations. A pair found by several parts is reported by
the first part that finds it: the result is exactly the exhaustive search's.

The work per query is the keys probed plus the candidates in their buckets, not the size of the base: it pays on a
big base whose hashes spread out, and :func:`plan` predicts it from the base's own bucket sizes (piled-up hashes,
e.g. many near-uniform images, make buckets large and send the search back to the exhaustive scan).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

from ..features.hashing import hamming

#: Parts of at most this many bits (a table is 2**bits + 1 offsets) and keys within at most MAX_FLIPS bits probed.
MAX_BITS = 22
MAX_FLIPS = 2
#: Candidates checked per step: bounds the temporary arrays whatever the buckets hold. Small steps stay in the CPU
#: caches: on 1M real hashes 64k took 35-43 s where 4M took 67 s, and one 8,192-query search's arrays peaked at
#: 9 MiB instead of 219 (benchmarks/hash_pairs.py, docs/scale.md); random codes were as fast or faster.
STEP = 64_000
#: Cost of one candidate here relative to one comparison of faiss' exhaustive scan, a probe's extra cost in a table
#: too big for the CPU caches (over LARGE_TABLE bits: a random read in 32 MB), and the speed-up the prediction must
#: promise before the multi-index is used. Measured on the 2-core development machine with 1.1M random codes and
#: radius 6, 20k queries (docs/scale.md): exhaustive 2.3 ms a query (loaded machine), 4 x 16-bit parts 0.34 ms
#: (~1,200 probes and candidates), 3 x 21-bit parts 0.53 ms (~1,100, of which 760 probes), 5 x 13 bits 2.4 ms.
COST = 130
LARGE_TABLE, LARGE_PROBE = 16, 4
MARGIN = 2
#: Base hashes whose probes are counted to predict the candidates a query meets.
SAMPLE = 2048


def widths(parts: int) -> tuple[int, ...]:
    """64 bits cut into ``parts`` parts as even as possible."""
    return tuple(64 // parts + (1 if i < 64 % parts else 0) for i in range(parts))


def plan(base: np.ndarray, radius: int, *, force: bool = False) -> tuple[int, ...] | None:
    """The part widths predicted cheapest for ``base`` (uint64 hashes) at ``radius``, or ``None`` where the
    exhaustive scan is predicted cheaper (a small base, a radius that needs too many probes, piled-up hashes) or,
    with ``force``, only where no parts can search the radius."""
    n = len(base)
    if n == 0:
        return None
    best, best_cost = None, math.inf
    sample = base[np.linspace(0, n - 1, min(n, SAMPLE)).astype(np.int64)]  # evenly spread rows: deterministic
    for parts in range(math.ceil(64 / MAX_BITS), 9):
        flips = radius // parts
        if flips > MAX_FLIPS:
            continue
        w = widths(parts)
        probes = [sum(math.comb(bits, i) for i in range(flips + 1)) for bits in w]
        probe_cost = [LARGE_PROBE if bits > LARGE_TABLE else 1 for bits in w]
        # A hash's own bucket holds at least itself: a lower bound that spares counting buckets for small bases.
        if sum(p * (c + 1) for p, c in zip(probes, probe_cost)) >= (best_cost if force else min(best_cost, n / (COST * MARGIN))):
            continue
        cost = 0.0
        for shift, bits, p, c in zip(itertools.accumulate((0, *w[:-1])), w, probes, probe_cost):
            size = np.bincount(_keys(base, shift, bits), minlength=1 << bits)
            # Keys probed, plus the candidates in the buckets they hit, counted for a sample of the base's own hashes
            # (the queries are the base's images). Assuming every probed bucket as full as a hash's own one
            # overestimated clumped real hashes ~2.5x (1M small images: 6,100 predicted, 2,400 found, for 4 x 16
            # bits) and sent a search 4.3-4.6x faster with the multi-index to the exhaustive scan (docs/scale.md).
            probed = _keys(sample, shift, bits)[:, None] ^ _masks(bits, flips)[None, :]
            cost += p * c + float(size[probed].sum()) / len(sample)
        if cost < best_cost:
            best, best_cost = w, cost
    return best if best is not None and (force or best_cost * COST * MARGIN < n) else None


def _keys(h: np.ndarray, shift: int, bits: int) -> np.ndarray:
    return ((h >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)


def _masks(bits: int, flips: int) -> np.ndarray:
    """Every ``bits``-bit mask with at most ``flips`` bits set."""
    out = [0]
    for k in range(1, flips + 1):
        out += [sum(1 << b for b in c) for c in itertools.combinations(range(bits), k)]
    return np.asarray(out, dtype=np.int64)


class MultiIndex:
    """The tables of ``base`` (uint64 hashes) for searches within ``radius`` with parts of the given widths."""

    def __init__(self, base: np.ndarray, radius: int, part_widths: tuple[int, ...]) -> None:
        self.base = np.ascontiguousarray(base, dtype=np.uint64)
        self.radius = radius
        self.flips = radius // len(part_widths)
        if sum(part_widths) != 64 or self.flips > MAX_FLIPS or max(part_widths) > MAX_BITS:
            raise ValueError(f"parts {part_widths} cannot search radius {radius}")
        self.parts = []
        for shift, bits in zip(itertools.accumulate((0, *part_widths[:-1])), part_widths):
            key = _keys(self.base, shift, bits)
            order = np.argsort(key, kind="stable")
            starts = np.zeros((1 << bits) + 1, dtype=np.int64)
            np.cumsum(np.bincount(key, minlength=1 << bits), out=starts[1:])
            part_mask = np.uint64(((1 << bits) - 1) << shift)
            self.parts.append((shift, bits, order, starts, _masks(bits, self.flips), part_mask))

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query position, base position, distance) within the radius, each pair once."""
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        found = [c for t in range(len(self.parts)) for c in self._part(queries, t)]
        if not found:
            z = np.zeros(0, dtype=np.int64)
            return z, z, z
        return tuple(np.concatenate(c) for c in zip(*found))  # type: ignore[return-value]

    def _part(self, queries: np.ndarray, t: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        shift, bits, order, starts, masks, _ = self.parts[t]
        probe = _keys(queries, shift, bits)[:, None] ^ masks[None, :]  # (queries, keys probed)
        lo, count = starts[probe], starts[probe + 1] - starts[probe]
        per_query = np.cumsum(count.sum(axis=1))
        first = 0
        while first < len(queries):  # query ranges of at most ~STEP candidates (at least one query)
            last = max(first + 1, int(np.searchsorted(per_query, (per_query[first - 1] if first else 0) + STEP, "right")))
            c, s = count[first:last].ravel(), lo[first:last].ravel()
            total = int(c.sum())
            if total:
                q = np.repeat(np.repeat(np.arange(first, last), count.shape[1]), c)
                ends = np.cumsum(c)
                b = order[np.arange(total) - np.repeat(ends - c - s, c)]
                d = hamming(queries[q], self.base[b])
                keep = d <= self.radius
                q, b, d = q[keep], b[keep], d[keep]
                x = queries[q] ^ self.base[b]
                for _, _, _, _, _, earlier in self.parts[:t]:  # found by an earlier part: reported there
                    keep = hamming(x & earlier, np.zeros(1, np.uint64)) > self.flips
                    q, b, d, x = q[keep], b[keep], d[keep], x[keep]
                yield q, b, d
            first = last
