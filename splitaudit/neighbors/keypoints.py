"""Local features for photos: ORB keypoints matched across a pair and a similarity fitted to them by RANSAC
(OpenCV), the registration's start where the dense search does not reach.

The dense registration (:mod:`.register`) searches zooms up to 1.25 and rotations of 8 degrees around a few starts,
on 64-px thumbnails. A crop of 25% from a corner (zoom 1.33, the centre 18% of the side off) or a rotated and
cropped copy lies outside that search or in a flat part of it; keypoints find such a transform directly, in one fit.
Here it is only a start: the pair is then refined and scored by the same band-passed NCC as every other pair
(:func:`~.register.register_from`), so the calibrated cut still decides, and the calibration's null pairs get the
same second opinion (:func:`~.verify.keypoint_registration`).

Images are described at :data:`KEY_SIDE` px, squashed and EXIF-oriented as the thumbnails are, and only those whose
smaller native side is :data:`KEY_FROM` px or more: tiny images have too few keypoints, and dense registration is
the established method there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..scan import Dataset

#: Side of the squashed grey image keypoints are found in (a 112-px photo is grown to it, a larger one shrunk).
KEY_SIDE = 128
#: Images whose smaller native side is under this many pixels get no keypoints.
KEY_FROM = 96
#: ORB keypoints per image (over LEVELS pyramid levels), with small patches and a low FAST threshold: at 112-128
#: px ORB's defaults (31-px patches, threshold 20) leave a few dozen keypoints away from the border. Measured on the
#: 112-px held-out-like suite's registered pairs (prototype): from the fitted start 0.64 of the 25% corner crops
#: scored at the cut with ORB (500 keypoints, 8 levels), 0.58 with SIFT at 8x the cost (8.6 against 1.1 ms an
#: image). 250 keypoints over 4 levels lose little end to end (the suite's recall 0.931 -> 0.933, at 500 / 8 and 250
#: / 4) for 40% less time (2,000 overlapping photo crops: 9.0 -> 5.6 CPU-s for 1,052 pairs); 150 over 3 lose more
#: (0.929) for 4.2 CPU-s.
FEATURES = 250
LEVELS = 4
PATCH = 15
FAST = 5
#: Lowe's ratio test: a match is kept when its best distance is under RATIO of the second best.
RATIO = 0.8
#: RANSAC's reprojection error (key pixels) and the fewest inliers that make a start.
REPROJ = 2.0
MIN_INLIERS = 6
#: Fits outside these zooms and angles are no start (the refinement's bounds, :data:`~.register.MAX_ZOOM`, with room).
MAX_ZOOM = 1.5
MAX_ANGLE = 15.0
#: Pairs fitted together: their images are decoded and described at once (~24 kB an image in flight).
CHUNK = 64

Keys = tuple[np.ndarray, np.ndarray]  # (points (n, 2) float32, ORB descriptors (n, 32) uint8)


def describe(grey: np.ndarray) -> Keys:
    """ORB keypoints of one grey uint8 image: their positions and descriptors (none: empty arrays)."""
    import cv2

    orb = cv2.ORB_create(FEATURES, nlevels=LEVELS, edgeThreshold=PATCH // 2 + 1, patchSize=PATCH, fastThreshold=FAST)
    kp, desc = orb.detectAndCompute(np.ascontiguousarray(grey, np.uint8), None)
    if desc is None or not kp:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    return np.array([k.pt for k in kp], np.float32), desc


def fit(a: Keys, b: Keys) -> tuple[int, np.ndarray | None]:
    """(inliers, 2 x 3 map from a's key pixels to b's) of the similarity RANSAC fits to the ratio-tested matches;
    (0, None) where there are too few. Deterministic (OpenCV's RANSAC seeds its generator per call)."""
    import cv2

    (pa, da), (pb, db) = a, b
    if len(da) < 2 or len(db) < 2:
        return 0, None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(da, db, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < max(MIN_INLIERS, 3):
        return 0, None
    src = pa[[m.queryIdx for m in good]]
    dst = pb[[m.trainIdx for m in good]]
    m, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=REPROJ,
                                             maxIters=2000, confidence=0.995)
    if m is None or inliers is None:
        return 0, None
    return int(inliers.sum()), m


def to_params(m: np.ndarray, key_side: int, side: int) -> np.ndarray | None:
    """A 2 x 3 map between key images (a -> b) as the registration's parameters (k, theta, dx, dy) at the working
    ``side`` (x_b = k R(theta) (x_a - c - d) + c), or None where it is no similarity within the bounds."""
    f = side / key_side
    a = np.asarray(m, np.float64)[:, :2]
    det = float(np.linalg.det(a))
    if det <= 0:
        return None
    k = math.sqrt(det)
    theta = math.degrees(math.atan2(a[1, 0], a[0, 0]))
    if not (1 / MAX_ZOOM <= k <= MAX_ZOOM) or abs(theta) > MAX_ANGLE:
        return None
    # the map in working pixels: x_w = f (x_key + 1/2) - 1/2 on both sides
    t = f * (a @ np.full(2, 0.5 / f - 0.5) + np.asarray(m, np.float64)[:, 2] + 0.5) - 0.5
    c = (side - 1) / 2.0
    d = np.linalg.solve(a, np.full(2, c) - t) - c
    return np.array([k, theta, d[0], d[1]])


def keypoint_starts(keys: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], a: np.ndarray, b: np.ndarray,
                    side: int, *, workers: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pair (a[j], b[j]): (found, mirrored, params (P, 4) at the working ``side``, inliers): the similarity
    fitted to the two images' keypoints, b as is or mirrored, whichever holds more inliers (at least
    :data:`MIN_INLIERS`). ``keys(rows)``: (key images (n, KEY_SIDE, KEY_SIDE) uint8, ok mask) of those records.
    Pairs go :data:`CHUNK` at a time (an image is described once per chunk it appears in), one chunk per thread
    (``workers``, default one per core; OpenCV releases the GIL); the answer does not depend on them."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from ..features.runner import default_workers

    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    p = len(a)
    found = np.zeros(p, bool)
    mirrored = np.zeros(p, bool)
    params = np.zeros((p, 4))
    inliers = np.zeros(p, np.int64)
    # pairs by their later image: its two pairs (and its mirrored description) fall in one chunk, described once
    order = np.lexsort((a, b))
    reading = threading.Lock()  # ``keys`` decodes (or asks an engine to) one call at a time

    def chunk(s: int) -> None:  # writes its own rows of the answer: chunks run side by side
        sel = order[s : s + CHUNK]
        ids = np.unique(np.concatenate([a[sel], b[sel]]))
        with reading:
            images, ok = keys(ids)
        key_side = images.shape[1] if images.ndim == 3 and len(images) else KEY_SIDE
        later = set(b[sel].tolist())  # described mirrored too
        described: dict[int, Keys] = {}
        flipped: dict[int, Keys] = {}
        for r, img, good in zip(ids.tolist(), images, ok.tolist()):
            if good:
                described[r] = describe(img)
                if r in later:
                    flipped[r] = describe(img[:, ::-1])
        for j in sel.tolist():
            i, k = int(a[j]), int(b[j])
            if i not in described or k not in described:
                continue
            best, best_m, best_f = 0, None, False
            for fl, kb in ((False, described[k]), (True, flipped[k])):
                n, m = fit(described[i], kb)
                if n > best:
                    best, best_m, best_f = n, m, fl
            got = None if best_m is None or best < MIN_INLIERS else to_params(best_m, key_side, side)
            if got is not None:
                found[j], mirrored[j], params[j], inliers[j] = True, best_f, got, best

    starts = range(0, p, CHUNK)
    workers = min(default_workers() if workers is None else workers, len(starts))
    if workers <= 1:
        for s in starts:
            chunk(s)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="splitaudit-keys") as pool:
            list(pool.map(chunk, starts))
    return found, mirrored, params, inliers


def key_image(rgb: np.ndarray) -> np.ndarray:
    """The grey (ITU-R 601 luma) uint8 key image of a KEY_SIDE x KEY_SIDE RGB image."""
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8), cv2.COLOR_RGB2GRAY)


@dataclass(frozen=True)
class KeyImages:
    """Key images of a batch of records (columns ``path``, ``pixels``) as a pure batch function (the local pool's
    or an engine's, where the files are): ``key`` (n, KEY_SIDE, KEY_SIDE) uint8 and ``ok``."""

    max_pixels: int

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..features.embeddings.compute import decoded_batch

        out, ok = decoded_batch(batch, KEY_SIDE, self.max_pixels, key_image)
        return {"key": out, "ok": ok}


def record_keys(dataset: Dataset, eligible: np.ndarray, *, max_pixels: int, engine=None  # type: ignore[no-untyped-def]
                ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``keys(rows)`` for :func:`keypoint_starts`: the records decoded (squashed, EXIF-oriented, as the thumbnails)
    into key images, here or, on a distributed ``engine``, where the files are; not ok where a record is not
    ``eligible`` (smaller than :data:`KEY_FROM`) or does not decode."""
    from ..features.table import batch_columns

    eligible = np.asarray(eligible, bool)
    batch_fn = KeyImages(max_pixels)

    def keys(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, np.int64)
        out = np.zeros((len(rows), KEY_SIDE, KEY_SIDE), np.uint8)
        ok = np.zeros(len(rows), bool)
        todo = np.flatnonzero(eligible[rows])
        if len(todo):
            columns = batch_columns([dataset.records[int(i)] for i in rows[todo]], dataset.arrays)
            got = (engine.map(batch_fn, columns, releases_gil=True) if engine is not None and engine.distributed
                   else batch_fn(columns))
            out[todo], ok[todo] = got["key"], got["ok"]
        return out, ok

    return keys
