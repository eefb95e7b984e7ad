"""The pixel-view searches run in blocks on one thread per core, each holding BLAS and faiss's OpenMP to one thread
(``neighbors.candidates._search``): the answers must be those of one single-threaded call, whatever the blocks and
the cores. (A multi-threaded OpenBLAS call splits a short block's rows between threads, and its edge kernels add in
another order: the last bits of a few inner products then depend on the machine's core count.)"""

from __future__ import annotations

import os

import numpy as np
import pytest

from splitaudit.neighbors.candidates import BLAS_FROM, _knn_blas, _one_thread_each, _search, view_vectors


def _crops(photos: dict[str, np.ndarray], count: int, seed: int) -> np.ndarray:
    """``count`` 32-px grey crops of the bundled photos at random places and sizes (24-64 px windows)."""
    import cv2

    rng = np.random.default_rng(seed)
    names = sorted(photos)
    out = np.empty((count, 32, 32), np.uint8)
    for i in range(count):
        p = photos[names[i % len(names)]]
        s = int(rng.integers(24, 65))
        y, x = int(rng.integers(0, p.shape[0] - s)), int(rng.integers(0, p.shape[1] - s))
        g = cv2.cvtColor(np.ascontiguousarray(p[y : y + s, x : x + s]), cv2.COLOR_RGB2GRAY)
        out[i] = cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA)
    return out


@pytest.fixture(scope="module")
def vectors(photos: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import faiss

    bs = int(faiss.cvar.distance_compute_blas_query_bs)
    base = view_vectors(_crops(photos, 1500, 0), ("pixels",), mirror=False)["pixels"][0]
    # one set whose last block is shorter than BLAS_FROM (joined to the block before), one with a longer last block
    q = view_vectors(_crops(photos, 2 * bs + 300, 1), ("pixels",), mirror=False)["pixels"][0]
    return base, q[: bs + BLAS_FROM - 3], q


def test_blocks_give_the_answer_of_one_call(vectors: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    base, short_tail, long = vectors
    got = _search(base, [short_tail, long], 50, reduce_above=float("inf"))
    for (sims, ids), q in zip(got, (short_tail, long)):
        with _one_thread_each():
            ref_sims, ref_ids = _knn_blas(q, np.ascontiguousarray(base), 50)
        assert np.array_equal(ids, ref_ids)
        assert np.array_equal(sims, ref_sims)


def test_one_core_and_all_cores_agree(vectors: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    import faiss
    from threadpoolctl import threadpool_info

    base, short_tail, long = vectors
    cores = os.sched_getaffinity(0)
    if len(cores) < 2:
        pytest.skip("one core: the threaded path is the sequential one")
    before = faiss.omp_get_max_threads(), [p["num_threads"] for p in threadpool_info()]
    threaded = _search(base, [short_tail, long], 16, reduce_above=0.0)  # the PCA-space path, re-ranked
    os.sched_setaffinity(0, {min(cores)})
    try:
        sequential = _search(base, [short_tail, long], 16, reduce_above=0.0)
    finally:
        os.sched_setaffinity(0, cores)
    for (s1, i1), (s2, i2) in zip(threaded, sequential):
        assert np.array_equal(i1, i2)
        assert np.array_equal(s1, s2)
    # and the libraries' thread counts are back where they were
    assert (faiss.omp_get_max_threads(), [p["num_threads"] for p in threadpool_info()]) == before
