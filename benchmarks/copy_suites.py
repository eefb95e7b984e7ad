"""Two copy-detection suites from real photos, measured with the copy stage's pure functions (issue #11).

Run:  python benchmarks/copy_suites.py  [--suite tiny|photo|fmnist|all] [--sources N] [--fmnist-train N]

* ``tiny`` -- the 32-px suite from photos: 32-px images rendered from regions (64-128 px) of the photos bundled
  with scikit-image / scikit-learn (texture photos brick, grass, gravel, text, page included); a copy is the same
  region *rendered again* with the transform applied in the photo (shift 1-4 output px, zoom +-10%, crop <= 20%,
  rotation <= 10 deg), then framed / letterboxed / re-graded / turned grey / mirrored / JPEG-encoded at 32 px --
  how a re-cropped copy of one shot arises in a real 32-px dataset.
* ``photo`` -- the photo-size suite: the same at 128 px (thumbnails of 64 px given to the stage).
* ``fmnist`` -- the 32-px suite's Fashion-MNIST part (Debian package ``dataset-fashion-mnist``): all 60k train
  images as the training split, the 10k test images plus transformed copies of train images as the eval split.
  Hard negatives: every test garment against its look-alikes. The ground truth: test images within 4 grey levels
  (mean absolute difference) of a train image; all of them must be found.

Hard negatives in the photo suites: other regions of the same photo (textures), and regions shifted by 25-40% of
the side from a training region ("neighbouring crops": much overlap, but another framing). Some training images
have copies inside the training split too, as real datasets do: calibration must survive them.

Per suite it prints: candidate recall of the pixel view alone and with the hash view (no CNN embeddings here: the
pixel and hash views are measured on their own, the embedding view merges in through the same function), verifier
recall per transform and overall at the calibrated cut, false pairs per 1,000 eval images, the calibration, and the
verification time per pair. Deterministic (fixed seeds).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SEED = 20261203
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
PHOTO_SOURCES = [
    ("astronaut", "skimage"), ("coffee", "skimage"), ("chelsea", "skimage"), ("rocket", "skimage"),
    ("hubble_deep_field", "skimage"), ("immunohistochemistry", "skimage"), ("camera", "skimage"),
    ("coins", "skimage"), ("text", "skimage"), ("brick", "skimage"), ("grass", "skimage"), ("gravel", "skimage"),
    ("page", "skimage"), ("moon", "skimage"), ("retina", "skimage"), ("clock", "skimage"), ("cell", "skimage"),
    ("stereo_motorcycle", "skimage"), ("china.jpg", "sklearn"), ("flower.jpg", "sklearn"),
]


def load_photo(name: str, kind: str) -> np.ndarray:
    """A bundled photo as (h, w, 3) uint8 (grey photos replicated)."""
    if kind == "sklearn":
        from sklearn.datasets import load_sample_image

        a = load_sample_image(name)
    else:
        import skimage.data

        a = getattr(skimage.data, name)()
        if isinstance(a, tuple):  # stereo_motorcycle: the left view only
            a = a[0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3].astype(np.uint8))


# ------------------------------------------------------------------------------------------------ transforms


@dataclass(frozen=True)
class Spec:
    """A copy's recipe: geometry in the source (shift in output pixels, zoom = content magnification, angle in
    degrees, crop = share of the side removed, at ``crop_pos`` in [-1, 1]^2), then edits of the output image."""

    shift: float = 0.0
    zoom: float = 1.0
    angle: float = 0.0
    crop: float = 0.0
    crop_pos: tuple[float, float] = (0.0, 0.0)
    frame: float = 0.0
    letterbox: float = 0.0
    grade: bool = False
    grey: bool = False
    mirror: bool = False
    jpeg: int = 0


TRANSFORMS: dict[str, Spec] = {
    "shift 1px": Spec(shift=1),
    "shift 2px": Spec(shift=2),
    "shift 3px": Spec(shift=3),
    "shift 4px": Spec(shift=4),
    "zoom in 10%": Spec(zoom=1.1),
    "zoom out 10%": Spec(zoom=1 / 1.1),
    "crop 10% centre": Spec(crop=0.1),
    "crop 20% side": Spec(crop=0.2, crop_pos=(1.0, 0.0)),
    "crop 15% corner": Spec(crop=0.15, crop_pos=(1.0, 1.0)),
    "frame 8%": Spec(frame=0.08),
    "letterbox 12%": Spec(letterbox=0.12),
    "rotate 5": Spec(angle=5),
    "rotate 10": Spec(angle=10),
    "colour grade": Spec(grade=True),
    "greyscale": Spec(grey=True),
    "jpeg q50": Spec(jpeg=50),
    "mirror": Spec(mirror=True),
    "shift 2 + jpeg q50": Spec(shift=2, jpeg=50),
    "mirror + crop 10% + jpeg q70": Spec(mirror=True, crop=0.1, crop_pos=(-1.0, 0.0), jpeg=70),
    "grade + shift 1 + zoom 5%": Spec(grade=True, shift=1, zoom=1.05),
    "grey + rotate 3 + shift 1": Spec(grey=True, angle=3, shift=1),
    "frame 6% + grade": Spec(frame=0.06, grade=True),
    "zoom out 5% + mirror + jpeg q75": Spec(zoom=1 / 1.05, mirror=True, jpeg=75),
    "rotate 7 + crop 10%": Spec(angle=7, crop=0.1),
}


def render(src: np.ndarray, cx: float, cy: float, region: float, out: int, spec: Spec, rng: np.random.Generator,
           fill: int = 0) -> np.ndarray:
    """The ``region``-px square of ``src`` centred at (cx, cy), as an ``out``-px image, with ``spec`` applied.

    Sampled at 4x the output side and area-averaged down (no aliasing), like a real downscale."""
    import cv2

    px = region / out  # source pixels per output pixel
    theta = rng.uniform(0, 2 * np.pi)
    dx, dy = spec.shift * px * np.cos(theta), spec.shift * px * np.sin(theta)
    side = region / spec.zoom
    if spec.crop:
        side *= 1 - spec.crop
        dx += spec.crop_pos[0] * region * spec.crop / 2
        dy += spec.crop_pos[1] * region * spec.crop / 2
    up = 4 * out
    k = side / up  # source pixels per supersampled pixel
    t = np.radians(spec.angle)
    r = k * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = (up - 1) / 2
    m = np.hstack([r, (np.array([cx + dx, cy + dy]) - r @ np.array([c, c]))[:, None]])
    hi = cv2.warpAffine(src, m, (up, up), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=(fill, fill, fill))
    img = cv2.resize(hi, (out, out), interpolation=cv2.INTER_AREA)
    if spec.frame:
        inner = int(round(out * (1 - 2 * spec.frame)))
        small = cv2.resize(img, (inner, inner), interpolation=cv2.INTER_AREA)
        colour = int(rng.choice([0, 128, 255]))
        img = np.full_like(img, colour)
        o = (out - inner) // 2
        img[o : o + inner, o : o + inner] = small
    if spec.letterbox:
        b = int(round(out * spec.letterbox))
        img = img.copy()
        img[:b] = 0
        img[out - b :] = 0
    if spec.grade:
        x = img.astype(np.float32) / 255.0
        gain = rng.uniform(0.8, 1.2, 3)
        gamma = rng.uniform(0.8, 1.25)
        off = rng.uniform(-0.08, 0.08, 3)
        img = np.clip(255 * ((x**gamma) * gain + off), 0, 255).astype(np.uint8)
    if spec.grey:
        g = (img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)
        img = np.repeat(g[..., None], 3, axis=2)
    if spec.mirror:
        img = np.ascontiguousarray(img[:, ::-1])
    if spec.jpeg:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=spec.jpeg)
        img = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return img


# ------------------------------------------------------------------------------------------------ suites


@dataclass
class Suite:
    """Images (N, s, s, 3) uint8 with ``split`` (0 train, 1 eval); the planted pairs (train index, eval index,
    transform name); ``hard`` negatives (train index, eval index, kind) that must not be reported; ``known``: other
    pairs that are real copies (train-train copies, ground truth) and so are not false pairs."""

    name: str
    images: np.ndarray
    split: np.ndarray
    planted: list[tuple[int, int, str]] = field(default_factory=list)
    hard: list[tuple[int, int, str]] = field(default_factory=list)
    known: set[tuple[int, int]] = field(default_factory=set)
    origin: np.ndarray | None = None


def _blank(img: np.ndarray) -> bool:
    g = img.astype(np.float32).mean(axis=2)
    return bool(g.std() < 8.0)


def photo_suite(out: int, sources: int, seed: int = SEED) -> Suite:
    """Regions of the bundled photos rendered at ``out`` px: train/eval distinct regions, copies, hard negatives."""
    rng = np.random.default_rng(seed)
    regions = (64, 96, 128) if out <= 48 else (128, 192, 256)
    imgs, origin, meta = [], [], []
    for name, kind in PHOTO_SOURCES:
        p = load_photo(name, kind)
        h, w = p.shape[:2]
        L = int(rng.choice(regions))
        # a grid with a margin of 0.4 L, so zoomed-out and shifted renders stay inside the photo
        step = int(L * 1.45)
        for y in range(int(0.45 * L), h - int(0.95 * L), step):
            for x in range(int(0.45 * L), w - int(0.95 * L), step):
                cx, cy = x + L / 2, y + L / 2
                im = render(p, cx, cy, L, out, Spec(), rng)
                if _blank(im):
                    continue
                imgs.append(im)
                origin.append(name)
                meta.append((p, cx, cy, L))
    n = len(imgs)
    order = rng.permutation(n)
    n_train = int(n * 0.6)
    split = np.zeros(n, np.int64)
    split[order[n_train:]] = 1
    train_ids = np.sort(order[:n_train])
    chosen = np.sort(rng.choice(train_ids, size=min(sources, len(train_ids)), replace=False))
    images = list(imgs)
    splits = list(split)
    origins = list(origin)
    suite = Suite(f"{out}-px photos", np.zeros(0), np.zeros(0))
    names = list(TRANSFORMS)
    for j, s in enumerate(chosen):
        p, cx, cy, L = meta[s]
        # each source gets a few transforms (all transforms are covered ~ equally)
        for name in (names[(j + t) % len(names)] for t in range(0, len(names), max(1, len(names) // 6))):
            r = np.random.default_rng([seed, int(s), names.index(name)])
            images.append(render(p, cx, cy, L, out, TRANSFORMS[name], r))
            splits.append(1)
            origins.append(origins[s])
            suite.planted.append((int(s), len(images) - 1, name))
        # a hard negative: the neighbouring crop, shifted by 25-40% of the side
        r = np.random.default_rng([seed, int(s), 999])
        f = r.uniform(0.25, 0.4) * L
        ang = r.uniform(0, 2 * np.pi)
        images.append(render(p, cx + f * np.cos(ang), cy + f * np.sin(ang), L, out, Spec(), r))
        splits.append(1)
        origins.append(origins[s])
        suite.hard.append((int(s), len(images) - 1, "neighbouring crop (>= 25% shift)"))
    # copies inside the training split (contamination the calibration must survive): 3% of train
    others = np.setdiff1d(train_ids, chosen)
    for s in rng.choice(others, size=max(1, len(train_ids) * 3 // 100), replace=False):
        p, cx, cy, L = meta[s]
        name = names[int(rng.integers(len(names)))]
        images.append(render(p, cx, cy, L, out, TRANSFORMS[name], np.random.default_rng([seed, int(s), 77])))
        splits.append(0)
        origins.append(origins[s])
        suite.known.add((int(s), len(images) - 1))
    suite.images = np.stack(images)
    suite.split = np.asarray(splits)
    suite.origin = np.asarray(origins)
    return suite


def read_idx(path: str) -> np.ndarray:
    import gzip

    with gzip.open(path, "rb") as fh:
        data = fh.read()
    n, rows, cols = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def fmnist_arrays() -> tuple[np.ndarray, np.ndarray] | None:
    tr, te = (os.path.join(FMNIST_DIR, f"{p}-images-idx3-ubyte.gz") for p in ("train", "t10k"))
    if not (os.path.exists(tr) and os.path.exists(te)):
        return None
    return read_idx(tr), read_idx(te)


def fmnist_ground_truth(xtr: np.ndarray, xte: np.ndarray, mad: float = 4.0) -> list[tuple[int, int, float]]:
    """(test, train, MAD) pairs with mean absolute difference <= ``mad`` grey levels: an L2 prefilter that cannot
    drop a true pair (MAD <= m implies L2^2 <= 255 * m * 784), then the exact MAD."""
    A, B = xte.reshape(len(xte), -1), xtr.reshape(len(xtr), -1)
    Af, Bf = A.astype(np.float32), B.astype(np.float32)
    na, nb = (Af * Af).sum(1), (Bf * Bf).sum(1)
    lim = 255.0 * mad * A.shape[1] * 1.001 + 1.0
    found = []
    for s in range(0, len(Af), 1000):
        d2 = na[s : s + 1000, None] + nb[None] - 2.0 * (Af[s : s + 1000] @ Bf.T)
        qi, bj = np.nonzero(d2 <= lim)
        for i, j in zip(qi + s, bj):
            m = float(np.abs(A[i].astype(np.int16) - B[j]).mean())
            if m <= mad:
                found.append((int(i), int(j), m))
    return sorted(found)


def fmnist_suite(n_train: int, copies: int, seed: int = SEED) -> tuple[Suite, list[tuple[int, int, float]]] | None:
    """Fashion-MNIST at 32 px: train (first n_train), eval = the 10k test images + copies of train images."""
    import cv2

    arrs = fmnist_arrays()
    if arrs is None:
        return None
    xtr, xte = arrs
    gt = [g for g in fmnist_ground_truth(xtr, xte) if g[1] < n_train]
    xtr = xtr[:n_train]
    rng = np.random.default_rng(seed + 5)
    to32 = lambda a: np.repeat(cv2.resize(a, (32, 32), interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=2)  # noqa: E731
    images = [to32(a) for a in xtr] + [to32(a) for a in xte]
    split = [0] * len(xtr) + [1] * len(xte)
    suite = Suite("32-px Fashion-MNIST", np.zeros(0), np.zeros(0))
    names = [n for n in TRANSFORMS if "grey" not in n.split()[0]]
    chosen = np.sort(rng.choice(len(xtr), size=min(copies, len(xtr)), replace=False))
    for j, s in enumerate(chosen):
        rgb = np.repeat(xtr[s][..., None], 3, axis=2)
        for name in (names[(j + t) % len(names)] for t in range(0, len(names), max(1, len(names) // 4))):
            r = np.random.default_rng([seed, int(s), names.index(name)])
            images.append(render(rgb, 13.5, 13.5, 28, 32, TRANSFORMS[name], r))
            split.append(1)
            suite.planted.append((int(s), len(images) - 1, name))
    te0 = len(xtr)
    for i, j, _ in gt:
        suite.known.add((j, te0 + i))
    suite.images = np.stack(images)
    suite.split = np.asarray(split)
    return suite, [(te0 + i, j, m) for i, j, m in gt]
