"""Exact matching by key (content or pixel digest) and connected components over pairs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np


def groups_by_key(keys: Sequence[bytes], rows: Iterable[int]) -> list[list[int]]:
    """Rows sharing a non-empty key, as sorted groups of two or more, in order of their first row."""
    buckets: dict[bytes, list[int]] = defaultdict(list)
    for i in rows:
        k = keys[i]
        if k:
            buckets[k].append(int(i))
    return sorted((sorted(g) for g in buckets.values() if len(g) > 1), key=lambda g: g[0])


def pairs_in_groups(groups: Iterable[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (a < b) inside each group."""
    a: list[int] = []
    b: list[int] = []
    for g in groups:
        for i, x in enumerate(g):
            for y in g[i + 1 :]:
                a.append(x)
                b.append(y)
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


def components(n: int, a: np.ndarray, b: np.ndarray) -> list[list[int]]:
    """Connected components (size >= 2) of the graph with edges (a[i], b[i]), each sorted, ordered by first member."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    members: dict[int, list[int]] = defaultdict(list)
    for x in set(a.tolist()) | set(b.tolist()):
        members[find(x)].append(x)
    return sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda g: g[0])
