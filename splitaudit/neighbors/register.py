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
   overlap directly -- the sub-pixel refinement.

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
#: Uniform frame detection: outer rows/columns with a grey standard deviation under FRAME_STD, up to FRAME_MAX of
#: the side, are a frame (or letterbox bar).
FRAME_STD = 3.0
FRAME_MAX = 0.3
#: The largest offset of b's centre from a's (share of the side): a window moved further is another framing of
#: the scene (a neighbouring crop), not a copy; copies shift a few pixels or crop at most ~20% (offset 10%).
MAX_OFFSET = 0.15
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
    ``grey`` the working-size grey levels themselves (for the pixel agreement, :data:`PIXEL_MAD`)."""

    image: np.ndarray
    small: np.ndarray
    box: np.ndarray
    energy: np.ndarray
    grey: np.ndarray


@dataclass(frozen=True)
class Transform:
    """Per pair: the band-passed NCC on the overlap (``score``, -1..1), and the transform found: ``mirrored`` (b
    flipped left-right), ``scale`` (b's content size over a's: > 1 when b is zoomed in or cropped), ``angle``
    (degrees, b relative to a), ``dx``/``dy`` (b's centre relative to a's, as a share of the side), ``overlap``
    (share of the smaller content box that was scored); ``mad`` the mean absolute difference of the two images'
    grey levels on the overlap at that transform, and ``spread`` the grey standard deviation of a there (the pixel
    agreement: :data:`PIXEL_MAD`); ``still`` when that MAD is of the two whole images as they lie (no transform)."""

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


def frames(grey: np.ndarray) -> np.ndarray:
    """(N, 4) content boxes x0, y0, x1, y1 (inclusive) inside uniform outer rows and columns (a frame, letterbox
    bars), all images at once; the whole image where (almost) all is uniform."""
    _, h, w = grey.shape
    row_flat, col_flat = grey.std(axis=2) < FRAME_STD, grey.std(axis=1) < FRAME_STD
    run = lambda m, limit: np.cumprod(m[:, :limit], axis=1).sum(axis=1)  # leading uniform rows, at most limit
    my, mx = int(h * FRAME_MAX), int(w * FRAME_MAX)
    top, bottom = run(row_flat, my), run(row_flat[:, ::-1], my)
    left, right = run(col_flat, mx), run(col_flat[:, ::-1], mx)
    box = np.stack([left, top, w - 1 - right, h - 1 - bottom], axis=1).astype(np.int64)
    tiny = (box[:, 2] - box[:, 0] < w // 4) | (box[:, 3] - box[:, 1] < h // 4)
    box[tiny] = (0, 0, w - 1, h - 1)
    return box


def prepare(images: np.ndarray, side: int = SIDE) -> Prepared:
    """Working images for registration from N thumbnails of one size (grey or RGB, any side); vectorised."""
    import cv2

    grey = to_grey(images)
    n, h, w = grey.shape
    if n == 0:
        z = np.zeros((0, side, side), np.float32)
        return Prepared(z, np.zeros((0, side // 2, side // 2), np.float32), np.zeros((0, 4), np.int64), np.zeros(0, np.float32), z)
    if (h, w) == (side, side):
        g = grey.copy()
    elif h > side and h % side == 0 and w % side == 0:  # INTER_AREA by an integer factor: block means
        g = grey.reshape(n, side, h // side, side, w // side).mean(axis=(2, 4))
    else:
        interp = cv2.INTER_AREA if h > side else cv2.INTER_CUBIC
        g = _batch(lambda c: cv2.resize(c, (side, side), interpolation=interp), grey, 4 if interp == cv2.INTER_AREA else 128)
    # The frame is found at the native resolution (resizing blurs its edge), then mapped to working pixels with one
    # more pixel off each framed side (the blurred edge itself).
    f = frames(grey)
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
    k = side / 48.0
    blur = lambda s: _batch(lambda c: cv2.GaussianBlur(c, (0, 0), s * k, borderType=cv2.BORDER_REFLECT), g)
    out = (blur(SIGMA_FINE) - blur(SIGMA_COARSE)).astype(np.float32)
    energy = np.sqrt((out**2).mean(axis=(1, 2)))
    small = _batch(cv2.pyrDown, out)
    return Prepared(out, small, boxes, energy, g.astype(np.float32))


def mirror_box(box: np.ndarray, side: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([side - 1 - x1, y0, side - 1 - x0, y1])


def _matrix(k: float, theta: float, dx: float, dy: float, c: float) -> np.ndarray:
    """2x3 map from a's working coordinates to b's: x_b = k R(theta) (x_a - c - d) + c."""
    t = math.radians(theta)
    co, si = k * math.cos(t), k * math.sin(t)
    px, py = c + dx, c + dy
    return np.array([[co, -si, c - (co * px - si * py)], [si, co, c - (si * px + co * py)]])


@functools.lru_cache(maxsize=4)
def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:side, 0:side]
    return xs.astype(np.float32), ys.astype(np.float32)


def _inset(box: np.ndarray, side: int) -> tuple[int, int, int, int]:
    """The content box less MARGIN (scaled to ``side``) on each side, where the band-pass saw padding or fill."""
    m = int(round(MARGIN * side / 48.0))
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 - x0 > 4 * m and y1 - y0 > 4 * m:
        return x0 + m, y0 + m, x1 - m, y1 - m
    return x0, y0, x1, y1


class _Pair:
    """The search for one pair: a fixed, b in one orientation."""

    def __init__(self, a: np.ndarray, box_a: np.ndarray, b: np.ndarray, box_b: np.ndarray) -> None:
        self.a = a
        self.side = side = a.shape[0]
        self.c = (side - 1) / 2.0
        xs, ys = _grid(side)
        x0, y0, x1, y1 = _inset(box_a, side)
        self.in_a = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        self.area = max(int(self.in_a.sum()), 1)
        # b and the mask of its content box travel together through one warp
        bm = np.zeros((side, side), np.float32)
        bx0, by0, bx1, by1 = _inset(box_b, side)
        bm[by0 : by1 + 1, bx0 : bx1 + 1] = 1.0
        self.area_b = max((bx1 - bx0 + 1) * (by1 - by0 + 1), 1)
        self.b = b
        self.b2 = np.ascontiguousarray(np.dstack([b, bm]))

    def score(self, k: float, theta: float, dx: float, dy: float) -> tuple[float, float]:
        """NCC of a and b mapped into a's frame, on the overlap of both content boxes; and the overlap share."""
        import cv2

        if dx * dx + dy * dy > (MAX_OFFSET * self.side) ** 2:
            return 0.0, 0.0
        m = _matrix(k, theta, dx, dy, self.c)
        w = cv2.warpAffine(self.b2, m, (self.side, self.side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask = self.in_a & (w[..., 1] > 0.999)
        n = int(np.count_nonzero(mask))
        # the share of the smaller content box, b's as it lands in a's frame (k times smaller): a copy that is a
        # 20% crop of an image with a flat sky is mostly "frame" by the uniform-rows rule, and a's whole box would
        # leave it under MIN_OVERLAP
        overlap = n / min(self.area, self.area_b / (k * k))
        if overlap < MIN_OVERLAP:
            return 0.0, overlap
        return _ncc(self.a[mask], w[..., 0][mask]), overlap

    def agreement(self, grey_a: np.ndarray, grey_b: np.ndarray, k: float, theta: float, dx: float, dy: float
                  ) -> tuple[float, float]:
        """(MAD, spread) at these parameters: the mean absolute difference of the grey levels ``grey_a`` and
        ``grey_b`` (b in this pair's orientation) on the overlap of both content boxes, and a's grey standard
        deviation there. No colour correction: this is the pixel-level test, not the structural one."""
        import cv2

        m = _matrix(k, theta, dx, dy, self.c)
        w = cv2.warpAffine(np.ascontiguousarray(np.dstack([grey_b, self.b2[..., 1]])), m, (self.side, self.side),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask = self.in_a & (w[..., 1] > 0.999)
        if not mask.any():
            return math.inf, 0.0
        u = grey_a[mask]
        return float(np.abs(u - w[..., 0][mask]).mean()), float(u.std())

    def final(self, k: float, theta: float, dx: float, dy: float) -> tuple[float, float]:
        """The copy score at these parameters: the NCC of the whole overlap, with the sharper image blurred to the
        other's resolution first (a zoomed or framed copy was resampled: its finest detail differs). Measured:
        averaging blocks of the overlap, or leaving the strongest block out, cost copies more than it saved on
        distinct images."""
        import cv2

        extra = RESOLUTION_SIGMA * math.sqrt(abs(k * k - 1.0))
        if extra < 0.15:
            return self.score(k, theta, dx, dy)
        if k < 1.0:  # b is shown smaller: a has finer detail
            a0 = self.a
            self.a = cv2.GaussianBlur(a0, (0, 0), extra / k, borderType=cv2.BORDER_REFLECT)
            try:
                return self.score(k, theta, dx, dy)
            finally:
                self.a = a0
        b0 = self.b2
        blurred = cv2.GaussianBlur(self.b, (0, 0), extra, borderType=cv2.BORDER_REFLECT)
        self.b2 = np.ascontiguousarray(np.dstack([blurred, b0[..., 1]]))
        try:
            return self.score(k, theta, dx, dy)
        finally:
            self.b2 = b0


def _ncc(u: np.ndarray, v: np.ndarray) -> float:
    """Normalised cross-correlation of two equal-length vectors (sums, not centred copies: this runs ~20x a pair)."""
    n = len(u)
    su, sv = float(u.sum()), float(v.sum())
    cu = float(u @ u) - su * su / n
    cv = float(v @ v) - sv * sv / n
    den = math.sqrt(max(cu * cv, 0.0))
    return (float(u @ v) - su * sv / n) / den if den > 1e-9 else 0.0


@functools.lru_cache(maxsize=64)
def _too_far(n: int, tw: int, side: int) -> np.ndarray:
    """Template placements whose centre lies more than MAX_OFFSET of the side from the image's centre."""
    off = np.arange(n) + (tw - 1) / 2.0 - (side - 1) / 2.0
    return (off[:, None] ** 2 + off[None, :] ** 2) > (MAX_OFFSET * side) ** 2


def _template_match(x: np.ndarray, y: np.ndarray, f: float, theta: float) -> tuple[float, float, float]:
    """Shrink ``y`` by ``f`` (<= 1) and rotate it by ``theta``; find its central part in ``x``.
    Returns (peak NCC, dx, dy): the template centre's offset from x's centre, sub-pixel by a parabola fit."""
    import cv2

    side = x.shape[0]
    c = (side - 1) / 2.0
    tw = max(8, int(round(TEMPLATE * f * side)))
    ct = (tw - 1) / 2.0
    # template(u) = y((1/f) R(theta) (u - ct) + c)
    t = math.radians(theta)
    r = (1.0 / f) * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    m = np.hstack([r, (np.array([c, c]) - r @ np.array([ct, ct]))[:, None]])
    tmpl = cv2.warpAffine(y, m, (tw, tw), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    res = cv2.matchTemplate(x, tmpl, cv2.TM_CCOEFF_NORMED)
    res[_too_far(res.shape[0], tw, side)] = -1.0
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
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    d2 = -(1.0 / f) * (rot @ np.array([dx, dy]))
    return peak, (f, -theta, float(d2[0]), float(d2[1]))


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


def register_pair(prep: Prepared, i: int, j: int, *, mirror: bool = True, refine: bool = True,
                  start: tuple[bool, float, float] | None = None, prune: bool = True
                  ) -> tuple[float, bool, tuple[float, float, float, float], float, float, float, float, bool]:
    """Register image ``j`` (b) onto image ``i`` (a). Returns (score, mirrored, (k, theta, dx, dy) the map from a's
    working coordinates to (mirrored) b's, overlap share, coarse peak, grey MAD and a's grey spread on the
    overlap or over the whole images as they lie, whichever agrees better, and whether it was the latter). ``start``: (mirrored, zoom, angle) found by :mod:`.screen`; the half-resolution search is then skipped
    (zooms around the start are re-found at full resolution, and zoom 1 in both orientations: symmetric objects
    fool the screen's choice; the peak is then the full-resolution one). With ``prune``, pairs peaking under PRUNE
    are not refined (they score lower, but none would reach the similar band)."""
    side = prep.image.shape[1]
    half = prep.small.shape[1]
    a, b = prep.image[i], prep.image[j]
    box_a, box_b = prep.box[i], prep.box[j]
    orientations = (False, True) if mirror else (False,)
    pairs = {fl: (_Pair(a, box_a, np.ascontiguousarray(b[:, ::-1]), mirror_box(box_b, side)) if fl
                  else _Pair(a, box_a, b, box_b)) for fl in orientations}
    if start is None:
        sa, sb = prep.small[i], prep.small[j]
        small = _Pair(sa, prep.box[i] // 2, sb, prep.box[j] // 2)
        small_m = _Pair(sa, prep.box[i] // 2, np.ascontiguousarray(sb[:, ::-1]), mirror_box(prep.box[j] // 2, half)) if mirror else small
        hyps = _coarse_search(small, small_m, mirror)
        peak = hyps[0][0]
        hyps = hyps[:REFIND]
    else:
        fl, k, theta = bool(start[0]), float(start[1]), float(start[2])
        hyps = [(math.nan, fl, (k * z, theta, 0.0, 0.0)) for z in (1.0, START_ZOOM, 1.0 / START_ZOOM)]
        peak = math.nan
    flipped, (k, theta, dx, dy) = hyps[0][1], hyps[0][2]
    params = (k, theta, dx * side / half, dy * side / half)
    if refine and (start is not None or peak >= PRUNE or not prune):
        # The best few half-resolution answers, re-found at full resolution; the best of them refined.
        best = -2.0
        # Zoom 1 in both orientations always: sparse images (a few stars) can fool the half-resolution search.
        unzoomed = [(0.0, fl, (1.0, 0.0, 0.0, 0.0)) for fl in pairs]
        for _, fl, (k, theta, _, _) in unzoomed + hyps:
            p2, params2 = _coarse(pairs[fl], k >= 1.0, 1.0 / k if k >= 1.0 else k, theta if k >= 1.0 else -theta)
            if p2 > best:
                best, params, flipped = p2, params2, fl
        if start is not None and ROTATE_FROM <= best < ROTATE_BELOW:
            # The screen tries one rotation each way (7 deg) at zoom 1 only, and the refinement moves the angle by
            # 3 deg at most: a rotated, cropped copy started unrotated (measured: 'rotate 7 + crop 10%' at
            # 0.86-0.93 from the start, 0.996 with the full search). The rotations of the full search, at the best
            # zoom and orientation.
            k0 = params[0]
            for theta in ANGLES:
                p2, params2 = _coarse(pairs[flipped], k0 >= 1.0, 1.0 / k0 if k0 >= 1.0 else k0, theta if k0 >= 1.0 else -theta)
                if p2 > best:
                    best, params = p2, params2
        if start is not None:
            peak = best  # the full-resolution template peak of the best hypothesis
        if peak >= PRUNE or not prune:
            params = _refine(pairs[flipped], params)
    score, overlap = pairs[flipped].final(*params)
    gb = prep.grey[j][:, ::-1] if flipped else prep.grey[j]
    mad, spread = pairs[flipped].agreement(prep.grey[i], gb, *params) if overlap >= MIN_OVERLAP else (math.inf, 0.0)
    # and the whole pictures as they lie, frames and backgrounds included: the structural search can settle off
    # the identity on flat content, and a garment's black background is a "frame" to the content boxes (Fashion-MNIST
    # pairs within 4 grey levels over the whole image differ by 8-12 on the garment alone)
    ga, gj = prep.grey[i], prep.grey[j]
    mad_still = float(np.abs(ga - gj).mean())
    still = mad_still < mad
    if still:
        mad, spread = mad_still, float(ga.std())
    return score, flipped, params, overlap, peak, mad, spread, still


#: From a screen's start, zooms of start x START_ZOOM^(-1, 0, 1) are re-found (half the screen's zoom grid step).
START_ZOOM = 1.07
#: From a screen's start, the rotations of ANGLES are searched too when the best template peak lies in
#: [ROTATE_FROM, ROTATE_BELOW): a well-fitting start needs no other rotation, and a distinct pair searched more only
#: scores higher by chance (searching every pair raised the null's median 0.50 -> 0.54 and the calibrated cut
#: 0.982 -> 0.989 on the tests' photo tiles); rotated copies started unrotated peak at 0.86-0.93.
ROTATE_FROM = 0.75
ROTATE_BELOW = 0.97
#: How many of the best half-resolution hypotheses are re-found at full resolution.
REFIND = 3


#: Bounds of the refinement: zoom (b over a, either way) and angle (degrees).
MAX_ZOOM = 1.35
MAX_ANGLE = 12.0


def _refine(pair: _Pair, params: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Sub-pixel refinement of (log zoom, angle, dx, dy): per parameter, a parabola through the scores at -step,
    0, +step, twice with halved steps. Bounded to MAX_ZOOM and MAX_ANGLE."""
    k, theta, dx, dy = params
    x = [math.log(k), theta, dx, dy]
    lo = (-math.log(MAX_ZOOM), -MAX_ANGLE, -1e9, -1e9)
    hi = (math.log(MAX_ZOOM), MAX_ANGLE, 1e9, 1e9)
    steps = [0.03, 2.0, 0.5, 0.5]
    f0 = pair.score(math.exp(x[0]), x[1], x[2], x[3])[0]
    for _ in range(2):
        for j in range(4):
            fs = []
            for sign in (-1.0, 1.0):
                y = list(x)
                y[j] += sign * steps[j]
                fs.append(pair.score(math.exp(y[0]), y[1], y[2], y[3])[0])
            lo_f, hi_f = fs
            d = lo_f - 2 * f0 + hi_f
            t = 0.5 * (lo_f - hi_f) / d if d < 0 else (1.0 if hi_f > lo_f else -1.0)
            t = min(max(t, -1.0), 1.0)
            y = list(x)
            y[j] = min(max(x[j] + t * steps[j], lo[j]), hi[j])
            f1 = pair.score(math.exp(y[0]), y[1], y[2], y[3])[0]
            best_f, best_x = max((f0, x), (lo_f, x[:j] + [x[j] - steps[j]] + x[j + 1:]),
                                 (hi_f, x[:j] + [x[j] + steps[j]] + x[j + 1:]), (f1, y), key=lambda p: p[0])
            f0, x = best_f, [min(max(v, lo_i), hi_i) for v, lo_i, hi_i in zip(best_x, lo, hi)]
        steps = [v / 2 for v in steps]
    return math.exp(x[0]), float(x[1]), float(x[2]), float(x[3])
