"""k-nearest-neighbour search over L2-normalised embeddings (inner product = cosine) with faiss.

Exact ``IndexFlatIP`` while the base is small; above ``EXACT_MAX`` vectors an ``IndexIVFFlat`` (k-means cells,
``nprobe`` of them visited per query), whose recall against exact search is measured by
``benchmarks/embedding_search.py`` (>= 0.99 at the defaults).
"""

from __future__ import annotations

import math

import numpy as np

#: Above this many base vectors an IVF index beats exhaustive search by a wide margin on 2 cores.
EXACT_MAX = 50_000


def build_index(base: np.ndarray, *, method: str = "auto", nprobe: int | None = None):  # type: ignore[no-untyped-def]
    """A faiss index over ``base`` (float32, rows L2-normalised)."""
    import faiss

    base = np.ascontiguousarray(base, dtype=np.float32)
    n, d = base.shape
    if method == "auto":
        method = "flat" if n <= EXACT_MAX else "ivf"
    if method == "flat":
        index = faiss.IndexFlatIP(d)
    elif method == "ivf":
        nlist = max(16, int(4 * math.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)  # deterministic training sample: same index, same answers
        sample = base[rng.choice(n, size=min(n, 64 * nlist), replace=False)] if n > 64 * nlist else base
        index.cp.seed = 1234
        index.train(sample)
        index.nprobe = nprobe or max(8, nlist // 16)
    else:
        raise ValueError(f"unknown index method {method!r}")
    index.add(base)
    return index


def knn(base: np.ndarray, queries: np.ndarray, k: int, *, method: str = "auto", nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine similarities and base row numbers for each query (``-1`` ids where fewer exist)."""
    if len(base) == 0 or len(queries) == 0:
        return np.zeros((len(queries), k), np.float32), np.full((len(queries), k), -1, np.int64)
    index = build_index(base, method=method, nprobe=nprobe)
    sims, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(base)))
    if sims.shape[1] < k:
        pad = k - sims.shape[1]
        sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-1.0)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return sims, ids
