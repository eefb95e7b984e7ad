"""k-nearest-neighbour search over L2-normalised embeddings (inner product = cosine) with faiss.

Exact ``IndexFlatIP`` for small searches; above ``EXACT_MAX`` base vectors and ``EXACT_PAIRS`` base x query pairs a
PCA-reduced exhaustive search whose candidates are re-ranked with the full vectors (``method="pca"``); an
``IndexIVFFlat`` is available as ``method="ivf"``. Recall against exact search and the speed-ups are measured by
``benchmarks/embedding_search.py``.
"""

from __future__ import annotations

import math

import numpy as np

#: Exact search up to this many base vectors, or while base x queries stays below EXACT_PAIRS: an IVF index must
#: first be trained (k-means, ~3 s for 100k x 1280 on 2 cores), which only pays for itself on big searches.
#: Measured by benchmarks/embedding_search.py (docs/embeddings.md): 100k x 20k exact 39.7 s, IVF 18.2 s in all.
EXACT_MAX = 50_000
EXACT_PAIRS = 1e9
#: The approximate search chosen above those sizes: PCA to PCA_DIM dimensions, exhaustive search there (BLAS, as
#: fast per distance as exact search), and the REFINE_FACTOR x k best re-ranked with the full vectors. Measured
#: at 100k x 20k x 1280: 1.8x faster than exact with recall@10 >= 0.99, where IVF-Flat at recall 0.99 was no
#: faster than exact on 2 cores (its per-query scans do not use BLAS).
PCA_DIM = 256
REFINE_FACTOR = 50


def ivf_nlist(n: int) -> int:
    """IVF cells for ``n`` base vectors: 2 sqrt(n) (4 sqrt(n) doubled the training time for no gain in speed)."""
    return max(16, int(2 * math.sqrt(n)))


def ivf_nprobe(nlist: int) -> int:
    """Cells visited per query: ~4% of them, the measured point where recall@10 stays >= 0.99 with margin."""
    return max(16, nlist // 26)


def build_index(base: np.ndarray, *, method: str = "auto", nprobe: int | None = None, queries: int = 0):  # type: ignore[no-untyped-def]
    """A faiss index over ``base`` (float32, rows L2-normalised); ``queries`` (how many will be searched) lets
    ``method="auto"`` weigh the IVF training cost against exhaustive search."""
    import faiss

    base = np.ascontiguousarray(base, dtype=np.float32)
    n, d = base.shape
    if method == "auto":
        method = "pca" if n > EXACT_MAX and n * max(queries, 1) > EXACT_PAIRS and d > PCA_DIM else "flat"
    if method == "flat":
        index = faiss.IndexFlatIP(d)
    elif method == "pca":
        index = faiss.IndexRefineFlat(faiss.IndexPreTransform(faiss.PCAMatrix(d, PCA_DIM), faiss.IndexFlatIP(PCA_DIM)))
        index.k_factor = REFINE_FACTOR
        rng = np.random.default_rng(0)  # deterministic training sample: same projection, same answers
        index.train(base[np.sort(rng.choice(n, size=min(n, 20_000), replace=False))])
    elif method == "ivf":
        nlist = ivf_nlist(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)  # deterministic training sample: same index, same answers
        sample = base[rng.choice(n, size=min(n, 64 * nlist), replace=False)] if n > 64 * nlist else base
        index.cp.seed = 1234
        index.train(sample)
        index.nprobe = nprobe or ivf_nprobe(nlist)
    else:
        raise ValueError(f"unknown index method {method!r}")
    index.add(base)
    return index


def knn(base: np.ndarray, queries: np.ndarray, k: int, *, method: str = "auto", nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine similarities and base row numbers for each query (``-1`` ids where fewer exist)."""
    if len(base) == 0 or len(queries) == 0:
        return np.zeros((len(queries), k), np.float32), np.full((len(queries), k), -1, np.int64)
    index = build_index(base, method=method, nprobe=nprobe, queries=len(queries))
    sims, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(base)))
    if sims.shape[1] < k:
        pad = k - sims.shape[1]
        sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-1.0)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return sims, ids


def dense_candidates(emb: np.ndarray, have: np.ndarray, split_index: np.ndarray, n_splits: int, *, k: int,
                     min_cosine: float, max_ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Embedding candidates from every later split into all earlier ones: ``(a, b, cosine, ratio)`` with ``a`` in
    the earlier split. A neighbour qualifies when its cosine is at least ``min_cosine`` and its cosine distance at
    most ``max_ratio`` times the distance to the query's ``k``-th neighbour (it stands out of its neighbourhood)."""
    a_l: list[np.ndarray] = []
    b_l: list[np.ndarray] = []
    cos_l: list[np.ndarray] = []
    ratio_l: list[np.ndarray] = []
    if emb.shape[1]:
        for later in range(1, n_splits):
            base = np.flatnonzero(have & (split_index < later))
            query = np.flatnonzero(have & (split_index == later))
            if len(base) == 0 or len(query) == 0:
                continue
            sims, ids = knn(emb[base], emb[query], min(k, len(base)))
            # The neighbourhood's scale: distance to the k-th neighbour (the farthest one returned).
            far = np.maximum(1.0 - sims[:, -1:], 1e-6)
            ratio = (1.0 - sims) / far
            qi, kj = np.nonzero((ids >= 0) & (sims >= min_cosine) & (ratio <= max_ratio))
            a_l.append(base[ids[qi, kj]])
            b_l.append(query[qi])
            cos_l.append(sims[qi, kj].astype(np.float64))
            ratio_l.append(ratio[qi, kj].astype(np.float64))

    def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return cat(a_l, np.int64), cat(b_l, np.int64), cat(cos_l, np.float64), cat(ratio_l, np.float64)
