"""A cheap, vectorised first look at every candidate pair before the full registration (:mod:`.register`).

Most candidates are distinct images; registering each costs milliseconds. The screen scores all pairs at once:
at half the working resolution, image b is warped by a few zooms and rotations (:data:`VARIANTS`), as is and
mirrored, and the cross-correlation of the windowed, band-passed images over every shift the registration may take
(up to :data:`REACH` of the side) comes from one batched FFT per pair and variant. The best weighted peak, its
height read between the grid's shifts (:func:`subpixel_peak`), is the screen score; its variant and shift are the
starting point of the registration's refinement. Each eval image's best pairs by screen score are registered
(:func:`~.verify.select`); a second screen, b shown bigger (:data:`OUTWARD`), only adds a pair
(:func:`~.verify.widen`).

Work per pair: one product of spectra and one inverse FFT of 24 x 24 per variant (14 with the outward screen,
mirrored ones included), with no Python per pair.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import invalid_parameter
from .register import MAX_OFFSET, Prepared, Registration, _batch, too_far

#: b is tried at these (zoom, angle in degrees): the grid points lie within ~8% of any zoom in [0.8, 1.25] and
#: within 3.5 deg of any rotation up to 10 deg (at half resolution, the correlation peak survives that much), and
#: b shown 1.3 times smaller: an eval image that is a 20-25% crop of a train image from a corner (zoom 1.25-1.33,
#: its centre 14-18% of the side off) screened under distinct neighbours without it.
VARIANTS = ((1.0, 0.0), (1.15, 0.0), (1 / 1.15, 0.0), (1.0, 7.0), (1.0, -7.0), (1 / 1.3, 0.0))
#: Each variant's peak counts this much. The farther reach of the 1.3 zoom (shifts a crop inside its source may
#: take) also lets distinct, overlapping crops of one photo outscore an eval image's true partner: it must win by
#: 5%. Measured on what each eval image's registered pairs hold (screen alone, the same pairs as the suites):
#: 25% corner crops 0.19 -> 0.76 (32 px) and 0.33 -> 0.88 (112 px), 20% corner crops + JPEG q60 0.78 -> 0.82 and
#: 0.85 -> 0.88 (`benchmarks/copy_check.py --transforms extra`); on peers.py's 2,000 overlapping photos the copies
#: of the default check 434 -> 433 of 436 (unweighted: 422, and 4 eval images lost).
WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 0.95)
#: b shown 1.3 times bigger: a *train* image that is a 20-25% corner crop of its eval image (the last of VARIANTS
#: the other way round). Screened apart (:func:`~.verify.screen_outward`): in VARIANTS its peaks took the
#: registration slots of true partners (distinct overlapping crops of one photo outscored them), so it only adds a
#: pair, where its peak beats every other of the eval image's (:func:`~.verify.widen`).
OUTWARD = ((1.3, 0.0),)
OUTWARD_WEIGHTS = (0.95,)
#: Zero padding of the FFT (pixels added to the half-resolution side). None: the Hann window already takes the
#: edges to zero, so a shift of up to MAX_OFFSET wraps little (padding to 32 px cost 1.7x the work).
PAD = 0
#: Pairs screened together (memory: ~45 kB per pair), one chunk per thread.
CHUNK = 256


@functools.lru_cache(maxsize=4)
def _window(side: int) -> np.ndarray:
    w = np.hanning(side + 2)[1:-1].astype(np.float32)
    return w[:, None] * w[None, :]


#: The screen's score is its best peak's height between the grid's shifts (:func:`subpixel_peak`) for variants
#: within this zoom of b as it is; the 1.3 zooms keep the grid's peak: they reach the farther shifts of corner crops,
#: where distinct overlapping crops of one scene compete, and their weights were set against grid peaks (lifted too,
#: they gave distinct crops of a retina's rim and of sparse star fields registration slots: 6 false pairs more than
#: with the near zooms alone on the 32-, 128- and 256-px suites and the 32-px files).
SUBPIXEL_ZOOM = 1.2


def subpixel_peak(corr: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """The height of each correlation's peak at shift (``sx``, ``sy``) between the grid's shifts: a parabola through
    the peak and its two neighbours along each axis, its top at most half a pixel off (``corr``: (N, P, P), shift s
    at index s mod P).

    Why: at half resolution one pixel of a 32-px image is 0.75 of the screen's, and band-passed structure loses much of
    its correlation half a pixel off its peak: a garment shifted 1 px screened at 0.93 (median), the same garment
    re-graded at 0.99, so look-alikes aligned on the grid by chance outranked it."""
    n, p = corr.shape[0], corr.shape[1]
    r = np.arange(n)
    iy, ix = sy.astype(np.int64) % p, sx.astype(np.int64) % p
    c0 = corr[r, iy, ix].astype(np.float64)
    out = c0.copy()
    for lo, hi in ((corr[r, iy, (ix - 1) % p], corr[r, iy, (ix + 1) % p]),
                   (corr[r, (iy - 1) % p, ix], corr[r, (iy + 1) % p, ix])):
        b = 0.5 * (hi.astype(np.float64) - lo)
        a = 0.5 * (hi.astype(np.float64) + lo) - c0
        t = np.clip(np.divide(-b, 2 * a, out=np.zeros(n), where=a < 0), -0.5, 0.5)
        out += np.where(a < 0, b * t + a * t * t, 0.0)
    return out


#: The farthest shift any variant may take, as a share of the side (a 25% corner crop at zoom 1.3: ~0.19).
REACH = 0.25


@functools.lru_cache(maxsize=8)
def _shifts(side: int, variants: tuple[tuple[float, float], ...] = VARIANTS
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices into a padded correlation of the shifts within REACH of the side, the shifts, and per variant
    (mirrored ones after) and shift 0 where the registration may take that shift and -inf where it may not
    (:func:`~.register.too_far`: MAX_OFFSET of the side, or further for a view that lies inside the other)."""
    r = math.ceil(REACH * side)
    sy, sx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = sx**2 + sy**2 <= (REACH * side) ** 2
    sx, sy = sx[keep].astype(np.float64), sy[keep].astype(np.float64)
    p = side + PAD
    penalty = np.zeros((len(variants), len(sx)), np.float32)
    for v, (z, _) in enumerate(variants):
        # as the screen's answer reads it (screen_pairs): k = 1 / z, d = -s
        far = too_far(np.stack([np.full(len(sx), 1.0 / z), np.zeros(len(sx)), -sx, -sy], axis=1), side)
        penalty[v, far] = -np.inf
    return (sy.astype(np.int64) % p) * p + (sx.astype(np.int64) % p), sx, sy, np.concatenate([penalty, penalty])


def _spectra(small: np.ndarray, variants: tuple[tuple[float, float], ...]) -> np.ndarray:
    """(N, V, P, P // 2 + 1) spectra (P = side + PAD) of the windowed, zero-mean images warped by each variant,
    unit norm."""
    import cv2
    import scipy.fft as sfft

    n, side = len(small), small.shape[1]
    c = (side - 1) / 2.0
    win = _window(side)
    p = side + PAD
    out = np.zeros((n, len(variants), p, p // 2 + 1), np.complex64)
    for v, (z, theta) in enumerate(variants):
        if (z, theta) == (1.0, 0.0):
            w = small
        else:  # w(x) = b(R(theta) (x - c) / z + c): b's content shown z times bigger, turned by theta
            t = math.radians(theta)
            r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]) / z
            m = np.hstack([r, (np.array([c, c]) - r @ np.array([c, c]))[:, None]])
            w = _batch(lambda ch, m=m: cv2.warpAffine(ch, m, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                                 borderMode=cv2.BORDER_REFLECT), small)
        w = (w - w.mean(axis=(1, 2), keepdims=True)) * win
        w /= np.maximum(np.sqrt((w**2).sum(axis=(1, 2), keepdims=True)), 1e-6)
        out[:, v] = sfft.rfft2(w, s=(p, p))
    return out


@dataclass(frozen=True)
class Screen:
    """The screen's answer per pair, compact: its ``score``, its best variant ``best`` (index into ``variants``, the
    mirrored ones after them) and best ``shift`` (index into :func:`_shifts`' grid for the half-resolution ``side``).
    :meth:`start` makes the :class:`~.register.Registration` a registration starts from, for the rows that need one:
    made whole for every pair it took 74 bytes a pair, and the two screens of a 1M-image check's 1.78M candidates
    held ~260 MB at once (issue #15); this is 14."""

    score: np.ndarray
    best: np.ndarray
    shift: np.ndarray
    variants: tuple[tuple[float, float], ...]
    side: int

    def __len__(self) -> int:
        return len(self.score)

    def start(self, rows: np.ndarray | slice = slice(None)) -> Registration:
        """The screen's answer for ``rows`` as a registration's start (``overlap`` and the pixel columns NaN)."""
        best, shift = np.asarray(self.best[rows], np.int64), np.asarray(self.shift[rows], np.int64)
        n, nv = len(best), len(self.variants)
        _, sx, sy, _ = _shifts(self.side, self.variants)
        zoom = np.array([z for z, _ in self.variants])[best % nv]
        theta = np.array([t for _, t in self.variants])[best % nv]
        # a(u) ~ b_v(u + s) = b(R (u + s - c) / z + c): x_b = k R (x_a - c - d) + c with k = 1/z, d = -s
        return Registration(self.score[rows], best >= nv, 1.0 / zoom, theta, -sx[shift] / self.side,
                            -sy[shift] / self.side, np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan),
                            np.zeros(n, bool), np.full(n, np.nan))


#: Pairs screened per block of at most this many distinct b images: only the block's spectra are held
#: (30 kB per b image with its 12 variants, 2.5 kB per a image).
BLOCK = 256


def screen_pairs(prep: Prepared, ia: np.ndarray, ib: np.ndarray, *, mirror: bool = True, workers: int | None = None,
                 variants: tuple[tuple[float, float], ...] = VARIANTS, weights: tuple[float, ...] = WEIGHTS,
                 pool=None) -> Screen:  # type: ignore[no-untyped-def]
    """Screen the pairs (``prep`` rows ``ia[i]``, ``ib[i]``): see the module docstring. The answer is a
    :class:`Screen` (the screen's score and its best variant and shift): the registration's starting point. Pairs run in blocks of :data:`BLOCK` distinct b images (bounded memory), each
    block's chunks on ``workers`` threads (default: one per core; the answer does not depend on them).
    ``variants``/``weights``: b's (zoom, angle) tried and what each one's peak counts (:data:`VARIANTS`,
    :data:`WEIGHTS`; :data:`OUTWARD` for the pairs' other screen)."""
    if len(weights) != len(variants):
        raise invalid_parameter("weights", f"one weight per variant ({len(variants)})", tuple(weights))
    ia = np.asarray(ia, np.int64)
    ib = np.asarray(ib, np.int64)
    n = len(ia)
    score = np.zeros(n)
    best = np.zeros(n, np.int16)  # < 2 x the variants
    shift = np.zeros(n, np.int32)  # < the shifts within REACH (197 at the working side of 64-px thumbnails)
    order = np.argsort(ib, kind="stable")
    ub, first = np.unique(ib[order], return_index=True)
    blocks = [order[first[s] : first[s + BLOCK] if s + BLOCK < len(ub) else n] for s in range(0, len(ub), BLOCK)]
    if pool is not None and len(blocks) > 1:
        from contextlib import closing

        from ..memory import SpilledRows

        args: dict = {"mirror": mirror, "variants": [list(v) for v in variants], "weights": list(weights)}
        # images in temporary files: each job reads its rows itself (gathered here, they kept this process busy
        # with reads while its own job waited: 60k 32-px images, 3 s of the screen's 11)
        # (not on a cluster's nodes, which cannot read this machine's files: there the jobs get their rows)
        spilled = (getattr(pool, "files_shared", True) and isinstance(prep.small, SpilledRows)
                   and (not mirror or isinstance(prep.small_mirror, SpilledRows)))
        if spilled:
            args["files"] = [prep.small.path] + ([prep.small_mirror.path] if mirror else [])  # type: ignore[union-attr]
            args["shape"], args["dtype"] = list(prep.small.shape), prep.small.dtype.str

        def task(rows: np.ndarray) -> tuple[dict, dict[str, np.ndarray]]:
            ids, inv = np.unique(np.concatenate([ia[rows], ib[rows]]), return_inverse=True)
            arrays = {"ia": inv[: len(rows)], "ib": inv[len(rows) :]}
            if spilled:
                arrays["ids"] = ids
            else:
                arrays["small"] = np.asarray(prep.small[ids])
                if mirror:
                    arrays["small_mirror"] = np.asarray(prep.small_mirror[ids])
            return args, arrays

        with closing(pool.map("screen", map(task, blocks))) as answers:
            for rows, got in zip(blocks, answers):
                score[rows], best[rows], shift[rows] = got["score"], got["best"], got["shift"]
    else:
        for rows in blocks:
            score[rows], best[rows], shift[rows] = _screen_block(prep.small, prep.small_mirror, ia[rows], ib[rows],
                                                                 mirror, workers, variants, weights)
    return Screen(score, best, shift, tuple(variants), prep.small.shape[1])


def screen_job(args: dict, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One block of :func:`screen_pairs` (a worker job, :mod:`~splitaudit.features.workers`): its pairs' (score, best
    variant, best shift), from the half-resolution images of the block's images only: sent (``small``,
    ``small_mirror``), or read from the caller's temporary files (``files``: rows ``ids``)."""
    mirror = bool(args["mirror"])
    if "files" in args:  # the rows ``ids`` of the caller's spilled images
        from ..memory import read_rows

        shape, dtype = tuple(int(v) for v in args["shape"]), np.dtype(args["dtype"])
        small = read_rows(args["files"][0], shape, dtype, arrays["ids"])
        small_mirror = read_rows(args["files"][1], shape, dtype, arrays["ids"]) if mirror else small
    else:
        small = arrays["small"]
        small_mirror = arrays["small_mirror"] if mirror else small
    variants = tuple((float(z), float(t)) for z, t in args["variants"])
    score, best, shift = _screen_block(small, small_mirror, arrays["ia"], arrays["ib"], mirror, 1, variants,
                                       tuple(float(w) for w in args["weights"]))
    return {"score": score, "best": best, "shift": shift}


def _screen_block(small: np.ndarray, small_mirror: np.ndarray, ia: np.ndarray, ib: np.ndarray, mirror: bool,
                  workers: int | None, variants: tuple[tuple[float, float], ...], weights: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, best variant, best shift index) of the pairs (ia, ib)."""
    from concurrent.futures import ThreadPoolExecutor

    import scipy.fft as sfft

    from ..features.runner import default_workers

    n = len(ia)
    side = small.shape[1]
    flat, sx, sy, penalty = _shifts(side, variants)
    weight = np.array(tuple(weights) * (2 if mirror else 1), np.float32)[:, None]
    if not mirror:
        penalty = penalty[: len(variants)]
    p = side + PAD
    ua, inv_a = np.unique(ia, return_inverse=True)
    ub, inv_b = np.unique(ib, return_inverse=True)
    fa = _spectra(small[ua], ((1.0, 0.0),))[:, 0]
    nv = len(variants) * (2 if mirror else 1)
    fb = np.zeros((len(ub), nv, p, p // 2 + 1), np.complex64)
    fb[:, : len(variants)] = _spectra(small[ub], variants)
    if mirror:
        fb[:, len(variants) :] = _spectra(small_mirror[ub], variants)
    score = np.zeros(n)
    best = np.zeros(n, np.int64)
    shift = np.zeros(n, np.int64)

    zoom = np.array([z for z, _ in variants] * (2 if mirror else 1))
    lift = np.abs(np.log(zoom)) < math.log(SUBPIXEL_ZOOM)

    def chunk(s: int) -> None:  # its own rows of the outputs: chunks run side by side
        x, y = inv_a[s : s + CHUNK], inv_b[s : s + CHUNK]
        corr = sfft.irfft2(np.conj(fa[x])[:, None] * fb[y], s=(p, p), axes=(2, 3))  # sum_u a(u) b_v(u + s)
        at = corr.reshape(len(x), nv, p * p)[:, :, flat] * weight + penalty  # shifts the registration refuses: never
        peak = at.max(axis=2)
        r = np.arange(len(x))
        v = peak.argmax(axis=1)
        k = at[r, v].argmax(axis=1)
        score[s : s + CHUNK] = np.where(lift[v], weight[v, 0] * subpixel_peak(corr[r, v], sx[k], sy[k]), peak[r, v])
        best[s : s + CHUNK] = v
        shift[s : s + CHUNK] = k

    # threads: the FFTs and the large array operations release the GIL (no memory of their own, safe where forking
    # is not)
    workers = min(default_workers() if workers is None else workers, -(-n // CHUNK))
    if workers <= 1:
        for s in range(0, n, CHUNK):
            chunk(s)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="splitaudit-screen") as pool:
            list(pool.map(chunk, range(0, n, CHUNK)))
    return score, best, shift
