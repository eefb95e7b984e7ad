"""Register two small images: find the similarity transform (shift, zoom, small rotation, mirror) that maps one
onto the other, with sub-pixel accuracy, and score how well they agree where they overlap.

Both images are first brought to a common working side and turned into band-passed grey (a difference of
Gaussians): the band-pass removes what a re-grade, a grey conversion or a JPEG re-encode changes (overall level,
contrast, smooth gradients, the finest pixel noise) and keeps the structure a copy shares with its source. Uniform
frames and letterbox bars are found per image and filled with the neighbouring content before filtering, so their
edges do not count, and the score only covers the overlap of the two images' content (borders excluded).

Search, coarse to fine:

1. Template matching (OpenCV ``matchTemplate``, normalised cross-correlation at every integer shift) of the
   central part of one image, zoomed by each of ``SCALES`` (the image whose content looks bigger is shrunk, so
   its template always fits), in both orientations;
2. small rotations (``ANGLES``) at the best zoom and orientation;
3. a pattern search over (zoom, angle, dx, dy) in shrinking steps that scores the band-passed NCC on the
   overlap directly -- the sub-pixel refinement. Steps 1-2 run per pair (OpenCV calls); the refinement and the
   final scores run for all pairs of a batch at once (:class:`_Stack`: one warp of every pair per step).

Pairs whose best coarse score stays under ``PRUNE`` (far below any copy) skip the refinement: most candidates
are distinct images, and they cost only the coarse stage.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from .columns import Columns

#: Working side: images are resized to SIDE x SIDE (32-px images upsampled 1.5x: sub-pixel shifts become visible).
SIDE = 48
#: Zooms tried by the coarse search: the content of one image is up to 25% bigger than the other's.
SCALES = (1.0, 1.08, 1.16, 1.25)
#: Rotations (degrees) tried at the best zoom and orientation.
ANGLES = (-8.0, -4.0, 4.0, 8.0)
#: The template is this central share of the (shrunk) image: 15% of the side excluded on each edge.
TEMPLATE = 0.7
#: Band-pass: Gaussian sigmas (in working pixels at SIDE = 48) of the fine smoothing and of the background removed.
SIGMA_FINE = 1.2
SIGMA_COARSE = 4.0
#: The final score blurs the sharper of the two by RESOLUTION_SIGMA * sqrt(|k^2 - 1|) working pixels (k: the zoom)
#: so both show the same detail.
RESOLUTION_SIGMA = 2.0
#: Blurs (Gaussian sigmas, working pixels) each image of a pair is also scored with at its final transform, the best
#: score kept: a copy resampled with a smoother kernel than its source's (benchmarks/copy_suites.py, Fashion-MNIST:
#: the training images grown to 32 px bicubic, the copies re-rendered bilinear; planted pairs scoring 0.99 or more
#: 0.32 -> 0.56, the null's 99th percentile 0.9918 -> 0.9923). Only pairs scoring RESOLUTION_FROM or more are tried,
#: and only tiny images' (thumbnails grown to the working side: their own pixels, kernel and all); a photo's
#: thumbnail is an area average of many pixels, which no longer shows the kernel, and there the tries only raised
#: the null (256-px suite: cut 0.9859 -> 0.9875, two copies fewer).
RESOLUTION_TRIES = (0.9, 1.3)
RESOLUTION_FROM = 0.8
#: Uniform frame detection: outer rows/columns with a grey standard deviation under FRAME_STD, up to FRAME_MAX of
#: the side, are a frame (or letterbox bar).
FRAME_STD = 3.0
FRAME_MAX = 0.3
#: A frame of one colour all round is also found through noise. JPEG's ringing at 32 px puts a grey frame's rows at
#: a grey spread of 2-5, over FRAME_STD, so the frame was found on some sides only (``benchmarks/copy_check.py
#: --files``: 8% frames found whole on 0.2 of the copies). Where the four outermost lines share one colour (medians
#: within FRAME_COLOUR, spreads under FRAME_NOISY), rows of that colour and spread count as frame on each side whose
#: run ends at an edge (spread or colour change of FRAME_EDGE), when at least three sides do. Without the colour all
#: round and the edge, low-contrast photos (a sky, a night scene's dark sides) got boxes: 289 of the 32-px suite's
#: 1,793 boxes moved, and the null's cut rose from 0.971 to 0.991.
FRAME_NOISY = 8.0
FRAME_COLOUR = 6.0
FRAME_EDGE = 16.0
#: Bars on two opposite sides only (a letterbox, a pillarbox) are found through JPEG's noise in the same way, where
#: both are of one colour, equally wide and edged by content all along: at least BAR_SHARE of the first content line's
#: pixels PLAIN_OFF grey levels or more off the bars' colour. At 32 px, JPEG q75-94 put a letterbox's black rows at a
#: grey spread of 2-5 (``benchmarks/copy_check.py --files``: 8 of the 10 missed letterboxed copies had a box of 0-2
#: rows where the bars were 3 on either side); their content lines' shares were 0.94-1.0.
BAR_SHARE = 0.9
#: The largest offset of b's centre from a's (share of the side): a window moved further is another framing of
#: the scene (a neighbouring crop), not a copy; copies shift a few pixels or crop at most ~20% (offset 10%).
MAX_OFFSET = 0.15
#: A view inside the other's frame may lie further off-centre than MAX_OFFSET, as far as its zoom allows, to within
#: this share of the side (:func:`too_far`): a crop of 25% from a corner, or a rotated crop.
CONTAINED = 0.03
#: Working pixels left out of the score along each edge of a content box: the band-pass there saw the image's
#: reflected border or a frame's fill, which a shifted or re-framed copy does not share.
MARGIN = 3
#: The pixel agreement: a registered pair whose grey levels differ by at most PIXEL_MAD on average over the overlap
#: (at the working side) is the same picture, whatever the structural score -- a viewer sees no difference (the
#: definition of Fashion-MNIST's duplicates in issue #11: within 4 grey levels). Only where a's grey spread there is at
#: least PIXEL_SPREAD: near-blank images agree to a few grey levels without being one shot (their own check reports
#: them). The band-passed NCC loses such pairs: on flat garments the few grey levels of noise are most of the band.
PIXEL_MAD = 4.0
PIXEL_SPREAD = 16.0
#: The level agreement (:func:`~.verify.level`): a registered pair's mean absolute grey difference over the overlap
#: relative to a's grey spread there plus LEVEL_SOFTEN grey levels. The softening is a noise floor: JPEG and
#: resampling at 32 px move grey levels by 1-2 on their own, so a near-flat image (spread 3) must agree to under a grey
#: level, not to a share of its spread, to count.
LEVEL_SOFTEN = 8.0
#: The level rule compares grey levels blurred by this many working pixels (Gaussian sigma): JPEG's blocks and
#: ringing and the resampling of a shifted copy are fine detail, and a distinct crop of the same scene differs in its
#: coarse levels (where the gradient of a sky or a wall lies), which the blur keeps.
SMOOTH_SIGMA = 1.5
#: Pairs whose coarse score stays under PRUNE skip the refinement (benchmarks/copy_suites.py pairs: no planted copy
#: peaks under 0.7 at full resolution from the screen's start; 62% / 55% / 7% of the distinct pairs of the 32-px,
#: 128-px and Fashion-MNIST suites peak under 0.6, and none of them refines above 0.92).
PRUNE = 0.6
#: The overlap must cover this share of the smaller content box, or the score is 0 (a sliver proves nothing).
MIN_OVERLAP = 0.35


@dataclass(frozen=True)
class Prepared(Columns):
    """Working images of N images: band-passed grey ``image`` (N, S, S) float32, the same at half resolution
    (``small``, for the coarse search) and the content ``box`` (N, 4)
    as x0, y0, x1, y1 (inclusive, working pixels) inside any uniform frame; ``energy`` the band-passed RMS;
    ``grey`` the working-size grey levels themselves (for the pixel agreement, :data:`PIXEL_MAD`);
    ``small_mirror`` the half-resolution image of the mirrored ``image`` (not ``small`` mirrored: see
    :func:`halve`)."""

    image: np.ndarray
    small: np.ndarray
    box: np.ndarray
    energy: np.ndarray
    grey: np.ndarray
    small_mirror: np.ndarray


@dataclass(frozen=True)
class Transform:
    """Per pair: the band-passed NCC on the overlap (``score``, -1..1), and the transform found: ``mirrored`` (b
    flipped left-right), ``scale`` (b's content size over a's: > 1 when b is zoomed in or cropped), ``angle``
    (degrees, b relative to a), ``dx``/``dy`` (b's centre relative to a's, as a share of the side), ``overlap``
    (share of the smaller content box that was scored); ``mad`` the mean absolute difference of the two images'
    grey levels on the overlap at that transform, and ``spread`` the grey standard deviation of a there (the pixel
    agreement: :data:`PIXEL_MAD`); ``still`` when that MAD is of the two whole images as they lie (no transform);
    ``smooth_mad`` the same MAD of the two grey images blurred by :data:`SMOOTH_SIGMA` (the level rule's)."""

    score: np.ndarray
    mirrored: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    overlap: np.ndarray
    mad: np.ndarray
    spread: np.ndarray
    still: np.ndarray
    smooth_mad: np.ndarray


@dataclass(frozen=True)
class Registration(Columns, Transform):
    """A :class:`Transform` per pair, as a column table (the screen's answer too, with ``overlap`` NaN)."""


def to_grey(images: np.ndarray) -> np.ndarray:
    """(N, h, w) or (N, h, w, 3) pixels -> (N, h, w) float32 grey (ITU-R 601 luma, as Pillow's ``convert("L")``)."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4:
        x = x[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return x


def _batch(op, stack: np.ndarray, width: int = 128) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Apply a 2-D OpenCV ``op`` to N images at once, as ``width`` channels of one image (OpenCV takes up to 128;
    a resize by a non-integer factor with INTER_AREA only 4)."""
    out = []
    for s in range(0, len(stack), width):
        chunk = np.ascontiguousarray(np.moveaxis(stack[s : s + width], 0, -1))
        r = op(chunk)
        out.append(np.moveaxis(r.reshape(r.shape[0], r.shape[1], -1), -1, 0))
    return np.concatenate(out) if out else np.zeros((0,) + op(np.zeros(stack.shape[1:3], np.float32)).shape, np.float32)


def _noisy_run(x: np.ndarray, d: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the outer lines ``x`` (N, limit, length) of one side, with spreads ``d`` (N, limit): the run of lines of the
    colour ``c`` (N,) within noise (:data:`FRAME_NOISY`, :data:`FRAME_COLOUR`) from the edge, and whether it ends at an
    edge of the content (a spread or a colour change of :data:`FRAME_EDGE`)."""
    m = np.median(x, axis=2)
    r = np.cumprod((d < FRAME_NOISY) & (np.abs(m - c[:, None]) <= FRAME_COLOUR), axis=1).sum(axis=1)
    nxt = np.minimum(r, d.shape[1] - 1)[:, None]
    step = ((np.take_along_axis(d, nxt, 1)[:, 0] >= FRAME_EDGE)
            | (np.abs(np.take_along_axis(m, nxt, 1)[:, 0] - c) >= FRAME_EDGE))
    return r, (r > 0) & (r < d.shape[1]) & step


def _edge_share(x: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The share of the pixels of line ``r`` of ``x`` (N, limit, length) at least :data:`PLAIN_OFF` off the colour ``c``."""
    line = np.take_along_axis(x, np.minimum(r, x.shape[1] - 1)[:, None, None], 1)[:, 0]
    return (np.abs(line - c[:, None]) >= PLAIN_OFF).mean(axis=1)


def frames(grey: np.ndarray) -> np.ndarray:
    """(N, 4) content boxes x0, y0, x1, y1 (inclusive) inside uniform outer rows and columns (a frame, letterbox
    bars), all images at once; the whole image where (almost) all is uniform."""
    _, h, w = grey.shape
    my, mx = int(h * FRAME_MAX), int(w * FRAME_MAX)
    run = lambda m: np.cumprod(m, axis=1).sum(axis=1)  # leading uniform rows
    # the outer ``limit`` rows (or columns) from each side, as (N, limit, length) stacks: top, bottom, left, right
    lines = [grey[:, :my], grey[:, ::-1][:, :my], grey.transpose(0, 2, 1)[:, :mx], grey.transpose(0, 2, 1)[:, ::-1][:, :mx]]
    sd = [x.std(axis=2) for x in lines]
    top, bottom, left, right = strict = [run(d < FRAME_STD) for d in sd]
    outer = np.stack([np.median(x[:, 0], axis=1) for x in lines], axis=1)
    colour = np.median(outer, axis=1)
    ring = np.flatnonzero((np.abs(outer - colour[:, None]) <= FRAME_COLOUR).all(axis=1)
                          & (np.stack([d[:, 0] for d in sd], axis=1) < FRAME_NOISY).all(axis=1))
    if len(ring):  # the rows' medians only there (4x the time of the rest for every image)
        loose, edged = zip(*(_noisy_run(x[ring], d[ring], colour[ring]) for x, d in zip(lines, sd)))
        # a frame: one colour all round, ending at an edge on at least three sides (the fourth may run into content
        # of the frame's colour); a low-contrast photo's sides fade into it
        framed = np.sum(edged, axis=0) >= 3
        for st, r, e in zip(strict, loose, edged):
            st[ring] = np.where(framed & e, np.maximum(st[ring], r), st[ring])
    for one, other in ((0, 1), (2, 3)):  # letterbox bars (top and bottom), pillarbox bars (left and right)
        colour_pair = (outer[:, one] + outer[:, other]) / 2
        pair = np.flatnonzero((np.abs(outer[:, one] - outer[:, other]) <= FRAME_COLOUR)
                              & (sd[one][:, 0] < FRAME_NOISY) & (sd[other][:, 0] < FRAME_NOISY)
                              & (strict[one] < my) & (strict[other] < my))
        if not len(pair):
            continue
        c = colour_pair[pair]
        (r1, e1), (r2, e2) = (_noisy_run(lines[k][pair], sd[k][pair], c) for k in (one, other))
        # both bars edged by content all along (a garment's outline on a plain background is not: its share is
        # 0.25 at the median, 0.9 or more for 0.2% of Fashion-MNIST's images), as wide as each other within a pixel
        # or a quarter (a dark sky over dark ground fades into the scene at two unrelated depths)
        bars = (e1 & e2 & (np.abs(r1 - r2) <= np.maximum(1, np.maximum(r1, r2) // 4))
                & (_edge_share(lines[one][pair], r1, c) >= BAR_SHARE) & (_edge_share(lines[other][pair], r2, c) >= BAR_SHARE))
        for side, r in ((one, r1), (other, r2)):
            strict[side][pair] = np.where(bars, np.maximum(strict[side][pair], r), strict[side][pair])
    box = np.stack([left, top, w - 1 - right, h - 1 - bottom], axis=1).astype(np.int64)
    tiny = (box[:, 2] - box[:, 0] < w // 4) | (box[:, 3] - box[:, 1] < h // 4)
    box[tiny] = (0, 0, w - 1, h - 1)
    return box


#: Objects on a plain background (garments, digits, product shots): :func:`frames` takes their uniform surround for a
#: frame, and :func:`prepare` would paint it with the content box's edge lines, streaks that a shifted or zoomed copy
#: does not repeat. A box side is the outline of an object, not a frame, where under PLAIN_SHARE of its inner edge
#: line's pixels are PLAIN_OFF grey levels or more off the surround's colour (frames added around photos: median
#: share 1.0; Fashion-MNIST's garments: 0.22).
PLAIN_OFF = 16.0
PLAIN_SHARE = 0.5
#: A dataset is one of objects on a plain background where at least PLAIN_DATASET of its training images (a sample
#: of PLAIN_SAMPLE, evenly spaced) have such a side: Fashion-MNIST 0.95, scikit-learn's digits 0.99, the 32-px and
#: 64-px photo tiles of benchmarks/copy_suites.py 0.19-0.30 (a sky or a dark ground is a flat side too, and there
#: the box must stay: dropped for photos, the null's cut fell and false pairs rose to 3 per 1,000). Decided once
#: per dataset, so that a source and its copies are treated alike.
PLAIN_DATASET = 0.5
PLAIN_SAMPLE = 2000


def _surround(grey: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Per image of ``grey`` (float32, N x h x w): the median grey level outside its content box ``f`` (N, 4; each
    box smaller than the image)."""
    n, h, w = grey.shape
    ys, xs = np.arange(h), np.arange(w)
    x0, y0, x1, y1 = (f[:, k] for k in range(4))
    inside = (((ys[None, :, None] >= y0[:, None, None]) & (ys[None, :, None] <= y1[:, None, None]))
              & ((xs[None, None, :] >= x0[:, None, None]) & (xs[None, None, :] <= x1[:, None, None])))
    return np.nanmedian(np.where(inside, np.nan, grey).reshape(n, -1), axis=1)


def _edge_lines(g: np.ndarray, f: np.ndarray, depth: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each side (left, top, right, bottom) of the boxes ``f`` of images ``g``: the line ``depth`` pixels inside
    the box, as (N, length) with the box's extent along it (lo, hi) to mask it by."""
    r = np.arange(len(g))
    x0, y0, x1, y1 = (f[:, k] for k in range(4))
    return [(g[r, :, np.minimum(x0 + depth, g.shape[2] - 1)], y0, y1), (g[r, np.minimum(y0 + depth, g.shape[1] - 1), :], x0, x1),
            (g[r, :, np.maximum(x1 - depth, 0)], y0, y1), (g[r, np.maximum(y1 - depth, 0), :], x0, x1)]


def _masked_mean(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    idx = np.arange(values.shape[1])
    within = (idx[None, :] >= lo[:, None]) & (idx[None, :] <= hi[:, None])
    return (values * within).sum(axis=1) / np.maximum(within.sum(axis=1), 1)


def plain_sides(grey: np.ndarray, f: np.ndarray) -> np.ndarray:
    """The content boxes ``f`` (N, 4, of ``grey`` (N, h, w)) with each side that is an object's outline on a plain
    background (:data:`PLAIN_SHARE`) moved out to the image's edge; sides that cut content (a frame, a bar, a crop
    of the object) stay. Vectorised."""
    n, h, w = grey.shape
    out = np.array(f, np.int64, copy=True)
    rows = np.flatnonzero((out != (0, 0, w - 1, h - 1)).any(axis=1))
    if not len(rows):
        return out
    g, box = np.asarray(grey[rows], np.float32), out[rows]
    surround = _surround(g, box)
    edge = (box[:, 0] > 0, box[:, 1] > 0, box[:, 2] < w - 1, box[:, 3] < h - 1)
    outer = (0, 0, w - 1, h - 1)
    for side, (line, lo, hi) in enumerate(_edge_lines(g, box, 0)):
        off = (np.abs(line - surround[:, None]) >= PLAIN_OFF).astype(np.float32)
        plain = edge[side] & (_masked_mean(off, lo, hi) < PLAIN_SHARE)
        out[rows[plain], side] = outer[side]
    return out


#: A frame's edge blurred by resampling (a framed copy shrunk, saved as JPEG, grown back: 24% of such copies were
#: found on the 32-px files shrunk to 18-32 px) leaves the content box's outermost line a blend of the frame's colour
#: and the content, which :func:`prepare` would repeat across the frame. A cut side whose edge line lies less than
#: BLEND as far from the surround's colour (mean absolute difference) as the line inside it, that one at least
#: BLEND_CONTRAST grey levels from it, is moved one pixel in.
BLEND = 0.7
BLEND_CONTRAST = 8.0


def blended_sides(grey: np.ndarray, f: np.ndarray) -> np.ndarray:
    """The content boxes ``f`` (N, 4, of ``grey`` (N, h, w)) moved one pixel in on each cut side whose edge line is a
    blend of the surround and the content (:data:`BLEND`); boxes under 7 pixels across stay. Vectorised."""
    n, h, w = grey.shape
    out = np.array(f, np.int64, copy=True)
    rows = np.flatnonzero((out != (0, 0, w - 1, h - 1)).any(axis=1)
                          & (out[:, 2] - out[:, 0] >= 6) & (out[:, 3] - out[:, 1] >= 6))
    if not len(rows):
        return out
    g, box = np.asarray(grey[rows], np.float32), out[rows]
    surround = _surround(g, box)
    edge = (box[:, 0] > 0, box[:, 1] > 0, box[:, 2] < w - 1, box[:, 3] < h - 1)
    step = (1, 1, -1, -1)
    for side, ((l0, lo, hi), (l1, _, _)) in enumerate(zip(_edge_lines(g, box, 0), _edge_lines(g, box, 1))):
        d0 = _masked_mean(np.abs(l0 - surround[:, None]), lo, hi)
        d1 = _masked_mean(np.abs(l1 - surround[:, None]), lo, hi)
        blend = edge[side] & (d1 > BLEND_CONTRAST) & (d0 < BLEND * d1)
        out[rows[blend], side] += step[side]
    return out


def framed_all_round(grey: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Mask over the images ``grey`` (N, h, w) with content boxes ``f`` (N, 4): a frame on three sides or more, with
    content along every cut side (at least :data:`BAR_SHARE` of the line inside the box's edge line
    :data:`PLAIN_OFF` or more off the surround), not an object's outline on a plain background. Vectorised."""
    n, h, w = grey.shape
    cut = np.asarray(f) != (0, 0, w - 1, h - 1)
    out = np.zeros(n, bool)
    rows = np.flatnonzero(cut.sum(axis=1) >= 3)
    if not len(rows):
        return out
    g, box = np.asarray(grey[rows], np.float32), np.asarray(f, np.int64)[rows]
    surround = _surround(g, box)
    ok = np.ones(len(rows), bool)
    for side, (line, lo, hi) in enumerate(_edge_lines(g, box, 1)):
        share = _masked_mean((np.abs(line - surround[:, None]) >= PLAIN_OFF).astype(np.float32), lo, hi)
        ok &= ~cut[rows, side] | (share >= BAR_SHARE)
    out[rows] = ok
    return out


def plain_share(thumbs: np.ndarray, rows: np.ndarray) -> float:
    """The share of the images ``rows`` of ``thumbs`` (a sample of :data:`PLAIN_SAMPLE`, evenly spaced) with a content
    box side that is an object's outline on a plain background (:func:`plain_sides`); 0 for none."""
    rows = np.asarray(rows, np.int64)
    if not len(rows):
        return 0.0
    rows = rows[np.unique(np.linspace(0, len(rows) - 1, min(len(rows), PLAIN_SAMPLE)).astype(np.int64))]
    grey = to_grey(thumbs[rows])
    f = frames(grey)
    return float((plain_sides(grey, f) != f).any(axis=1).mean())


#: Relative aspects within this factor of 1 are 1: sizes rounded to whole pixels (500 x 375 against 4000 x 3000).
ASPECT_SAME = 1.02


def unsquash(grey: np.ndarray, f: np.ndarray, aspect: np.ndarray) -> np.ndarray:
    """Thumbnails squashed to a square from images of another shape than the dataset's, back to that shape: each
    of ``grey`` (N, h, w, float32, changed in place) whose relative ``aspect`` (its width / height over the
    dataset's typical one) is not 1 is squeezed along one axis by it and padded with its own edge, and its content
    box ``f`` (N, 4, native pixels, changed in place) set to the content. A square centre crop of a 4:3 photo is
    then the photo's middle, as a crop is, not the photo stretched by 1.33 (no similarity maps one onto the other:
    4 of 41 such copies were found). Returns the rows changed."""
    import cv2

    n, h, w = grey.shape
    rows = np.flatnonzero(np.abs(np.log(np.asarray(aspect, np.float64))) > math.log(ASPECT_SAME))
    for i in rows.tolist():
        r = float(aspect[i])
        cw, ch = (w, max(2, int(round(h / r)))) if r > 1 else (max(2, int(round(w * r))), h)
        sx, sy = cw / w, ch / h
        left, top = (w - cw) // 2, (h - ch) // 2
        small = cv2.resize(grey[i], (cw, ch), interpolation=cv2.INTER_AREA)
        grey[i] = cv2.copyMakeBorder(small, top, h - ch - top, left, w - cw - left, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = f[i].tolist()
        f[i] = (left + math.ceil(x0 * sx), top + math.ceil(y0 * sy), left + min(cw - 1, int((x1 + 1) * sx) - 1),
                top + min(ch - 1, int((y1 + 1) * sy) - 1))
    return rows


def prepare(images: np.ndarray, side: int = SIDE, aspect: np.ndarray | None = None, plain: bool = False) -> Prepared:
    """Working images for registration from N thumbnails of one size (grey or RGB, any side); vectorised.
    ``aspect``: each image's width / height relative to the dataset's (:func:`unsquash`; None: all alike);
    ``plain``: the dataset is one of objects on a plain background (:data:`PLAIN_DATASET`): box sides that are an
    object's outline are no frame (:func:`plain_sides`)."""
    import cv2

    grey = to_grey(images)
    n, h, w = grey.shape
    if n == 0:
        z = np.zeros((0, side, side), np.float32)
        h0 = np.zeros((0, side // 2, side // 2), np.float32)
        return Prepared(z, h0, np.zeros((0, 4), np.int64), np.zeros(0, np.float32), z, h0)
    # The frame is found at the native resolution (resizing blurs its edge) and replaced there by the content's edge,
    # before resizing: resized with the image, a black or white frame's step rang into the content (cubic kernels
    # reach 2 native pixels), and on low-contrast content that ringing was much of the band-passed structure (32-px
    # copies in 12% frames of 0 or 255 scored 0.68 of their pairs at the cut, in frames of 128 0.84).
    f = frames(grey)
    if plain:
        f = plain_sides(grey, f)
    # frames and bars only (content cut off on two opposite sides): a photo's flat side (a sky) meets its content
    # without a step
    framed = np.flatnonzero(((f[:, 0] > 0) & (f[:, 2] < w - 1)) | ((f[:, 1] > 0) & (f[:, 3] < h - 1)))
    # Tiny images (grown to the working side) have their content box moved inside a blurred frame edge
    # (:func:`blended_sides`). Not photos' thumbnails: a 96-px copy in a white frame, its edge blended by the area
    # average to 64 px, registered at zoom 1 (0.61) instead of 1.2 (0.81) once its box moved (tests/test_copies.py).
    # Not objects on a plain background: a line there that blends into the surround is the object's own anti-aliased
    # outline, which a copy moved by a pixel blends otherwise.
    if not plain and h < side and w < side:
        f = blended_sides(grey, f)
    if len(framed):
        grey = grey if grey is not images else grey.copy()
        for i in framed.tolist():
            x0, y0, x1, y1 = f[i].tolist()
            grey[i] = cv2.copyMakeBorder(np.ascontiguousarray(grey[i, y0 : y1 + 1, x0 : x1 + 1]), y0, h - 1 - y1, x0,
                                         w - 1 - x1, cv2.BORDER_REPLICATE)
    if aspect is not None and (np.abs(np.log(np.asarray(aspect, np.float64))) > math.log(ASPECT_SAME)).any():
        grey = grey if grey is not images else grey.copy()
        unsquash(grey, f, aspect)
    if (h, w) == (side, side):
        g = grey.copy()
    elif h > side and h % side == 0 and w % side == 0:  # INTER_AREA by an integer factor: block means
        g = grey.reshape(n, side, h // side, side, w // side).mean(axis=(2, 4))
    else:
        interp = cv2.INTER_AREA if h > side else cv2.INTER_CUBIC
        g = _batch(lambda c: cv2.resize(c, (side, side), interpolation=interp), grey, 4 if interp == cv2.INTER_AREA else 128)
    # The box mapped to working pixels with one more pixel off each framed side (where the resize blurred the
    # content's edge into its replicated fill).
    sx, sy = side / w, side / h
    boxes = np.stack([np.ceil(f[:, 0] * sx).astype(np.int64) + (f[:, 0] > 0),
                      np.ceil(f[:, 1] * sy).astype(np.int64) + (f[:, 1] > 0),
                      side - 1 - (np.ceil((w - 1 - f[:, 2]) * sx).astype(np.int64) + (f[:, 2] < w - 1)),
                      side - 1 - (np.ceil((h - 1 - f[:, 3]) * sy).astype(np.int64) + (f[:, 3] < h - 1))], axis=1)
    for i in np.flatnonzero((boxes != (0, 0, side - 1, side - 1)).any(axis=1)).tolist():
        # Fill the frame with the content's edge, so the frame's border is no structure.
        x0, y0, x1, y1 = boxes[i].tolist()
        g[i] = cv2.copyMakeBorder(np.ascontiguousarray(g[i, y0 : y1 + 1, x0 : x1 + 1]), y0, side - 1 - y1, x0,
                                  side - 1 - x1, cv2.BORDER_REPLICATE)
    out = band_pass(g)
    energy = np.sqrt((out**2).mean(axis=(1, 2)))
    small, small_mirror = halve(out)
    return Prepared(out, small, boxes, energy, g.astype(np.float32), small_mirror)


def band_pass(grey: np.ndarray, fine: float = SIGMA_FINE, coarse: float = SIGMA_COARSE) -> np.ndarray:
    """(N, S, S) working grey images band-passed as the scores read them: a difference of Gaussians (``fine``,
    ``coarse`` at 48 px, scaled with the side; default :data:`SIGMA_FINE`, :data:`SIGMA_COARSE`)."""
    import cv2

    k = grey.shape[1] / 48.0
    blur = lambda s: _batch(lambda c: cv2.GaussianBlur(c, (0, 0), s * k, borderType=cv2.BORDER_REFLECT), grey)
    return (blur(fine) - blur(coarse)).astype(np.float32)


def halve(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The half-resolution images of band-passed working images, and of the same images mirrored.

    Why both: ``cv2.pyrDown`` keeps the even columns (0, 2, ..., S - 2), whose mirror axis is (S - 2) / 2, while the
    image's is (S - 1) / 2, so ``small[:, :, ::-1]`` lies half a half-resolution pixel off a true mirror. Band-passed
    structure loses much of its correlation over half a pixel: a plain mirrored copy of a 32-px garment screened at
    0.93 (median; the same copy re-graded, unmirrored: 0.99), below distinct look-alikes, and was not registered."""
    import cv2

    return _batch(cv2.pyrDown, image), _batch(cv2.pyrDown, np.ascontiguousarray(image[:, :, ::-1]))


#: The aperture problem: a pair where an image has structure this close to one direction (the smaller eigenvalue of
#: the band-passed structure tensor under APERTURE of the larger: one edge, and flat colour either side) registers
#: along that edge wherever a stretch of it fits. A copy and a neighbouring crop of the edge then score alike
#: (benchmarks/copy_suites.py: every false pair of the 32-px, 128-px and 256-px suites was two crops of the retina's
#: rim, isotropy 0.004-0.014; 5 of 900 and 2 of 378 planted copies have both images under 0.015). Since the
#: twenty-fifth session one such image is enough (:func:`~.verify.demote_apertures`).
APERTURE = 0.015


def isotropy(prep: Prepared) -> np.ndarray:
    """Per image of ``prep``: the smaller over the larger eigenvalue of the structure tensor of its band-passed
    working image inside its inset content box, in [0, 1]: 0 for one straight edge, near 1 for texture."""
    import cv2

    img = prep.image
    n, side, _ = img.shape
    if n == 0:
        return np.zeros(0)
    gx = _batch(lambda c: cv2.Sobel(c, cv2.CV_32F, 1, 0, ksize=3), img)
    gy = _batch(lambda c: cv2.Sobel(c, cv2.CV_32F, 0, 1, ksize=3), img)
    ins = _inset(prep.box, side)
    r = np.arange(side)
    inside = (((r[None, :] >= ins[:, 1:2]) & (r[None, :] <= ins[:, 3:4]))[:, :, None]
              & ((r[None, :] >= ins[:, 0:1]) & (r[None, :] <= ins[:, 2:3]))[:, None, :]).astype(np.float32)
    jxx = (gx * gx * inside).sum(axis=(1, 2), dtype=np.float64)
    jyy = (gy * gy * inside).sum(axis=(1, 2), dtype=np.float64)
    jxy = (gx * gy * inside).sum(axis=(1, 2), dtype=np.float64)
    half = (jxx + jyy) / 2
    disc = np.sqrt(np.maximum(half * half - (jxx * jyy - jxy * jxy), 0.0))
    return np.where(half > 0, (half - disc) / np.maximum(half + disc, 1e-12), 1.0)


def mirror_box(box: np.ndarray, side: int) -> np.ndarray:
    """Content boxes (..., 4) of the images mirrored left-right."""
    box = np.asarray(box)
    return np.stack([side - 1 - box[..., 2], box[..., 1], side - 1 - box[..., 0], box[..., 3]], axis=-1)


def _matrix(k: float, theta: float, dx: float, dy: float, c: float) -> np.ndarray:
    """2x3 map from a's working coordinates to b's: x_b = k R(theta) (x_a - c - d) + c."""
    t = math.radians(theta)
    co, si = k * math.cos(t), k * math.sin(t)
    px, py = c + dx, c + dy
    return np.array([[co, -si, c - (co * px - si * py)], [si, co, c - (si * px + co * py)]])


def too_far(params: np.ndarray, side: int) -> np.ndarray:
    """Per parameter row (k, theta, dx, dy in working pixels): b's centre lies further from a's than MAX_OFFSET of
    the side, and the smaller view is not inside the larger one (to within CONTAINED of the side). A view zoomed k
    times lies inside the other's frame while its centre is within side (1 - 1/k) / 2 of the other's on each axis: a
    25% corner crop is 12.5% off on both axes, 0.18 of the side in all, past MAX_OFFSET while every pixel of it is
    the source's. At zoom 1 only MAX_OFFSET counts: a neighbouring crop of one scene is another framing, not a copy.
    The two allowances are not added: a neighbouring crop zoomed 7% and 17% off (a distinct 32-px tile that passed
    the level rule) is neither."""
    params = np.asarray(params, np.float64).reshape(-1, 4)
    k = np.maximum(params[:, 0], 1e-6)
    slack = 0.5 * side * np.abs(1.0 - 1.0 / k)
    ex = np.maximum(np.abs(params[:, 2]) - slack, 0.0)
    ey = np.maximum(np.abs(params[:, 3]) - slack, 0.0)
    return ((params[:, 2] ** 2 + params[:, 3] ** 2 > (MAX_OFFSET * side) ** 2)
            & (ex * ex + ey * ey > (CONTAINED * side) ** 2))


def _inset(box: np.ndarray, side: int) -> np.ndarray:
    """The content boxes (P, 4) less MARGIN (scaled to ``side``) on each side, where the band-pass saw padding or
    fill; a box too small for that is kept whole."""
    m = int(round(MARGIN * side / 48.0))
    box = np.asarray(box, np.int64).reshape(-1, 4)
    big = (box[:, 2] - box[:, 0] > 4 * m) & (box[:, 3] - box[:, 1] > 4 * m)
    return np.where(big[:, None], box + np.array([m, m, -m, -m]), box)


class _Pair:
    """The template search of one pair: a fixed, b in one orientation (band-passed working images)."""

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        self.a, self.b = a, b

#: Pairs per block of a batched score: one cv2.remap over a mosaic of their b images (OpenCV's remap takes images
#: under 32,767 rows: 682 tiles of 48 rows), and ~10 MB of temporaries.
BLOCK = 256


def _matrices(params: np.ndarray, c: float) -> np.ndarray:
    """:func:`_matrix` for P parameter rows (k, theta, dx, dy) at once: (P, 2, 3)."""
    k, theta, dx, dy = (params[:, i] for i in range(4))
    t = np.radians(theta)
    co, si = k * np.cos(t), k * np.sin(t)
    px, py = c + dx, c + dy
    return np.stack([np.stack([co, -si, c - (co * px - si * py)], 1), np.stack([si, co, c - (si * px + co * py)], 1)], 1)


class _Stack:
    """P pairs scored together: a fixed, b in its chosen orientation. One score of all P pairs at P sets of
    parameters is one batched warp (``cv2.remap`` over a mosaic of the b images; the overlap mask compared on the map)
    and masked sums, all in a few passes over float32 arrays
    (~10 us per pair and step, against ~80 us for a warp and a masked NCC in Python per pair; the large operations
    release the GIL)."""

    def __init__(self, a: np.ndarray, box_a: np.ndarray, b: np.ndarray, box_b: np.ndarray) -> None:
        p, side, _ = a.shape
        self.side, self.c = side, (side - 1) / 2.0
        ins_a = _inset(box_a, side)
        ins_b = _inset(box_b, side)
        self.area = np.maximum((ins_a[:, 2] - ins_a[:, 0] + 1) * (ins_a[:, 3] - ins_a[:, 1] + 1), 1).astype(np.float64)
        self.area_b = np.maximum((ins_b[:, 2] - ins_b[:, 0] + 1) * (ins_b[:, 3] - ins_b[:, 1] + 1), 1).astype(np.float64)
        self.a = np.ascontiguousarray(a.reshape(p, -1), np.float32)
        # scores cover the rows and columns of a's frame that some pair's inset box holds (without frames: the
        # margins go, 42 x 42 of 48 x 48); a's own pixels there, and their squares, kept for every score
        self.crop = ((int(ins_a[:, 1].min()), int(ins_a[:, 3].max()) + 1, int(ins_a[:, 0].min()), int(ins_a[:, 2].max()) + 1)
                     if p else (0, side, 0, side))
        self.ac = self.cropped(self.a)
        r = np.arange(side)
        in_y = (r[None, :] >= ins_a[:, 1:2]) & (r[None, :] <= ins_a[:, 3:4])
        in_x = (r[None, :] >= ins_a[:, 0:1]) & (r[None, :] <= ins_a[:, 2:3])
        self.in_a = self.cropped(in_y[:, :, None] & in_x[:, None, :])
        self.aac = self.ac * self.ac
        # the mosaic: each b inside a 1-px zero border (warpAffine's constant border: a sample within a pixel of the
        # tile sees zeros, as the original's outside did); b's inset content box, in tile coordinates, is the mask's
        self.mosaic = np.zeros((p, side + 2, side + 2), np.float32)
        self.mosaic[:, 1:-1, 1:-1] = b
        self.box_b = (ins_b + 1).astype(np.float64)

    def __len__(self) -> int:
        return len(self.a)

    def take(self, rows: np.ndarray) -> _Stack:
        """The stack of the pairs ``rows`` (a mask or indices): the same arrays' rows, not built again."""
        out = object.__new__(_Stack)
        out.side, out.c, out.crop = self.side, self.c, self.crop
        for name in ("area", "area_b", "a", "ac", "aac", "in_a", "mosaic", "box_b"):
            setattr(out, name, getattr(self, name)[rows])
        return out

    def with_b(self, b: np.ndarray) -> np.ndarray:
        """A mosaic like this stack's with other b images (same content boxes)."""
        m = self.mosaic.copy()
        m[:, 1:-1, 1:-1] = b
        return m

    def _sample(self, rows: slice, params: np.ndarray, mosaic: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs ``rows`` at ``params``: the overlap mask (a's inset content box and b's mapped into a's frame,
        (P, h*w) bool over the scored crop), its pixel count (P,) and b sampled there (bilinear, as ``warpAffine``
        with ``WARP_INVERSE_MAP``). The sample points are rounded to 1/32 px, as OpenCV's remap of two channels
        (b and its box as a mask) did; one channel is remapped (3x faster) and the mask is compared on the rounded
        points: where all their bilinear neighbours with a weight are b's content."""
        import cv2

        side, t = self.side, self.side + 2
        r0, r1, c0, c1 = self.crop
        h, w = r1 - r0, c1 - c0
        m = _matrices(params, self.c).astype(np.float32)
        rr, cc = np.arange(r0, r1, dtype=np.float32), np.arange(c0, c1, dtype=np.float32)
        # x_b = m00 x + m01 y + m02 over the grid, as an outer sum of a column term and a row term (tile coordinates)
        x = (m[:, 0, 0, None, None] * cc[None, None, :]) + (m[:, 0, 1, None, None] * rr[None, :, None] + m[:, 0, 2, None, None] + 1.0)
        y = (m[:, 1, 0, None, None] * cc[None, None, :]) + (m[:, 1, 1, None, None] * rr[None, :, None] + m[:, 1, 2, None, None])
        # y stays within its tile and border (x outside the mosaic's width is outside: the constant border)
        np.clip(y, -1.0, float(side), out=y)
        y += (1.0 + t * np.arange(len(m), dtype=np.float32))[:, None, None]
        for v in (x, y):  # OpenCV's INTER_TAB_SIZE: 1/32 px, rounded half to even (exact in float32)
            v *= 32.0
            np.rint(v, out=v)
            v *= 1.0 / 32.0
        box = self.box_b[rows, :, None, None].astype(np.float32)
        base = (t * np.arange(len(m), dtype=np.float32))[:, None, None]
        mask = (x >= box[:, 0]) & (x <= box[:, 2])
        mask &= y >= box[:, 1] + base
        mask &= y <= box[:, 3] + base
        mask = mask.reshape(len(m), h * w)
        mask &= self.in_a[rows]
        n = np.count_nonzero(mask, axis=1).astype(np.float64)
        src = mosaic[rows].reshape(-1, t)
        b = cv2.remap(src, x.reshape(-1, w), y.reshape(-1, w), cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                      borderValue=0).reshape(len(m), h * w)
        return mask, n, b

    def cropped(self, images: np.ndarray) -> np.ndarray:
        """(P, S*S) images of a's frame -> their pixels in the scored rows and columns, (P, h*w) contiguous."""
        r0, r1, c0, c1 = self.crop
        return np.ascontiguousarray(images.reshape(-1, self.side, self.side)[:, r0:r1, c0:c1].reshape(len(images), -1))

    def score(self, params: np.ndarray, a: np.ndarray | None = None, mosaic: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Per pair: the NCC of a and b mapped into a's frame at ``params`` (P, 4: k, theta, dx, dy), on the
        overlap of both content boxes, and the overlap share: the share of the smaller content box, b's as it lands
        in a's frame (k times smaller; a copy that is a 20% crop of an image with a flat sky is mostly "frame" by the
        uniform-rows rule, and a's whole box would leave it under MIN_OVERLAP). 0 where the overlap is under
        MIN_OVERLAP or b's centre moved more than MAX_OFFSET. ``a``/``mosaic``: other images in place of the
        stack's (the resolution-matched ones of :meth:`final`)."""
        aa = self.aac if a is None else None
        a = self.ac if a is None else self.cropped(a)
        mosaic = self.mosaic if mosaic is None else mosaic
        p = len(params)
        score, overlap = np.zeros(p), np.zeros(p)
        dot = lambda u, v: np.einsum("ij,ij->i", u, v).astype(np.float64)
        for s in range(0, p, BLOCK):
            rows = slice(s, min(p, s + BLOCK))
            mask, n, w = self._sample(rows, params[rows], mosaic)
            mf = mask.astype(np.float32)
            wm = w * mf
            u = a[rows]
            nn = np.maximum(n, 1.0)
            su, sv = dot(u, mf), wm.sum(axis=1, dtype=np.float64)
            cu = dot(u * u if aa is None else aa[rows], mf) - su * su / nn
            cv = dot(wm, w) - sv * sv / nn
            cov = dot(u, wm) - su * sv / nn
            den = np.sqrt(np.maximum(cu * cv, 0.0))
            ncc = np.where(den > 1e-9, cov / np.where(den > 1e-9, den, 1.0), 0.0)
            k = params[rows, 0]
            ov = n / np.minimum(self.area[rows], self.area_b[rows] / (k * k))
            far = too_far(params[rows], self.side)
            overlap[rows] = np.where(far, 0.0, ov)
            score[rows] = np.where(far | (ov < MIN_OVERLAP), 0.0, ncc)
        return score, overlap

    def final(self, params: np.ndarray, tries: tuple[float, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The copy score at ``params`` : the sharper image of each pair blurred to
        the other's resolution first (a zoomed or framed copy was resampled: its finest detail differs), and the
        best of that and of each image blurred further by each of ``tries`` (:data:`RESOLUTION_TRIES`). Measured:
        averaging blocks of the overlap, or leaving the strongest block out, cost copies more than it saved on
        distinct images."""
        import cv2

        k = params[:, 0]
        extra = RESOLUTION_SIGMA * np.sqrt(np.abs(k * k - 1.0))
        a, mosaic = self.a, self.mosaic
        blur_a = np.flatnonzero((extra >= 0.15) & (k < 1.0))  # b is shown smaller: a has finer detail
        blur_b = np.flatnonzero((extra >= 0.15) & (k >= 1.0))
        if len(blur_a):
            a = a.copy()
            for i in blur_a.tolist():
                img = a[i].reshape(self.side, self.side)
                a[i] = cv2.GaussianBlur(img, (0, 0), float(extra[i] / k[i]), borderType=cv2.BORDER_REFLECT).ravel()
        if len(blur_b):
            mosaic = mosaic.copy()
            for i in blur_b.tolist():
                mosaic[i, 1:-1, 1:-1] = cv2.GaussianBlur(np.ascontiguousarray(mosaic[i, 1:-1, 1:-1]), (0, 0),
                                                            float(extra[i]), borderType=cv2.BORDER_REFLECT)
        score, overlap = self.score(params, a, mosaic)
        # Another resampling kernel is another resolution: a copy made with a smoother kernel than its source (a
        # bilinear resize against a bicubic one) loses the finest band the score reads, whatever the zoom. Each
        # image is tried blurred a little more; only pairs that could reach a decision are tried.
        rows = np.flatnonzero(score >= RESOLUTION_FROM) if tries else np.zeros(0, np.int64)
        if len(rows):
            sub = self.take(rows)
            p = params[rows]
            for sigma in tries:
                sa = _batch(lambda c, s=sigma: cv2.GaussianBlur(c, (0, 0), s, borderType=cv2.BORDER_REFLECT),
                            a[rows].reshape(-1, self.side, self.side)).reshape(len(rows), -1)
                sm = mosaic[rows].copy()
                sm[:, 1:-1, 1:-1] = _batch(lambda c, s=sigma: cv2.GaussianBlur(c, (0, 0), s, borderType=cv2.BORDER_REFLECT),
                                           np.ascontiguousarray(sm[:, 1:-1, 1:-1]))
                for x, m in ((sa, mosaic[rows]), (a[rows], sm)):
                    sc, _ = sub.score(p, x, m)
                    score[rows] = np.maximum(score[rows], sc)
        return score, overlap

    def agreement(self, params: np.ndarray, grey_a: np.ndarray, grey_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pair: the mean absolute difference of the grey levels on the overlap at
        ``params`` and a's grey standard deviation there (inf, 0 where nothing overlaps). No colour correction:
        this is the pixel-level test, not the structural one."""
        p = len(params)
        mad, spread = np.full(p, np.inf), np.zeros(p)
        ga = self.cropped(np.asarray(grey_a, np.float32).reshape(p, -1))
        mosaic = self.with_b(grey_b)
        for s in range(0, p, BLOCK):
            rows = slice(s, min(p, s + BLOCK))
            mask, n, w = self._sample(rows, params[rows], mosaic)
            mf = mask.astype(np.float32)
            u = ga[rows]
            nn = np.maximum(n, 1.0)
            d = np.einsum("ij,ij->i", np.abs(u - w), mf).astype(np.float64) / nn
            mean = np.einsum("ij,ij->i", u, mf).astype(np.float64) / nn
            centred = (u - mean[:, None].astype(np.float32)) * mf
            var = np.einsum("ij,ij->i", centred, centred).astype(np.float64) / nn
            mad[rows] = np.where(n > 0, d, np.inf)
            spread[rows] = np.where(n > 0, np.sqrt(var), 0.0)
        return mad, spread


def _refine_stack(stack: _Stack, params: np.ndarray) -> np.ndarray:
    """:func:`_refine` for every pair of ``stack`` at once (P, 4 parameters): the same pattern search, each step
    one batched score of all pairs."""
    x = np.column_stack([np.log(params[:, 0]), params[:, 1:]])
    lo = np.array([-math.log(MAX_ZOOM), -MAX_ANGLE, -1e9, -1e9])
    hi = np.array([math.log(MAX_ZOOM), MAX_ANGLE, 1e9, 1e9])
    steps = np.array([0.03, 2.0, 0.5, 0.5])
    ev = lambda v: stack.score(np.column_stack([np.exp(v[:, 0]), v[:, 1:]]))[0]
    f0 = ev(x)
    for _ in range(2):
        for j in range(4):
            lo_x, hi_x = x.copy(), x.copy()
            lo_x[:, j] -= steps[j]
            hi_x[:, j] += steps[j]
            lo_f, hi_f = ev(lo_x), ev(hi_x)
            d = lo_f - 2 * f0 + hi_f
            t = np.where(d < 0, 0.5 * (lo_f - hi_f) / np.where(d < 0, d, -1.0), np.where(hi_f > lo_f, 1.0, -1.0))
            y = x.copy()
            y[:, j] = np.clip(x[:, j] + np.clip(t, -1.0, 1.0) * steps[j], lo[j], hi[j])
            f1 = ev(y)
            # the first best of (x, x - step, x + step, y), as max() picks it
            cand_f = np.stack([f0, lo_f, hi_f, f1], 1)
            pick = np.argmax(cand_f, axis=1)
            cands = np.stack([x, lo_x, hi_x, y], 1)
            x = np.clip(cands[np.arange(len(x)), pick], lo, hi)
            f0 = cand_f[np.arange(len(x)), pick]
        steps = steps / 2
    return np.column_stack([np.exp(x[:, 0]), x[:, 1:]])


@functools.lru_cache(maxsize=64)
def _too_far(n: int, tw: int, side: int, f: float = 1.0) -> np.ndarray:
    """Template placements (of an image shrunk by ``f``) whose centre lies too far from the image's centre
    (:func:`too_far`)."""
    off = np.arange(n) + (tw - 1) / 2.0 - (side - 1) / 2.0
    ex = np.maximum(np.abs(off) - 0.5 * side * (1.0 - f), 0.0)
    return (((off[:, None] ** 2 + off[None, :] ** 2) > (MAX_OFFSET * side) ** 2)
            & ((ex[:, None] ** 2 + ex[None, :] ** 2) > (CONTAINED * side) ** 2))


def _template_match(x: np.ndarray, y: np.ndarray, f: float, theta: float) -> tuple[float, float, float]:
    """Shrink ``y`` by ``f`` (<= 1) and rotate it by ``theta``; find its central part in ``x``.
    Returns (peak NCC, dx, dy): the template centre's offset from x's centre, sub-pixel by a parabola fit."""
    import cv2

    side = x.shape[0]
    c = (side - 1) / 2.0
    tw = max(8, int(round(TEMPLATE * f * side)))
    ct = (tw - 1) / 2.0
    # template(u) = y((1/f) R(theta) (u - ct) + c)
    if f == 1.0 and theta == 0.0 and (side - tw) % 2 == 0:  # a whole-pixel crop: the warp's exact answer, sliced
        o = (side - tw) // 2
        tmpl = np.ascontiguousarray(y[o : o + tw, o : o + tw])
    else:
        t = math.radians(theta)
        co, si = math.cos(t) / f, math.sin(t) / f
        m = np.array([[co, -si, c - (co - si) * ct], [si, co, c - (si + co) * ct]])
        tmpl = cv2.warpAffine(y, m, (tw, tw), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT)
    res = cv2.matchTemplate(x, tmpl, cv2.TM_CCOEFF_NORMED)
    res[_too_far(res.shape[0], tw, side, f)] = -1.0
    _, peak, _, (px, py) = cv2.minMaxLoc(res)

    def sub(lo: float, mid: float, hi: float) -> float:  # plain floats: np.clip on scalars was 3% of a registration
        d = float(lo - 2 * mid + hi)
        return 0.0 if d >= 0 else min(max(0.5 * float(lo - hi) / d, -0.5), 0.5)

    h, w = res.shape
    sx = sub(res[py, px - 1], peak, res[py, px + 1]) if 0 < px < w - 1 else 0.0
    sy = sub(res[py - 1, px], peak, res[py + 1, px]) if 0 < py < h - 1 else 0.0
    return float(peak), px + sx + ct - c, py + sy + ct - c


def _coarse(pair: _Pair, f_y_is_b: bool, f: float, theta: float) -> tuple[float, tuple[float, float, float, float]]:
    """One hypothesis by template matching; returns (peak, (k, theta, dx, dy)) as a map a -> b."""
    if f_y_is_b:  # b's content is bigger: shrink b, look for it in a. x_b = (1/f) R (x_a - c - d) + c
        peak, dx, dy = _template_match(pair.a, pair.b, f, theta)
        return peak, (1.0 / f, theta, dx, dy)
    # a's content is bigger: shrink a, look for it in b: x_a = (1/f) R(theta)(x_b - c - d) + c; invert that map.
    peak, dx, dy = _template_match(pair.b, pair.a, f, theta)
    t = math.radians(theta)
    co, si = math.cos(t), math.sin(t)
    return peak, (f, -theta, -(co * dx - si * dy) / f, -(si * dx + co * dy) / f)


def _coarse_search(pa: _Pair, pb: _Pair, mirror: bool) -> list[tuple[float, bool, tuple[float, float, float, float]]]:
    """Template matching over zooms and orientations on the half-resolution images, then rotations at the best
    zoom and orientation. ``pa``/``pb``: the pair with b as is and b mirrored. Returns every hypothesis as
    (peak, mirrored, params), best first."""
    found = []
    for flipped, pair in ((False, pa), (True, pb)) if mirror else ((False, pa),):
        for s in SCALES:
            for y_is_b in ((True,) if s == 1.0 else (True, False)):
                peak, params = _coarse(pair, y_is_b, 1.0 / s, 0.0)
                found.append((peak, flipped, params, pair, y_is_b, s))
    found.sort(key=lambda h: -h[0])
    _, flipped, _, pair, y_is_b, s = found[0]
    # rotations at the best zoom and at zoom 1 (a rotated copy often fits a wrong zoom best while unrotated)
    for zy, zs in {(y_is_b, s), (True, 1.0)}:
        for theta in ANGLES:
            peak, params = _coarse(pair, zy, 1.0 / zs, theta)
            found.append((peak, flipped, params, pair, zy, zs))
    found.sort(key=lambda h: -h[0])
    return [(h[0], h[1], h[2]) for h in found]


#: A pair whose content boxes differ in size by more than this factor (one image framed or letterboxed, the other
#: not, or framed otherwise) is also searched at the zoom the boxes give.
FRAME_ZOOM_FROM = 1.05


def _frame_zooms(box_a: np.ndarray, box_b: np.ndarray, side: int) -> list[float]:
    """Zooms (b's content over a's) that map a's content box onto b's, or one of them onto the whole of the other
    (a flat side of the source -- a sky, a wall -- makes a box too, and is no frame): those where the sizes differ
    by more than FRAME_ZOOM_FROM alike in both directions (a frame, not letterbox bars, which cut content off), at
    most MAX_ZOOM. A copy in a 12% frame is its source shrunk by 1.32: beyond the template search's zooms (SCALES)
    and more than the refinement moves from them, while the frames themselves say the zoom."""
    def extent(box: np.ndarray) -> tuple[int, int]:
        # :func:`prepare` took one more pixel off each framed side (the blurred edge): given back here
        x0, y0, x1, y1 = (int(v) for v in box)
        return (x1 - x0 + 1 + (x0 > 0) + (x1 < side - 1), y1 - y0 + 1 + (y0 > 0) + (y1 < side - 1))

    whole = (side, side)
    out: list[float] = []
    for (ax, ay), (bx, by) in ((extent(box_a), extent(box_b)), (whole, extent(box_b)), (extent(box_a), whole)):
        kx, ky = bx / max(ax, 1), by / max(ay, 1)
        k = (kx * ky) ** 0.5
        if (abs(math.log(kx / ky)) > math.log(FRAME_ZOOM_FROM) or abs(math.log(k)) <= math.log(FRAME_ZOOM_FROM)
                or abs(math.log(k)) > 1.1 * math.log(MAX_ZOOM)):
            continue
        k = min(max(k, 1.0 / MAX_ZOOM), MAX_ZOOM)
        if all(abs(math.log(k / o)) > 0.02 for o in out):
            out.append(k)
    return out


def _start(prep: Prepared, i: int, j: int, *, mirror: bool, refine: bool, start: tuple[bool, float, float] | None,
           prune: bool, also: tuple[bool, float, float] | None = None
           ) -> tuple[bool, tuple[float, float, float, float], float, bool]:
    """The template search of one pair (:func:`register_pairs`, steps 1-2): (mirrored, (k, theta, dx, dy) in
    working pixels, template peak, whether to refine)."""
    side = prep.image.shape[1]
    half = prep.small.shape[1]
    a, b = prep.image[i], prep.image[j]
    pairs = {fl: _Pair(a, np.ascontiguousarray(b[:, ::-1]) if fl else b) for fl in ((False, True) if mirror else (False,))}
    if start is None:
        sa, sb = prep.small[i], prep.small[j]
        hyps = _coarse_search(_Pair(sa, sb), _Pair(sa, prep.small_mirror[j]), mirror)
        peak = hyps[0][0]
        hyps = hyps[:REFIND]
    else:
        fl, k, theta = bool(start[0]), float(start[1]), float(start[2])
        hyps = [(math.nan, fl, (k * z, theta, 0.0, 0.0)) for z in (1.0, START_ZOOM, 1.0 / START_ZOOM)]
        if also is not None:  # the other screen's start, at its own zoom only
            hyps.append((math.nan, bool(also[0]), (float(also[1]), float(also[2]), 0.0, 0.0)))
        peak = math.nan
    flipped, (k, theta, dx, dy) = hyps[0][1], hyps[0][2]
    params = (k, theta, dx * side / half, dy * side / half)
    hyps = hyps + [(math.nan, fl, (z, 0.0, 0.0, 0.0)) for z in _frame_zooms(prep.box[i], prep.box[j], side)
                   for fl in dict.fromkeys([hyps[0][1], False])]
    if not (refine and (start is not None or peak >= PRUNE or not prune)):
        return flipped, params, peak, False
    # The best few half-resolution answers, re-found at full resolution; the best of them refined. Zoom 1 in both
    # orientations always: sparse images (a few stars) can fool the half-resolution search. A hypothesis already
    # tried (the screen's start at zoom 1) is not matched twice.
    best = -2.0
    tried = set()
    for _, fl, (k, theta, _, _) in [(0.0, fl, (1.0, 0.0, 0.0, 0.0)) for fl in pairs] + hyps:
        if (fl, k, theta) in tried:
            continue
        tried.add((fl, k, theta))
        p2, params2 = _coarse(pairs[fl], k >= 1.0, 1.0 / k if k >= 1.0 else k, theta if k >= 1.0 else -theta)
        if p2 > best:
            best, params, flipped = p2, params2, fl
    if start is not None and PRUNE <= best < ROTATE_BELOW:
        # a start that fits only so-so may be a corner crop's, started at the wrong zoom (CROP_ZOOMS)
        for k in CROP_ZOOMS:
            if (flipped, k, 0.0) not in tried and all(abs(math.log(k / h[2][0])) > math.log(START_ZOOM) for h in hyps):
                p2, params2 = _coarse(pairs[flipped], True, 1.0 / k, 0.0)
                if p2 > best:
                    best, params = p2, params2
    if start is not None:
        peak = best  # the full-resolution template peak of the best hypothesis
    return flipped, params, peak, peak >= PRUNE or not prune


def _rotated_starts(stack: _Stack, params: np.ndarray) -> np.ndarray:
    """The screen tries one rotation each way (7 deg) at zoom 1 only, and the refinement moves the angle by 3 deg
    at most: a rotated, cropped copy starts unrotated (measured: 'rotate 7 + crop 10%' at 0.86-0.93 from the start,
    0.996 with the full search). Each pair's start turned by each of ANGLES at its zoom and shift, scored all at
    once; the best of these and the start itself is where the refinement begins."""
    best, _ = stack.score(params)
    out = params.copy()
    for theta in ANGLES:
        turned = params.copy()
        turned[:, 1] = theta
        s, _ = stack.score(turned)
        better = s > best
        out[better], best[better] = turned[better], s[better]
    return out


@dataclass(frozen=True)
class Registered:
    """:func:`register_pairs`' answer per pair: the copy ``score``, ``mirrored``, ``params`` (P, 4: k, theta, dx, dy
    in working pixels, the map from a's working coordinates to (mirrored) b's), the ``overlap`` share, the template
    ``peak``, the grey ``mad`` and a's grey ``spread`` on the overlap or over the whole images as they lie, whichever
    agrees better, and ``still``: whether it was the latter."""

    score: np.ndarray
    mirrored: np.ndarray
    params: np.ndarray
    overlap: np.ndarray
    peak: np.ndarray
    mad: np.ndarray
    spread: np.ndarray
    still: np.ndarray
    smooth_mad: np.ndarray


def smooth(grey: np.ndarray, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """(N, S, S) grey levels blurred by ``sigma`` pixels (reflected borders), float32."""
    import cv2

    g = np.asarray(grey, np.float32)
    return np.stack([cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for x in g]) if len(g) else g


def register_pairs(prep: Prepared, ia: np.ndarray, ib: np.ndarray, *, mirror: bool = True, refine: bool = True,
                   starts: list[tuple[bool, float, float]] | None = None, prune: bool = True,
                   tries: tuple[float, ...] = (), also: list[tuple[bool, float, float] | None] | None = None
                   ) -> Registered:
    """Register image ``ib[p]`` (b) onto image ``ia[p]`` (a) for every pair p. The template search runs per pair
    (``starts[p]``: (mirrored, zoom, angle) found by :mod:`.screen`; the half-resolution search is then skipped:
    zooms around the start are re-found at full resolution, and zoom 1 in both orientations, since symmetric
    objects fool the screen's choice); the sub-pixel refinement and the final scores run for all pairs at once
    (:class:`_Stack`). With ``prune``, pairs peaking under PRUNE are not refined (they score lower, but none would
    reach the similar band). ``tries``: the final score's blurs (:data:`RESOLUTION_TRIES`; none: as registered).
    ``also[p]``: a second (mirrored, zoom, angle) start of pair p re-found beside ``starts[p]`` (None: none)."""
    ia = np.asarray(ia, np.int64)
    ib = np.asarray(ib, np.int64)
    p = len(ia)
    flipped = np.zeros(p, bool)
    params = np.zeros((p, 4))
    peak = np.full(p, math.nan)
    todo = np.zeros(p, bool)
    for n, (i, j) in enumerate(zip(ia.tolist(), ib.tolist())):
        flipped[n], params[n], peak[n], todo[n] = _start(prep, i, j, mirror=mirror, refine=refine,
                                                         start=None if starts is None else starts[n], prune=prune,
                                                         also=None if also is None else also[n])
    b, box_b = _as_b(prep.image, prep.box, ib, flipped)
    stack = _Stack(prep.image[ia], prep.box[ia], b, box_b)
    if todo.any():
        sub = stack.take(todo)
        start_p = params[todo]
        if starts is not None:
            # a template peak in [ROTATE_FROM, ROTATE_BELOW): a well-fitting start needs no other rotation, and a
            # distinct pair searched more only scores higher by chance
            turn = (peak[todo] >= ROTATE_FROM) & (peak[todo] < ROTATE_BELOW)
            if turn.any():
                start_p[turn] = _rotated_starts(sub.take(turn), start_p[turn])
        params[todo] = _refine_stack(sub, start_p)
    return _scored(prep, ia, ib, flipped, params, peak, stack, tries)


def register_from(prep: Prepared, ia: np.ndarray, ib: np.ndarray, mirrored: np.ndarray, params: np.ndarray, *,
                  tries: tuple[float, ...] = ()) -> Registered:
    """:func:`register_pairs` from whole starts (``mirrored`` and ``params``, P x 4: k, theta, dx, dy in working
    pixels, as :mod:`.keypoints` fits them): no template search, the sub-pixel refinement and the final scores
    only. The template peak is NaN."""
    ia = np.asarray(ia, np.int64)
    ib = np.asarray(ib, np.int64)
    flipped = np.asarray(mirrored, bool)
    b, box_b = _as_b(prep.image, prep.box, ib, flipped)
    stack = _Stack(prep.image[ia], prep.box[ia], b, box_b)
    params = _refine_stack(stack, np.asarray(params, np.float64).reshape(-1, 4)) if len(ia) else np.zeros((0, 4))
    return _scored(prep, ia, ib, flipped, params, np.full(len(ia), math.nan), stack, tries)


#: The tone reading (:func:`tone_matched`): the quantiles of the overlap's grey levels mapped (TONE_LEVELS + 1 of
#: them: a piecewise-linear curve, few pieces so that distinct images' histograms are not fitted in detail), read only
#: where the two images' levels rank alike on the overlap (Spearman's rho of TONE_RANKS or more): an edit of the
#: levels keeps their order, whatever curve it applies, where two distinct images' orders differ (tiles of one photo:
#: -0.55-0.76; their copies, 0.93-1.0).
TONE_LEVELS = 8
TONE_RANKS = 0.9
#: The ranks are compared where neither image's grey level is clipped (TONE_CLIP or more, 255 - TONE_CLIP or less),
#: on at least TONE_INSIDE of the overlap.
TONE_CLIP = 250.0
TONE_INSIDE = 0.1

#: JPEG codes an image in blocks of JPEG_BLOCK x JPEG_BLOCK pixels; saved at a low quality at its own small size,
#: the grey level steps across the block grid. An image whose steps there (the mean absolute second difference at
#: the two pixels either side of each block edge) exceed those elsewhere by JPEG_STEPS, along both axes, shows the
#: grid (:func:`block_steps`). On the 32-px suites 68-69% of the JPEG copies (q50-q75) did, under 1% of the other
#: images. At 1.1 (82-87% and 5%) more of the calibration's null was read and the copy cut rose with it: the
#: held-out-like suite's recall rose less (0.947 -> 0.948 against 0.950 at 1.3, five seeds; both were tried there
#: and on the standard suite, docs/copies.md).
JPEG_BLOCK = 8
JPEG_STEPS = 1.3
#: The band (fine and coarse Gaussians at 48 px, as :data:`SIGMA_FINE`, :data:`SIGMA_COARSE`) a pair with such an
#: image is also scored in (:func:`coarse_scores`): what a JPEG at quality 50 keeps of a 32-px image. Tried offline
#: on the 32-px suites (every registered pair re-scored, recall at the distinct eval images' 99.5th percentile):
#: (3, 8) raised the JPEG copies and left the null's tail where it was; (2, 6) raised that tail.
JPEG_BAND = (3.0, 8.0)


def block_steps(grey: np.ndarray) -> np.ndarray:
    """Per (N, S, S) grey image at its own size: the smaller, over both axes, of the mean absolute second difference
    of the grey levels at the pixels either side of each :data:`JPEG_BLOCK` edge over that mean elsewhere; about 1
    where no block grid shows, more where a JPEG's blocks do (:data:`JPEG_STEPS`)."""
    g = np.asarray(grey, np.float32)
    n, side = len(g), g.shape[-1]
    if n == 0 or side < 2 * JPEG_BLOCK:
        return np.zeros(n)
    at = np.arange(1, side - 1)  # where the second difference is centred
    edge = (at % JPEG_BLOCK == JPEG_BLOCK - 1) | (at % JPEG_BLOCK == 0)
    out = np.full(n, np.inf)
    for axis in (1, 2):
        lo, mid, hi = (np.take(g, np.arange(k, k + side - 2), axis=axis) for k in range(3))
        d2 = np.abs(lo - 2 * mid + hi)
        across = (d2[:, edge, :] if axis == 1 else d2[:, :, edge]).mean(axis=(1, 2))
        inside = (d2[:, ~edge, :] if axis == 1 else d2[:, :, ~edge]).mean(axis=(1, 2))
        out = np.minimum(out, across / np.maximum(inside, 1e-3))
    return out


def _as_b(images: np.ndarray, box: np.ndarray, ib: np.ndarray, flipped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs' b images (rows ``ib`` of ``images``) and their content boxes, mirrored where ``flipped``."""
    b = images[ib].copy()
    b[flipped] = b[flipped][:, :, ::-1]
    box_b = box[ib].copy()
    box_b[flipped] = mirror_box(box_b[flipped], images.shape[2])
    return b, box_b


def coarse_scores(prep: Prepared, ia: np.ndarray, ib: np.ndarray, mirrored: np.ndarray, params: np.ndarray
                  ) -> np.ndarray:
    """The final score of pairs at ``params`` (P x 4, as :func:`register_from` takes them) with both working greys
    band-passed at :data:`JPEG_BAND` instead: a copy saved as a low-quality JPEG at 32 px keeps its coarse
    structure and loses the finer band the score reads (its copies registered at 0.87-0.92 against cuts of ~0.98)."""
    ia = np.asarray(ia, np.int64)
    ib = np.asarray(ib, np.int64)
    if len(ia) == 0:
        return np.zeros(0)
    gb, box_b = _as_b(prep.grey, prep.box, ib, np.asarray(mirrored, bool))
    stack = _Stack(band_pass(prep.grey[ia], *JPEG_BAND), prep.box[ia], band_pass(gb, *JPEG_BAND), box_b)
    # no blurred tries (RESOLUTION_TRIES): the band is already coarser than any of them
    return stack.final(np.asarray(params, np.float64).reshape(-1, 4), ())[0]


def _row_quantiles(values: np.ndarray, mask: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """Per row of ``values`` (P, n), the quantiles ``qs`` of its entries under ``mask`` (linear, as NumPy's default);
    rows must hold at least one."""
    v = np.where(mask, values, np.inf)
    v.sort(axis=1)
    count = np.count_nonzero(mask, axis=1)
    pos = qs[None, :] * (count[:, None] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, count[:, None] - 1)
    f = pos - lo
    vlo, vhi = np.take_along_axis(v, lo, axis=1), np.take_along_axis(v, hi, axis=1)
    return vlo + f * (vhi - vlo)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Per row of ``x`` (P, n), each entry's rank from 1, tied entries sharing their average rank (as
    ``scipy.stats.rankdata(x, axis=1)``, whose import alone took 0.56 s of a 2,000-photo check)."""
    p, n = x.shape
    # any sort: tied entries share their average rank, whichever order they come in (quicksort: ~2x a stable sort)
    order = np.argsort(x, axis=1)
    s = np.take_along_axis(x, order, axis=1)
    idx = np.broadcast_to(np.arange(n), (p, n))
    new = np.ones((p, n), bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    end = np.ones((p, n), bool)
    end[:, :-1] = new[:, 1:]
    # each sorted position's run of equal values: its first and last position
    first = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    last = np.minimum.accumulate(np.where(end, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((p, n))
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def _row_ranks_correlation(u: np.ndarray, w: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, Spearman's rho of ``u`` and ``w`` on the entries under ``mask`` (ties ranked by their average, as a
    clipped highlight's many equal levels need)."""
    # the entries outside the mask rank above every entry inside it: the inside ranks are 1..n, as among themselves
    ru = average_ranks(np.where(mask, u, np.float32(np.inf)))
    rw = average_ranks(np.where(mask, w, np.float32(np.inf)))
    n = np.maximum(np.count_nonzero(mask, axis=1), 1).astype(np.float64)
    mean = (n + 1) / 2
    mf = mask.astype(np.float64)
    cu, cw = (ru - mean[:, None]) * mf, (rw - mean[:, None]) * mf
    den = np.sqrt((cu * cu).sum(axis=1) * (cw * cw).sum(axis=1))
    return np.where(den > 0, (cu * cw).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)


def tone_matched(prep: Prepared, ia: np.ndarray, ib: np.ndarray, mirrored: np.ndarray, params: np.ndarray, *,
                 tries: tuple[float, ...] = ()) -> np.ndarray:
    """The final score of pairs at ``params`` (P x 4, as :func:`register_from` takes them) with a's grey levels first
    mapped onto b's: the piecewise-linear curve through the quantiles of both images' levels on the overlap
    (:data:`TONE_LEVELS`), then band-passed as :func:`prepare` does. An exposure raised until highlights clip, a
    strong contrast curve or sepia move the levels by more than the gain and offset the NCC ignores: their copies
    scored 0.93-0.98 against cuts of ~0.98 (32-px colour suite). NaN for pairs whose levels do not rank alike
    (:data:`TONE_RANKS`) or with too small an overlap: re-fitting the levels of distinct images raised the
    calibration's null with them (docs/copies.md, thirty-third session)."""
    ia = np.asarray(ia, np.int64)
    ib = np.asarray(ib, np.int64)
    p = len(ia)
    out = np.full(p, math.nan)
    if p == 0:
        return out
    flipped = np.asarray(mirrored, bool)
    params = np.asarray(params, np.float64).reshape(-1, 4)
    gb, box_b = _as_b(prep.grey, prep.box, ib, flipped)
    raw = _Stack(prep.grey[ia], prep.box[ia], gb, box_b)
    qs = np.linspace(0.0, 1.0, TONE_LEVELS + 1)
    xa = np.zeros((p, len(qs)))
    yb = np.zeros((p, len(qs)))
    read = np.zeros(p, bool)
    for s in range(0, p, BLOCK):
        rows = slice(s, min(p, s + BLOCK))
        mask, n, w = raw._sample(rows, params[rows], raw.mosaic)
        ok = n >= 16
        if not ok.any():
            continue
        m, u, w = mask[ok], raw.ac[rows][ok], w[ok]
        at = np.arange(s, rows.stop)[ok]
        xa[at], yb[at] = _row_quantiles(u, m, qs), _row_quantiles(w, m, qs)
        # ranked where neither image is clipped: a clipped highlight is one level in b for many in a, and ties
        # that many bound the rank correlation far under 1 (a copy brightened until 60% clipped: 0.56)
        inside = m & (u > 255.0 - TONE_CLIP) & (u < TONE_CLIP) & (w > 255.0 - TONE_CLIP) & (w < TONE_CLIP)
        enough = np.count_nonzero(inside, axis=1) >= TONE_INSIDE * n[ok]
        read[at] = enough & (_row_ranks_correlation(u, w, inside) >= TONE_RANKS)
    todo = np.flatnonzero(read)
    if len(todo) == 0:
        return out
    ga = prep.grey[ia[todo]].copy()
    ramp = np.arange(len(qs)) * 1e-4  # strictly increasing knots: flat stretches of a's levels (a clipped sky)
    for k, j in enumerate(todo.tolist()):
        ga[k] = np.interp(ga[k], xa[j] + ramp, yb[j]).astype(np.float32)
    b = prep.image[ib[todo]].copy()
    b[flipped[todo]] = b[flipped[todo]][:, :, ::-1]
    stack = _Stack(band_pass(ga), prep.box[ia[todo]], b, box_b[todo])
    out[todo] = stack.final(params[todo], tries)[0]
    return out


def _scored(prep: Prepared, ia: np.ndarray, ib: np.ndarray, flipped: np.ndarray, params: np.ndarray, peak: np.ndarray,
            stack: _Stack, tries: tuple[float, ...]) -> Registered:
    """The final score and the grey-level agreements of pairs registered at ``params`` (:func:`register_pairs`)."""
    score, overlap = stack.final(params, tries)
    gb = prep.grey[ib].copy()
    gb[flipped] = gb[flipped][:, :, ::-1]
    ga = prep.grey[ia]
    mad, spread = stack.agreement(params, ga, gb)
    mad[overlap < MIN_OVERLAP], spread[overlap < MIN_OVERLAP] = math.inf, 0.0
    # and the whole pictures as they lie, frames and backgrounds included: the structural search can settle off
    # the identity on flat content, and a garment's black background is a "frame" to the content boxes (Fashion-MNIST
    # pairs within 4 grey levels over the whole image differ by 8-12 on the garment alone)
    gj = prep.grey[ib]
    mad_still = np.abs(ga - gj).mean(axis=(1, 2)).astype(np.float64)
    still = mad_still < mad
    mad = np.where(still, mad_still, mad)
    spread = np.where(still, ga.std(axis=(1, 2)).astype(np.float64), spread)
    del ga, gb, gj  # (the chunk's working memory: the blurred copies below take their place)
    # the level rule's MAD, of blurred grey levels, where the MAD above was read
    # (each image blurred once; the blur commutes with the mirror: a symmetric kernel, reflected borders)
    sg = smooth(prep.grey)
    sa, sb = sg[ia], sg[ib]
    smooth_still = np.abs(sa - sb).mean(axis=(1, 2)).astype(np.float64)
    sb[flipped] = sb[flipped][:, :, ::-1]
    del sg
    smooth_mad, _ = stack.agreement(params, sa, sb)
    smooth_mad[overlap < MIN_OVERLAP] = math.inf
    smooth_mad = np.where(still, smooth_still, smooth_mad)
    return Registered(score, flipped, params, overlap, peak, mad, spread, still, smooth_mad)


def register_pair(prep: Prepared, i: int, j: int, *, mirror: bool = True, refine: bool = True,
                  start: tuple[bool, float, float] | None = None, prune: bool = True
                  ) -> tuple[float, bool, tuple[float, float, float, float], float, float, float, float, bool]:
    """:func:`register_pairs` for one pair, as a tuple (score, mirrored, (k, theta, dx, dy), overlap, peak, mad,
    spread, still)."""
    r = register_pairs(prep, np.array([i]), np.array([j]), mirror=mirror, refine=refine,
                       starts=None if start is None else [start], prune=prune)
    k, theta, dx, dy = (float(v) for v in r.params[0])
    return (float(r.score[0]), bool(r.mirrored[0]), (k, theta, dx, dy), float(r.overlap[0]), float(r.peak[0]),
            float(r.mad[0]), float(r.spread[0]), bool(r.still[0]))


#: From a screen's start, zooms of start x START_ZOOM^(-1, 0, 1) are re-found (half the screen's zoom grid step).
START_ZOOM = 1.07
#: From a screen's start, the rotations of ANGLES are searched too when the best template peak lies in
#: [ROTATE_FROM, ROTATE_BELOW): a well-fitting start needs no other rotation, and a distinct pair searched more only
#: scores higher by chance (searching every pair raised the null's median 0.50 -> 0.54 and the calibrated cut
#: 0.982 -> 0.989 on the tests' photo tiles); rotated copies started unrotated peak at 0.86-0.93.
ROTATE_FROM = 0.75
ROTATE_BELOW = 0.97
#: From a screen's start whose best template peak lies in [PRUNE, ROTATE_BELOW), these zooms (b shown bigger) are
#: re-found too, unless a hypothesis lies within START_ZOOM of them: an eval image cropped 20-25% from a corner and
#: grown back. The screen's zoom-1 peak can beat its own 1.3 variant for such a crop (that variant counts 0.95), and
#: the refinement moves the zoom by 5% at most, so it stayed at 1.12 or less. Measured (`copy_check.py`, five seeds;
#: benchmarks/results/copy-check-crop-zoom-thirtyseventh.txt): held-out-like 32 px 0.950 -> 0.953 (crop 20% from a
#: corner + JPEG q60 0.80 -> 0.84 at seed 0), as files 0.929 -> 0.933, 112 px 0.968 -> 0.974 (that transform 0.85 ->
#: 0.97), no suite lower, the same false pairs; 3-4% more template matches. From [ROTATE_FROM, ...) it gained a
#: little less; 0.8 too (a train image cut from a corner of its eval image, which the outward screen starts) added
#: nothing and moved the copy cut more.
CROP_ZOOMS = (1.25,)
#: How many of the best half-resolution hypotheses are re-found at full resolution.
REFIND = 3


#: Bounds of the refinement: zoom (b over a, either way) and angle (degrees).
MAX_ZOOM = 1.35
MAX_ANGLE = 12.0
