"""Calibrate the copy score on the dataset itself, in a way that survives copies inside the training split.

* **Positives**: training images copied by known transforms (shift, zoom, crop, frame, letterbox, colour grade,
  grey, JPEG, mirror, rotation, and mixes), applied to the thumbnails here; their scores say what a copy of
  *this* data scores.
* **Negatives**: for a sample of training images, every neighbour the candidate search proposes among the other
  training images; the best score per sampled image is the null (what an eval image that is *not* a copy gets).
* **Crowding**: how high a distinct neighbour scores depends on the image: a tile of a texture, a garment, a product
  shot or a smooth edge has many neighbours that register almost as well as a copy, a scene of its own has none.
  Each image's :func:`crowding` (the screen scores of its 2nd to 4th best pixel-view candidates: past the best,
  which may be its copy, and past a twin of that copy inside train) is measured the same way for the null's images
  and for eval images, and the null is modelled *given* it: ``z(best) = intercept + slope * crowding + residual``
  (Fisher z, least squares, slope >= 0). The residual's upper half is fitted (exponential excesses above its median:
  :func:`tail_cut`), and each eval image gets the cut where that tail puts ``target_rate`` false pairs: lower where
  nothing looks alike, higher in a crowd. (Measured on the suites of ``benchmarks/copy_suites.py``: one global cut
  sat at the 0.995 ceiling; the conditional cut raised recall 0.54 -> 0.85 (32 px) and 0.68 -> 0.90 (128 px), and
  0.08 -> 0.34 on Fashion-MNIST, with the same false pairs.)
* **Copies inside train**: real datasets hold them by the hundreds; their scores are the null's upper tail, exactly
  where the cut would land. A null image that scores like the synthetic copies (at least their 5th percentile) *and*
  lies above the similar band's residual cut of the rest, or whose pixels agree with a neighbour's, is set aside as a
  likely copy, and the model refitted without it, until no more is set aside (the set only grows, so this ends).
  Testing against the rest's own tail, not setting aside everything that scores like a copy, is what keeps distinct
  look-alikes (garments: a third of the null scores like the synthetic copies) in the null, where they must move the
  cut. Where the copies are a quarter of the null or more, the rest's tail is theirs: a first test against the tail
  of the samples that do not score like copies sets them aside (:func:`null_model`). Copies scoring under the synthetic
  copies' 5th percentile (a crop and JPEG) whose blurred levels agree as a copy's do (:func:`level_copies`: the level
  rule's cut) are set aside too, and the null and that cut read again until none is added. The cut never falls below
  the maximum residual of the kept null (a distinct neighbour seen to score x says x is no copy evidence here), nor,
  with fewer than ``SMALL_NULL`` samples, below ``SMALL_FLOOR`` (``SMALL_SIMILAR_FLOOR`` for the band). Cuts stay in [``FLOOR``, ``CEILING``]; crowding is clipped to the null's
  range (no extrapolation).
* ``similar_cut``: the same tail at ``SIMILAR_RATE`` per eval image (the similar-images warning band).

Deterministic (seeded). Every value goes into the report (:class:`Calibration`).
"""

from __future__ import annotations

from collections.abc import Callable

import io
import math
from dataclasses import dataclass

import numpy as np

from ..errors import invalid_parameter
from .register import PLAIN_DATASET, plain_share

#: False pairs per eval image aimed at by the copy cut, and by the similar-images band.
TARGET_RATE = 1e-3
SIMILAR_RATE = 2e-2
#: Sampled training images for the null, and images copied for the positives.
NULL_SAMPLE = 400
POSITIVE_SAMPLE = 150
#: The cuts never leave [FLOOR, CEILING]: a copy score under FLOOR is no evidence, one over CEILING always is.
FLOOR = 0.6
CEILING = 0.995
#: The candidates whose screen scores measure an image's crowding: its 2nd to 4th best (0-based ranks 1..3).
CROWD_RANKS = (1, 4)
#: The null's quantile above which its tail is fitted (:func:`tail_cut`).
TAIL_FROM = 0.5
#: Below this many null samples the fitted tail is an extrapolation too far to trust: the copy cut is then at least
#: SMALL_FLOOR (measured: distinct tiles of one photo registered at 0.968 in a 4-image training split; the copies
#: in tests/test_copies.py score 0.989-0.999), and the similar band
#: starts at SMALL_SIMILAR_FLOOR (set above 0.824, what a flower tile scored against a saucer's rim, mirrored and
#: rotated, in the tests' 40-image planted set, and above 0.923, two distinct coffee tiles, mirrored, zoomed 0.91
#: and turned 4 deg, with 4 training images: floors from single observations, not measured rates).
SMALL_NULL = 100
SMALL_FLOOR = 0.98
SMALL_SIMILAR_FLOOR = 0.95
#: The level cut (:func:`level_cut`): LEVEL_MARGIN times the LEVEL_QUANTILE of :func:`~.verify.level` among the
#: kept null's registered pairs scoring at least their median and under the synthetic copies' 5th percentile, at
#: most LEVEL_CAP; off (NaN) with fewer than LEVEL_MIN_PAIRS such pairs. Measured on benchmarks/copy_suites.py
#: (find_copies, the cut taken as m times that quantile): the first distinct pair the rule adds comes at m = 0.5
#: (32 px: two Hubble deep-field tiles), m = 0.45 (Fashion-MNIST: two look-alike leggings) and none up to 0.5 at
#: 128 px; pairs in the band score higher than the null's bulk, and a higher score brings a lower level. 0.35 keeps
#: a factor of 1.3 below the first of them (0.4 found 1 more copy of 900 at 32 px and 30 more of 1,500 on
#: Fashion-MNIST).
LEVEL_QUANTILE = 0.05
LEVEL_MARGIN = 0.35
LEVEL_CAP = 0.1
LEVEL_MIN_PAIRS = 40
#: :func:`level_copies` sets aside null samples at levels up to the level cut, but never above this: a sample set
#: aside lowers every eval image's cut, where a decision moves one pair. Measured (scratch): the copies inside train
#: that the likely-copy tests kept had levels of 0.02-0.055 on the held-out-like 32-px suite (C = 0.10-0.30), while
#: distinct brick and grass tiles of the tests' crowded tiles registered at 0.94-0.99 with levels of 0.068-0.098, under
#: a level cut at LEVEL_CAP (set aside, they lowered the copy cut 0.9897 -> 0.9884, and 3 more of 1,428 distinct crops
#: between the tiles were reported: one window, reached from three tiles).
NULL_LEVEL_CAP = 0.06


@dataclass(frozen=True)
class Calibration:
    """Every value the copy decision uses, with what it was derived from (for the JSON report)."""

    copy_cut: float
    similar_cut: float
    target_rate: float
    similar_rate: float
    null_samples: int
    null_q50: float
    null_q90: float
    null_q99: float
    null_max: float
    likely_copies: int
    tail_threshold: float
    tail_scale: float
    positives: int
    positive_q05: float
    positive_q50: float
    positive_recall: float
    positive_recall_min: float
    positive_worst: str
    seed: int
    null_pixel_agree: int = 0
    #: The null given crowding (Fisher z): ``z(best) = crowding_intercept + crowding_slope * crowding + residual``;
    #: the residual's cuts; crowding is clipped to [crowding_lo, crowding_hi]; ``copy_cut`` and ``similar_cut``
    #: above are the cuts at ``crowding_median`` (a typical image), :meth:`cuts` gives each image's.
    crowding_intercept: float = math.nan
    crowding_slope: float = 0.0
    crowding_lo: float = 0.0
    crowding_hi: float = 0.0
    crowding_median: float = 0.0
    copy_residual: float = math.nan
    similar_residual: float = math.nan
    copy_floor: float = FLOOR
    similar_floor: float = FLOOR
    #: Training images with a hash match inside train (share), and that share less the matches the null sets aside
    #: as copies inside train: how often distinct images hash alike here (:func:`distinct_hash_rate`).
    hash_collision_rate: float = math.nan
    hash_distinct_rate: float = math.nan
    #: The level rule (:func:`~.verify.level_agreement`): its cut (NaN: off), the null's level quantile it derives
    #: from (:func:`level_cut`), and how many null pairs that quantile was read from.
    level_cut: float = math.nan
    level_null: float = math.nan
    level_pairs: int = 0
    #: Sampled training images set aside as copies inside train by their levels (:func:`level_copies`) beyond the
    #: likely-copy tests and the pixel agreement.
    null_level_agree: int = 0
    #: The training images' share with a content box side that is an object's outline on a plain background
    #: (:func:`~.register.plain_share`), and whether the run treats the dataset as one of objects on a plain background
    #: (that share at least :data:`~.register.PLAIN_DATASET`): box sides that are outlines are no frames then.
    plain_share: float = math.nan
    plain_background: bool = False

    def cuts(self, crowding: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(copy cut, similar cut) for images of the given :func:`crowding` (NaN: none measured, the median is
        taken)."""
        x = np.asarray(crowding, np.float64)
        if not math.isfinite(self.crowding_intercept):  # no model (a tiny training split): the scalar cuts
            return np.full(x.shape, self.copy_cut), np.full(x.shape, self.similar_cut)
        x = np.clip(np.where(np.isfinite(x), x, self.crowding_median), self.crowding_lo, self.crowding_hi)
        base = self.crowding_intercept + self.crowding_slope * x
        copy = np.clip(np.tanh(base + self.copy_residual), self.copy_floor, CEILING)
        similar = np.minimum(np.clip(np.tanh(base + self.similar_residual), self.similar_floor, CEILING), copy)
        return copy, similar


def crowding(b: np.ndarray, screen_score: np.ndarray, n: int, ranks: tuple[int, int] = CROWD_RANKS) -> np.ndarray:
    """Per record (``n``): the mean Fisher z of the screen scores of its candidates ranked ``ranks`` (best first)
    among the pairs ``b`` (the record's side) with ``screen_score``; NaN for a record with fewer than
    ``ranks[0] + 1`` candidates. Vectorised."""
    b = np.asarray(b, np.int64)
    out = np.full(n, np.nan)
    if not len(b):
        return out
    score = np.nan_to_num(np.asarray(screen_score, np.float64), nan=-1.0)
    order = np.lexsort((-score, b))
    bs, zs = b[order], _z(score[order])
    first = np.r_[True, bs[1:] != bs[:-1]]
    rank = np.arange(len(bs)) - np.maximum.accumulate(np.where(first, np.arange(len(bs)), 0))
    sel = (rank >= ranks[0]) & (rank < ranks[1])
    total = np.bincount(bs[sel], zs[sel], minlength=n)
    count = np.bincount(bs[sel], minlength=n)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _z(x: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(x, -0.9999, 0.9999))


def tail_cut(null: np.ndarray, rate: float) -> tuple[float, float, float]:
    """(cut, threshold, scale): the score the null exceeds with probability ``rate``, by a peaks-over-threshold
    fit in Fisher z: above the null's ``TAIL_FROM`` quantile ``u`` the excesses are taken as exponential (the tail
    of the law of a maximum, Gumbel's domain) with their mean as the scale, so
    ``cut = tanh(u + scale * ln((1 - TAIL_FROM) / rate))``. Only the upper part of the null enters: how the search
    scores hopeless pairs cannot move the cut. An earlier fit of a Gumbel law to the null's median and 80th
    percentile weighted the median by -4.8: a search change that lowered distinct pairs' scores raised the cut
    (0.991 -> 0.995 on the 32-px suite). Why the median and not the 80th percentile: with the top 5% of a uniform
    dataset's null set aside as likely copies, the excesses above the 80th percentile were too few and too tight
    (600 garments: a cut of 0.9875 let two distinct garments, 8 grey levels apart, through at 0.990-0.992; from the
    median, 0.995)."""
    z = _z(np.asarray(null, np.float64))
    if not len(z):
        return CEILING, math.nan, math.nan
    u = float(np.quantile(z, TAIL_FROM))
    excess = z[z > u] - u
    scale = float(excess.mean()) if len(excess) else 1e-3
    return float(np.tanh(u + scale * math.log((1.0 - TAIL_FROM) / rate))), u, scale


# ------------------------------------------------------------------------------------------------ positives

@dataclass(frozen=True)
class Recipe:
    """One of the calibration's copy transforms: shift (px of a 32-px side, scaled for bigger thumbnails), zoom,
    rotation (degrees), crop and frame / letterbox (share of the side), colour grade, grey, mirror, JPEG quality."""

    name: str = ""
    shift: float = 0.0
    zoom: float = 1.0
    rotate: float = 0.0
    crop: float = 0.0
    frame: float = 0.0
    letterbox: float = 0.0
    grade: bool = False
    grey: bool = False
    mirror: bool = False
    jpeg: int = 0


def _recipes(text: str) -> tuple[Recipe, ...]:
    """``"shift=2; grade zoom=1.05; ..."``: one recipe per ``;``, named by its text; a bare word is a flag."""
    out = []
    for item in text.split(";"):
        kw: dict[str, object] = {}
        for word in item.split():
            key, _, value = word.partition("=")
            kw[key] = (int(value) if key == "jpeg" else float(value)) if value else True
        out.append(Recipe(item.strip().replace("=", " "), **kw))  # type: ignore[arg-type]
    return tuple(out)


#: The calibration's own copy transforms, each applied to the thumbnails here (edges replicated, not black).
TRANSFORMS = _recipes("shift=2; shift=4; zoom=1.1; zoom=0.9; crop=0.18; frame=0.08; letterbox=0.12; rotate=8; grade; "
                      "grey; jpeg=50; mirror shift=1 jpeg=70; grade zoom=1.05 rotate=3 shift=1")


def synthetic_copy(img: np.ndarray, spec: Recipe, rng: np.random.Generator) -> np.ndarray:
    """A copy of one thumbnail (h, w[, 3] uint8) by a :data:`TRANSFORMS` entry (edges replicated, not black)."""
    import cv2
    from PIL import Image

    shift, zoom, angle, crop, frame, letterbox = spec.shift, spec.zoom, spec.rotate, spec.crop, spec.frame, spec.letterbox
    grade, grey, mirror, jpeg = spec.grade, spec.grey, spec.mirror, spec.jpeg
    h, w = img.shape[:2]
    unit = w / 32.0
    t = rng.uniform(0, 2 * math.pi)
    dx, dy = shift * unit * math.cos(t), shift * unit * math.sin(t)
    k = zoom / (1 - crop) if crop else zoom
    if crop:  # the kept window sits against one edge
        side = int(rng.integers(4))
        off = crop * w / 2
        dx += (off, -off, 0, 0)[side]
        dy += (0, 0, off, -off)[side]
    angle *= rng.choice((-1.0, 1.0))
    m = cv2.getRotationMatrix2D(((w - 1) / 2 + dx, (h - 1) / 2 + dy), angle, k)
    m[:, 2] -= (dx, dy)
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if frame:
        inner = max(4, int(round(w * (1 - 2 * frame))))
        small = cv2.resize(out, (inner, inner), interpolation=cv2.INTER_AREA)
        out = np.full_like(out, int(rng.choice((0, 128, 255))))
        o = (w - inner) // 2
        out[o : o + inner, o : o + inner] = small
    if letterbox:
        bar = int(round(h * letterbox))
        out = out.copy()
        out[:bar] = 0
        out[h - bar :] = 0
    if grade:
        x = out.astype(np.float32) / 255.0
        gain = rng.uniform(0.8, 1.2, out.shape[2] if out.ndim == 3 else 1)
        out = np.clip(255 * (x ** rng.uniform(0.8, 1.25) * gain + rng.uniform(-0.08, 0.08)), 0, 255).astype(np.uint8)
    if grey and out.ndim == 3:
        g = (out.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)
        out = np.repeat(g[..., None], 3, axis=2)
    if mirror:
        out = np.ascontiguousarray(out[:, ::-1])
    if jpeg:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, "JPEG", quality=jpeg)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        if img.ndim == 3 and out.ndim == 2:
            out = np.repeat(out[..., None], 3, axis=2)
    return out


def positive_scores(thumbs: np.ndarray, rows: np.ndarray, rng: np.random.Generator, workers: int | None = None,  # type: ignore[no-untyped-def]
                    aspect: np.ndarray | None = None, plain: bool = False, pool=None):
    """The registration of synthetic copies of ``rows`` onto them (one transform each, in turn: a
    :class:`~.register.Registration`) and each copy's transform index, by the path the decisions take (screen, then
    registration from the screen's start)."""
    from .verify import screen_outward, verify_pairs, widen

    copies = np.stack([synthetic_copy(thumbs[r], TRANSFORMS[i % len(TRANSFORMS)], rng) for i, r in enumerate(rows)])
    both = np.concatenate([thumbs[rows], copies])
    m = len(rows)
    a, b = np.arange(m), np.arange(m, 2 * m)
    shape = None if aspect is None else np.concatenate([aspect[rows], aspect[rows]])  # a copy keeps its source's
    _, start, _ = widen(*screen_outward(both, a, b, workers=workers, aspect=shape, plain=plain, pool=pool), b,
                        np.ones(m, bool))
    reg = verify_pairs(both, a, b, start=start, workers=workers, aspect=shape, plain=plain, pool=pool)
    return reg, np.arange(m) % len(TRANSFORMS)


@dataclass(frozen=True)
class NullModel:
    """The null given crowding (see the module docstring); residuals in Fisher z."""

    intercept: float
    slope: float
    copy_residual: float
    similar_residual: float
    tail_threshold: float
    tail_scale: float
    likely: np.ndarray  # bool per null sample: set aside as a likely copy inside train


def _fit(zn: np.ndarray, x: np.ndarray, keep: np.ndarray, target_rate: float, similar_rate: float
         ) -> tuple[float, float, np.ndarray, float, float, float, float, float]:
    """(intercept, slope, residuals, copy residual cut, similar residual cut, the likely-copy test's residual cut,
    tail threshold, tail scale) from the
    samples ``keep``: least squares with the slope held at 0 or above (crowding cannot lower what distinct
    neighbours score), then :func:`tail_cut` on the residuals; the copy cut floored at what the kept residuals
    reach."""
    xs, zs = x[keep], zn[keep]
    slope = 0.0
    if np.ptp(xs) > 1e-9:
        slope = max(0.0, float(np.cov(xs, zs, bias=True)[0, 1] / np.var(xs)))
    intercept = float(zs.mean() - slope * xs.mean())
    res = zn - intercept - slope * x
    kept = res[keep]
    # tail_cut works on scores: its residuals go in as tanh(r) and come out through arctanh
    c, u, scale = tail_cut(np.tanh(kept), target_rate)
    sc, _, _ = tail_cut(np.tanh(kept), similar_rate)
    r_copy = max(float(np.arctanh(min(c, 0.9999))), float(kept.max()) + 1e-6)
    # the band is the fitted tail alone: a floor at the kept residuals' 99th percentile (the 4th largest of ~355)
    # bound it at every seed of the held-out-like 32-px suite and moved it 0.72-1.04 in z with the draw (the tail:
    # 0.68-0.77), and through the band's gate on the level rule, recall by 1.5 points (docs/copies.md)
    r_sim = float(np.arctanh(min(sc, 0.9999)))
    # the test for likely copies: the same tail with its scale from the median excess (ln 2 times the scale of an
    # exponential), which copies still in the fit barely move (their mean would: 15% of copies hid each other)
    excess = np.arctanh(np.clip(np.tanh(kept), -0.9999, 0.9999)) - u
    excess = excess[excess > 0]
    robust = float(np.median(excess)) / math.log(2.0) if len(excess) else scale
    r_test = u + robust * math.log((1.0 - TAIL_FROM) / similar_rate)
    return intercept, slope, res, r_copy, r_sim, r_test, u, scale


def null_model(null: np.ndarray, crowd: np.ndarray | None, copy_like: float, target_rate: float, similar_rate: float,
               *, agreeing: np.ndarray | None = None) -> NullModel:
    """The null's best scores modelled given each sample's crowding (``None``: not measured, one cut for all), with
    likely copies inside train set aside: a sample scoring at least ``copy_like`` (the synthetic copies' 5th
    percentile) above the similar band's residual cut of the rest, or whose pixels agree with a neighbour
    (``agreeing``), is left out and the model refitted, until the set stops growing. Before that, a copy-like sample
    beyond the tail of the samples that do not score like copies, at the copy cut's rate, is set aside: where copies inside train are a
    quarter of the null, the tail of all the rest is theirs, and none would stand out from it."""
    null = np.asarray(null, np.float64)
    zn = _z(null)
    x = np.zeros(len(null)) if crowd is None else np.asarray(crowd, np.float64)
    x = np.where(np.isfinite(x), x, np.nanmedian(x) if np.isfinite(x).any() else 0.0)
    likely = np.zeros(len(null), bool) if agreeing is None else np.asarray(agreeing, bool).copy()
    copy_like_mask = null >= copy_like
    # With a third of the training regions copied inside train (copy_check.py --contamination 0.3) 76 copy-like
    # samples stayed in, the tail's scale went 0.23 -> 1.12 (z) and every cut to the ceiling. This first test is at
    # the copy cut's rate of the plain samples' tail, its scale from their median excess (copies scoring just under
    # the gate sit at the top of the plain samples and would raise a mean): distinct look-alikes that score like
    # copies stay in the null (a scratch test, 400 samples of one law whose upper third scores like copies: 6 set
    # aside, 5 before; 17 with the mean excess, 48 at the band's rate; with crowding explaining the law, 6 as before)
    plain = ~likely & ~copy_like_mask
    if plain.sum() >= 10:
        _, _, res, _, _, _, _, _ = _fit(zn, x, plain, target_rate, similar_rate)
        u = float(np.quantile(res[plain], TAIL_FROM))
        excess = res[plain] - u
        if (excess > 0).any():
            robust = float(np.median(excess[excess > 0])) / math.log(2.0)
            likely |= copy_like_mask & (res > u + robust * math.log((1.0 - TAIL_FROM) / target_rate))
    while True:
        keep = ~likely if (~likely).sum() >= 10 else np.ones(len(null), bool)
        intercept, slope, res, r_copy, r_sim, r_test, u, scale = _fit(zn, x, keep, target_rate, similar_rate)
        grown = likely | (copy_like_mask & (res > r_test))
        if (grown == likely).all() or (~grown).sum() < 10:
            break
        likely = grown
    return NullModel(intercept, slope, r_copy, r_sim, u, scale, likely)


def level_cut(levels: np.ndarray, scores: np.ndarray, kept: np.ndarray, copy_like: float) -> tuple[float, float, int]:
    """(cut, null quantile, pairs) of the level rule from the null's registered pairs; ``kept``: pairs of samples not
    set aside as likely copies. The population is the pairs
    scoring at least the median of those and under ``copy_like`` (the synthetic copies' 5th percentile: copies
    inside train the likely-copy test missed sit there, at levels of 0.02-0.05); its :data:`LEVEL_QUANTILE` is read
    as a quantile, not a minimum, so that the few copies inside train scoring under ``copy_like`` (framed twins:
    0.76-0.80 at levels 0.03-0.05 on the 32-px suite) do not switch the rule off."""
    lv = np.asarray(levels, np.float64)
    sc = np.nan_to_num(np.asarray(scores, np.float64), nan=-1.0)
    ok = np.asarray(kept, bool) & np.isfinite(lv) & (sc > -1.0)
    pop = ok & (sc >= np.median(sc[ok])) & (sc < copy_like) if ok.any() else ok
    if pop.sum() < LEVEL_MIN_PAIRS:
        return math.nan, math.nan, int(pop.sum())
    q = float(np.quantile(lv[pop], LEVEL_QUANTILE))
    return min(LEVEL_CAP, LEVEL_MARGIN * q), q, int(pop.sum())


def level_copies(levels: np.ndarray, scores: np.ndarray, kept: np.ndarray, cut: float) -> np.ndarray:
    """Per null pair: a copy inside train by its levels. Its blurred grey levels agree as a copy's do (a
    :func:`~.verify.level` at most the level rule's ``cut`` and at most :data:`NULL_LEVEL_CAP`), and its structure
    scores at least the median of the ``kept`` pairs (the population :func:`level_cut` reads). The pixel agreement
    misses these copies (a crop, a JPEG, a re-grade) and many score under the synthetic copies' 5th percentile, where
    the likely-copy tests never look: with a tenth of the training regions copied inside train they stayed in the
    null and raised the copy cut (docs/copies.md, thirty-fifth session)."""
    lv = np.asarray(levels, np.float64)
    sc = np.nan_to_num(np.asarray(scores, np.float64), nan=-1.0)
    ok = np.asarray(kept, bool) & np.isfinite(lv) & (sc > -1.0)
    if not math.isfinite(cut) or not ok.any():
        return np.zeros(len(lv), bool)
    return np.isfinite(lv) & (sc >= np.median(sc[ok])) & (lv <= min(cut, NULL_LEVEL_CAP))


def distinct_hash_rate(train_rows: np.ndarray, hash_a: np.ndarray, hash_b: np.ndarray, queries: np.ndarray,
                       likely: np.ndarray) -> tuple[float, float]:
    """(share of training images with a hash match inside train, the share of them that are distinct images).
    Copies inside train hash alike as much as look-alikes do, so the raw share says little where a dataset holds
    copies; among the null's sampled images with such a match, those the null sets aside as likely copies are
    copies, the rest distinct images that collide (no extra registration)."""
    train = np.zeros(int(max(train_rows.max(initial=-1), hash_a.max(initial=-1), hash_b.max(initial=-1))) + 1, bool)
    train[train_rows] = True
    hash_a, hash_b = np.asarray(hash_a, np.int64), np.asarray(hash_b, np.int64)
    inside = train[hash_a] & train[hash_b] & (hash_a != hash_b)
    involved = np.unique(np.concatenate([hash_a[inside], hash_b[inside]]))
    rate = len(involved) / max(len(train_rows), 1)
    seen = np.isin(queries, involved)
    share = float(np.mean(~likely[seen])) if seen.any() else 1.0
    return rate, rate * share


def _bare(target_rate: float, similar_rate: float, seed: int, **model: float) -> Calibration:
    """A calibration with no null and no positives measured: cuts at the ceiling unless ``model`` says otherwise."""
    return Calibration(CEILING, CEILING, target_rate, similar_rate, 0, *(math.nan,) * 4, 0, math.nan, math.nan, 0,
                       *(math.nan,) * 4, "", seed, 0, **model)  # type: ignore[arg-type]


def calibrate(thumbs: np.ndarray, train_rows: np.ndarray, *, target_rate: float = TARGET_RATE,
              similar_rate: float = SIMILAR_RATE, null_sample: int = NULL_SAMPLE,
              positive_sample: int = POSITIVE_SAMPLE, seed: int = 0,
              vectors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, per_image: int = 2,
              workers: int | None = None, hash_pairs: tuple[np.ndarray, np.ndarray] | None = None,
              aspect: np.ndarray | None = None,
              keys: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
              plain: bool | None = None, pool=None,
              values: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
              ) -> Calibration:  # type: ignore[no-untyped-def]
    """The copy and similar cuts for this dataset, from its training images (see the module docstring).
    ``vectors``: the candidate search's :func:`~.candidates.view_vectors` of all ``thumbs``, when at hand;
    ``per_image``: neighbours registered per sampled image (by screen score), as the decisions do; ``workers``:
    threads of the screen and the registration (the answer does not depend on them); ``hash_pairs``: the
    dataset's hash matches (record pairs), for :func:`distinct_hash_rate`; ``aspect``: the records' relative
    shapes (:func:`~.verify.relative_aspect`), as the decisions register them; ``keys``: the records' key images,
    for the second opinion of local features the decisions get (:func:`~.verify.keypoint_registration`): null pairs
    scoring :data:`~.verify.KEYS_FROM` or more get it too, so the cut is of the scores the decisions read;
    ``plain``: whether the dataset is one of objects on a plain background (:data:`~.register.PLAIN_DATASET`; None:
    measured on the training images, :func:`~.register.plain_share`), as every registration of the run takes it;
    ``pool``: worker processes for the screen and the registration (:func:`~.verify.find_copies`); ``values``: the
    records' HSV-value thumbnails and colour (:func:`~.verify.value_scores`): null pairs from
    :data:`~.verify.VALUE_FROM` up are scored on them too (:func:`~.verify.take_readings`, as is every null pair's
    tone reading), as the decisions' pairs are."""
    from .candidates import inside_best, pairs_within
    from .verify import (KEYS_FROM, _best_per_image, keypoint_registration, level, level_agreement, pixel_agreement,
                         screen_outward, select, still_agreement, take_better, take_readings, verify_pairs, widen)

    if not 0 < target_rate < similar_rate < 1:
        raise invalid_parameter("target_rate/similar_rate", "0 < target_rate < similar_rate < 1", (target_rate, similar_rate))
    train_rows = np.asarray(train_rows, np.int64)
    rng = np.random.default_rng(seed)
    share = plain_share(thumbs, train_rows)
    if plain is None:
        plain = share >= PLAIN_DATASET
    shape_values = dict(plain_share=share, plain_background=bool(plain))
    if len(train_rows) < 3:
        return _bare(target_rate, similar_rate, seed, **shape_values)
    queries = np.sort(rng.choice(train_rows, size=min(null_sample, len(train_rows)), replace=False))
    qa, qb, nearest = pairs_within(thumbs, train_rows, queries, vectors=vectors)
    if vectors is not None:  # the caller's pixel views (114 MiB at 20k): not held through the screen and registration
        vectors.clear()
    # the neighbour is "a" (earlier), the sampled image "b", as a candidate pair
    sc, out = screen_outward(thumbs, qb, qa, workers=workers, aspect=aspect, plain=plain, pool=pool)
    crowd = crowding(qa, sc.score, len(thumbs))[queries]  # as find_copies measures an eval image's
    inside = inside_best(thumbs, qb, qa)  # as find_copies: each sampled image's neighbour that best lies inside it
    keep, start, also = widen(sc, out, qa, select(sc, qa, per_image, nearest=nearest | inside), both=inside,
                              kept_only=True)
    # every neighbour compared as it lies, registered or not (as find_copies compares every candidate): pixels that
    # agree so make a copy inside train whatever the registration
    lying = qa[pixel_agreement(*still_agreement(thumbs, qb, qa))]
    qa, qb = qa[keep], qb[keep]
    # unpruned: every null pair refined, so the null is each sampled image's best registration (the decisions skip
    # only pairs that cannot reach the similar band)
    reg = verify_pairs(thumbs, qb, qa, start=start, prune=False, workers=workers, aspect=aspect,
                       plain=plain, pool=pool, also=also)
    null = np.full(len(queries), -1.0)
    pos_of = {int(q): i for i, q in enumerate(queries)}
    if keys is not None:
        columns = reg.to_arrays()
        # as the decisions: each sampled image's best registered pair, at KEYS_FROM or more and under every cut the
        # decisions could hold (CEILING): a pair at its cut gets no second opinion there, and one at CEILING is a
        # copy under any cut (on peers.py's 2,000 overlapping photos that spared ~30% of the null's keypoint pairs)
        second = np.flatnonzero(_best_per_image(reg.score, qa, 1, np.ones(len(qa), bool)) & (reg.score >= KEYS_FROM)
                                & (reg.score < CEILING))
        rows, better = keypoint_registration(thumbs, keys, qb[second], qa[second], aspect=aspect, workers=workers,
                                             plain=plain)
        take_better(columns, second[rows], better)
        reg = type(reg)(**columns)
    columns = reg.to_arrays()
    _, structure = take_readings(values, thumbs, qb, qa, columns, np.ones(len(qa), bool), aspect=aspect, plain=plain,
                                 workers=workers)
    reg = type(reg)(**columns)
    for q, s in zip(qa.tolist(), reg.score.tolist()):
        null[pos_of[q]] = max(null[pos_of[q]], s)
    prow = np.sort(rng.choice(train_rows, size=min(positive_sample, len(train_rows)), replace=False))
    preg, kind = positive_scores(thumbs, prow, rng, workers, aspect, plain, pool)
    pos = preg.score
    p05 = float(np.quantile(pos, 0.05))
    # sampled images whose pixels agree with another training image (a registered overlap only where the structure
    # scores like a copy too): copies inside train, or look-alikes the pixel rule would call copies (reported: a
    # count far above the copies the dataset is known to hold says so)
    agree = pixel_agreement(reg.mad, reg.spread, reg.still, structure, p05)
    null_pixel_agree = len(set(qa[agree].tolist()) | set(lying.tolist()))
    agreeing = np.isin(queries, qa[agree]) | np.isin(queries, lying)
    model = null_model(null, crowd, p05, target_rate, similar_rate, agreeing=agreeing)
    # the level rule's cut, from the pairs of the null's samples not set aside as likely copies; the samples whose
    # pairs it takes for copies (level_copies) are then set aside too and the null and the cut read again, until
    # none is added: copies left in the cut's population hold it low (with 45% of the training images copied inside
    # train, at 0.35 of a copy's level), and it rises as they leave (at most LEVEL_CAP; the set only grows)
    sample_of = np.searchsorted(queries, qa)
    levels = level(reg.smooth_mad, reg.spread)
    lcut, lenv, lpairs = level_cut(levels, structure, ~model.likely[sample_of], p05)
    by_level = np.zeros(len(queries), bool)
    while True:
        more = np.isin(queries, qa[level_copies(levels, structure, ~model.likely[sample_of], lcut)]) & ~model.likely
        if not more.any():
            break
        by_level |= more
        model = null_model(null, crowd, p05, target_rate, similar_rate, agreeing=agreeing | by_level)
        lcut, lenv, lpairs = level_cut(levels, structure, ~model.likely[sample_of], p05)
    floor, sim_floor = (SMALL_FLOOR, SMALL_SIMILAR_FLOOR) if len(null) < SMALL_NULL else (FLOOR, FLOOR)
    fin = crowd[np.isfinite(crowd)]
    lo, hi, mid = (float(fin.min()), float(fin.max()), float(np.median(fin))) if len(fin) else (0.0, 0.0, 0.0)
    model_values = dict(shape_values, crowding_intercept=model.intercept, crowding_slope=model.slope, crowding_lo=lo,
                        crowding_hi=hi, crowding_median=mid, copy_residual=model.copy_residual,
                        similar_residual=model.similar_residual, copy_floor=floor, similar_floor=sim_floor)
    if hash_pairs is not None:
        rate, distinct = distinct_hash_rate(train_rows, hash_pairs[0], hash_pairs[1], queries, model.likely)
        model_values.update(hash_collision_rate=rate, hash_distinct_rate=distinct)
    model_values.update(level_cut=lcut, level_null=lenv, level_pairs=lpairs, null_level_agree=int(by_level.sum()))
    copy_cut, similar_cut = (float(c) for c in _bare(target_rate, similar_rate, seed, **model_values).cuts(mid))
    # the decisions' rule (verify.decide), hashes aside, at a typical image's cuts
    found = ((pos >= copy_cut) | pixel_agreement(preg.mad, preg.spread, preg.still, pos, similar_cut)
             | level_agreement(preg.smooth_mad, preg.spread, pos, similar_cut, lcut))
    per_kind = [float(np.mean(found[kind == t])) for t in range(len(TRANSFORMS)) if (kind == t).any()]
    worst = int(np.argmin(per_kind))
    return Calibration(
        copy_cut=copy_cut, similar_cut=similar_cut, target_rate=target_rate, similar_rate=similar_rate,
        null_samples=len(null), null_q50=float(np.quantile(null, 0.5)), null_q90=float(np.quantile(null, 0.9)),
        null_q99=float(np.quantile(null, 0.99)), null_max=float(null.max()), likely_copies=int(model.likely.sum()),
        tail_threshold=float(np.tanh(model.tail_threshold)), tail_scale=model.tail_scale, positives=len(pos), positive_q05=p05,
        positive_q50=float(np.quantile(pos, 0.5)), positive_recall=float(np.mean(found)),
        positive_recall_min=per_kind[worst], positive_worst=TRANSFORMS[worst].name, seed=seed,
        null_pixel_agree=null_pixel_agree, **model_values)
