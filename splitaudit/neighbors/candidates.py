"""Candidate pairs for the copy verifier, from several views of every image, unioned.

* **Pixels**: each image as a small grey thumbnail (``PIXEL_SIDE`` squared), mean-centred and L2-normalised, so the
  inner product is the correlation of the two thumbnails -- insensitive to brightness and contrast, and at this
  size to a shift of a pixel or two. Searched with the query as is and mirrored (a flipped copy is found), and
  re-ranked with CSLS (cross-domain similarity local scaling): ``2 cos(q, t) - r_q - r_t``, where ``r`` is an
  image's mean similarity to its ``HUB_K`` nearest neighbours on the other side. CSLS lowers "hubs" (flat or
  average-looking images that are everyone's neighbour) and lifts a pair that stands out of both neighbourhoods.
* **Embeddings** (optional): CNN embedding kNN, the same CSLS re-ranking.
* **Hashes** (optional): pairs whose perceptual hashes agree, as found by :func:`~.binary.hash_pairs`.

Measured on real photos and Fashion-MNIST by ``benchmarks/copy_suites.py``: candidate recall is reported on its own,
before any verification.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import invalid_parameter
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
#: Neighbours fetched by the raw search before CSLS re-ranking picks the best K.
POOL = 50


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


def pixel_vectors(thumbs: np.ndarray, view: str = "pixels", *, mirrored: bool = False) -> np.ndarray:
    """One row per thumbnail: the pixel ``view`` of :data:`VIEWS`, mean-centred, unit norm (float32)."""
    import cv2

    from .register import _frame, to_grey

    if view not in VIEWS:
        raise invalid_parameter("view", VIEWS, view)
    grey = to_grey(thumbs)
    if mirrored:
        grey = grey[:, :, ::-1]
    rows = []
    for g in grey:
        g = np.ascontiguousarray(g)
        h, w = g.shape
        if view == "pixels":
            x = cv2.resize(g, (PIXEL_SIDE, PIXEL_SIDE), interpolation=cv2.INTER_AREA)
        elif view == "coarse":
            x = cv2.resize(cv2.GaussianBlur(g, (0, 0), 1.5 * w / 32), (8, 8), interpolation=cv2.INTER_AREA)
        elif view == "content":
            x0, y0, x1, y1 = _frame(g)
            if x1 - x0 < w // 4 or y1 - y0 < h // 4:
                x0, y0, x1, y1 = 0, 0, w - 1, h - 1
            x = cv2.resize(np.ascontiguousarray(g[y0 : y1 + 1, x0 : x1 + 1]), (PIXEL_SIDE, PIXEL_SIDE), interpolation=cv2.INTER_AREA)
        else:  # spectrum: magnitude of the low frequencies of the windowed 32-px image (a shift changes only phase)
            g = cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA)
            win = np.hanning(32).astype(np.float32)
            f = np.abs(np.fft.rfft2((g - g.mean()) * win[:, None] * win[None, :]))
            x = np.log1p(np.fft.fftshift(f, axes=0)[8:25, :9])
        rows.append(x.ravel())
    return _unit_rows(np.asarray(rows, np.float32).reshape(len(grey), -1))


def _search(base: np.ndarray, queries: list[np.ndarray], k: int):  # type: ignore[no-untyped-def]
    """Top-k inner products of each query set against one index built over ``base``."""
    from .dense import build_index

    index = build_index(base, queries=sum(len(q) for q in queries))
    k = min(k, len(base))
    return [index.search(np.ascontiguousarray(q, dtype=np.float32), k) for q in queries]


def csls_knn(base: np.ndarray, queries: np.ndarray, k: int = K, *, hub_k: int = HUB_K, pool: int = POOL,
             mirrored_queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best base rows of each query by CSLS over unit-norm vectors.

    With ``mirrored_queries`` each query is also searched mirrored and a base row keeps its better orientation.
    Returns (scores, ids, cosines, mirrored), each (Q, k), best first; ids -1 where the base is smaller than k."""
    if len(base) == 0 or len(queries) == 0:
        z = np.zeros((len(queries), k))
        return z - np.inf, np.full((len(queries), k), -1), z, np.zeros((len(queries), k), bool)
    sets = [queries] if mirrored_queries is None else [queries, mirrored_queries]
    found = _search(base, sets, pool)
    hk = min(hub_k, len(base))
    r_q = np.max([s[:, :hk].mean(axis=1) for s, _ in found], axis=0)
    # r_t: a base row's mean similarity to its nearest queries (the other side of the translation)
    back = _search(queries if mirrored_queries is None else np.vstack(sets), [base], min(hub_k, len(queries)))[0][0]
    r_t = back.mean(axis=1)
    sims = np.concatenate([s for s, _ in found], axis=1)
    ids = np.concatenate([i for _, i in found], axis=1)
    mir = np.concatenate([np.full(s.shape, o == 1) for o, (s, _) in enumerate(found)], axis=1)
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


def candidate_pairs(thumbs: np.ndarray, split_index: np.ndarray, *, valid: np.ndarray | None = None,
                    embeddings: np.ndarray | None = None, have_embedding: np.ndarray | None = None,
                    hash_a: np.ndarray | None = None, hash_b: np.ndarray | None = None,
                    k_pixel: int = PIXEL_K, k_embed: int = K, views: tuple[str, ...] = VIEWS) -> Candidates:
    """Candidates from every later split into all earlier ones, from the pixel view (flip-aware, CSLS), the
    embedding view (CSLS) and given hash pairs, unioned.

    ``thumbs``: (N, s, s[, 3]) pixels of every record (rows where ``valid`` is False are ignored: unreadable);
    ``embeddings``: (N, D) unit-norm rows, ``have_embedding`` marking the rows that have one; ``hash_a``/
    ``hash_b``: hash-matched record pairs (any order, any splits: only pairs across splits are kept). A pair's
    pixel rank and score are those of the pixel view that ranked it best (``pixel_view``)."""
    n = len(split_index)
    if len(thumbs) != n:
        raise invalid_parameter("thumbs", f"an array with one row per record ({n})", len(thumbs))
    if k_pixel < 0 or k_embed < 0:
        raise invalid_parameter("k_pixel/k_embed", "integers >= 0", (k_pixel, k_embed))
    for view in views:
        if view not in VIEWS:
            raise invalid_parameter("views", VIEWS, view)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    rows: dict[tuple[int, int], dict[str, object]] = {}

    def add(a: int, b: int, **ev: object) -> None:
        rows.setdefault((a, b), {}).update(ev)

    s = np.asarray(split_index)
    if k_pixel and valid.any():
        for view in views:
            vec = pixel_vectors(thumbs[valid], view)
            vec_m = pixel_vectors(thumbs[valid], view, mirrored=True)
            rows_v = np.flatnonzero(valid)
            for _, base, query in _split_pairs(s[valid], np.ones(len(rows_v), bool)):
                sc, ids, _, mir = csls_knn(vec[base], vec[query], k_pixel, mirrored_queries=vec_m[query])
                for qi, r in zip(*np.nonzero(ids >= 0)):
                    key = (int(rows_v[base[ids[qi, r]]]), int(rows_v[query[qi]]))
                    old = rows.get(key, {})
                    if old.get("pixel_rank", 10**9) > r:  # the best rank over the pixel views
                        add(*key, pixel_rank=int(r), pixel_score=float(sc[qi, r]), pixel_mirrored=bool(mir[qi, r]),
                            pixel_view=view)
    if embeddings is not None and k_embed and len(embeddings):
        have = valid & (np.ones(n, bool) if have_embedding is None else np.asarray(have_embedding, bool))
        for later, base, query in _split_pairs(s, have):
            sc, ids, _, _ = csls_knn(embeddings[base], embeddings[query], k_embed)
            for qi, r in zip(*np.nonzero(ids >= 0)):
                add(int(base[ids[qi, r]]), int(query[qi]), embed_rank=int(r), embed_score=float(sc[qi, r]))
    if hash_a is not None and hash_b is not None:
        for x, y in zip(np.asarray(hash_a).tolist(), np.asarray(hash_b).tolist()):
            if s[x] != s[y] and valid[x] and valid[y]:
                a, b = (x, y) if s[x] < s[y] else (y, x)
                add(a, b, hashed=True)
    keys = sorted(rows)
    col = lambda name, default, dt: np.array([rows[k].get(name, default) for k in keys], dtype=dt)
    return Candidates(
        np.array([k[0] for k in keys], np.int64), np.array([k[1] for k in keys], np.int64),
        col("pixel_rank", -1, np.int64), col("pixel_score", np.nan, np.float64), col("pixel_mirrored", False, bool),
        col("pixel_view", "", object),
        col("embed_rank", -1, np.int64), col("embed_score", np.nan, np.float64), col("hashed", False, bool))


def _split_pairs(split_index: np.ndarray, rows: np.ndarray):  # type: ignore[no-untyped-def]
    """(later split, base rows = earlier splits, query rows = that split) for every later split."""
    for later in range(1, int(split_index.max(initial=0)) + 1):
        base = np.flatnonzero(rows & (split_index < later))
        query = np.flatnonzero(rows & (split_index == later))
        if len(base) and len(query):
            yield later, base, query


def pairs_within(thumbs: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int = PIXEL_K,
                 views: tuple[str, ...] = VIEWS) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``queries``' k nearest *other* images among ``rows`` in every pixel view (flip-aware, CSLS): the
    neighbours a calibration draws its negatives from, as the candidate search would propose them. Returns record
    pairs (query, neighbour), unique."""
    pos = {int(r): i for i, r in enumerate(rows)}
    q_pos = np.array([pos[int(q)] for q in queries], np.int64)
    found: set[tuple[int, int]] = set()
    for view in views:
        vec = pixel_vectors(thumbs[rows], view)
        vec_m = pixel_vectors(thumbs[rows], view, mirrored=True)
        _, ids, _, _ = csls_knn(vec, vec[q_pos], k + 1, mirrored_queries=vec_m[q_pos])
        for qi, row in zip(q_pos.tolist(), ids.tolist()):
            found.update((int(rows[qi]), int(rows[j])) for j in row if j >= 0 and j != qi)
    pairs = np.array(sorted(found), np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]
