"""Pixel-level confirmation of embedding candidates: is it the same shot, or only the same kind of scene?

Pooled CNN features score different tiles of one texture (bricks, grass, text) above 0.95 cosine, higher than
many real copies score, so a high cosine alone is not a duplicate. For each candidate pair we compare small grey
thumbnails after aligning what a copy may have changed: size (both are squashed to the same side), mirroring,
and a modest crop (crops of either image at 80-100% scale on a 3x3 grid of positions). The best normalised
cross-correlation (NCC, 1 = identical up to brightness/contrast) decides: a copy stays highly correlated under
one of these alignments, a different shot of the same scene does not.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .columns import Columns

if TYPE_CHECKING:
    from ..scan import Dataset

THUMB = 96  # decoded side before cropping
SIDE = 48  # compared side
_SCALES = (1.0, 0.95, 0.9, 0.85, 0.8)


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """Grey float32 THUMB×THUMB from an RGB uint8 image of any size."""
    return image_thumbnail(Image.fromarray(rgb))


def image_thumbnail(im: Image.Image) -> np.ndarray:
    """:func:`thumbnail` of a Pillow RGB image (the same values, without going through an array first)."""
    grey = im.convert("L")
    if grey.size != (THUMB, THUMB):  # Pillow's resize to the same size is a copy
        grey = grey.resize((THUMB, THUMB), Image.Resampling.BILINEAR)
    return np.frombuffer(grey.tobytes(), np.uint8).reshape(THUMB, THUMB).astype(np.float32)


def _crops() -> list[tuple[int, int, int]]:
    """(side, y, x) of every crop :func:`raw_views` takes of a THUMB×THUMB thumbnail: all scales, 3x3 positions."""
    out = []
    for s in _SCALES:
        c = int(round(THUMB * s))
        offsets = [0] if c == THUMB else [0, (THUMB - c) // 2, THUMB - c]
        out.extend((c, y, x) for y in offsets for x in offsets)
    return out


@lru_cache(maxsize=1)
def _operators() -> list[tuple[int, np.ndarray]]:
    """Per crop side: how many offsets it is taken at along a side (1 or 3) and the stacked (offsets x SIDE, THUMB)
    matrix that crops a line of THUMB pixels at each offset and resizes it to SIDE as Pillow's BILINEAR does (its
    weights, read off Pillow by resizing unit impulses in float mode): the crop views are ``P @ t @ P.T``."""
    by_side: dict[int, list[int]] = {}
    for c, y, _ in _crops():
        if y not in by_side.setdefault(c, []):
            by_side[c].append(y)
    out = []
    for c, starts in by_side.items():
        eye = Image.fromarray(np.eye(c, dtype=np.float32), "F")
        w = np.asarray(eye.resize((SIDE, c), Image.Resampling.BILINEAR), np.float64).T  # (SIDE, c): row i's weights
        # float64: float32 sums in another order (BLAS on more threads) moved 24 of 85k levels across a rounding
        # tie; in float64 the answer does not depend on how BLAS splits the work
        ops = np.zeros((len(starts) * SIDE, THUMB), np.float64)
        for k, o in enumerate(starts):
            ops[k * SIDE : (k + 1) * SIDE, o : o + c] = w
        out.append((len(starts), ops))
    return out


@lru_cache(maxsize=1)
def _layout() -> tuple[np.ndarray, list[tuple[int, int, int, np.ndarray]], bool]:
    """:func:`_operators` arranged for :func:`raw_views`: every side's horizontal operator stacked into one
    (rows, THUMB) matrix (the first pass is one product for all sides), and per side (offsets along a side, its
    first and last row in the stack, its vertical operator); and whether rounding needs the clip to [0, 255].

    The weights are float32 numbers (Pillow's, read in float mode) and non-negative: each product of a grey level
    (8 bits) and a weight fits 53 bits with room to spare, so every sum is exact in float64 whatever its order or
    grouping (checked by :func:`exact_sums`). The views are therefore the exactly rounded values, however the
    products are split."""
    parts = []
    stacked = []
    lo = 0
    for n, ops in _operators():
        parts.append((n, lo, lo + len(ops), ops))
        stacked.append(ops)
        lo += len(ops)
    ops_all = np.concatenate(stacked)
    # sums of non-negative weights times 0..255 stay below 255.5 (a row's weights sum to 1 within float32's
    # rounding): floor(x + 0.5) is already in [0, 255] and the clip changes nothing
    clip = bool((ops_all < 0).any() or 255 * ops_all.sum(axis=1).max() + 0.5 >= 256)
    return ops_all, parts, clip


def exact_sums() -> bool:
    """Whether the crop views' sums are exact in float64 (what makes their values independent of how BLAS orders
    them): non-negative float32 weights, and each row's products of grey levels (0..255) with them within 53 bits
    of each other, whatever the order they are added in."""
    ops_all = _layout()[0]
    w = ops_all[ops_all != 0]
    if (w < 0).any() or not np.array_equal(w.astype(np.float32).astype(np.float64), w):
        return False
    # the lowest bit any weight sets, and the highest a (partial) sum of a row reaches: 255 x the row's weight sum
    _, low = np.frexp(w)
    lowest = int((low - 24).min())  # a float32's 24-bit significand: its last bit is 2^(exponent - 24)
    _, high = np.frexp(255 * ops_all.sum(axis=1).max())
    return high - lowest <= 53


def _rounded(x: np.ndarray, clip: bool) -> np.ndarray:
    """``clip(floor(x + 0.5), 0, 255)`` in place (Pillow's 8-bit rounding, half up)."""
    x += 0.5
    np.floor(x, out=x)
    if clip:
        np.clip(x, 0, 255, out=x)
    return x


@lru_cache(maxsize=1)
def _sparse_layout() -> tuple[object, list[tuple[int, int, int, object]]]:
    """:func:`_layout`'s operators as sparse (CSR) matrices: every output pixel of a crop view has 2-5 non-zero
    weights of the dense rows' 96 (2,182 of the stacked horizontal operator's 59,904 numbers), so the products do
    ~20x fewer multiplications. The sums are exact (:func:`exact_sums`): the sparse products give the very same
    values as the dense ones, in whatever order they add."""
    from scipy.sparse import csr_matrix

    ops_all, parts, _ = _layout()
    return csr_matrix(ops_all), [(n, lo, hi, csr_matrix(ops)) for n, lo, hi, ops in parts]


def raw_views(t: np.ndarray, mirrored: bool = False) -> np.ndarray:
    """The thumbnail's crops (all scales, 3x3 positions), each resized to SIDE×SIDE: (V, SIDE, SIDE) uint8 (grey
    levels, rounded: a quarter of the float32 bytes); optionally of its mirror. Computed as products with
    Pillow's BILINEAR weights (:func:`_operators`: ~0.5 ms an orientation against ~2 ms for 37 Pillow crops and
    resizes), rounded after each pass as Pillow rounds: at most a grey level apart (fixed-point ties). The sums are
    exact (:func:`_layout`), so the horizontal pass of every side is one product, and the products are sparse
    (:func:`_sparse_layout`: 0.46 ms an image against 1.03 for the dense ones, the same values)."""
    img = np.asarray(t, np.float64)
    if mirrored:
        img = img[:, ::-1]
    clip = _layout()[2]
    ops_all, parts = _sparse_layout()
    # rounded after each pass, as Pillow's 8-bit resampling (horizontal, then vertical) rounds
    # (half up, as Pillow's fixed point rounds: upscaled small images land on halves often)
    rows_t = _rounded(ops_all @ img.T, clip)  # type: ignore[operator]  # the horizontal pass, transposed: (624, THUMB)
    out = np.empty((len(_crops()), SIDE, SIDE), np.uint8)
    at = 0
    for n, lo, hi, ops in parts:
        # every (y, x) offset pair of this side as SIDE x SIDE blocks, in _crops' order (y, then x)
        block = _rounded(ops @ rows_t[lo:hi].T, clip)  # type: ignore[operator]
        out[at : at + n * n] = block.reshape(n, SIDE, n, SIDE).transpose(0, 2, 1, 3).reshape(n * n, SIDE, SIDE)
        at += n * n
    return out


@lru_cache(maxsize=1)
def _mirror_map() -> tuple[np.ndarray, list[tuple[int, int, list[int]]]]:
    """For :func:`mirror_views`: per crop of the mirrored thumbnail, the crop of the thumbnail it mirrors (side c at
    (y, x) mirrors the crop at (y, THUMB - c - x)), -1 where there is none (a side whose middle offset is not
    symmetric: 91 and 77 px); and per side with such crops (its index in :func:`_operators`, the index of its first
    crop, its x offsets' indices without a mirror)."""
    crops = _crops()
    at = {crop: k for k, crop in enumerate(crops)}
    src = np.array([at.get((c, y, THUMB - c - x), -1) for c, y, x in crops])
    missing = []
    first = 0
    for side, (n, _) in enumerate(_operators()):
        c = crops[first][0]
        offsets = sorted({x for cc, _, x in crops[first : first + n * n] if cc == c})
        lack = [k for k, x in enumerate(offsets) if (c, 0, THUMB - c - x) not in at]
        if lack:
            missing.append((side, first, lack))
        first += n * n
    return src, missing


def mirror_views(views: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``raw_views(t, mirrored=True)`` from ``views = raw_views(t)``: Pillow's BILINEAR weights are symmetric (the
    weights of a crop's output pixel i, read backwards, are those of pixel SIDE-1-i of the crop at the mirrored
    offset, bit for bit), and the sums are exact, so most mirrored crops are crops at the mirrored offset, flipped;
    only those without one (the middle offset of two sides) are computed, on the mirrored thumbnail."""
    src, _ = _mirror_map()
    out = np.empty_like(views)
    have = src >= 0
    out[have] = views[src[have]][:, :, ::-1]
    out[~have] = unmirrored_crops(t)
    return out


def unmirrored_crops(t: np.ndarray) -> np.ndarray:
    """The crops of ``raw_views(t, mirrored=True)`` that are no crop of ``raw_views(t)`` flipped (the middle offset of
    two sides: :func:`_mirror_map`), in their order there: (6, SIDE, SIDE) uint8."""
    src, missing = _mirror_map()
    out = np.empty((len(src), SIDE, SIDE), np.uint8)
    if missing:
        img = np.asarray(t, np.float64)[:, ::-1]
        clip = _layout()[2]
        for (side, first, lack), (cols, ops) in zip(missing, _mirror_operators()):
            n = _operators()[side][0]
            # the horizontal pass of those crops, transposed
            rows_t = _rounded(cols @ img.T, clip)  # type: ignore[operator]
            block = _rounded(ops @ rows_t.T, clip).reshape(n, SIDE, len(lack), SIDE)  # type: ignore[operator]
            for j, kx in enumerate(lack):
                out[first + np.arange(n) * n + kx] = block[:, :, j, :]
    return out[src < 0]


@lru_cache(maxsize=1)
def _mirror_operators() -> list[tuple[object, object]]:
    """Per side of :func:`_mirror_map`'s missing crops: the horizontal operator of those crops alone (their offsets'
    rows, stacked) and the side's vertical operator, sparse (exact sums: see :func:`_sparse_layout`)."""
    from scipy.sparse import csr_matrix

    ops_list = _operators()
    out = []
    for side, _, lack in _mirror_map()[1]:
        ops = ops_list[side][1]
        out.append((csr_matrix(np.concatenate([ops[k * SIDE : (k + 1) * SIDE] for k in lack])), csr_matrix(ops)))
    return out


def _pillow_views(t: np.ndarray, mirrored: bool = False) -> np.ndarray:
    """:func:`raw_views` with Pillow's crops and resizes (the reference it is tested against)."""
    img = Image.fromarray((np.ascontiguousarray(t[:, ::-1]) if mirrored else t).astype(np.uint8))
    return np.stack([np.asarray(img.crop((x, y, x + c, y + c)).resize((SIDE, SIDE), Image.Resampling.BILINEAR))
                     for c, y, x in _crops()])


def _standardise(v: np.ndarray) -> np.ndarray:
    """Rows of ``v`` (flattened per view), zero-mean and unit-norm. ``v`` is float and the caller's scratch: it is
    standardised in place (the same values as ``v - mean`` over ``np.linalg.norm``, without their copies)."""
    v = v.reshape(len(v), -1)
    v -= v.mean(axis=1, keepdims=True)
    # np.linalg.norm(v, axis=1)'s own sum (add.reduce of the squares), without its conjugate copy
    v /= np.maximum(np.sqrt(np.add.reduce(v * v, axis=1, keepdims=True)), 1e-6)
    return v


def standard_views(t: np.ndarray, mirrored: bool = False) -> np.ndarray:
    """A thumbnail's crops, zero-mean and unit-norm, as rows (the full view first); optionally of its mirror."""
    return _standardise(raw_views(t, mirrored).astype(np.float32))


class Views:
    """One image's crop views as :func:`correlate` reads them: ``rows``, every crop's grey levels standardised (zero
    mean, unit norm; a flat crop is a zero row, which correlates with nothing), and ``fulls``, the full view so, as it
    lies and mirrored (2 rows). The means and norms are of whole grey levels, summed exactly.

    Mirrored crops are crops of the image at the mirrored offset, flipped: their NCC with the other image's full view
    is the crop's with that view flipped, so the mirror's rows are not made (:func:`correlate`)."""

    __slots__ = ("rows", "fulls")

    def __init__(self, views: np.ndarray) -> None:
        """``views``: :func:`raw_views` of a thumbnail (uint8)."""
        flat = views.reshape(len(views), -1)
        n = flat.shape[1]
        rows = flat.astype(np.float32)
        total = (rows @ np.ones(n, np.float32)).astype(np.float64)  # sums of whole levels below 2^24: exact
        squares = np.square(flat, dtype=np.uint16).sum(axis=1, dtype=np.int64).astype(np.float64)  # 255^2 < 2^16
        centred = np.maximum(squares - total * total / n, 0.0)
        # a non-flat crop's centred sum of squares is at least (n - 1) / n
        scale = np.divide(1.0, np.sqrt(centred), out=np.zeros(len(flat)), where=centred > 0.5)
        # centred before it is scaled: the products then add small terms (with the mean left in, a bright, nearly
        # flat crop's large terms lost 6e-5 of a pair's NCC to float32 rounding)
        rows -= (total / n).astype(np.float32)[:, None]
        rows *= scale.astype(np.float32)[:, None]
        self.rows = rows
        self.fulls = np.stack([rows[0], rows[0].reshape(SIDE, SIDE)[:, ::-1].ravel()])

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.fulls.nbytes

    @property
    def full(self) -> np.ndarray:
        """The full view standardised, as it lies."""
        return self.fulls[0]


def mirror_crops(t: np.ndarray) -> np.ndarray:
    """The standardised rows of :func:`unmirrored_crops`: the mirror's crops that :class:`Views` cannot read off the
    image's own."""
    return _standardise(unmirrored_crops(t).astype(np.float32))


@lru_cache(maxsize=1)
def _mirrored_rows() -> np.ndarray:
    """The crops of an image whose flips are crops of its mirror (:func:`_mirror_map`)."""
    src, _ = _mirror_map()
    return np.unique(src[src >= 0])


def correlate(va: Views, vb: Views, mb: np.ndarray) -> tuple[float, bool]:
    """Best NCC of a and b (:class:`Views`; ``mb``: :func:`mirror_crops` of b) over a's crops against the whole of b
    and b's crops against the whole of a (either may be the cropped one), b mirrored or not; and whether mirrored."""
    # four products with a vector each: one with the two full views as columns took twice as long
    plain = max(float((va.rows @ vb.fulls[0]).max()), float((vb.rows @ va.fulls[0]).max()))
    # b mirrored: a's crops against b's full view mirrored; b's mirrored crops against a's full view, which are b's
    # own crops against a's view mirrored, and those b has no mirror of
    mirrored = max(float((va.rows @ vb.fulls[1]).max()), float((vb.rows @ va.fulls[1])[_mirrored_rows()].max()),
                   float((mb @ va.full).max()) if len(mb) else -1.0)
    return (mirrored, True) if mirrored > plain + 1e-6 else (plain, False)


def ncc_from_views(va: np.ndarray, vb: np.ndarray, vb_mirrored: np.ndarray) -> tuple[float, bool]:
    """Best NCC from precomputed :func:`standard_views` of ``a``, ``b`` and ``b`` mirrored; and whether mirrored (the
    definition :func:`correlate` computes)."""
    best, flipped = -1.0, False
    for mirrored, v in ((False, vb), (True, vb_mirrored)):
        # a's crops against the whole of b, and b's crops against the whole of a: either may be the cropped one.
        score = max(float((va @ v[:1].T).max()), float((v @ va[:1].T).max()))
        if score > best + 1e-6:
            best, flipped = score, mirrored
    return best, flipped


def aligned_ncc(a: np.ndarray, b: np.ndarray) -> tuple[float, bool]:
    """Best NCC between thumbnails ``a`` and ``b`` over crops of either one, mirrored or not; and whether mirrored."""
    a8, b8 = np.asarray(a).astype(np.uint8), np.asarray(b).astype(np.uint8)
    return correlate(Views(raw_views(a8)), Views(raw_views(b8)), mirror_crops(b8))


@dataclass(frozen=True)
class Confirmation(Columns):
    """Per pair: the best aligned NCC (NaN where an image could not be decoded) and whether it was mirrored."""

    ncc: np.ndarray
    flipped: np.ndarray


#: Bytes kept while confirming pairs: thumbnails (9 kB each, uint8), :class:`Views` (359 kB an image, float32) and
#: the mirror's own crops (55 kB). A cache of 2048 images' float32 views held 0.7 GB at a 20k-photo check's peak.
CACHE_BYTES = 48 * 2**20
#: Shares of :data:`CACHE_BYTES`: thumbnails (re-making views from a kept one costs no decode), :class:`Views` (37
#: crops and resizes, ~0.35 ms an image), the mirror's own crops (:func:`mirror_crops`, 6 of them).
SHARES = (0.125, 0.75, 0.125)


class ByteLRU:
    """A least-recently-used memo of arrays bounded by the bytes it holds (``None`` values, failed decodes, count as
    nothing); :attr:`held` is what it holds now, :attr:`peak` the most it ever held, :attr:`made` how many values
    it had to make."""

    def __init__(self, budget: int) -> None:
        self.budget = int(budget)
        self.held = self.peak = self.made = 0
        self._items: OrderedDict[object, np.ndarray | None] = OrderedDict()

    def get(self, key: object, make: Callable[[], np.ndarray | None]) -> np.ndarray | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self.made += 1
        size = 0 if value is None else value.nbytes
        while self._items and self.held + size > self.budget:
            old = self._items.popitem(last=False)[1]
            self.held -= 0 if old is None else old.nbytes
        if size <= self.budget:  # a value larger than the whole budget is used once, never kept
            self._items[key] = value
            self.held += size
            self.peak = max(self.peak, self.held)
        return value


#: A next use that never comes (:class:`NextUseCache`).
NEVER = 1 << 62


class NextUseCache:
    """A memo of arrays bounded by the bytes it holds that, when full, lets go of the value whose next use is
    farthest away (Belady's rule: the caller knows every future request, the pairs' order is fixed up front), and
    keeps no value that is never used again. The same attributes as :class:`ByteLRU`: :attr:`held`, :attr:`peak`,
    :attr:`made`. On the 60k 32-px check's 90,803 hash matches, at :data:`CACHE_BYTES`, it made 24% fewer values
    than the LRU memo (docs/performance.md, twelfth session)."""

    def __init__(self, budget: int) -> None:
        self.budget = int(budget)
        self.held = self.peak = self.made = 0
        self._items: dict[object, tuple[np.ndarray | None, int]] = {}  # key -> (value, its next use)
        self._heap: list[tuple[int, int, object]] = []  # (-next use, tie, key); stale entries are skipped
        self._tie = 0

    def _push(self, key: object, next_use: int) -> None:
        self._tie += 1
        heapq.heappush(self._heap, (-next_use, self._tie, key))
        if len(self._heap) > 4 * len(self._items) + 64:  # drop the stale entries now and then: bounded bookkeeping
            self._heap = [(-n, t, k) for t, (k, (_, n)) in enumerate(self._items.items())]
            heapq.heapify(self._heap)

    def touch(self, key: object, next_use: int) -> None:
        """The key (if held) is next used at ``next_use``; a value never used again is let go at once."""
        if key in self._items:
            if next_use >= NEVER:
                value = self._items.pop(key)[0]
                self.held -= 0 if value is None else value.nbytes
                return
            self._items[key] = (self._items[key][0], next_use)
            self._push(key, next_use)

    def get(self, key: object, make: Callable[[], np.ndarray | None], next_use: int) -> np.ndarray | None:
        """The value of ``key`` (made if not held), next needed at request ``next_use`` (:data:`NEVER`: not again)."""
        if key in self._items:
            value = self._items[key][0]
            self.touch(key, next_use)
            return value
        value = make()
        self.made += 1
        size = 0 if value is None else value.nbytes
        if next_use >= NEVER or size > self.budget:
            return value
        while self.held + size > self.budget:
            neg, _, k = self._heap[0]
            held = self._items.get(k)
            if held is None or held[1] != -neg:  # stale: that key was touched again, or let go
                heapq.heappop(self._heap)
                continue
            if -neg <= next_use:  # all that is held is needed sooner than this value: it is not kept
                return value
            heapq.heappop(self._heap)
            del self._items[k]
            self.held -= 0 if held[0] is None else held[0].nbytes
        self._items[key] = (value, next_use)
        self._push(key, next_use)
        self.held += size
        self.peak = max(self.peak, self.held)
        return value


def next_uses(keys: np.ndarray) -> np.ndarray:
    """For each position of ``keys`` (integers), the next position holding the same key (:data:`NEVER` if none)."""
    keys = np.asarray(keys, np.int64)
    out = np.full(len(keys), NEVER, np.int64)
    if len(keys):
        at = np.lexsort((np.arange(len(keys)), keys))  # by key, then position
        same = keys[at[1:]] == keys[at[:-1]]
        out[at[:-1][same]] = at[1:][same]
    return out


def confirm_pairs(a: np.ndarray, b: np.ndarray, thumb: Callable[[int], np.ndarray | None], *,
                  cache_bytes: int = CACHE_BYTES, caches: list[NextUseCache] | None = None,
                  workers: int | None = None) -> Confirmation:
    """Aligned NCC of each pair ``(a[j], b[j])``, with ``thumb(i)`` giving image i's :func:`thumbnail` (or ``None``).

    Each image's thumbnail and crop views are computed once while they are kept within ``cache_bytes`` (uniform
    datasets send thousands of pairs that share images); pairs are visited in :func:`pair_order`, so an image's
    pairs come close together, and the memos (:class:`NextUseCache`), which know that order, keep the values needed
    soonest. ``caches``: a list that receives the three caches
    (thumbnails, crop views, standardised views), to see what they held. ``workers`` (default: one per core): with
    more than one, as many helper threads decode the images and make their crop views (:class:`_Prepared`) a few
    images ahead of the pairs that first need them; ``thumb`` must then be safe to call from threads. Each value is
    a function of its image alone: the answers are the same with any number of workers.
    """
    from ..features.runner import default_workers

    thumbs, views, mirrors = (NextUseCache(int(cache_bytes * share)) for share in SHARES)
    if caches is not None:
        caches.extend((thumbs, views, mirrors))
    order = pair_order(a, b).tolist()
    # the requests in the loop's order, three a pair: a's views, b's, b's mirrored crops (key: 2 x image +
    # mirrored); each cache knows when a value is next needed: the value itself (views, mirrored crops), any value of
    # its image (thumbnails)
    ordered = np.asarray(order, np.int64)
    codes = np.stack([2 * np.asarray(a, np.int64)[ordered], 2 * np.asarray(b, np.int64)[ordered],
                      2 * np.asarray(b, np.int64)[ordered] + 1], axis=1).ravel()
    next_view = next_uses(codes).tolist()
    next_image = next_uses(codes // 2).tolist()
    workers = default_workers() if workers is None else workers
    prep = _Prepared(a, b, order, thumb, workers) if workers > 1 and len(order) >= PREPARE_FROM else None
    ready: OrderedDict[tuple[int, bool], object] = OrderedDict()  # values a helper made, until used

    def grey(i: int) -> np.ndarray | None:
        got = prep.take(i) if prep is not None else None
        if got is not None:
            g, own, mirrored = got
            for key, value in (((i, False), own), ((i, True), mirrored)):
                if value is not None:
                    ready[key] = value
            while len(ready) > 4 * AHEAD:  # made for a pair that did not need them (an undecodable partner)
                ready.popitem(last=False)
            return g
        t = thumb(i)
        # raw_views() crops the thumbnail as uint8: keeping it so is exact, in a quarter of the bytes
        return None if t is None else t.astype(np.uint8)

    def view(i: int, mirrored: bool, r: int):  # type: ignore[no-untyped-def]
        """Image i's :class:`Views` (``mirrored``: its :func:`mirror_crops`), asked for by request r."""
        nv, ni = next_view[r], next_image[r]

        def make():  # type: ignore[no-untyped-def]
            t = thumbs.get(i, lambda: grey(i), ni)
            made = ready.pop((i, mirrored), None)
            if made is not None or t is None:
                return made
            return mirror_crops(t) if mirrored else Views(raw_views(t))

        got = (mirrors if mirrored else views).get(i, make, nv)
        # the thumbnail learns when the image is next needed even when this request did not reach it; after it, not
        # before: a touch lets go of a value never needed again, which making this one may still need
        thumbs.touch(i, ni)
        return got

    ncc = np.full(len(a), np.nan)
    fl = np.zeros(len(a), bool)
    with _one_blas_thread():
        try:
            if prep is not None:
                prep.start()
            for k, j in enumerate(order):
                va, vb = view(int(a[j]), False, 3 * k), view(int(b[j]), False, 3 * k + 1)
                if va is not None and vb is not None:
                    mb = view(int(b[j]), True, 3 * k + 2)
                    assert mb is not None
                    ncc[j], fl[j] = correlate(va, vb, mb)
        finally:
            if prep is not None:
                prep.close()
    return Confirmation(ncc, fl)


#: Images whose thumbnail and crop views the helper threads make ahead of the pairs that first need them (each
#: ~180 kB: thumbnail, crop views and the mirror's), and the fewest pairs worth starting them for.
AHEAD = 16
PREPARE_FROM = 64


class _Prepared:
    """Thumbnails and crop views made by ``workers`` helper threads, each image in the order the pairs (in ``order``)
    first need it: its grey thumbnail, its crop views and, when that first pair needs it mirrored (it is the pair's
    ``b``), the mirror's. At most :data:`AHEAD` images beyond the one the loop needs next are made or held. Decoding
    and the products release the GIL: on two cores the loop's standardising and correlating run beside them."""

    def __init__(self, a: np.ndarray, b: np.ndarray, order: list[int], thumb: Callable[[int], np.ndarray | None],
                 workers: int) -> None:
        import threading

        self.items: list[tuple[int, bool]] = []
        self.at: dict[int, int] = {}
        for j in order:
            for i, mirrored in ((int(a[j]), False), (int(b[j]), True)):
                if i not in self.at:
                    self.at[i] = len(self.items)
                    self.items.append((i, mirrored))
        self.thumb = thumb
        self.done: dict[int, tuple | None] = {}
        self.taken = 0  # items the loop has taken (it takes them in order)
        self.stop = False
        self.cond = threading.Condition()
        self.threads = [threading.Thread(target=self._run, args=(w, workers), name=f"splitaudit-confirm-{w}",
                                         daemon=True) for w in range(workers)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _run(self, first: int, step: int) -> None:
        for k in range(first, len(self.items), step):
            with self.cond:
                while not self.stop and k > self.taken + AHEAD:
                    self.cond.wait()
                if self.stop:
                    return
            i, mirrored = self.items[k]
            got: tuple | None
            try:
                t = self.thumb(i)
                g = None if t is None else t.astype(np.uint8)
                got = (g, None if g is None else Views(raw_views(g)),
                       mirror_crops(g) if mirrored and g is not None else None)
            except Exception:  # the loop makes this image itself, and meets the error there
                got = None
            with self.cond:
                self.done[k] = got
                self.cond.notify_all()

    def take(self, i: int) -> tuple | None:
        """Image i's (grey thumbnail, crop views, the mirror's crop views or ``None``) when it was made for its first
        use and not taken yet; ``None``: make it here."""
        k = self.at.get(i, -1)
        if k < self.taken:  # needed again after the caches let it go: not prepared twice
            return None
        with self.cond:
            while k not in self.done and any(t.is_alive() for t in self.threads):
                self.cond.wait(1.0)
            got = self.done.pop(k, None)
            self.taken = k + 1
            self.cond.notify_all()
        return got

    def close(self) -> None:
        with self.cond:
            self.stop = True
            self.cond.notify_all()
        for t in self.threads:
            if t.is_alive():
                t.join()


def _one_blas_thread():  # type: ignore[no-untyped-def]
    """BLAS on one thread for the crop views' small products (96-px matrices): on two busy cores OpenBLAS's second
    thread made them 5x slower (9.7 ms against 1.9 ms an image)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the hash-only install (no scikit-learn): no limit
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def pair_order(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """An order of the pairs ``(a[j], b[j])`` in which each image's pairs come close together: the images are
    numbered in the reverse Cuthill-McKee order of the pair graph (which keeps linked images at nearby numbers) and
    the pairs sorted by their earlier image, then their later one. On a 20k-photo check's 84k hash pairs (11.8k
    images) a 48 MiB cache made 27k images' crop views sorted by the later image instead of 156k in order of the
    first image, and decoded each image once instead of 5 times; on the 60k 32-px check's 90,803 (44.8k images),
    sorted by the earlier image, the LRU memos made 130k standardised views instead of 145k, and the
    :class:`NextUseCache` memos 98k instead of 109k (twelfth session). Any order gives the same answers."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    if len(a) == 0:
        return np.zeros(0, np.int64)
    ids, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    ia, ib = inv[: len(a)], inv[len(a) :]
    g = coo_matrix((np.ones(len(a), np.int8), (ia, ib)), shape=(len(ids), len(ids))).tocsr()
    perm = reverse_cuthill_mckee((g + g.T).tocsr(), symmetric_mode=True)
    pos = np.empty(len(ids), np.int64)
    pos[perm] = np.arange(len(ids))
    pa, pb = pos[ia], pos[ib]
    return np.lexsort((np.maximum(pa, pb), np.minimum(pa, pb)))


def record_thumbnails(dataset: Dataset, *, max_pixels: int) -> Callable[[int], np.ndarray | None]:
    """``thumb(i)`` for :func:`confirm_pairs`: record i decoded (EXIF-oriented) and turned into a thumbnail."""
    from ..features.embeddings.compute import load_image

    records, arrays = dataset.records, dataset.arrays

    def thumb(i: int) -> np.ndarray | None:
        r = records[i]
        px = arrays[r.split][r.array_index] if r.array_index >= 0 else None
        # load_rgb's image as Pillow made it: ~80 us an image less than through its RGB array (60k 32-px check)
        im = load_image(r.path, px, THUMB, max_pixels=max_pixels)
        return None if im is None else image_thumbnail(im)

    return thumb


@dataclass(frozen=True)
class ThumbnailBatch:
    """Thumbnails of a batch of records (columns ``path``, ``pixels``) as a batch function, for an engine that
    decodes where the files are (a cluster): ``thumb`` (n x THUMB x THUMB uint8; :func:`thumbnail` values are whole
    grey levels, so nothing is lost) and ``ok``."""

    max_pixels: int

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..features.embeddings.compute import decoded_batch

        out, ok = decoded_batch(batch, THUMB, self.max_pixels, thumbnail)
        return {"thumb": out, "ok": ok}


#: Records decoded per engine call by :func:`engine_thumbnails` once its thumbnails go to a file (~9 kB each).
ENGINE_CHUNK = 4096


def engine_thumbnails(dataset: Dataset, rows: np.ndarray, engine, *, max_pixels: int) -> Callable[[int], np.ndarray | None]:  # type: ignore[no-untyped-def]
    """``thumb(i)`` like :func:`record_thumbnails`, with the images of ``rows`` decoded up front on ``engine``: on a
    cluster, the workers read the files (the driver may not see them). Above
    :data:`~splitaudit.memory.SPILL_BYTES` they are decoded :data:`ENGINE_CHUNK` records per call and written to a
    temporary file read back per image, so the driver holds none of them whole (9 kB an image: 0.9 GB at 100k
    images if every one were confirmed; locally they are decoded as needed)."""
    from ..features.table import batch_columns
    from ..memory import SPILL_BYTES, SpilledRows

    rows = np.unique(rows)
    n = len(rows)
    spill = n * THUMB * THUMB > SPILL_BYTES
    thumbs = SpilledRows((n, THUMB, THUMB), np.uint8) if spill else np.zeros((n, THUMB, THUMB), np.uint8)
    ok = np.zeros(n, bool)
    step = ENGINE_CHUNK if spill else max(1, n)
    for s in range(0, n, step):
        part = rows[s : s + step]
        got = engine.map(ThumbnailBatch(max_pixels), batch_columns([dataset.records[i] for i in part], dataset.arrays),
                         releases_gil=True)  # decoding: threads locally, no fork of this large process
        if spill:
            thumbs.write(s, got["thumb"])  # type: ignore[union-attr]
        else:
            thumbs[s : s + len(part)] = got["thumb"]
        ok[s : s + len(part)] = got["ok"]
        del got

    def thumb(i: int) -> np.ndarray | None:
        j = int(np.searchsorted(rows, i))
        return np.asarray(thumbs[j]).astype(np.float32) if ok[j] else None

    return thumb


#: Pairs from which the confirmation runs in worker processes (:func:`confirm_on_workers`): below, starting the
#: interpreters (~0.3 s each) costs about what they save.
WORKERS_FROM = 4096
#: Each worker's memos (:data:`CACHE_BYTES` for one loop): a job's pairs share few images beyond the next few pairs.
WORKER_CACHE_BYTES = 8 * 2**20
#: Pairs per worker job, consecutive in :func:`pair_order` (an image's pairs come close together, so few images are
#: decoded by two jobs: 6% more decodes than one loop on a 20k-photo check's 21k pairs).
JOB_PAIRS = 1024


def confirm_records(dataset: Dataset, a: np.ndarray, b: np.ndarray, *, max_pixels: int, workers: int | None = None,
                    engine=None) -> Confirmation:  # type: ignore[no-untyped-def]
    """:func:`confirm_pairs` of records ``(a[j], b[j])`` of ``dataset``, decoded as :func:`thumbnails` decodes them:
    in worker processes from :data:`WORKERS_FROM` pairs on (:func:`confirm_on_workers`), else in this process. The
    answers are the same either way."""
    from ..features.runner import default_workers
    from ..features.workers import available

    workers = default_workers() if workers is None else workers
    if engine is not None and engine.distributed and len(a) >= WORKERS_FROM:
        # the jobs as the cluster's tasks: each decodes its own images where the files are (the crop views hold the
        # GIL: in the driver alone, 20k photos' confirmation took 14-17 s against 10 s on the local pool)
        with engine.job_pool() as pool:
            return confirm_on_workers(dataset, a, b, max_pixels=max_pixels, workers=workers, pool=pool)
    if (engine is None or not engine.distributed) and workers > 1 and len(a) >= WORKERS_FROM and available():
        return confirm_on_workers(dataset, a, b, max_pixels=max_pixels, workers=workers)
    return confirm_pairs(a, b, thumbnails(dataset, a, b, max_pixels=max_pixels, engine=engine), workers=workers)


def confirm_on_workers(dataset: Dataset, a: np.ndarray, b: np.ndarray, *, max_pixels: int, workers: int,
                       pool=None) -> Confirmation:  # type: ignore[no-untyped-def]
    """:func:`confirm_pairs` of records ``(a[j], b[j])`` on ``workers`` workers: ``workers - 1`` worker processes
    (:class:`~splitaudit.features.workers.WorkerPool`) and this process, or on ``pool`` (a cluster's tasks). The pairs go in :func:`pair_order`,
    :data:`JOB_PAIRS` at a time, each job decoding its own images (file paths, or the pixels of in-memory records)
    with its own memos of :data:`WORKER_CACHE_BYTES`. The crop views and correlations hold the GIL: two threads ran
    1.2x one (20k-photo check's 21k pairs: 9.5 s on threads, 6.2 s on this process and one worker)."""
    from contextlib import closing, nullcontext

    from ..features.workers import WorkerPool

    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    order = pair_order(a, b)
    records, arrays = dataset.records, dataset.arrays

    def task(sel: np.ndarray) -> tuple[dict, dict[str, np.ndarray]]:
        ids, inv = np.unique(np.concatenate([a[sel], b[sel]]), return_inverse=True)
        paths: list[str | None] = []
        shapes = np.zeros((len(ids), 3), np.int64)
        offsets = np.zeros(len(ids), np.int64)
        pixels = []
        at = 0
        for k, i in enumerate(ids.tolist()):
            r = records[i]
            px = arrays[r.split][r.array_index] if r.array_index >= 0 else None
            paths.append(None if px is not None else r.path)
            if px is not None:
                px = np.ascontiguousarray(px, np.uint8)
                shapes[k] = px.shape if px.ndim == 3 else (*px.shape, 1)
                offsets[k] = at
                pixels.append(px.ravel())
                at += px.size
        flat = np.concatenate(pixels) if pixels else np.zeros(0, np.uint8)
        args = {"paths": paths, "max_pixels": int(max_pixels), "cache_bytes": WORKER_CACHE_BYTES}
        return args, {"a": inv[: len(sel)], "b": inv[len(sel) :], "pixels": flat, "pixel_shape": shapes,
                      "pixel_offset": offsets}

    segments = [order[s : s + JOB_PAIRS] for s in range(0, len(order), JOB_PAIRS)]
    ncc = np.full(len(a), np.nan)
    fl = np.zeros(len(a), bool)
    # the answers' generator is closed here, not when collected: a Ctrl-C that lands in its clean-up must stop the
    # run, and one raised while the collector runs it is swallowed ("Exception ignored"; the run went on)
    # this process runs jobs too (it would only wait otherwise): one worker process fewer, ~80 MB less in all
    with (nullcontext(pool) if pool is not None else WorkerPool(min(workers, len(segments)) - 1, local=1)) as jobs, \
            closing(jobs.map("confirm", map(task, segments))) as answers:
        for sel, got in zip(segments, answers):
            ncc[sel], fl[sel] = got["ncc"], got["flipped"]
    return Confirmation(ncc, fl)


def confirm_job(args: dict, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The worker job of :func:`confirm_on_workers`: :func:`confirm_pairs` of one job's pairs (``a``, ``b``: positions
    in its image list), each image decoded here from its path, or from its pixels (``pixel_shape`` not zero: a
    slice of ``pixels`` at ``pixel_offset``), as :func:`record_thumbnails` decodes it."""
    from ..features.embeddings.compute import load_image

    paths, max_pixels = args["paths"], int(args["max_pixels"])
    flat, shapes, offsets = arrays["pixels"], arrays["pixel_shape"], arrays["pixel_offset"]

    def thumb(i: int) -> np.ndarray | None:
        shape = tuple(int(v) for v in shapes[i])
        px = flat[offsets[i] : offsets[i] + int(np.prod(shape))].reshape(shape) if shape[0] else None
        im = load_image(paths[i], px, THUMB, max_pixels=max_pixels)
        return None if im is None else image_thumbnail(im)

    c = confirm_pairs(arrays["a"], arrays["b"], thumb, cache_bytes=int(args["cache_bytes"]), workers=1)
    return {"ncc": c.ncc, "flipped": c.flipped}


def thumbnails(dataset: Dataset, a: np.ndarray, b: np.ndarray, *, max_pixels: int, engine=None) -> Callable[[int], np.ndarray | None]:  # type: ignore[no-untyped-def]
    """The ``thumb`` for confirming pairs ``(a, b)``: decoded here as needed (:func:`record_thumbnails`), or, on a
    distributed ``engine``, decoded up front where the files are (:func:`engine_thumbnails`)."""
    if engine is not None and engine.distributed and len(a):
        return engine_thumbnails(dataset, np.concatenate([a, b]), engine, max_pixels=max_pixels)
    return record_thumbnails(dataset, max_pixels=max_pixels)
