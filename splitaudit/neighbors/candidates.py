"""Candidate pairs for the copy verifier, from several views of every image, unioned.

* **Pixels**: each image as a small grey thumbnail (``PIXEL_SIDE`` squared), mean-centred and L2-normalised, so the
  inner product is the correlation of the two thumbnails -- insensitive to brightness and contrast, and at this
  size to a shift of a pixel or two. Searched with the query as is and mirrored (a flipped copy is found), and
  re-ranked with CSLS (cross-domain similarity local scaling): ``2 cos(q, t) - r_q - r_t``, where ``r`` is an
  image's mean similarity to its ``HUB_K`` nearest neighbours on the other side. CSLS lowers "hubs" (flat or
  average-looking images that are everyone's neighbour) and lifts a pair that stands out of both neighbourhoods.
* **Cross searches** (:data:`CROSS`): one side's view against the other's, for copies no whole-image view
  matches: a framed copy's content against its source as it is (a source with a flat side loses that side to its
  own content box), and a copy cut 15-20% off a side or a corner as a window of its source.
* **Embeddings** (optional): CNN embedding kNN, the same CSLS re-ranking.
* **Hashes** (optional): pairs whose perceptual hashes agree, as found by :func:`~.binary.hash_pairs`.

Measured on real photos and Fashion-MNIST by ``benchmarks/copy_suites.py``: candidate recall is reported on its own,
before any verification. Large searches run in a PCA space, and from :data:`IVF_FROM` base rows in the nearest
cells of an IVF index there (:class:`PcaCells`; ``benchmarks/copy_search.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import invalid_parameter
from .. import memory
from ..memory import SpilledRows, release_freed_memory
from .columns import Columns

#: Pixel views, each searched on its own (top K by CSLS) and unioned (measured by benchmarks/copy_suites.py):
#: ``pixels`` the 16x16 grey thumbnail; ``coarse`` 8x8 of a blurred copy (a shift of 3-4 px is under one cell);
#: ``content`` 16x16 of the content inside any uniform frame or letterbox bars (a framed copy is the original
#: shrunk); ``spectrum`` the magnitude of the low spatial frequencies (a shift or a crop moves only the phase).
VIEWS = ("pixels", "coarse", "content", "spectrum")
#: Side of the grey thumbnail the ``pixels`` and ``content`` views compare (256 numbers per image).
PIXEL_SIDE = 16
#: Neighbours kept per query and view (pixel views: PIXEL_K each), and the neighbourhood of the hubness correction.
K = 10
PIXEL_K = 6
HUB_K = 10
#: The most neighbours a view may propose per image (its ranks are stored as int16).
MAX_K = 32767
#: Neighbours fetched by the raw search before CSLS re-ranking picks the best K.
POOL = 50
#: The base side's hubness is measured against at most this many (sampled) queries.
HUB_SAMPLE = 8192


@dataclass(frozen=True)
class Candidates(Columns):
    """Candidate pairs ``a`` (earlier split) -> ``b`` (later split), one row per pair, with each view's rank
    (0 = nearest; -1 when that view did not propose the pair) and CSLS score (NaN when not proposed);
    ``pixel_mirrored`` when the pixel view matched b mirrored, ``pixel_view`` which view; ``hashed`` when the hash view proposed it."""

    a: np.ndarray
    b: np.ndarray
    pixel_rank: np.ndarray
    pixel_score: np.ndarray
    pixel_mirrored: np.ndarray
    pixel_view: np.ndarray
    embed_rank: np.ndarray
    embed_score: np.ndarray
    hashed: np.ndarray


def _unit_rows(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=1, keepdims=True)
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)).astype(np.float32)


#: Images whose views are computed together: the working arrays of a chunk (a float32 grey copy, its blur, the
#: frames' statistics: ~64 kB per 64-px image) stay small and in cache. Each image's views are its own: the
#: chunk size changes no number (2,048 held ~100 MiB of working arrays at the copy stage's peak).
VIEW_CHUNK = 512


def view_vectors(thumbs: np.ndarray, views: tuple[str, ...] = VIEWS, *, rows: np.ndarray | None = None,
                 mirror: bool = True, spill: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every pixel view of :data:`VIEWS` for N thumbnails, as is and mirrored: view -> (rows, mirrored rows), each
    mean-centred and unit norm (float32). Vectorised: a few seconds for 100k 32-px images. ``rows``: only these
    thumbnails (one output row each, in this order; each image's views are its own: the same numbers as for all);
    ``mirror=False``: the mirrored rows are not made (None). ``spill``: a view of more than
    :data:`~splitaudit.memory.SPILL_BYTES` is written, chunk by chunk, to a :class:`~splitaudit.memory.SpilledRows`
    (the same numbers, read back by row: :func:`_search` reads a base view so)."""
    import cv2
    import scipy.fft as sfft

    from .register import _batch, blended_sides, frames, framed_all_round, to_grey

    for view in views:
        if view not in VIEWS:
            raise invalid_parameter("view", VIEWS, view)
    count = len(thumbs) if rows is None else len(rows)
    if count > VIEW_CHUNK or rows is not None:  # in chunks: the working arrays stay in cache (3x faster on 70k images)
        from concurrent.futures import ThreadPoolExecutor

        from ..features.runner import default_workers

        def make(s: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
            return view_vectors(thumbs[s : s + VIEW_CHUNK] if rows is None else thumbs[rows[s : s + VIEW_CHUNK]],
                                views, mirror=mirror)

        starts = list(range(0, count, VIEW_CHUNK))
        # chunks side by side on threads, a wave of one per thread at a time (the block means, resizes and FFTs
        # release the GIL; each image's views are its own, so the numbers do not change)
        side = max(1, min(default_workers(), len(starts)))
        pool = ThreadPoolExecutor(side, thread_name_prefix="splitaudit-views") if side > 1 else None
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        try:
            for w in range(0, len(starts), side):
                wave = starts[w : w + side]
                for s, part in zip(wave, pool.map(make, wave) if pool else map(make, wave)):
                    # written into the result: no second copy of every view
                    for v in views:
                        if v not in out:
                            out[v] = tuple(None if x is None else _view_array((count, x.shape[1]), x.dtype, spill)
                                           for x in part[v])  # type: ignore[assignment]
                        for o in range(2 if mirror else 1):
                            if isinstance(out[v][o], SpilledRows):
                                out[v][o].write(s, part[v][o])
                            else:
                                out[v][o][s : s + VIEW_CHUNK] = part[v][o]
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        if not out:  # no rows
            z = np.zeros((0, 0), np.float32)
            out = {v: (z, z if mirror else None) for v in views}  # type: ignore[misc]
        return out
    grey = to_grey(thumbs)
    n, h, w = grey.shape

    def area(x: np.ndarray, s: int) -> np.ndarray:
        if x.shape[1] % s == 0 and x.shape[2] % s == 0:  # INTER_AREA by an integer factor: block means
            return x.reshape(len(x), s, x.shape[1] // s, s, x.shape[2] // s).mean(axis=(2, 4))
        return _batch(lambda c: cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA), x, 4)

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    flip = lambda v: np.ascontiguousarray(v[:, :, ::-1])  # a mirrored image's view is the view mirrored
    pix = None
    for view in views:
        if view in ("pixels", "content"):
            pix = area(grey, PIXEL_SIDE) if pix is None else pix
            x = pix
            if view == "content":
                box = frames(grey)
                framed = np.flatnonzero((box != (0, 0, w - 1, h - 1)).any(axis=1))
                # a frame all round without its edge blended into the content (a framed copy stored smaller and
                # grown back: the box's outer line half frame, half content), as the registration prepares it; a
                # band on one or two sides (a translation's fill) and an object on a plain background keep their box
                ring = np.flatnonzero(framed_all_round(grey, box))
                box[ring] = blended_sides(grey[ring], box[ring])
                x = pix.copy()
                for i in framed.tolist():
                    x0, y0, x1, y1 = box[i]
                    x[i] = cv2.resize(np.ascontiguousarray(grey[i, y0 : y1 + 1, x0 : x1 + 1]), (PIXEL_SIDE, PIXEL_SIDE),
                                      interpolation=cv2.INTER_AREA)
            v, vm = x, flip(x) if mirror else None
        elif view == "coarse":
            s = 1.5 * w / 32
            x = area(_batch(lambda c, s=s: cv2.GaussianBlur(c, (0, 0), s), grey), 8)
            v, vm = x, flip(x) if mirror else None
        else:  # spectrum: magnitude of the low frequencies of the windowed 32-px image (a shift changes only phase)
            g = grey if (h, w) == (32, 32) else area(grey, 32)
            win = np.hanning(32).astype(np.float32)
            g = (g - g.mean(axis=(1, 2), keepdims=True)) * win[:, None] * win[None, :]
            # scipy's FFT: numpy's is ~40x slower on a batch of small images (numpy 2.4)
            spec = lambda im: np.log1p(np.fft.fftshift(np.abs(sfft.rfft2(im)), axes=1)[:, 8:25, :9]).astype(np.float32)
            v, vm = spec(g), spec(g[:, :, ::-1]) if mirror else None
        out[view] = (_unit_rows(v.reshape(n, -1)), None if vm is None else _unit_rows(vm.reshape(n, -1)))  # type: ignore[assignment]
    return out


def _view_array(shape: tuple[int, int], dtype: np.dtype, spill: bool) -> np.ndarray | SpilledRows:
    """Room for one view: in a temporary file with ``spill`` above SPILL_BYTES (in memory if the file cannot be
    made), else an array."""
    if spill and shape[0] * shape[1] * np.dtype(dtype).itemsize > memory.SPILL_BYTES:
        try:
            return memory.SpilledRows(shape, dtype)
        except OSError:  # no room (or no folder) for the file: the view stays in memory, the run goes on
            pass
    return np.empty(shape, dtype)


def _view_rows(thumbs: np.ndarray, vectors: dict[str, tuple[np.ndarray, np.ndarray]] | None, view: str,
               rows: np.ndarray, mirror: bool, spill: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """One view of the thumbnails ``rows`` (as is; mirrored too with ``mirror``): from ``vectors`` (a view where the
    rows are consecutive), else made now for those rows alone. Made per search, the views of every image are never
    held at once (5.8 kB an image as is and mirrored: 580 MB at 100k images); a view is made again for each search
    that reads it, which costs little beside the search. ``spill``: a large view made now goes to a temporary file
    (a search's base rows: 1 kB an image at 256 numbers, ~0.9 GB at 1M images, read back by :func:`_search`)."""
    from .dense import _rows

    if vectors is None:
        return view_vectors(thumbs, (view,), rows=rows, mirror=mirror, spill=spill)[view]
    vec, vec_m = vectors[view]
    return _rows(vec, rows), (_rows(vec_m, rows) if mirror else None)


def pixel_vectors(thumbs: np.ndarray, view: str = "pixels", *, mirrored: bool = False) -> np.ndarray:
    """One row per thumbnail: the pixel ``view`` of :data:`VIEWS`, mean-centred, unit norm (float32)."""
    if view not in VIEWS:
        raise invalid_parameter("view", VIEWS, view)
    return view_vectors(thumbs, (view,))[view][int(mirrored)]


#: Searches of more than REDUCE_PAIRS base x query pairs run on the views' first REDUCE_DIM principal components
#: (exhaustive, BLAS), and the POOL found are re-ranked with the full vectors: 5x less work for 256-number views.
REDUCE_DIM = 48
REDUCE_PAIRS = 2e8
#: From this many base rows, a search in the PCA space (more than REDUCE_PAIRS pairs) visits only the nearest cells
#: of an IVF index over the base's projections (:class:`PcaCells`) instead of every row: the exhaustive searches grew
#: with base x queries, 747 s x n^2 (n in millions) of the copy stage (docs/scale.md). Measured at 1M images
#: (794k base rows of real thumbnails, ``benchmarks/copy_search.py``): 2.7x faster than exhaustive at 3.6% of the
#: cells, recall@6 0.994 against it, and planted copies' sources found as often within 0.2 points.
IVF_FROM = 500_000
#: ... and from this many queries (all sets together): making the cells (k-means, then every base row assigned,
#: ~3-4 s at 800k rows) costs about what searching ~20k queries exhaustively does, so the calibration's few hundred
#: sampled queries stay exhaustive.
IVF_QUERIES = 20_000
#: The most cells a query visits: the count the share above reaches at ~800k base rows (1M images). What a search
#: loses against the exhaustive one depends on how many cells it visits more than on their share: planted copies'
#: sources missed per view at 9 cells were 0.008-0.022 at 238k base rows (976 cells) and 0.004-0.026 at 794k (1,782),
#: while at one share they fell with the base, and the 794k rows in twice the cells lost the same at each count
#: (``benchmarks/copy_search.py --nprobes``, ``--nlist-factor``; docs/scale.md). A fixed count
#: makes a query's work grow with the square root of the base (2 sqrt(n) cells) instead of with the base.
MAX_CELLS_PROBED = 68
#: Exact searches of at least this many queries run through BLAS (faiss's own threshold of 1.15, 128,000, left the
#: calibration's 400 queries on its one-query-at-a-time path: 10 GFLOP/s against 60 on one core).
BLAS_FROM = 20


def _knn_blas(q: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``faiss.knn`` by inner product, always through BLAS: faiss 1.15 (distance_compute_blas_threshold 128,000)
    compares query sets of fewer rows one query at a time, 6-8x slower (the calibration's 400 sampled images, a
    small dataset's eval split, the PCA-space searches of :func:`_search`: 1 s against 0.1 s for 4,000 queries
    into 20k rows of 48 numbers)."""
    import faiss

    old = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = BLAS_FROM
    try:
        return faiss.knn(np.ascontiguousarray(q, dtype=np.float32), base, k, metric=faiss.METRIC_INNER_PRODUCT)
    finally:
        faiss.cvar.distance_compute_blas_threshold = old


#: Rows of a view in a file (:class:`~splitaudit.memory.SpilledRows`) projected on the PCA axes at a time: a fixed
#: block, so the projection's last bits (BLAS's kernels differ with the rows of a product) never depend on the
#: data set's size.
PROJECT_BLOCK = 8192


def _project(x: np.ndarray | SpilledRows, proj: np.ndarray) -> np.ndarray:
    """``x @ proj``; rows in a file are read and projected PROJECT_BLOCK at a time (never all in memory)."""
    if not isinstance(x, SpilledRows):
        return x @ proj
    out = np.empty((len(x), proj.shape[1]), np.result_type(x.dtype, proj.dtype))
    for s in range(0, len(x), PROJECT_BLOCK):
        out[s : s + PROJECT_BLOCK] = x[s : s + PROJECT_BLOCK] @ proj
    return out


class _Projected:
    """``_project(x, proj)`` of rows in a file, made when sliced: ``[lo:hi]`` projects the PROJECT_BLOCKs those rows
    lie in, as :func:`_project` cuts them (the same numbers, bit for bit), and keeps the slice. A query set in a file
    (the base rows of the hubness search, 900k rows at 1M images) is then never projected whole: 48 numbers a row,
    ~170 MB at 1M, were held through that search."""

    def __init__(self, x: SpilledRows, proj: np.ndarray) -> None:
        self.x, self.proj = x, proj

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: slice) -> np.ndarray:
        lo, hi, step = index.indices(len(self.x))
        if step != 1:
            raise IndexError("a projection is sliced by consecutive rows")
        hi = max(lo, hi)
        first = lo - lo % PROJECT_BLOCK
        parts = [self.x[s : s + PROJECT_BLOCK] @ self.proj for s in range(first, hi, PROJECT_BLOCK)]
        if not parts:
            return np.empty((0, self.proj.shape[1]), np.result_type(self.x.dtype, self.proj.dtype))
        return np.concatenate(parts)[lo - first : hi - first]


class PcaCells:
    """A base's rows on their first :data:`REDUCE_DIM` principal axes, in the cells of an IVF index (faiss
    ``IndexIVFFlat``, inner product): made once for a base and searched by any number of query sets (the crop
    hypotheses' chunks). The axes and the cells come from samples of the base alone, drawn with fixed seeds, and are
    trained on one thread: the same base gives the same cells, whatever the queries or the machine's cores."""

    def __init__(self, base: np.ndarray | SpilledRows) -> None:
        import faiss

        from .dense import ivf_nlist

        n, d = base.shape
        rng = np.random.default_rng(0)
        sample = np.asarray(base[np.sort(rng.choice(n, size=min(n, 8192), replace=False))], np.float64)
        sample -= sample.mean(axis=0)
        nlist = ivf_nlist(n)
        with _one_thread_each():
            _, vecs = np.linalg.eigh(sample.T @ sample)
            self.proj = np.ascontiguousarray(vecs[:, ::-1][:, :REDUCE_DIM], dtype=np.float32)
            train = np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))  # faiss asks 39 a cell
            # 8-bit codes of each row's offset from its cell's centre: 48 bytes a row, not 192 as floats (the cells
            # held 152 MB at 1M images and raised the copy stage's peak by 115 MiB); the found rows are re-ranked
            # with the full view anyway
            self.index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(REDUCE_DIM), REDUCE_DIM, nlist,
                                                       faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
            self.index.cp.seed, self.index.cp.niter = 1234, 10
            # the training rows gathered and projected a block at a time (71k rows of 256 numbers at 1M images)
            self.index.train(np.concatenate([np.asarray(base[train[lo : lo + PROJECT_BLOCK]], np.float32) @ self.proj
                                             for lo in range(0, len(train), PROJECT_BLOCK)]))
            for lo in range(0, n, PROJECT_BLOCK):  # added block by block: the projections are never held twice
                self.index.add(np.ascontiguousarray(base[lo : lo + PROJECT_BLOCK] @ self.proj, dtype=np.float32))
        self.index.nprobe = cells_probed(nlist)

    def search(self, projected: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.ascontiguousarray(projected, dtype=np.float32), k)


def cells_probed(nlist: int) -> int:
    """Cells a query visits in :class:`PcaCells` of ``nlist`` cells: ~4% of them (``dense.ivf_nprobe``), at most
    :data:`MAX_CELLS_PROBED`."""
    from .dense import ivf_nprobe

    return min(ivf_nprobe(nlist), MAX_CELLS_PROBED)


def use_cells(n_base: int, n_queries: int, d: int, reduce_above: float | None = None) -> bool:
    """Whether a search of ``n_queries`` rows into ``n_base`` runs on :class:`PcaCells`."""
    return (n_base >= IVF_FROM and n_queries >= IVF_QUERIES and d > REDUCE_DIM
            and n_base * n_queries > _reduce_above(reduce_above))


def _reduce_above(value: float | None) -> float:
    return REDUCE_PAIRS if value is None else value  # read when called: the module's value of the moment


def _search(base: np.ndarray | SpilledRows, queries: list[np.ndarray | SpilledRows], k: int,  # type: ignore[no-untyped-def]
            reduce_above: float | None = None, ids: bool = True, cells: PcaCells | None = None, combine=None):
    """Top-k inner products of each query set against ``base`` (one index). Searches of more than ``reduce_above``
    base x query pairs run in a PCA space (:data:`REDUCE_DIM`); the found rows' inner products are then recomputed
    on the full vectors and re-sorted. The query blocks run on :func:`_on_cores`. The base and the query sets may
    be rows in a file (a large view, :func:`_view_rows` with ``spill``): in the PCA space only the projection
    (48 numbers a row) and the rows each query block re-ranks are in memory; an exact search reads the base whole.
    ``ids=False``: each set's ids come back with no columns (the similarities alone are kept, block by block).
    From :data:`IVF_FROM` base rows the PCA-space search visits the nearest cells of ``cells`` (made here unless
    given: :class:`PcaCells`) instead of every row. ``combine``: query sets of one length (the same queries under
    other hypotheses) are searched a block of rows at a time, and ``combine([(sims, ids) per set])`` of each block
    is returned, joined over the blocks (a tuple of arrays), instead of every set's answer."""
    k = min(k, len(base))
    d = base.shape[1]
    nq = sum(len(q) for q in queries)
    reduce_above = _reduce_above(reduce_above)
    if cells is None and use_cells(len(base), nq, d, reduce_above):
        cells = PcaCells(base)

    def answer(sims: np.ndarray, found_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the hubness search's queries are a whole base: its ids (8 bytes a neighbour) would be dropped unread
        return (sims, found_ids) if ids else (sims, np.zeros((len(sims), 0), np.int64))

    if cells is None and (d <= REDUCE_DIM or len(base) * nq <= reduce_above):
        b = np.ascontiguousarray(base[:] if isinstance(base, SpilledRows) else base, dtype=np.float32)  # an IndexFlatIP would copy it
        return _blocks(lambda q: answer(*_knn_blas(q, b, k)), queries, combine=combine)
    if cells is not None:
        proj = cells.proj
        near_rows = cells.search
    else:
        rng = np.random.default_rng(0)  # deterministic projection: the principal axes of a sample of both sides
        # the sampled rows of [base, *queries] gathered part by part: stacking them all first copied every row (at 1M
        # images, ~1 GB for one view) to keep 8,192
        parts = [base, *queries]
        bounds = np.cumsum([0, *map(len, parts)])
        pick = rng.choice(int(bounds[-1]), size=min(int(bounds[-1]), 8192), replace=False)
        sample = np.empty((len(pick), d), np.float64)
        for x, lo, hi in zip(parts, bounds[:-1], bounds[1:]):
            inside = (pick >= lo) & (pick < hi)
            sample[inside] = x[pick[inside] - lo]
        sample -= sample.mean(axis=0)
        with _one_thread_each():  # eigh's last bits depend on BLAS's thread count; its two threads on busy cores spin
            _, vecs = np.linalg.eigh(sample.T @ sample)
            proj = np.ascontiguousarray(vecs[:, ::-1][:, :REDUCE_DIM], dtype=np.float32)
        if _streams(base, queries):
            with _one_thread_each():
                found_near = _near_streamed(base, [_project(q, proj) for q in queries], proj, k)
            return _blocks(_reranked(base, k, lambda got, k: got, answer), queries, found_near, combine=combine)
        with _one_thread_each():
            reduced = np.ascontiguousarray(_project(base, proj), dtype=np.float32)
        near_rows = lambda qp, k: _knn_blas(qp, reduced, k)  # noqa: E731
    with _one_thread_each():
        # a query set in a file is projected block by block as its blocks are searched (never held whole)
        projected = [_Projected(q, proj) if isinstance(q, SpilledRows) else _project(q, proj) for q in queries]
    return _blocks(_reranked(base, k, near_rows, answer), queries, projected, combine=combine)


def _reranked(base: np.ndarray | SpilledRows, k: int, near_rows, answer):  # type: ignore[no-untyped-def]
    """``found(q, qp)``: the ``k`` rows of ``base`` that ``near_rows(qp, k)`` finds in the PCA space for the queries
    ``q``, re-ranked by their inner products on the full vectors."""
    d = base.shape[1]
    spilled = isinstance(base, SpilledRows)

    def found(q: np.ndarray, qp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims, ids = near_rows(qp, k)
        for s in range(0, len(q), 256):  # 256 x POOL gathered rows: 13 MB at 256 numbers
            blk = ids[s : s + 256]
            rows = np.maximum(blk, 0)
            near = base[rows.ravel()].reshape(*rows.shape, d) if spilled else base[rows]  # a file reads row lists
            full = np.einsum("qd,qkd->qk", q[s : s + 256], near)
            full = np.where(blk >= 0, full, -np.inf).astype(np.float32)
            order = np.argsort(-full, axis=1, kind="stable")
            sims[s : s + 256] = np.take_along_axis(full, order, axis=1)
            ids[s : s + 256] = np.take_along_axis(blk, order, axis=1)
        return answer(sims, ids)

    return found


#: A PCA-space search whose base's projection would take more than this many bytes, with few queries (one block
#: of faiss's, :func:`_cuts`, per set), streams the base instead (:func:`_near_streamed`): the calibration's
#: searches of a few hundred sampled images among 900k training images held the base's projection whole, ~170 MB
#: at 1M images, beside the eval images' search on the other thread (issue #15).
STREAM_ABOVE = 64 * 2**20
#: Base rows projected and searched at a time by a streamed search (a whole number of PROJECT_BLOCKs).
STREAM_ROWS = 8 * PROJECT_BLOCK


def _streams(base: np.ndarray | SpilledRows, queries: list) -> bool:
    """Whether :func:`_search` streams the base (see :data:`STREAM_ABOVE`): rows in a file, so that its
    projection is made PROJECT_BLOCK rows at a time either way (the same numbers, bit for bit)."""
    return (isinstance(base, SpilledRows) and len(base) * REDUCE_DIM * 4 > STREAM_ABOVE
            and all(len(_cuts(len(q))) <= 2 for q in queries))


class _Near:
    """A query set's neighbours found beforehand (:func:`_near_streamed`), sliced as its rows are."""

    def __init__(self, sims: np.ndarray, ids: np.ndarray) -> None:
        self.sims, self.ids = sims, ids

    def __len__(self) -> int:
        return len(self.sims)

    def __getitem__(self, index: slice) -> tuple[np.ndarray, np.ndarray]:
        return self.sims[index], self.ids[index]


def _near_streamed(base: SpilledRows, projected: list[np.ndarray], proj: np.ndarray, k: int) -> list[_Near]:
    """Each projected query set's ``k`` nearest base rows in the PCA space (inner product), the base projected and
    searched :data:`STREAM_ROWS` at a time and the blocks' answers merged: the answer of one search of the whole
    projection, bit for bit. The projection is made PROJECT_BLOCK rows at a time as :func:`_project` makes it, and
    faiss compares its database 1,024 rows at a time (``distance_compute_blas_database_bs``), so every inner product
    is the same product. Ties as faiss's heaps break them: of rows equally close at the k-th place the lower ones are
    kept (a row replaces a kept one only when strictly closer, and rows come in order), and equal similarities are
    listed higher row first."""
    sims = [np.full((len(p), k), -np.inf, np.float32) for p in projected]
    ids = [np.full((len(p), k), -1, np.int64) for p in projected]
    rows = _Projected(base, proj)
    for lo in range(0, len(base), STREAM_ROWS):
        reduced = np.ascontiguousarray(rows[lo : lo + STREAM_ROWS], dtype=np.float32)
        for j, p in enumerate(projected):
            if not len(p):
                continue
            s, i = _knn_blas(p, reduced, min(k, len(reduced)))
            both_s = np.concatenate([sims[j], s], axis=1)
            both_i = np.concatenate([ids[j], np.where(i >= 0, i + lo, -1)], axis=1)
            kept = np.lexsort((np.where(both_i >= 0, both_i, np.iinfo(np.int64).max), -both_s), axis=1)[:, :k]
            sims[j], ids[j] = np.take_along_axis(both_s, kept, axis=1), np.take_along_axis(both_i, kept, axis=1)
    out = []
    for s, i in zip(sims, ids):
        order = np.lexsort((-i, -s), axis=1)
        out.append(_Near(np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)))
    return out


def _cuts(n: int) -> list[int]:
    """Where a query set of ``n`` rows is cut into blocks (:func:`_blocks`)."""
    import faiss

    bs = max(int(faiss.cvar.distance_compute_blas_query_bs), BLAS_FROM)
    cuts = list(range(0, n, bs)) + [n]
    if len(cuts) > 2 and cuts[-1] - cuts[-2] < BLAS_FROM:
        del cuts[-2]
    return cuts


def _blocks(fn, queries: list[np.ndarray], projected: list[np.ndarray] | None = None,  # type: ignore[no-untyped-def]
            combine=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``fn(rows)`` (or ``fn(rows, projected rows)``) -> (sims, ids) over blocks of each query set, run by
    :func:`_on_cores` and put together per set. The blocks are cut where faiss's exhaustive search cuts its own
    query blocks (``distance_compute_blas_query_bs`` rows), a short last one joined to the one before (it stays on the
    BLAS path): every inner product is the same product it was in one call, so the answer does not depend on it.
    ``combine`` (sets of one length): a job is one block of rows of every set, its answer ``combine`` of theirs, and
    the jobs' answers are joined (the same blocks, so the same numbers, as set by set)."""
    if combine is not None and len({len(q) for q in queries}) == 1 and len(queries[0]):
        cuts = _cuts(len(queries[0]))

        def job(span: tuple[int, int]):  # type: ignore[no-untyped-def]
            lo, hi = span
            if projected is None:
                return combine([fn(q[lo:hi]) for q in queries])
            return combine([fn(q[lo:hi], p[lo:hi]) for q, p in zip(queries, projected)])

        done = _on_cores(job, list(zip(cuts[:-1], cuts[1:])))
        return tuple(np.concatenate(c) for c in zip(*done))  # type: ignore[return-value]
    if combine is not None:
        return combine(_blocks(fn, queries, projected))
    jobs = []
    for i, q in enumerate(queries):
        cuts = _cuts(len(q))
        jobs.extend((i, lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:]))
    if projected is None:
        parts = _on_cores(lambda job: fn(queries[job[0]][job[1] : job[2]]), jobs)
    else:
        parts = _on_cores(lambda job: fn(queries[job[0]][job[1] : job[2]], projected[job[0]][job[1] : job[2]]), jobs)
    out = []
    for i, q in enumerate(queries):
        mine = [j for j, job in enumerate(jobs) if job[0] == i]
        if not mine:  # an empty query set: one call, as before
            out.append(fn(q) if projected is None else fn(q, projected[i][:]))
        else:
            out.append((np.concatenate([parts[j][0] for j in mine]), np.concatenate([parts[j][1] for j in mine])))
            for j in mine:  # a set's blocks dropped once joined: never every block and every join at once
                parts[j] = None
    return out


def _on_cores(fn, items: list):  # type: ignore[no-untyped-def]
    """``[fn(x) for x in items]`` on one thread per core, each of them holding BLAS and faiss's OpenMP to one
    thread. Both libraries' own threads spin while they wait: on two cores, NumPy's and faiss's OpenBLAS pools and
    faiss's OpenMP pool together took 2-4.5x the CPU of one thread for the 60k-image crop search, and up to 5x its
    wall time when other work shared the cores (benchmarks/results/search-threads-ninth.txt). The blocks' answers are
    independent, so the order they run in changes nothing."""
    from ..features.runner import default_workers

    workers = min(default_workers(), len(items))
    with _one_thread_each():
        if workers <= 1:
            return [fn(x) for x in items]
        from concurrent.futures import ThreadPoolExecutor

        def run(x):  # type: ignore[no-untyped-def]
            _faiss_one_thread()  # OpenMP's thread count is each thread's own
            return fn(x)

        with ThreadPoolExecutor(workers, thread_name_prefix="splitaudit-search") as pool:
            return list(pool.map(run, items))


def _faiss_one_thread() -> None:
    import faiss

    faiss.omp_set_num_threads(1)


def _one_thread_each():  # type: ignore[no-untyped-def]
    """BLAS and OpenMP held to one thread in this process (and faiss's OpenMP in this thread), restored after."""
    from contextlib import ExitStack

    stack = ExitStack()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the hash-only install (no scikit-learn): faiss alone
        pass
    else:
        stack.enter_context(threadpool_limits(limits=1))
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    stack.callback(faiss.omp_set_num_threads, before)
    return stack


def csls_knn(base: np.ndarray, queries: np.ndarray, k: int = K, *, hub_k: int = HUB_K, pool: int = POOL,
             mirrored_queries: np.ndarray | None = None, reduce_above: float | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best base rows of each query by CSLS over unit-norm vectors.

    With ``mirrored_queries`` each query is also searched mirrored and a base row keeps its better orientation.
    ``reduce_above``: see :func:`_search`. Returns (scores, ids, cosines, mirrored), each (Q, k), best first; ids
    -1 where the base is smaller than k."""
    if len(base) == 0 or len(queries) == 0:
        return _no_neighbours(len(queries), k)
    sets = [queries] if mirrored_queries is None else [queries, mirrored_queries]
    r_t = base_hubness(base, sets, hub_k, reduce_above)  # the sets as they are: no stacked copy of every query
    mirrored = [False, mirrored_queries is not None]
    # each block of queries re-ranked as soon as it is searched: the raw pools of every query (POOL neighbours, as
    # is and mirrored: 120 MB for the 100k queries of 1M images, and as much again while joined) are never held
    return _search(base, sets, pool, reduce_above, combine=lambda found: _csls_best(found, mirrored, r_t, hub_k, k))


def _no_neighbours(q: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    z = np.zeros((q, k))
    return z - np.inf, np.full((q, k), -1), z, np.zeros((q, k), bool)


def base_hubness(base: np.ndarray, others: np.ndarray | list[np.ndarray], hub_k: int = HUB_K,
                 reduce_above: float | None = None) -> np.ndarray:
    """CSLS's ``r_t``: each base row's mean similarity to its nearest ``others`` (the other side of the
    translation), from a sample of at most HUB_SAMPLE of them and a neighbourhood shrunk in proportion (the same
    share of the others). ``others``: one array, or a list of arrays read as their rows stacked in order (the
    sample is gathered from them: the stack of every row, 2 kB per query at 256 numbers as is and mirrored, is
    never made)."""
    parts = list(others) if isinstance(others, (list, tuple)) else [others]
    total = sum(len(p) for p in parts)
    hk = hub_k
    if total > HUB_SAMPLE:
        hk = max(3, round(hub_k * HUB_SAMPLE / total))
        pick = np.sort(np.random.default_rng(0).choice(total, HUB_SAMPLE, replace=False))
        out = np.empty((len(pick), *parts[0].shape[1:]), np.result_type(*parts))
        lo = 0
        for p in parts:  # rows lo ... lo + len(p) of the stack are p's
            inside = (pick >= lo) & (pick < lo + len(p))
            out[inside] = p[pick[inside] - lo]
            lo += len(p)
        others = out
    else:
        others = parts[0] if len(parts) == 1 else np.vstack(parts)
    back = _search(others, [base], min(hk, total), reduce_above, ids=False)[0][0]
    return back.mean(axis=1)


#: Queries whose CSLS re-ranking (:func:`_csls_best`) runs at a time.
CSLS_ROWS = 4096


def _csls_best(found: list, mirrored: list[bool], r_t: np.ndarray, hub_k: int, k: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best base rows per query by CSLS from the raw searches ``found`` (one (sims, ids) per query set:
    the same queries as is, mirrored (``mirrored`` flags), or under other hypotheses), each base row once, in
    its best set. ``r_q``: a query's best mean similarity to its ``hub_k`` nearest over the sets. Every query's
    answer is its own: run over CSLS_ROWS queries at a time, its working arrays (~7 kB a query for two sets of
    POOL) stay bounded (~0.7 GB for the 100k queries of 1M images, all at once)."""
    nq = len(found[0][0])
    if nq > CSLS_ROWS:
        parts = [_csls_best([(sims[lo : lo + CSLS_ROWS], ids[lo : lo + CSLS_ROWS]) for sims, ids in found], mirrored,
                            r_t, hub_k, k) for lo in range(0, nq, CSLS_ROWS)]
        return tuple(np.concatenate(c) for c in zip(*parts))  # type: ignore[return-value]
    hk = min(hub_k, found[0][0].shape[1])
    r_q = np.max([s[:, :hk].mean(axis=1) for s, _ in found], axis=0)
    sims = np.concatenate([s for s, _ in found], axis=1)
    ids = np.concatenate([i for _, i in found], axis=1)
    mir = np.concatenate([np.full(s.shape, flag) for flag, (s, _) in zip(mirrored, found)], axis=1)
    valid = ids >= 0
    csls = np.where(valid, 2 * sims - r_q[:, None] - r_t[np.maximum(ids, 0)], -np.inf)
    # one entry per base row: the better orientation (sort by score, drop later duplicates)
    order = np.argsort(-csls, axis=1, kind="stable")
    csls, ids, sims, mir = (np.take_along_axis(x, order, axis=1) for x in (csls, ids, sims, mir))
    dup = np.zeros_like(valid)
    srt = np.sort(ids, axis=1)
    if ids.shape[1] > 1 and (srt[:, 1:] == srt[:, :-1]).any():
        for q in np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1)):
            _, first = np.unique(ids[q], return_index=True)
            keep = np.zeros(ids.shape[1], bool)
            keep[first] = True
            dup[q] = ~keep
    csls = np.where(dup, -np.inf, csls)
    order = np.argsort(-csls, axis=1, kind="stable")[:, :k]
    out = [np.take_along_axis(x, order, axis=1) for x in (csls, ids, sims, mir)]
    out[1] = np.where(np.isfinite(out[0]), out[1], -1)
    if out[0].shape[1] < k:
        pad = k - out[0].shape[1]
        out = [np.pad(x, ((0, 0), (0, pad)), constant_values=v) for x, v in zip(out, (-np.inf, -1, 0.0, False))]
    return out[0], out[1], out[2], out[3]


# ------------------------------------------------------------------------------------------------ cross searches

#: Searches beyond the symmetric views (:data:`VIEWS`), each one side's view against the other's:
#: ``framed``: the content inside a query's frame against the base images as they are, and the queries as they are
#: against the content inside base images' frames. The ``content`` view crops both sides, and a source photo with one
#: flat side (sky, a page's margin: "frame" to the uniform-rows rule) loses it while its framed copy keeps it
#: (benchmarks/copy_suites.py, 32 px: all 5 framed and letterboxed copies that no view proposed were found so).
#: ``crops``: each query shrunk to CROP_WINDOW of the side and placed at CROP_POSITIONS x CROP_POSITIONS spots,
#: compared inside that window with the base images' ``pixels`` view: a copy cut 15-20% off a side or a corner
#: is too far from its source's whole thumbnail for any whole-image view (9 of those 12 misses found so).
CROSS = ("framed", "crops")
#: Neighbours kept per query by a cross search, and fetched before its CSLS re-ranking: the copies these searches
#: alone find rank first or second (benchmarks/copy_suites.py, 32 px: 14 of 15), and each kept pair costs a screen.
CROSS_K = 2
CROSS_POOL = 16
#: The cross searches always run in the PCA space of :func:`_search` (5x less work; the pool re-ranked on the full
#: vectors), whatever their size.
CROSS_REDUCE_ABOVE = 0.0
CROP_WINDOW = 0.82
CROP_POSITIONS = 3
#: Queries whose crop hypotheses are searched together (9 sets of 256 numbers each: ~9 MB per 1,024 queries).
CROP_CHUNK = 1024


def _framed_rows(thumbs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mask over ``rows``: the thumbnail has uniform outer rows or columns (:func:`~.register.frames`)."""
    from .register import frames, to_grey

    out = np.zeros(len(rows), bool)
    for s in range(0, len(rows), VIEW_CHUNK):
        g = to_grey(thumbs[rows[s : s + VIEW_CHUNK]])
        out[s : s + VIEW_CHUNK] = (frames(g) != (0, 0, g.shape[2] - 1, g.shape[1] - 1)).any(axis=1)
    return out


def crop_hypotheses(thumbs: np.ndarray) -> list[np.ndarray]:
    """For N thumbnails, the ``pixels`` view of each as a crop of a bigger picture: shrunk to CROP_WINDOW of the
    side (on a 32-px grid), placed at each of CROP_POSITIONS^2 spots, mean-centred inside that window and zero
    outside (so the inner product with a base row's view is the covariance over the window), unit norm. One
    (N, PIXEL_SIDE^2) float32 array per spot."""
    import cv2

    from .register import _batch, to_grey

    g = to_grey(thumbs)
    n = len(g)
    if g.shape[1:] != (32, 32):
        g = _batch(lambda c: cv2.resize(c, (32, 32), interpolation=cv2.INTER_AREA), g, 4)
    w = round(32 * CROP_WINDOW)
    small = _batch(lambda c: cv2.resize(c, (w, w), interpolation=cv2.INTER_AREA), np.ascontiguousarray(g), 4)
    f = 32 // PIXEL_SIDE
    # the view's cell means as two products with a pooling matrix (a cell's f pixels, 1/f each), the window's rows
    # and columns only: the same numbers as pooling a zero canvas with the window pasted in, 3x faster (the
    # ``inside`` pick and the ``crops`` search run this for every candidate's train image)
    pool = np.kron(np.eye(PIXEL_SIDE, dtype=np.float32), np.full((1, f), 1.0 / f, np.float32))
    spots = np.linspace(0, 32 - w, CROP_POSITIONS).round().astype(int).tolist()
    flat = small.reshape(n * w, w)
    # pooled along x, laid out (w, n * PIXEL_SIDE): pooling along y is then one product too
    across = {o: (flat @ pool[:, o : o + w].T).reshape(n, w, PIXEL_SIDE).transpose(1, 0, 2).reshape(w, -1)
              for o in spots}
    out = []
    for oy in spots:
        py = pool[:, oy : oy + w]
        for ox in spots:
            m = np.outer(py.sum(1), pool[:, ox : ox + w].sum(1))  # a cell's share inside the window
            c = (py @ across[ox]).reshape(PIXEL_SIDE, n, PIXEL_SIDE).transpose(1, 0, 2) / np.maximum(m, 1e-6)
            mu = (c * m).sum(axis=(1, 2)) / m.sum()
            v = ((c - mu[:, None, None]) * m).reshape(n, -1)
            out.append((v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)).astype(np.float32))
    return out


def cross_pairs(thumbs: np.ndarray, base_r: np.ndarray, query_r: np.ndarray, k: int = CROSS_K, cross: tuple[str, ...] = CROSS,
                vectors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
                ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The :data:`CROSS` searches from the queries ``query_r`` into the base ``base_r`` (record rows): per search,
    (name, base record, query record, rank, CSLS score, mirrored), k best per query (a query found in the base, as
    in :func:`pairs_within`, is among them)."""
    for name in cross:
        if name not in CROSS:
            raise invalid_parameter("cross", CROSS, name)
    out = []
    if not len(base_r) or not len(query_r) or not cross:
        return out

    def rows_of(found: tuple, base_rows: np.ndarray, query_rows: np.ndarray) -> tuple:
        sc, ids, _, mir = found
        qi, r = np.nonzero(ids >= 0)
        return base_rows[ids[qi, r]], query_rows[qi], r, sc[qi, r], mir[qi, r]

    base_pix = _view_rows(thumbs, vectors, "pixels", base_r, False, spill=True)[0]
    if "framed" in cross:
        fq, fb = query_r[_framed_rows(thumbs, query_r)], base_r[_framed_rows(thumbs, base_r)]
        parts = []
        if len(fq):
            q, q_m = _view_rows(thumbs, vectors, "content", fq, True)
            parts.append(rows_of(csls_knn(base_pix, q, k, pool=CROSS_POOL, mirrored_queries=q_m,
                                          reduce_above=CROSS_REDUCE_ABOVE), base_r, fq))
        if len(fb):
            q, q_m = _view_rows(thumbs, vectors, "pixels", query_r, True)
            parts.append(rows_of(csls_knn(_view_rows(thumbs, vectors, "content", fb, False, spill=True)[0], q, k, pool=CROSS_POOL,
                                          mirrored_queries=q_m, reduce_above=CROSS_REDUCE_ABOVE), fb, query_r))
        if parts:
            out.append(("framed", *(np.concatenate(c) for c in zip(*parts))))
    if "crops" in cross:
        # the base's hubness against the queries as they are, once; the hypotheses chunk by chunk (bounded memory)
        r_t = base_hubness(base_pix, _view_rows(thumbs, vectors, "pixels", query_r, False)[0], HUB_K, CROSS_REDUCE_ABOVE)
        parts = []
        # every chunk searches one base: its cells (a large base's) are made once
        cells = PcaCells(base_pix) if use_cells(len(base_r), len(query_r), base_pix.shape[1], CROSS_REDUCE_ABOVE) else None
        for s in range(0, len(query_r), CROP_CHUNK):
            rows = query_r[s : s + CROP_CHUNK]
            sets = crop_hypotheses(thumbs[rows])
            found = _search(base_pix, sets, CROSS_POOL, CROSS_REDUCE_ABOVE, cells=cells)
            parts.append(rows_of(_csls_best(found, [False] * len(sets), r_t, HUB_K, min(k, len(base_r))), base_r, rows))
        out.append(("crops", *(np.concatenate(c) for c in zip(*parts))))
    release_freed_memory()
    return out


#: Pairs whose :func:`inside_best` scores are computed at a time (9 crop hypotheses of 256 numbers each: ~9 kB a pair).
INSIDE_CHUNK = 4096
#: :func:`inside_best` keeps a pair only where its earlier image matches inside the later one by this much more than
#: the two match as whole images (the inner products of the ``crops`` hypotheses and of the ``pixels`` views): a crop
#: lies inside its source far better than it matches it whole, a look-alike barely better. Measured on
#: `benchmarks/reverse_copies.py` (each eval image's best pair among its candidates): corner crops -0.10 to 0.84 (7 of
#: 12 at 0.3 or more; those under it mostly match whole too), other images' best pairs 0.02-0.06 (median) and
#: 0.20-0.30 (90th percentile). Each pair kept costs a registration from two starts.
INSIDE_MARGIN = 0.3


def inside_best(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask over the candidate pairs (``a`` earlier, ``b`` later): each later image's pair whose earlier image, shrunk
    and placed as the ``crops`` search places a query (:func:`crop_hypotheses`), best matches inside the later
    image's ``pixels`` view (the inner product over the window, the best of the 3 x 3 spots; ties: the earlier row),
    where that beats the two images' whole-view match by :data:`INSIDE_MARGIN`. A train image cut 20-25% from a
    corner of its eval image is usually a candidate (the embeddings propose it) but no search ranks it first and the
    screens score it low; this finds it among the candidates already there, with no search of its own (an ``inside``
    search over every train image added 12.6% to a 60k check: docs/copies.md, twenty-sixth session)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    if not len(a):
        return np.zeros(0, bool)
    score = np.full(len(a), -np.inf, np.float32)
    margin = np.zeros(len(a), np.float32)
    ub, b_pos = np.unique(b, return_inverse=True)
    # the later images' views made once, chunk by chunk (in a temporary file when large: 100k eval images, 100 MB)
    pix_b = _view_rows(thumbs, None, "pixels", ub, False, spill=True)[0]
    order = np.argsort(a, kind="stable")
    for s in range(0, len(order), INSIDE_CHUNK):
        rows = order[s : s + INSIDE_CHUNK]
        ua, a_pos = np.unique(a[rows], return_inverse=True)
        pb = np.asarray(pix_b[b_pos[rows]], np.float32)
        got = np.full(len(rows), -np.inf, np.float32)
        for h in crop_hypotheses(thumbs[ua]):  # one (len(ua), 256) array per spot
            got = np.maximum(got, np.einsum("pd,pd->p", h[a_pos], pb))
        score[rows] = got
        margin[rows] = got - np.einsum("pd,pd->p", pixel_vectors(thumbs[ua])[a_pos], pb)
    first = np.lexsort((np.arange(len(a)), -score, b))
    keep = np.zeros(len(a), bool)
    keep[first[np.r_[True, b[first][1:] != b[first][:-1]]]] = True
    if isinstance(pix_b, SpilledRows):
        pix_b.close()
    return keep & (margin >= INSIDE_MARGIN)


def candidate_pairs(thumbs: np.ndarray, split_index: np.ndarray, *, valid: np.ndarray | None = None,
                    embeddings: np.ndarray | None = None, have_embedding: np.ndarray | None = None,
                    hash_a: np.ndarray | None = None, hash_b: np.ndarray | None = None,
                    k_pixel: int = PIXEL_K, k_embed: int = K, views: tuple[str, ...] = VIEWS,
                    vectors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                    embedded: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
                    cross: tuple[str, ...] = CROSS, crossed: Callable[[], list[tuple]] | None = None) -> Candidates:
    """Candidates from every later split into all earlier ones, from the pixel view (flip-aware, CSLS), the
    embedding view (CSLS) and given hash pairs, unioned. ``embedded``: :func:`embedding_pairs` of these
    arguments, when the caller ran that search first (before the pixel views were made: the two never held at
    once). ``cross``: the :data:`CROSS` searches run beside the views (``pixel_view`` names them too); ``crossed``:
    called for their :func:`cross_part` instead, when the caller runs them (on another thread, while this one
    searches the views).

    ``thumbs``: (N, s, s[, 3]) pixels of every record (rows where ``valid`` is False are ignored: unreadable);
    ``embeddings``: (N, D) unit-norm rows, ``have_embedding`` marking the rows that have one; ``hash_a``/
    ``hash_b``: hash-matched record pairs (any order, any splits: only pairs across splits are kept). A pair's
    pixel rank and score are those of the pixel view that ranked it best (``pixel_view``)."""
    n = len(split_index)
    if len(thumbs) != n:
        raise invalid_parameter("thumbs", f"an array with one row per record ({n})", len(thumbs))
    if not (0 <= k_pixel <= MAX_K and 0 <= k_embed <= MAX_K):
        raise invalid_parameter("k_pixel/k_embed", f"integers from 0 to {MAX_K}", (k_pixel, k_embed))
    for view in views:
        if view not in VIEWS:
            raise invalid_parameter("views", VIEWS, view)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    s = np.asarray(split_index)
    empty = np.zeros(0, np.int64)
    pix = [(empty, empty, empty, np.zeros(0), np.zeros(0, bool), empty)]  # a, b, rank, score, mirrored, view
    if k_pixel and valid.any():
        rows_v = np.flatnonzero(valid)
        for vi, view in enumerate(views):
            for _, base, query in _split_pairs(s[valid], np.ones(len(rows_v), bool)):
                # only the rows a search reads (the mirrored views: the queries'), made for this search unless given:
                # not every valid row of every view, as is and mirrored (5.8 kB an image)
                base_r, query_r = rows_v[base], rows_v[query]
                q, q_m = _view_rows(thumbs, vectors, view, query_r, True)
                sc, ids, _, mir = csls_knn(_view_rows(thumbs, vectors, view, base_r, False, spill=True)[0], q, k_pixel,
                                           mirrored_queries=q_m)
                del q, q_m
                qi, r = np.nonzero(ids >= 0)
                pix.append((rows_v[base[ids[qi, r]]], rows_v[query[qi]], r, sc[qi, r], mir[qi, r], np.full(len(r), vi)))
            release_freed_memory()  # the view's search arrays, freed: the next view starts from what is in use
        pix.extend(cross_part(thumbs, s, valid=valid, views=views, cross=cross, vectors=vectors)
                   if crossed is None else crossed())
    pa, pb, prank, pscore, pmir, pview = (np.concatenate(c) for c in zip(*pix))
    # one row per pair: its best rank over the pixel views (ties: the view listed first)
    order = np.lexsort((pview, prank, pb, pa))
    first = order[np.r_[True, (np.diff(pa[order]) != 0) | (np.diff(pb[order]) != 0)]] if len(order) else order
    pa, pb, prank, pscore, pmir, pview = (x[first] for x in (pa, pb, prank, pscore, pmir, pview))
    if embedded is None:
        embedded = embedding_pairs(s, embeddings, have_embedding, valid=valid, k=k_embed)
    ea, eb, erank, escore = embedded
    ha = hb = empty
    if hash_a is not None and hash_b is not None:
        x, y = np.asarray(hash_a, np.int64), np.asarray(hash_b, np.int64)
        ok = (s[x] != s[y]) & valid[x] & valid[y]
        x, y = x[ok], y[ok]
        ha, hb = np.where(s[x] < s[y], x, y), np.where(s[x] < s[y], y, x)
    keys = np.unique(np.concatenate([pa * n + pb, ea * n + eb, ha * n + hb]))  # sorted by (a, b)

    def col(ka: np.ndarray, kb: np.ndarray, values: np.ndarray, default: object, dt: type) -> np.ndarray:
        out = np.full(len(keys), default, dtype=dt)
        out[np.searchsorted(keys, ka * n + kb)] = values
        return out

    view_names = np.array(list(views) + list(CROSS) + [""], dtype=object)
    # ranks are below k (int16: the copy stage keeps both rank columns to the run's end, 1.78M rows at 1M images)
    return Candidates(
        keys // n, keys % n, col(pa, pb, prank, -1, np.int16), col(pa, pb, pscore, np.nan, np.float64),
        col(pa, pb, pmir, False, bool), view_names[col(pa, pb, pview, len(view_names) - 1, np.int64)],
        col(ea, eb, erank, -1, np.int16), col(ea, eb, escore, np.nan, np.float64),
        col(ha, hb, np.ones(len(ha), bool), False, bool))


def cross_part(thumbs: np.ndarray, split_index: np.ndarray, *, valid: np.ndarray | None = None,
               views: tuple[str, ...] = VIEWS, cross: tuple[str, ...] = CROSS,
               vectors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> list[tuple]:
    """:func:`candidate_pairs`' :data:`CROSS` searches on their own, as its rows of pixel-view pairs (a, b, rank,
    score, mirrored, view number after ``views``): a caller may run them on another thread than the views'
    searches (the copy stage does) and hand them over as ``crossed``."""
    s = np.asarray(split_index)
    valid = np.ones(len(s), bool) if valid is None else np.asarray(valid, bool)
    rows_v = np.flatnonzero(valid)
    out: list[tuple] = []
    for _, base, query in _split_pairs(s[valid], np.ones(len(rows_v), bool)):
        for name, *found in cross_pairs(thumbs, rows_v[base], rows_v[query], CROSS_K, cross, vectors):
            out.append((*found, np.full(len(found[0]), len(views) + CROSS.index(name))))
    return out


def embedding_pairs(split_index: np.ndarray, embeddings: np.ndarray | None, have_embedding: np.ndarray | None = None,
                    *, valid: np.ndarray | None = None, k: int = K
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The embedding view's candidates (CSLS kNN from every later split into the earlier ones) as record pairs
    (a, b) with their rank and CSLS score: :func:`candidate_pairs`' embedding part, on its own so that a caller
    can run it before the pixel views exist. Empty without embeddings."""
    from .dense import _rows

    s = np.asarray(split_index)
    n = len(s)
    empty = np.zeros(0, np.int64)
    emb = [(empty, empty, empty, np.zeros(0))]
    if embeddings is not None and k and len(embeddings):
        valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
        have = valid & (np.ones(n, bool) if have_embedding is None else np.asarray(have_embedding, bool))
        for _, base, query in _split_pairs(s, have):  # a split's rows are usually consecutive: views, not copies
            sc, ids, _, _ = csls_knn(_rows(embeddings, base), _rows(embeddings, query), k)
            qi, r = np.nonzero(ids >= 0)
            emb.append((base[ids[qi, r]], query[qi], r, sc[qi, r]))
    ea, eb, erank, escore = (np.concatenate(c) for c in zip(*emb))
    return ea, eb, erank, escore


def _split_pairs(split_index: np.ndarray, rows: np.ndarray):  # type: ignore[no-untyped-def]
    """(later split, base rows = earlier splits, query rows = that split) for every later split."""
    for later in range(1, int(split_index.max(initial=0)) + 1):
        base = np.flatnonzero(rows & (split_index < later))
        query = np.flatnonzero(rows & (split_index == later))
        if len(base) and len(query):
            yield later, base, query


def _positions(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The position in ``rows`` (distinct) of each of ``values`` (each one of them), as a dict of every row would
    give it, without that dict: ~100 bytes a row (every training image: ~90 MB at 1M) through the whole search."""
    order = np.argsort(rows, kind="stable")
    at = np.searchsorted(rows, values, sorter=order)
    found = order[np.minimum(at, len(rows) - 1)] if len(rows) else at
    if len(values) and (not len(rows) or (rows[found] != values).any()):
        missing = values[rows[found] != values] if len(rows) else values
        raise KeyError(int(missing[0]))
    return found.astype(np.int64)


def pairs_within(thumbs: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int = PIXEL_K,
                 views: tuple[str, ...] = VIEWS, vectors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 cross: tuple[str, ...] = CROSS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each of ``queries``' k nearest *other* images among ``rows`` in every pixel view (flip-aware, CSLS) and
    every :data:`CROSS` search: the neighbours a calibration draws its negatives from, as the candidate search
    would propose them. Returns record pairs (query, neighbour), unique, and ``nearest``: the neighbour was some
    search's nearest other image (a candidate's ``pixel_rank`` 0)."""
    rows = np.asarray(rows, np.int64)
    q_pos = _positions(rows, np.asarray(queries, np.int64))
    found: dict[tuple[int, int], bool] = {}  # pair -> some search's nearest other image

    def add(pairs, first: bool) -> None:  # type: ignore[no-untyped-def]
        for pair in pairs:
            found[pair] = found.get(pair, False) or first

    for view in views:  # one view at a time, made now unless given; the mirrored view only for the queries
        vec = _view_rows(thumbs, vectors, view, rows, False, spill=True)[0]
        _, ids, _, _ = csls_knn(vec, vec[q_pos], k + 1, mirrored_queries=_view_rows(thumbs, vectors, view, rows[q_pos], True)[1])
        del vec
        for qi, row in zip(q_pos.tolist(), ids.tolist()):
            others = [int(rows[j]) for j in row if j >= 0 and j != qi]
            add([(int(rows[qi]), j) for j in others[:1]], True)
            add([(int(rows[qi]), j) for j in others[1:]], False)
        release_freed_memory()
    # the cross searches with one more neighbour each (the query itself is in the base), then its k best others
    for _, nb, q, rank, _, _ in cross_pairs(thumbs, rows, rows[q_pos], CROSS_K + 1, cross, vectors):
        other = nb != q
        nb, q, rank = nb[other], q[other], rank[other]
        order = np.lexsort((rank, q))
        first = np.r_[True, q[order][1:] != q[order][:-1]] if len(order) else np.zeros(0, bool)
        place = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
        sel = order[place < CROSS_K]
        for first in (True, False):
            chosen = sel[(place[place < CROSS_K] == 0) == first]
            add(zip(q[chosen].tolist(), nb[chosen].tolist()), first)
    keys = sorted(found)
    pairs = np.array(keys, np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1], np.array([found[key] for key in keys], bool)
