"""Dense search: exact for small searches, IVF (with measured recall) for big ones; real faiss indexes."""

from __future__ import annotations

import faiss
import numpy as np

from splitaudit.neighbors import dense


def _clustered(n: int, d: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_auto_picks_exact_for_small_searches_and_ivf_for_big_ones() -> None:
    rng = np.random.default_rng(0)
    base = _clustered(dense.EXACT_MAX + 1000, 16, 64, rng)
    assert isinstance(dense.build_index(base[:1000], queries=10**6), faiss.IndexFlatIP)  # small base
    assert isinstance(dense.build_index(base, queries=10), faiss.IndexFlatIP)  # few queries: training would not pay
    big = int(dense.EXACT_PAIRS // len(base)) + 1
    assert isinstance(dense.build_index(base, queries=big), faiss.IndexFlatIP)  # 16 dims: nothing to reduce
    wide = _clustered(dense.EXACT_MAX + 1000, dense.PCA_DIM + 64, 64, rng)
    approx = dense.build_index(wide, queries=big)
    assert isinstance(approx, faiss.IndexRefineFlat) and approx.k_factor == dense.REFINE_FACTOR
    ivf = dense.build_index(base, method="ivf")
    assert ivf.nlist == dense.ivf_nlist(len(base)) and ivf.nprobe == dense.ivf_nprobe(ivf.nlist)


def _search_against_exact(method: str, n: int, d: int, nq: int, seed: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Recall@10 of ``method`` against exact search on clustered unit vectors, and both result similarities."""
    rng = np.random.default_rng(seed)
    base = _clustered(n, d, 300, rng)
    queries = base[rng.choice(n, nq, replace=False)] + 0.05 * rng.normal(size=(nq, d)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ex_sims, exact = dense.knn(base, queries, 10, method="flat")
    sims, approx = dense.knn(base, queries, 10, method=method)
    return float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])), sims, ex_sims


def test_pca_refined_search_recall_against_exact() -> None:
    recall, sims, ex_sims = _search_against_exact("pca", 30_000, 512, 1000, seed=2)
    assert recall >= 0.99, recall
    # Re-ranked with the full vectors: the similarities are exact inner products, not PCA approximations.
    assert np.allclose(sims[:, 0], ex_sims[:, 0], atol=1e-5)


def test_ivf_recall_against_exact_at_the_defaults() -> None:
    recall, sims, _ = _search_against_exact("ivf", 60_000, 64, 2000, seed=1)
    assert recall >= 0.99, recall
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first
