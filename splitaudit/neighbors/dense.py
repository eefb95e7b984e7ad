"""k-nearest-neighbour search over L2-normalised embeddings (inner product = cosine) with faiss.

Exact ``IndexFlatIP`` for small searches; above ``EXACT_MAX`` base vectors and ``EXACT_PAIRS`` base x query pairs a
PCA-reduced exhaustive search whose candidates are re-ranked with the full vectors (``method="pca"``); from
``IVFPQ_MIN`` (10M) base vectors IVF-PQ with exact re-ranking (``method="ivfpq"``); an ``IndexIVFFlat`` is available
as ``method="ivf"``. A big base is sharded by split and the shards' top-k merged exactly (:func:`sharded_knn`). Recall against exact search and the speed-ups are measured by
``benchmarks/embedding_search.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
#: Above this many base vectors ``method="auto"`` uses IVF-PQ (``method="ivfpq"``): the PCA search is exhaustive,
#: so its time grows with base x queries, and at 10M+ base vectors and as many queries that product is out of reach
#: (10M x 10M x 256 multiply-adds). IVF-PQ visits ~4% of the cells with 4-bit fast-scan codes (32 bytes per vector
#: instead of 1 kB at PCA-256 float32), then the RERANK x k best are re-ranked exactly with the full vectors.
#: Measured at 1M x 100k by benchmarks/scale.py (docs/scale.md).
IVFPQ_MIN = 10_000_000
RERANK = 20
#: The sharded search (one shard per base split) runs on the engine above this many base vectors; below it one
#: search on the driver is cheaper than shipping the vectors.
SHARD_MIN = 1_000_000


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
    method = _method(method, base, queries)
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
    elif method == "ivfpq":
        nlist = ivf_nlist(n)
        pca = f"PCA{PCA_DIM}," if d > PCA_DIM else ""
        dim = min(d, PCA_DIM)
        # 4-bit fast-scan PQ: 2 dimensions per sub-quantizer byte, SIMD table look-ups (the 8-bit PQ's scans are ~5x slower).
        index = faiss.index_factory(d, f"{pca}IVF{nlist},PQ{dim // 2}x4fs", faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)  # deterministic training sample: same index, same answers
        sample = base[np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))]
        faiss.extract_index_ivf(index).cp.seed = 1234
        index.train(sample)
        faiss.extract_index_ivf(index).nprobe = nprobe or ivf_nprobe(nlist)
    else:
        raise ValueError(f"unknown index method {method!r}")
    index.add(base)
    return index


def rerank(base: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` among each query's ``candidates`` (base row numbers, ``-1`` = none) by inner product with the
    full vectors: approximate search finds the neighbourhood, the reported cosines are exact."""
    sims = np.full(candidates.shape, -np.inf, dtype=np.float32)
    step = max(1, 50_000_000 // max(1, candidates.shape[1] * base.shape[1] * 4))  # ~50 MB of gathered vectors
    for s in range(0, len(queries), step):
        c = candidates[s : s + step]
        v = base[np.maximum(c, 0)]
        sims[s : s + step] = np.where(c >= 0, np.einsum("qkd,qd->qk", v, queries[s : s + step]), -np.inf)
    return merge_topk([sims], [candidates], k)


def merge_topk(sims: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of several (queries x k_i) results by similarity, ties to the smaller id (``-1`` ids last):
    exact top-k of the union, whichever order the parts come in."""
    s, i = np.concatenate(sims, axis=1), np.concatenate(ids, axis=1)
    order = np.lexsort((np.where(i < 0, np.iinfo(np.int64).max, i), -s), axis=-1)[:, :k]
    s, i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    return np.where(i < 0, -1.0, s).astype(np.float32), i


def _method(method: str, base: np.ndarray, queries: int) -> str:
    n, d = base.shape
    if method == "auto":
        method = "pca" if n > EXACT_MAX and n * max(queries, 1) > EXACT_PAIRS and d > PCA_DIM else "flat"
        method = "ivfpq" if n >= IVFPQ_MIN else method
    return method


def _rows(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows]``, as a view (no copy) when the rows are consecutive, as a split's rows usually are."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return matrix[rows[0] : rows[-1] + 1]
    return matrix[rows]


def knn(base: np.ndarray, queries: np.ndarray, k: int, *, method: str = "auto", nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine similarities and base row numbers for each query (``-1`` ids where fewer exist)."""
    if len(base) == 0 or len(queries) == 0:
        return np.zeros((len(queries), k), np.float32), np.full((len(queries), k), -1, np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if _method(method, base, len(queries)) == "flat":
        import faiss

        # Exact search straight on the caller's array: an IndexFlatIP would hold a second copy of the base
        # (78 MiB for 16k x 1280), for the same answers (the same BLAS kernel).
        sims, ids = faiss.knn(queries, np.ascontiguousarray(base, dtype=np.float32), min(k, len(base)),
                              metric=faiss.METRIC_INNER_PRODUCT)
        return _pad(sims, ids, k)
    index = build_index(base, method=method, nprobe=nprobe, queries=len(queries))
    if _is_ivfpq(index):
        _, cand = index.search(queries, min(RERANK * k, len(base)))
        sims, ids = rerank(np.ascontiguousarray(base, dtype=np.float32), queries, cand, min(k, len(base)))
    else:
        sims, ids = index.search(queries, min(k, len(base)))
    return _pad(sims, ids, k)


def _pad(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if sims.shape[1] < k:
        pad = k - sims.shape[1]
        sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-1.0)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return sims, ids


def _is_ivfpq(index) -> bool:  # type: ignore[no-untyped-def]
    """Is this the IVF-PQ index (alone or behind a PCA), whose candidates :func:`knn` re-ranks exactly?"""
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    return isinstance(inner, faiss.IndexIVFPQFastScan)


def shard_knn(emb: np.ndarray, base: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn` of ``emb[query]`` among ``emb[base]``, with ids as row numbers of ``emb`` (one shard's search)."""
    sims, ids = knn(_rows(emb, base), _rows(emb, query), k)
    return sims, np.where(ids >= 0, base[np.maximum(ids, 0)], -1)


def sharded_knn(emb: np.ndarray, bases: list[np.ndarray], query: np.ndarray, k: int,
                starmap: Callable[..., list] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of ``emb[query]`` over the union of the ``bases`` (row numbers of ``emb``): each shard searched on
    its own (``starmap``: e.g. one Ray task each), the shards' top-k merged with :func:`merge_topk`. With exact
    shards this is the exact top-k of the union (ties to the smaller row)."""
    tasks = [(b, query, min(k, len(b))) for b in bases if len(b)]
    parts = starmap(shard_knn, (emb,), tasks) if starmap is not None else [shard_knn(emb, *t) for t in tasks]
    return merge_topk([p[0] for p in parts], [p[1] for p in parts], k)


def dense_candidates(emb: np.ndarray, have: np.ndarray, split_index: np.ndarray, n_splits: int, *, k: int,
                     min_cosine: float, max_ratio: float,
                     starmap: Callable[..., list] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Embedding candidates from every later split into all earlier ones: ``(a, b, cosine, ratio)`` with ``a`` in
    the earlier split. A neighbour qualifies when its cosine is at least ``min_cosine`` and its cosine distance at
    most ``max_ratio`` times the distance to the query's ``k``-th neighbour (it stands out of its neighbourhood).

    With ``starmap`` (the engine's) and a base above :data:`SHARD_MIN` vectors, the base is sharded by split and
    searched with :func:`sharded_knn`."""
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
            if starmap is not None and len(base) > SHARD_MIN:
                bases = [np.flatnonzero(have & (split_index == s)) for s in range(later)]
                sims, g = sharded_knn(emb, bases, query, min(k, len(base)), starmap)
                ids = np.where(g >= 0, np.searchsorted(base, g), -1)  # global rows -> positions in base, as knn() has them
            else:
                sims, ids = knn(_rows(emb, base), _rows(emb, query), min(k, len(base)))
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
