"""Stages that gather per-pair or per-row copies of the embedding matrix do it a bounded block at a time, or
not at all, with answers bit-identical to the whole-array computation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA

from splitaudit.checks import _probe
from splitaudit.neighbors import matches


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _spill_everything(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """Every array above 0 bytes spilled to a file (the real SpilledRows), each write's row count recorded."""
    from splitaudit import memory

    made: list[int] = []

    class Recorded(memory.SpilledRows):
        def write(self, start, rows):  # type: ignore[no-untyped-def]
            made.append(len(rows))
            super().write(start, rows)

    monkeypatch.setattr(memory, "SPILL_BYTES", 0)
    monkeypatch.setattr(memory, "SpilledRows", Recorded)
    return made


@pytest.mark.parametrize("block", [1, 7, matches.COSINE_BLOCK])
def test_pair_cosines_in_blocks_equal_the_whole_gather(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    emb = _unit(500, 64, 0)
    rng = np.random.default_rng(1)
    have = rng.random(len(emb)) > 0.1
    a, b = rng.integers(0, len(emb), 3 * matches.COSINE_BLOCK + 5), rng.integers(0, len(emb), 3 * matches.COSINE_BLOCK + 5)
    both = have[a] & have[b]
    want = np.full(len(a), np.nan)
    want[both] = np.einsum("ij,ij->i", emb[a[both]], emb[b[both]])
    monkeypatch.setattr(matches, "COSINE_BLOCK", block)
    got = matches.pair_cosines(emb, have, a, b)
    np.testing.assert_array_equal(got, want)  # bit for bit, NaN where either row has no embedding
    assert np.isnan(got[~both]).all() and np.isfinite(got[both]).all()
    assert np.isnan(matches.pair_cosines(np.zeros((3, 0), np.float32), np.ones(3, bool), a[:2] % 3, b[:2] % 3)).all()


@pytest.mark.parametrize(("n", "d"), [(600, 96), (2000, 700), (300, 1280), (12, 40)])
def test_projection_is_scikit_learns_pca_bit_for_bit(n: int, d: int) -> None:
    # tall and wide (the randomized SVD transposes), 7 and 4 power iterations, fewer rows than PCA_DIM
    x = _unit(n, d, 2)
    before = x.copy()
    with _probe._one_thread():  # the reference: PCA centring a second copy of the data (copy=True)
        want = PCA(n_components=min(_probe.PCA_DIM, n - 1, d), svd_solver="randomized",
                   random_state=_probe.SEED).fit_transform(x.astype(np.float64))
    want /= np.maximum(want.std(axis=0, keepdims=True), 1e-12)
    np.testing.assert_array_equal(_probe.project(x), want)
    np.testing.assert_array_equal(x, before)  # the caller's matrix is never the one centred


def test_projection_of_some_rows_converts_them_in_blocks_with_the_same_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    # the probe projects the rows that have an embedding: converted to float64 a block at a time (no float32 gather
    # of the whole matrix beside the float64 one), the same numbers as projecting the gathered rows
    x = _unit(900, 1280, 3)
    rows = np.flatnonzero(np.random.default_rng(4).random(len(x)) > 0.05)
    want = _probe.project(x[rows])
    np.testing.assert_array_equal(_probe.project(x, rows=rows), want)
    np.testing.assert_array_equal(_probe._float64_rows(x, rows, block=7), x[rows].astype(np.float64))
    np.testing.assert_array_equal(_probe.project(x, rows=np.arange(100, 800)), _probe.project(x[100:800]))


def test_many_rows_are_projected_on_the_components_of_a_sample_holding_a_block_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # above PCA_FIT_ROWS the components are scikit-learn's PCA of a seeded sample of rows, and every row is
    # projected on them a block at a time: the float64 copy of all rows (614 MB at 60k x 1280) is never made
    import tracemalloc

    monkeypatch.setattr(_probe, "PCA_FIT_ROWS", 600)
    monkeypatch.setattr(_probe, "PROJECT_ROWS", 256)
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(5000, 16)) @ rng.normal(size=(16, 400)) + 0.2 * rng.normal(size=(5000, 400))).astype(np.float32)
    rows = np.flatnonzero(rng.random(len(x)) > 0.1)
    tracemalloc.start()
    got = _probe.project(x, rows=rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.5 * len(rows) * x.shape[1] * 8, peak  # the old way held every row in float64, and more
    fit = np.sort(np.random.default_rng(_probe.SEED).choice(rows, 600, replace=False))
    with _probe._one_thread():
        pca = PCA(n_components=_probe.PCA_DIM, svd_solver="randomized", random_state=_probe.SEED)
        pca.fit(x[fit].astype(np.float64))
        want = (x[rows].astype(np.float64) - pca.mean_) @ pca.components_.T
    want /= want.std(axis=0, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # the sample's components span the data's: each of the leading 16 (the planted directions) lies in the span of
    # the 16 fitted on every row
    monkeypatch.setattr(_probe, "PCA_FIT_ROWS", 20_000)
    whole = _probe.project(x, rows=rows)[:, :16]
    coef, *_ = np.linalg.lstsq(whole, got[:, :16], rcond=None)
    explained = 1 - ((got[:, :16] - whole @ coef) ** 2).sum(axis=0) / (got[:, :16] ** 2).sum(axis=0)
    assert explained.min() > 0.99, explained


def test_projection_imports_neither_scikit_learn_nor_pandas_and_is_its_pca(tmp_path: Path) -> None:
    # scikit-learn's import loads pandas, pyarrow and scipy.stats: ~150 MiB resident in every default check. In a
    # process that never imported it, the projection is still scikit-learn's, bit for bit: scipy.linalg's BLAS
    # must be loaded before the one-thread limit or LAPACK runs threaded (digits 1e-12 apart on a wide matrix)
    x = _unit(150, 1280, 5)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np; from splitaudit.checks import _probe; "
            f"np.save({str(tmp_path / 'z.npy')!r}, _probe.project(np.load({str(tmp_path / 'x.npy')!r}))); "
            "print(sorted({'sklearn', 'pandas', 'pyarrow', 'scipy.stats'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.stdout.strip() == "[]", out.stdout
    with _probe._one_thread():
        want = PCA(n_components=_probe.PCA_DIM, svd_solver="randomized", random_state=_probe.SEED).fit_transform(x.astype(np.float64))
    want /= np.maximum(want.std(axis=0, keepdims=True), 1e-12)
    np.testing.assert_array_equal(np.load(tmp_path / "z.npy"), want)


def _photo_thumbs(photos: dict[str, np.ndarray], per_photo: int) -> np.ndarray:
    """64-px thumbnails of overlapping tiles of the real photos (neighbours that look alike, as in a dataset)."""
    from conftest import tiles_of

    tiles = [t for p in photos.values() for t in tiles_of(p, 96, per_photo, step=40)]
    return np.stack([np.asarray(t.resize((64, 64))) for t in tiles])


def test_batch_outputs_are_concatenated_a_column_at_a_time_leaving_the_callers_dicts(photos: dict[str, np.ndarray]
                                                                                   ) -> None:
    # map_batches drops each column's batch parts once that column is concatenated (the hash stage's columns were
    # held twice at the end of its pool); the dicts handed to on_batch (the cache writer's) keep their columns
    from splitaudit.features.runner import map_batches
    from splitaudit.features.thumbnails import thumbnails_batch

    thumbs = _photo_thumbs(photos, 10)
    pixels = np.empty(len(thumbs), dtype=object)
    for i, t in enumerate(thumbs):
        pixels[i] = np.ascontiguousarray(t[..., :3]) if t.ndim == 3 else np.stack([t] * 3, axis=-1)
    columns = {"path": np.full(len(thumbs), None, dtype=object), "pixels": pixels}
    seen: list[tuple[int, dict[str, np.ndarray]]] = []
    out = map_batches(lambda b: thumbnails_batch(b, 32), columns, batch_size=7, workers=1,
                      on_batch=lambda start, o: seen.append((start, o)))
    assert list(out) == ["vector", "ok"] and out["ok"].all() and out["vector"].shape == (len(thumbs), 32 * 32)
    assert [start for start, _ in seen] == list(range(0, len(thumbs), 7))
    for name in out:
        np.testing.assert_array_equal(np.concatenate([o[name] for _, o in seen]), out[name])
    np.testing.assert_array_equal(out["vector"][3], thumbnails_batch({"path": columns["path"][3:4], "pixels": pixels[3:4]},
                                                                     32)["vector"][0])


def test_hubness_of_query_sets_gathers_the_sample_without_stacking_them(photos: dict[str, np.ndarray],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # csls_knn hands base_hubness the queries as is and mirrored as two arrays: the sample is gathered from them,
    # the same rows as from their stack (which held 2 kB per query at 256 numbers beside the search)
    from splitaudit.neighbors import candidates

    thumbs = _photo_thumbs(photos, 40)
    vec = candidates.view_vectors(thumbs, ("pixels",))["pixels"]
    base, queries, mirrored = vec[0][::2], vec[0][1::2], vec[1][1::2]
    for sample in (10_000, 50):  # every query, then a sample of 50 of the 2 x len(queries) rows
        monkeypatch.setattr(candidates, "HUB_SAMPLE", sample)
        stacked = np.vstack([queries, mirrored])
        want = candidates.base_hubness(base, stacked, 5, reduce_above=0.0 if sample == 50 else 2e8)
        got = candidates.base_hubness(base, [queries, mirrored], 5, reduce_above=0.0 if sample == 50 else 2e8)
        np.testing.assert_array_equal(got, want)
    assert len(stacked) > 50


def test_pixel_views_do_not_depend_on_the_chunk_size(photos: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    from splitaudit.neighbors import candidates

    thumbs = _photo_thumbs(photos, 40)
    whole = candidates.view_vectors(thumbs)  # fewer images than one chunk
    monkeypatch.setattr(candidates, "VIEW_CHUNK", 7)
    chunked = candidates.view_vectors(thumbs)
    assert len(thumbs) > 7 * 10 and whole.keys() == chunked.keys()
    for view in whole:
        for as_is, got in zip(whole[view], chunked[view]):
            np.testing.assert_array_equal(got, as_is)


def test_embedding_candidates_searched_first_are_the_same_candidates(photos: dict[str, np.ndarray]) -> None:
    # the copy stage can run the embedding search before the pixel views exist (never both held); the answer
    # is the one candidate_pairs finds on its own, with unreadable rows inside the training split
    from splitaudit.neighbors import candidates

    thumbs = _photo_thumbs(photos, 30)
    n = len(thumbs)
    split = (np.arange(n) % 5 == 4).astype(np.int64)
    valid = np.ones(n, bool)
    valid[[3, 50, 51, 120]] = False
    emb = _unit(n, 32, 3)
    emb[10:20] = emb[0]  # identical embeddings: exact ties in the search
    have = np.ones(n, bool)
    have[77] = False
    embedded = candidates.embedding_pairs(split, emb, have, valid=valid)
    assert len(embedded[0]) >= (split == 1).sum()
    first = candidates.candidate_pairs(thumbs, split, valid=valid, embeddings=emb, have_embedding=have, embedded=embedded)
    alone = candidates.candidate_pairs(thumbs, split, valid=valid, embeddings=emb, have_embedding=have)
    for name in ("a", "b", "pixel_rank", "pixel_score", "pixel_mirrored", "pixel_view", "embed_rank", "embed_score", "hashed"):
        np.testing.assert_array_equal(getattr(first, name), getattr(alone, name))
    assert (alone.embed_rank >= 0).any() and not np.isin(alone.a[alone.embed_rank >= 0], [3, 50, 51, 77, 120]).any()


def test_pixel_views_made_per_search_give_the_same_candidates_and_negatives(photos: dict[str, np.ndarray]) -> None:
    # the copy stage makes each pixel view for the rows one search reads (the mirrored view for its queries only),
    # never every image's views at once: the candidates and the calibration's negatives are those of the views made
    # for every image up front, with unreadable rows and three splits
    from splitaudit.neighbors import candidates

    thumbs = _photo_thumbs(photos, 30)
    n = len(thumbs)
    split = np.where(np.arange(n) % 5 == 4, 1, np.where(np.arange(n) % 7 == 3, 2, 0)).astype(np.int64)
    valid = np.ones(n, bool)
    valid[[3, 50, 51, 120]] = False
    whole = candidates.view_vectors(thumbs)
    rows = np.flatnonzero(valid)[::3]
    some = candidates.view_vectors(thumbs, rows=rows, mirror=False)
    for view in whole:
        np.testing.assert_array_equal(some[view][0], whole[view][0][rows])
        assert some[view][1] is None
    given = candidates.candidate_pairs(thumbs, split, valid=valid, vectors=whole)
    made = candidates.candidate_pairs(thumbs, split, valid=valid)
    for name in ("a", "b", "pixel_rank", "pixel_score", "pixel_mirrored", "pixel_view"):
        np.testing.assert_array_equal(getattr(made, name), getattr(given, name))
    assert len(made) > (split > 0).sum()
    train = np.flatnonzero(valid & (split == 0))
    queries = train[::4]
    for got, want in zip(candidates.pairs_within(thumbs, train, queries),
                         candidates.pairs_within(thumbs, train, queries, vectors=whole)):
        np.testing.assert_array_equal(got, want)


def test_base_views_in_a_file_give_the_same_candidates_and_negatives(photos: dict[str, np.ndarray],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # above SPILL_BYTES a search's base view is written to a temporary file and read back by row (the PCA
    # projection PROJECT_BLOCK rows at a time, the re-ranked rows per query block): the same numbers, the same
    # candidates and calibration negatives as the views in memory (fewer base rows than one block here)
    from splitaudit import memory
    from splitaudit.neighbors import candidates

    thumbs = _photo_thumbs(photos, 30)
    n = len(thumbs)
    split = (np.arange(n) % 5 == 4).astype(np.int64)
    valid = np.ones(n, bool)
    valid[[3, 50, 120]] = False
    rows = np.flatnonzero(valid & (split == 0))
    want_views = candidates.view_vectors(thumbs, rows=rows, mirror=False)
    want = candidates.candidate_pairs(thumbs, split, valid=valid)
    want_within = candidates.pairs_within(thumbs, rows, rows[::4])
    made = _spill_everything(monkeypatch)
    monkeypatch.setattr(candidates, "VIEW_CHUNK", 50)
    spilled = candidates.view_vectors(thumbs, rows=rows, mirror=False, spill=True)
    for view in want_views:
        assert isinstance(spilled[view][0], memory.SpilledRows) and spilled[view][1] is None
        np.testing.assert_array_equal(spilled[view][0][:], want_views[view][0])
    assert set(made) == {50, len(rows) % 50}
    got = candidates.candidate_pairs(thumbs, split, valid=valid)
    for name in ("a", "b", "pixel_rank", "pixel_score", "pixel_mirrored", "pixel_view"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for a, b in zip(candidates.pairs_within(thumbs, rows, rows[::4]), want_within):
        np.testing.assert_array_equal(a, b)


def test_search_on_a_base_in_a_file_projects_it_in_fixed_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # a base of more rows than PROJECT_BLOCK is projected block by block: the answer of the search in memory
    # (its found rows re-ranked on the full vectors), exact searches read the base whole
    from splitaudit.memory import SpilledRows
    from splitaudit.neighbors import candidates

    monkeypatch.setattr(candidates, "PROJECT_BLOCK", 300)
    base, queries = _unit(2000, 64, 4), _unit(150, 64, 5)
    rows = SpilledRows(base.shape, np.float32)
    rows.write(0, base)
    for reduce_above in (0.0, 1e12):
        want = candidates._search(base, [queries, queries[::-1]], 10, reduce_above)
        got = candidates._search(rows, [queries, queries[::-1]], 10, reduce_above)
        for (ws, wi), (gs, gi) in zip(want, got):
            np.testing.assert_array_equal(gi, wi)
            np.testing.assert_allclose(gs, ws, rtol=0, atol=1e-6)
    np.testing.assert_allclose(candidates.base_hubness(rows, [queries], 5, 0.0),
                               candidates.base_hubness(base, [queries], 5, 0.0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(candidates._project(rows, np.eye(64, 8, dtype=np.float32)), base[:, :8], rtol=0, atol=0)
    rows.close()


def test_projection_of_rows_in_a_file_made_per_slice_is_the_projection_in_blocks(monkeypatch: pytest.MonkeyPatch
                                                                                  ) -> None:
    # a query set in a file is projected when its blocks are searched: every slice holds the numbers _project
    # gives (the same PROJECT_BLOCK cuts, bit for bit), wherever the slice starts and ends
    from splitaudit.memory import SpilledRows
    from splitaudit.neighbors import candidates

    monkeypatch.setattr(candidates, "PROJECT_BLOCK", 300)
    x = _unit(2000, 64, 8)
    rows = SpilledRows(x.shape, np.float32)
    rows.write(0, x)
    proj = np.random.default_rng(9).normal(size=(64, 8)).astype(np.float32)
    want = candidates._project(rows, proj)
    lazy = candidates._Projected(rows, proj)
    assert len(lazy) == 2000
    for lo, hi in ((0, 2000), (0, 300), (150, 450), (299, 301), (256, 512), (1999, 2000), (600, 600), (1900, 5000)):
        got = lazy[lo:hi]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want[lo:hi])
    np.testing.assert_array_equal(lazy[:], want)
    rows.close()


@pytest.mark.parametrize("block", [300, 4096])
def test_search_with_queries_in_a_file_projects_them_per_block(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # the hubness search's queries are a whole base (in a file at scale): searched in blocks of faiss's query
    # block size, each projected as it is searched; with one projection block the answer is that of the queries
    # in memory bit for bit, with several the same rows (the projections' last bits may differ from one product)
    import faiss

    from splitaudit.memory import SpilledRows
    from splitaudit.neighbors import candidates

    monkeypatch.setattr(candidates, "PROJECT_BLOCK", block)
    base, queries = _unit(150, 64, 10), _unit(2000, 64, 11)
    rows = SpilledRows(queries.shape, np.float32)
    rows.write(0, queries)
    old = faiss.cvar.distance_compute_blas_query_bs
    faiss.cvar.distance_compute_blas_query_bs = 256  # query blocks that cross the projection's blocks
    try:
        (ws, wi), = candidates._search(base, [queries], 10, 0.0)
        (gs, gi), = candidates._search(base, [rows], 10, 0.0)
        (ns, ni), = candidates._search(base, [rows], 10, 0.0, ids=False)
    finally:
        faiss.cvar.distance_compute_blas_query_bs = old
    np.testing.assert_array_equal(gi, wi)
    if block >= len(queries):
        np.testing.assert_array_equal(gs, ws)
    np.testing.assert_allclose(gs, ws, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ns, gs)  # ids=False: the same similarities, no ids
    assert ni.shape == (len(queries), 0)
    rows.close()


def test_hubness_keeps_the_similarities_of_the_search_with_ids() -> None:
    # base_hubness searches without ids (its queries are every base row): the same means as from the full answer
    from splitaudit.neighbors import candidates

    base, queries = _unit(900, 32, 12), _unit(300, 32, 13)
    for reduce_above in (0.0, 1e12):
        want = candidates._search(queries, [base], 5, reduce_above)[0][0].mean(axis=1)
        np.testing.assert_array_equal(candidates.base_hubness(base, [queries], 5, reduce_above), want)


def test_positions_of_queries_among_rows_are_the_dicts() -> None:
    from splitaudit.neighbors import candidates

    rows = np.random.default_rng(14).permutation(5000)[:3000].astype(np.int64)
    values = rows[np.random.default_rng(15).choice(3000, 400, replace=False)]
    pos = {int(r): i for i, r in enumerate(rows)}
    np.testing.assert_array_equal(candidates._positions(rows, values), [pos[int(v)] for v in values])
    np.testing.assert_array_equal(candidates._positions(np.sort(rows), np.sort(values)),
                                  np.searchsorted(np.sort(rows), np.sort(values)))
    assert candidates._positions(rows, values[:0]).shape == (0,)
    missing = np.setdiff1d(np.arange(5000), rows)[:1]
    with pytest.raises(KeyError):
        candidates._positions(rows, missing)
    with pytest.raises(KeyError):
        candidates._positions(rows[:0], values[:1])


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_csls_re_ranking_in_chunks_of_queries_is_the_whole_answer(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from splitaudit.neighbors import candidates

    base, queries = _unit(400, 32, 6), _unit(120, 32, 7)
    queries[5] = queries[6]  # identical queries: ties
    want = candidates.csls_knn(base, queries, 6, mirrored_queries=queries[:, ::-1].copy())
    monkeypatch.setattr(candidates, "CSLS_ROWS", chunk)
    got = candidates.csls_knn(base, queries, 6, mirrored_queries=queries[:, ::-1].copy())
    for w, g in zip(want, got):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def test_csls_search_re_ranks_each_block_of_queries_as_it_is_searched() -> None:
    """The raw pools of every query (POOL neighbours as is and mirrored: 120 MB for the 100k queries of 1M images)
    are never held at once: each block of queries is re-ranked as soon as it is searched, to the same answer."""
    import tracemalloc

    import faiss

    from splitaudit.neighbors import candidates

    base, queries = _unit(2000, 32, 8), _unit(20000, 32, 9)
    mirrored = queries[:, ::-1].copy()
    before = faiss.cvar.distance_compute_blas_query_bs
    faiss.cvar.distance_compute_blas_query_bs = 256  # many blocks (the cuts are faiss's)
    try:
        r_t = candidates.base_hubness(base, [queries, mirrored], candidates.HUB_K)
        pools = candidates._search(base, [queries, mirrored], candidates.POOL)
        want = candidates._csls_best(pools, [False, True], r_t, candidates.HUB_K, 10)
        held = sum(s.nbytes + i.nbytes for s, i in pools)
        del pools
        tracemalloc.start()
        got = candidates.csls_knn(base, queries, 10, mirrored_queries=mirrored)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        faiss.cvar.distance_compute_blas_query_bs = before
    for w, g in zip(want, got):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    assert peak < held / 2, (peak, held)  # measured: 7.2 MB against the pools' 24 MB (45 MB before)


def test_a_large_base_in_a_file_is_streamed_through_a_search_of_few_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PCA-space search of a few queries (the calibration's sampled images) among a base in a file projects and
    searches the base a block at a time instead of holding its whole projection (~170 MB at 1M images): the same
    similarities bit for bit, the same neighbours where none tie, in a fraction of the memory."""
    import tracemalloc

    from splitaudit.memory import SpilledRows
    from splitaudit.neighbors import candidates

    rng = np.random.default_rng(3)
    distinct = _unit(60000, 96, 10)
    copied = distinct[rng.integers(0, 1000, len(distinct))]  # a base of copies: every query's neighbours tie
    for base, ties in ((distinct, False), (copied, True)):
        spilled = SpilledRows(base.shape, np.float32)
        spilled.write(0, base)
        queries = base[rng.choice(len(base), 300, replace=False)] + 0.01 * _unit(300, 96, 11)
        sets = [queries, queries[:, ::-1].copy()]
        projection = len(base) * candidates.REDUCE_DIM * 4
        peaks = []
        for above in (10 * projection, projection // 4):  # held whole, as before; streamed
            monkeypatch.setattr(candidates, "STREAM_ABOVE", above)
            monkeypatch.setattr(candidates, "STREAM_ROWS", candidates.PROJECT_BLOCK)
            tracemalloc.start()
            got = candidates._search(spilled, sets, candidates.POOL, reduce_above=1e6)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            want = want if peaks[1:] else got
        assert candidates._streams(spilled, sets)
        for (ws, wi), (gs, gi) in zip(want, got):
            np.testing.assert_array_equal(gs, ws)  # the same products, bit for bit
            if not ties:
                np.testing.assert_array_equal(gi, wi)
            else:  # where the rows differ they tie: copies of one vector, another of them found (or listed first)
                assert (gi != wi).any() and np.array_equal(base[gi], base[wi])
        # the re-ranking's gathered rows are the same either way: the projection is what is no longer held
        assert peaks[1] < peaks[0] - projection / 2, (peaks, projection)
        spilled.close()


def test_screen_with_its_images_in_a_file_gives_the_same_answer(photos: dict[str, np.ndarray],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # above SPILL_BYTES the screen's half-resolution images go to temporary files read back per block: the same
    # answer as in memory, and the file is gone afterwards
    import glob
    import tempfile

    from splitaudit import memory
    from splitaudit.neighbors import screen as screen_module
    from splitaudit.neighbors import verify

    thumbs = _photo_thumbs(photos, 20)
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, len(thumbs) // 2, 300), rng.integers(len(thumbs) // 2, len(thumbs), 300)
    in_memory = verify.screen(thumbs, a, b, workers=1)
    made = _spill_everything(monkeypatch)
    monkeypatch.setattr(screen_module, "BLOCK", 16)
    before = set(glob.glob(f"{tempfile.gettempdir()}/splitaudit-rows-*"))
    spilled = verify.screen(thumbs, a, b, workers=1)
    for got, want in zip(spilled.to_arrays().values(), in_memory.to_arrays().values()):
        np.testing.assert_array_equal(got, want)
    # every screened image went through the files: as is and mirrored (register.halve)
    assert sum(made) == 2 * len(np.unique(np.r_[a, b]))
    assert set(glob.glob(f"{tempfile.gettempdir()}/splitaudit-rows-*")) == before


def test_spilled_rows_read_back_what_was_written(tmp_path: Path) -> None:
    from splitaudit.memory import SpilledRows

    x = np.random.default_rng(0).random((1000, 6, 5)).astype(np.float32)
    rows = SpilledRows(x.shape, np.float32, folder=str(tmp_path))
    for s in range(0, len(x), 300):
        rows.write(s, x[s : s + 300])
    pick = np.array([999, 3, 3, 0, 512])
    np.testing.assert_array_equal(rows[pick], x[pick])
    np.testing.assert_array_equal(rows[10:20], x[10:20])
    assert len(rows) == 1000 and rows.shape == x.shape and len(list(tmp_path.iterdir())) == 1
    rows.close()
    assert not list(tmp_path.iterdir())


def test_spilled_rows_written_at_scattered_rows_and_reshaped(tmp_path: Path) -> None:
    from splitaudit.memory import SpilledRows

    x = np.random.default_rng(1).integers(0, 256, (500, 12), dtype=np.uint8)
    rows = SpilledRows(x.shape, np.uint8, folder=str(tmp_path))
    index = np.random.default_rng(2).permutation(500)[:400]  # runs of consecutive rows and gaps, in any order
    rows.write_rows(index, x[index])
    rows.write_rows([], x[:0])
    want = np.zeros_like(x)
    want[index] = x[index]  # rows never written read back as zero
    np.testing.assert_array_equal(rows[np.arange(500)], want)
    seen = rows.reshape(500, 3, 4)
    assert seen.shape == (500, 3, 4) and seen.path and not rows.path  # the file moved to the reshaped rows
    np.testing.assert_array_equal(seen[[0, 499, 17]], want[[0, 499, 17]].reshape(3, 3, 4))
    with pytest.raises(ValueError):
        seen.reshape(250, 24)
    rows.close()  # no longer its file
    assert len(list(tmp_path.iterdir())) == 1
    seen.close()
    assert not list(tmp_path.iterdir())


def test_spilled_rows_read_back_as_numpy_indexes_the_array(tmp_path: Path) -> None:
    from splitaudit.memory import SpilledRows

    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (1000, 5, 3), dtype=np.uint8)
    rows = SpilledRows(x.shape, np.uint8, folder=str(tmp_path))
    rows.write(0, x)
    for index in (slice(None), slice(10, 20), slice(990, 2000), slice(None, None, 7), slice(50, 10, -3), [], [3],
                  [5, 5, 1, 999, -1, 0], np.arange(1000)[::-1], rng.integers(0, 1000, 300),
                  np.sort(rng.choice(1000, 200, replace=False)), rng.random(1000) < 0.3, np.array([], np.int64), 7, -2,
                  np.int64(4), np.array([1, 2], np.uint32), (slice(None), 1)):
        got, want = rows[index], x[index]
        assert got.dtype == want.dtype and got.shape == want.shape, index
        np.testing.assert_array_equal(got, want, err_msg=str(index))
    for bad in ([1000], [-1001], 1000, -1001):
        with pytest.raises(IndexError):
            rows[bad]
    rows.close()


def test_scattered_spilled_rows_are_read_without_mapping_the_file(tmp_path: Path) -> None:
    # a mapping of the file counted every page cache folio a row lies in (large folios: ext4 on Linux 6.16+): 400
    # rows scattered over 100 MB of thumbnails added ~100 MB of resident size while they were read
    from splitaudit.memory import SpilledRows

    try:
        with open("/proc/self/clear_refs", "w") as fh:  # resets the peak resident size (VmHWM) to the current one
            fh.write("5")
    except OSError:
        pytest.skip("no /proc/self/clear_refs here")

    def peak_mb() -> float:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024

    def rss_mb() -> float:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024

    rows = SpilledRows((64 * 1024, 1024), np.uint8, folder=str(tmp_path))  # 64 MiB
    block = np.arange(1024 * 1024, dtype=np.uint32).astype(np.uint8).reshape(1024, 1024)
    for s in range(0, len(rows), 1024):
        rows.write(s, block)
    pick = np.sort(np.random.default_rng(0).choice(len(rows), 400, replace=False))
    rows[pick[:4]]  # the first read's own allocations
    before = rss_mb()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    got = rows[pick]
    assert peak_mb() - before < 16, (before, peak_mb())
    np.testing.assert_array_equal(got, block[pick % 1024])
    rows.close()


def test_copy_stage_on_spilled_thumbnails_gives_the_same_answer(photos: dict[str, np.ndarray],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # above SPILL_BYTES the run holds the copy stage's thumbnails in a temporary file (checks.context): every read of
    # them goes through the file (from two registration threads here), with the answer of the in-memory array
    import glob
    import tempfile

    from splitaudit import memory
    from splitaudit.neighbors import verify

    thumbs = _photo_thumbs(photos, 30)
    split = (np.arange(len(thumbs)) % 5 == 0).astype(np.int64)
    want = verify.find_copies(thumbs, split, workers=1).to_arrays()
    monkeypatch.setattr(memory, "SPILL_BYTES", 0)
    before = set(glob.glob(f"{tempfile.gettempdir()}/splitaudit-rows-*"))
    spilled = memory.spill_rows(thumbs)
    assert isinstance(spilled, memory.SpilledRows) and len(spilled) == len(thumbs)
    got = verify.find_copies(spilled, split, workers=2).to_arrays()  # type: ignore[arg-type]
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    path = spilled.path
    assert os.path.exists(path) and path in set(glob.glob(f"{tempfile.gettempdir()}/splitaudit-rows-*")) - before
    spilled.close()
    # its own file is gone (not "the temporary folder is as before": another splitaudit run on this machine may
    # spill or clean up its own rows meanwhile, which failed this test once beside a benchmark)
    assert not os.path.exists(path)
    assert memory.spill_rows(thumbs[:0]).shape == (0, *thumbs.shape[1:])  # nothing to spill: the array itself


def test_memory_gate_runs_one_task_at_a_time_over_its_budget() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from splitaudit.memory import MemoryGate, resident_bytes

    assert resident_bytes() > 0
    for budget, most in ((0, 1), (2**62, 2)):
        gate = MemoryGate(2**20, budget)
        both = threading.Barrier(2, timeout=5)

        def task(i: int, gate: MemoryGate = gate, both: threading.Barrier = both, most: int = most) -> int:
            if most == 2:
                both.wait()  # both tasks in flight at once: the gate let the second start beside the first
            return i * i

        with ThreadPoolExecutor(2) as pool:
            assert list(pool.map(lambda i, gate=gate, task=task: gate.run(task, i), range(6))) == [0, 1, 4, 9, 16, 25]
        assert gate.most == most and gate.running == 0


def test_registration_over_its_memory_budget_gives_the_same_answer(photos: dict[str, np.ndarray],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # one chunk in flight (the budget already spent) or two: the same chunks, the same answer
    from splitaudit import memory
    from splitaudit.neighbors import verify

    thumbs = _photo_thumbs(photos, 30)
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, len(thumbs), 700), rng.integers(0, len(thumbs), 700)
    monkeypatch.setattr(verify, "CHUNK", 128)
    side_by_side = verify.verify_pairs(thumbs, a, b, workers=2)
    monkeypatch.setattr(memory, "BUDGET_BYTES", 0)
    one_by_one = verify.verify_pairs(thumbs, a, b, workers=2)
    for got, want in zip(one_by_one.to_arrays().values(), side_by_side.to_arrays().values()):
        np.testing.assert_array_equal(got, want)


def test_spilled_array_reads_as_the_array_and_its_pages_leave_when_dropped() -> None:
    # the embeddings above SPILL_BYTES (checks.context): a read-only array mapped from a file; what a read brought
    # into this process's resident memory leaves at release_freed_memory, and the values are read back unchanged
    from splitaudit import memory

    x = np.random.default_rng(6).random((4096, 4096), dtype=np.float32)  # 64 MiB
    want = x[::97].copy()
    y = memory.spill_array(x)
    assert type(y) is np.ndarray and y.shape == x.shape and y.dtype == x.dtype and not y.flags.writeable
    np.testing.assert_array_equal(y, x)
    del x
    memory.release_freed_memory()
    base = memory.resident_bytes()
    assert float(y.sum(dtype=np.float64)) > 0  # every page read
    read = memory.resident_bytes()
    memory.release_freed_memory()
    dropped = memory.resident_bytes()
    assert read - base > 48 * 2**20 and read - dropped > 48 * 2**20, (base, read, dropped)
    np.testing.assert_array_equal(y[::97], want)  # read again from the page cache (or the file)
    with pytest.raises(ValueError):
        y[0, 0] = 1.0
    small = np.ones((3, 4), np.float32)
    assert memory.spill_array(small) is small  # below SPILL_BYTES: the array itself


def test_spilled_array_stays_in_memory_when_no_file_can_be_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from splitaudit import memory

    x = np.arange(64, dtype=np.float32).reshape(8, 8)
    monkeypatch.setattr(memory, "SPILL_BYTES", 0)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))  # a temporary folder that does not exist
    assert memory.spill_array(x) is x


def test_audit_with_spilled_embeddings_gives_the_same_report(planted, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # the 20k check holds its embeddings in a file-backed mapping: every stage that reads them (the probes' PCA, the
    # calibration, the neighbour searches, the copy stage, the pair cosines) gives the report of the in-memory matrix
    import splitaudit
    from splitaudit import memory

    want = splitaudit.audit(*planted.splits, cache_dir=tmp_path / "memory").to_json()
    spilled = []
    real = memory.spill_array

    def recorded(x, *args, **kw):  # type: ignore[no-untyped-def]
        out = real(x, *args, **kw)
        spilled.append((out.shape, out.flags.writeable))
        return out

    monkeypatch.setattr(memory, "SPILL_BYTES", 0)
    monkeypatch.setattr(memory, "spill_array", recorded)
    got = splitaudit.audit(*planted.splits, cache_dir=tmp_path / "file").to_json()
    assert [w for _, w in spilled] == [False] and spilled[0][0][1] > 0  # the embeddings, read-only from the file
    assert got == want


def test_a_driver_can_limit_its_malloc_heaps() -> None:
    """The Ray driver's heap limit (memory.limit_arenas) takes effect on glibc, the platform CI and users run."""
    import platform

    from splitaudit.memory import limit_arenas

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt's M_ARENA_MAX is glibc's")
    assert limit_arenas(8)  # the glibc default on this many cores or more: changes nothing here


_HEAPS = """
import ctypes, sys, threading
if sys.argv[1] == "cli":
    from splitaudit.cli import main
    main(["checks"])
held, ready = [], threading.Barrier(6)
def work():
    held.append([bytes(1000) for _ in range(2000)])  # malloc'd blocks (pymalloc takes 512 bytes at most)
    ready.wait()
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
fh = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(fh))
libc.fclose(ctypes.c_void_p(fh))
"""


def test_the_cli_process_threads_share_two_malloc_heaps(tmp_path: Path) -> None:
    """The command's process limits its malloc heaps before any stage starts a thread (six threads allocating at
    once share two heaps); a plain interpreter gives them one each (what the count would read without the limit)."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_info and M_ARENA_MAX are glibc's")
    heaps = {}
    for how in ("cli", "plain"):
        out = tmp_path / f"{how}.xml"
        subprocess.run([sys.executable, "-c", _HEAPS, how, str(out)], check=True, capture_output=True, timeout=300)
        heaps[how] = out.read_text().count("<heap nr=")
    assert heaps["cli"] <= 2 < heaps["plain"], heaps


_HELD_AT_EXIT = """
import sys, threading
from splitaudit.memory import SpilledRows
held = SpilledRows((1000, 64), "float32", folder=sys.argv[1]).reshape(1000, 8, 8)  # the file's new owner
print(held.path, flush=True)
# a daemon thread still using the rows when the interpreter exits (the copy stage's helper after a Ctrl-C)
threading.Thread(target=lambda rows=held: threading.Event().wait(), daemon=True).start()
del held
"""


def test_a_spilled_file_a_daemon_thread_still_holds_is_removed_at_exit(tmp_path: Path) -> None:
    """A temporary rows file whose object is never collected (a daemon thread holds it when the interpreter exits)
    is removed at exit: an interrupted run leaves nothing in the temporary folder."""
    folder = tmp_path / "spill"
    folder.mkdir()
    got = subprocess.run([sys.executable, "-c", _HELD_AT_EXIT, str(folder)], capture_output=True, text=True,
                         timeout=300, check=True)
    path = got.stdout.strip()
    assert path.startswith(str(folder)), got.stdout
    assert not os.path.exists(path) and list(folder.iterdir()) == []


@pytest.mark.parametrize(("d", "dtype"), [(729, np.float32), (1024, np.uint8), (20_000, np.uint8), (3, np.int16)])
def test_rows_read_from_a_file_in_groups_are_the_rows(tmp_path: Path, d: int, dtype: type) -> None:
    # read_rows joins nearby runs of rows into one call (the bytes between them read into a scratch buffer): any
    # rows, in any order, with repeats, give the array's rows, and the plan keeps its gaps and buffers bounded
    from splitaudit import memory

    rng = np.random.default_rng(d)
    n = 3000
    x = rng.integers(0, 120, (n, d)).astype(dtype)
    path = tmp_path / "rows.bin"
    x.tofile(path)
    row_bytes = d * np.dtype(dtype).itemsize
    patterns = [rng.integers(0, n, 1500), rng.integers(0, n, 5), np.sort(rng.choice(n, 2000, replace=False)),
                np.arange(7, n - 2), np.arange(0, n, 2), np.arange(0, n, 40), np.array([n - 1, 0, n - 1]),
                np.array([5]), np.zeros(0, np.int64)]
    for rows in patterns:
        np.testing.assert_array_equal(memory.read_rows(str(path), x.shape, dtype, rows), x[rows])
        unique = np.unique(rows)
        starts, ends, groups = memory.read_plan(unique, row_bytes)
        assert [s for s in starts[1:]] == ends[:-1] and (not len(unique) or ends[-1] == len(unique))
        max_gap = memory.MERGE_GAP_BYTES // row_bytes
        for g0, g1 in groups:
            assert 2 * (g1 - g0) - 1 <= memory.MAX_BUFFERS
            for r in range(g0 + 1, g1):  # joined runs lie at most max_gap rows apart
                assert unique[starts[r]] - unique[ends[r - 1] - 1] - 1 <= max_gap
            if g1 < len(starts):  # a group ends where the next run lies too far, or the buffers are full
                gap = unique[starts[g1]] - unique[ends[g1 - 1] - 1] - 1
                assert gap > max_gap or 2 * (g1 - g0 + 1) - 1 > memory.MAX_BUFFERS
    every_other = memory.read_plan(np.arange(0, n, 2), row_bytes)
    if row_bytes <= memory.MERGE_GAP_BYTES:  # every other row: 1,500 runs read by a few calls
        assert len(every_other[2]) == -(-1500 // ((memory.MAX_BUFFERS + 1) // 2))
    else:  # rows too large to read a gap with: one call a run
        assert len(every_other[2]) == 1500
