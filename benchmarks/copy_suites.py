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

from splitaudit.neighbors.calibrate import Recipe

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
class Spec(Recipe):
    """A copy's recipe (the calibration's :class:`Recipe`, geometry applied in the source: shift in output pixels,
    zoom = content magnification, crop = share of the side removed), with the crop's position in [-1, 1]^2."""

    crop_pos: tuple[float, float] = (0.0, 0.0)
    #: content moved by this many output pixels after rendering, the side it left filled black (a translation
    #: with a constant fill, as an augmentation or an editor's canvas move makes it)
    translate: int = 0
    #: what fills the side a translation left: "black" (a constant), "wrap" (``np.roll``), "reflect" (OpenCV's
    #: BORDER_REFLECT_101, Keras' RandomTranslation default)
    fill: str = "black"
    #: a stronger colour change than ``grade`` (``--transforms colour``): "cast", "saturate", "desaturate",
    #: "hue", "sepia", "contrast", "bright", "fade" (see :func:`recolour`)
    colour: str = ""


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
    "rotate 5": Spec(rotate=5),
    "rotate 10": Spec(rotate=10),
    "colour grade": Spec(grade=True),
    "greyscale": Spec(grey=True),
    "jpeg q50": Spec(jpeg=50),
    "mirror": Spec(mirror=True),
    "shift 2 + jpeg q50": Spec(shift=2, jpeg=50),
    "mirror + crop 10% + jpeg q70": Spec(mirror=True, crop=0.1, crop_pos=(-1.0, 0.0), jpeg=70),
    "grade + shift 1 + zoom 5%": Spec(grade=True, shift=1, zoom=1.05),
    "grey + rotate 3 + shift 1": Spec(grey=True, rotate=3, shift=1),
    "frame 6% + grade": Spec(frame=0.06, grade=True),
    "zoom out 5% + mirror + jpeg q75": Spec(zoom=1 / 1.05, mirror=True, jpeg=75),
    "rotate 7 + crop 10%": Spec(rotate=7, crop=0.1),
}

#: ``--transforms extra`` (tenth session): transforms the stage was never tuned on, most of them a notch past the
#: standard list or combined otherwise, as a held-out set meets them (the issue's own list for 112-px tiles: crop 12%
#: + JPEG 50, mirror + crop 8% + JPEG 70, letterbox, rotate 7 + crop, translate 10 px, here with three fills).
#: Shifts and translations are of a 112-px side, scaled to the suite's (``extra_transforms``). Crop 25% from a corner
#: is past the issue's "crop up to 20%": reported, not a target.
EXTRA_TRANSFORMS: dict[str, Spec] = {
    "shift 6px": Spec(shift=6),
    "shift 8px": Spec(shift=8),
    "shift 10px": Spec(shift=10),
    "translate 10px fill": Spec(translate=10),
    "translate 6px fill": Spec(translate=6),
    "crop 12% + jpeg q50": Spec(crop=0.12, crop_pos=(0.5, -0.5), jpeg=50),
    "mirror + crop 8% + jpeg q70": Spec(mirror=True, crop=0.08, crop_pos=(1.0, 0.0), jpeg=70),
    "rotate 7 + crop 12%": Spec(rotate=7, crop=0.12),
    "letterbox 10%": Spec(letterbox=0.10),
    "crop 25% corner": Spec(crop=0.25, crop_pos=(1.0, 1.0)),
    "zoom in 15%": Spec(zoom=1.15),
    "frame 12%": Spec(frame=0.12),
    "translate 10px wrap": Spec(translate=10, fill="wrap"),
    "translate 10px reflect": Spec(translate=10, fill="reflect"),
    "rotate 10 + crop 10%": Spec(rotate=10, crop=0.1),
    "zoom out 15%": Spec(zoom=1 / 1.15),
    "crop 20% corner + jpeg q60": Spec(crop=0.2, crop_pos=(1.0, 1.0), jpeg=60),
}


#: ``--transforms colour`` (twenty-first session): colour changes stronger than the calibration's ``grade`` (gain
#: 0.8-1.2 a channel, gamma 0.8-1.25, offset +-0.08), as photo filters, colour-jitter augmentations saved to disk
#: and re-scans make them -- the issue's "re-graded in colour or brightness" and "strong colour changes" -- alone
#: and after the geometric changes a re-crop brings. Never tuned on.
COLOUR_TRANSFORMS: dict[str, Spec] = {
    "colour cast": Spec(colour="cast"),
    "saturate x1.8": Spec(colour="saturate"),
    "desaturate x0.3": Spec(colour="desaturate"),
    "hue 25-40 deg": Spec(colour="hue"),
    "sepia": Spec(colour="sepia"),
    "strong contrast": Spec(colour="contrast"),
    "brighten, clipped": Spec(colour="bright"),
    "faded": Spec(colour="fade"),
    "cast + shift 1": Spec(colour="cast", shift=1),
    "hue + zoom 5%": Spec(colour="hue", zoom=1.05),
    "sepia + crop 10%": Spec(colour="sepia", crop=0.1, crop_pos=(1.0, 0.0)),
    "contrast + jpeg q60": Spec(colour="contrast", jpeg=60),
    "saturate + mirror + shift 2": Spec(colour="saturate", mirror=True, shift=2),
    "fade + frame 6%": Spec(colour="fade", frame=0.06),
    "bright + rotate 4": Spec(colour="bright", rotate=4),
}


#: ``--transforms colour2`` (thirty-second session): colour edits made the other ways tools make them, never tuned on:
#: saturation and hue in HSL space (editors' Hue/Saturation), saturation as Pillow's ImageEnhance.Color and in CIELAB
#: (both keep the luma, nearly), a hue turn of the YUV chroma plane (ffmpeg's hue filter), a random channel mixer
#: (a camera profile), greyscale; alone and after a shift, a mirror or a zoom.
COLOUR2_TRANSFORMS: dict[str, Spec] = {
    "hsl saturate": Spec(colour="hsl-saturate"),
    "hsl desaturate": Spec(colour="hsl-desaturate"),
    "hsl hue": Spec(colour="hsl-hue"),
    "pil saturate": Spec(colour="pil-saturate"),
    "pil desaturate": Spec(colour="pil-desaturate"),
    "lab saturate": Spec(colour="lab-saturate"),
    "lab desaturate": Spec(colour="lab-desaturate"),
    "yuv hue": Spec(colour="yuv-hue"),
    "channel mix": Spec(colour="mix"),
    "hsl saturate + shift 1": Spec(colour="hsl-saturate", shift=1),
    "hsl hue + mirror + shift 2": Spec(colour="hsl-hue", mirror=True, shift=2),
    "lab desaturate + mirror": Spec(colour="lab-desaturate", mirror=True),
    "mix + zoom 5%": Spec(colour="mix", zoom=1.05),
    "greyscale": Spec(grey=True),
    "grey + shift 2": Spec(grey=True, shift=2),
}


def recolour(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``img`` (h, w, 3) uint8 with a strong colour change ``kind`` (random strength from ``rng``)."""
    import cv2

    x = img.astype(np.float32) / 255.0
    if kind == "cast":  # a white balance off by a lot: one channel up, another down
        gain = np.ones(3, np.float32)
        up, down = rng.choice(3, 2, replace=False)
        gain[up], gain[down] = rng.uniform(1.25, 1.5), rng.uniform(0.55, 0.75)
        x = x * gain
    elif kind in ("saturate", "desaturate", "hue"):
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # float: H in degrees
        if kind == "hue":
            hsv[..., 0] = (hsv[..., 0] + rng.choice([-1, 1]) * rng.uniform(25, 40)) % 360
        else:
            hsv[..., 1] = np.clip(hsv[..., 1] * (1.8 if kind == "saturate" else 0.3), 0, 1)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    elif kind == "sepia":
        m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
        x = x @ m.T
    elif kind == "contrast":  # an S-curve around the image's own mean, then a gamma
        mu = float(x.mean())
        x = 1 / (1 + np.exp(-rng.uniform(6, 9) * (x - mu)))
        x = (x - x.min()) / max(float(x.max() - x.min()), 1e-6)
        x = x ** rng.uniform(0.7, 1.4)
    elif kind == "bright":  # exposure up: highlights clip
        x = x * rng.uniform(1.35, 1.6) + 0.05
    elif kind == "fade":  # a faded print: lifted blacks, lowered whites, a warm tint
        x = 0.25 + 0.6 * x + np.array([0.04, 0.01, -0.04], np.float32)
    elif kind in ("hsl-saturate", "hsl-desaturate", "hsl-hue"):  # editors' Hue/Saturation: HSL keeps its lightness
        hls = cv2.cvtColor(x, cv2.COLOR_RGB2HLS)
        if kind == "hsl-hue":
            hls[..., 0] = (hls[..., 0] + rng.choice([-1, 1]) * rng.uniform(25, 40)) % 360
        else:
            hls[..., 2] = np.clip(hls[..., 2] * (rng.uniform(1.5, 1.9) if kind == "hsl-saturate" else rng.uniform(0.2, 0.4)), 0, 1)
        x = cv2.cvtColor(hls, cv2.COLOR_HLS2RGB)
    elif kind in ("pil-saturate", "pil-desaturate"):  # Pillow's ImageEnhance.Color: a blend with the luma
        from PIL import ImageEnhance

        factor = rng.uniform(1.5, 1.9) if kind == "pil-saturate" else rng.uniform(0.2, 0.4)
        return np.asarray(ImageEnhance.Color(Image.fromarray(img)).enhance(factor))
    elif kind in ("lab-saturate", "lab-desaturate"):  # chroma scaled in CIELAB
        lab = cv2.cvtColor(x, cv2.COLOR_RGB2Lab)
        lab[..., 1:] *= rng.uniform(1.4, 1.7) if kind == "lab-saturate" else rng.uniform(0.3, 0.5)
        x = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    elif kind == "yuv-hue":  # the chroma plane turned, the luma kept (ffmpeg's hue filter)
        yuv = cv2.cvtColor(x, cv2.COLOR_RGB2YUV)
        t = np.deg2rad(rng.choice([-1, 1]) * rng.uniform(25, 40))
        u, v = yuv[..., 1].copy(), yuv[..., 2].copy()
        yuv[..., 1], yuv[..., 2] = np.cos(t) * u - np.sin(t) * v, np.sin(t) * u + np.cos(t) * v
        x = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB)
    elif kind == "mix":  # a random channel mixer near the identity, rows summing to 1 (a camera profile)
        m = np.eye(3, dtype=np.float32) + rng.uniform(-0.25, 0.25, (3, 3)).astype(np.float32)
        x = x @ (m / m.sum(axis=1, keepdims=True)).T
    else:
        raise ValueError(f"unknown colour change {kind!r}")
    return np.clip(np.round(255 * x), 0, 255).astype(np.uint8)


def extra_transforms(side: int) -> dict[str, Spec]:
    """:data:`EXTRA_TRANSFORMS` with shifts and translations scaled from a 112-px side to ``side``."""
    from dataclasses import replace

    k = side / 112
    return {n: replace(t, shift=round(t.shift * k), translate=max(1, round(t.translate * k)) if t.translate else 0)
            for n, t in EXTRA_TRANSFORMS.items()}


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
    t = np.radians(spec.rotate)
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
    if spec.colour:
        img = recolour(img, spec.colour, rng)
    if spec.grey:
        g = (img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)
        img = np.repeat(g[..., None], 3, axis=2)
    if spec.mirror:
        img = np.ascontiguousarray(img[:, ::-1])
    if spec.translate:
        t = spec.translate
        dx, dy = (t, 0) if rng.uniform() < 0.5 else (0, t)
        if rng.uniform() < 0.5:
            dx, dy = -dx, -dy
        if spec.fill == "wrap":
            img = np.roll(img, (dy, dx), axis=(0, 1))
        elif spec.fill == "reflect":
            img = cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), (out, out), borderMode=cv2.BORDER_REFLECT_101)
        else:
            moved = np.zeros_like(img)
            moved[max(dy, 0) : out + min(dy, 0), max(dx, 0) : out + min(dx, 0)] = \
                img[max(-dy, 0) : out + min(-dy, 0), max(-dx, 0) : out + min(-dx, 0)]
            img = moved
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


#: Regions kept per photo at most (a big photo of one texture would otherwise dominate a suite).
MAX_PER_PHOTO = 60


def _blank(img: np.ndarray) -> bool:
    """Mostly blank (the rule of benchmarks/hash_thresholds.py): grey std < 4, or >= 3/4 of the 4x4 blocks of the
    32-px image flat (std < 2). A viewer calls two such images duplicates, so they are no negatives."""
    import cv2

    g = img.astype(np.float32).mean(axis=2)
    g32 = cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA)
    blocks = g32.reshape(4, 8, 4, 8).std(axis=(1, 3))
    return bool(g.std() < 4.0 or np.mean(blocks < 2) >= 0.75)


def photo_suite(out: int, sources: int, seed: int = SEED, twins: int = 10,
                transforms: dict[str, Spec] | None = None, contamination: float = 0.03) -> Suite:
    """Regions of the bundled photos rendered at ``out`` px: train/eval distinct regions, copies, hard negatives;
    every ``twins``-th source is also copied inside train (0: none). ``transforms``: the copies' (default
    :data:`TRANSFORMS`). ``contamination``: the share of the other training regions that get a copy inside train
    too (to the 1e-4; 0.03 is what every earlier figure used)."""
    TRANSFORMS = globals()["TRANSFORMS"] if transforms is None else transforms  # noqa: N806
    rng = np.random.default_rng(seed)
    regions = (48, 64, 96) if out <= 48 else (96, 128, 192)
    imgs, origin, meta = [], [], []
    for name, kind in PHOTO_SOURCES:
        p = load_photo(name, kind)
        h, w = p.shape[:2]
        L = int(rng.choice(regions))
        # non-overlapping regions, with a margin of 0.3 L so zoomed-out and shifted renders stay inside the photo
        grid = [(x, y) for y in range(int(0.3 * L), h - int(1.3 * L) + 1, L) for x in range(int(0.3 * L), w - int(1.3 * L) + 1, L)]
        kept = 0
        for g in rng.permutation(len(grid)):
            cx, cy = grid[g][0] + L / 2, grid[g][1] + L / 2
            im = render(p, cx, cy, L, out, Spec(), rng)
            if _blank(im):
                continue
            imgs.append(im)
            origin.append(name)
            meta.append((p, cx, cy, L))
            kept += 1
            if kept == MAX_PER_PHOTO:
                break
    n = len(imgs)
    order = rng.permutation(n)
    n_train = int(n * 0.6)
    split = np.zeros(n, np.int64)
    split[order[n_train:]] = 1
    train_ids = np.sort(order[:n_train])
    chosen = np.sort(rng.choice(train_ids, size=min(sources, len(train_ids) // 2), replace=False))
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
        # every `twins`-th source is in train twice (the same shot re-encoded: real datasets hold such twins by the
        # hundreds), so its eval copies have two true partners and its nearest distinct neighbour is the third
        if twins and j % twins == 0:
            name = names[(j + 3) % len(names)]
            images.append(render(p, cx, cy, L, out, TRANSFORMS[name], np.random.default_rng([seed, int(s), 55])))
            splits.append(0)
            origins.append(origins[s])
            twin = len(images) - 1
            suite.known.add((int(s), twin))
            suite.known.update((twin, e) for x, e, _ in suite.planted if x == s)
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
    for s in rng.choice(others, size=max(1, len(train_ids) * round(contamination * 1e4) // 10000), replace=False):
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


def fmnist_suite(n_train: int, copies: int, n_test: int = 10000, seed: int = SEED
                 ) -> tuple[Suite, list[tuple[int, int, float]]] | None:
    """Fashion-MNIST at 32 px: train (first n_train), eval = the first n_test test images and every test image of
    the ground truth, + copies of train images."""
    import cv2

    arrs = fmnist_arrays()
    if arrs is None:
        return None
    xtr, xte = arrs
    gt = [g for g in fmnist_ground_truth(xtr, xte) if g[1] < n_train]
    xtr = xtr[:n_train]
    test_ids = sorted(set(range(min(n_test, len(xte)))) | {g[0] for g in gt})
    pos = {t: i for i, t in enumerate(test_ids)}
    gt = [(pos[i], j, m) for i, j, m in gt]
    xte = xte[test_ids]
    rng = np.random.default_rng(seed + 5)
    to32 = lambda a: np.repeat(cv2.resize(a, (32, 32), interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=2)
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


# ------------------------------------------------------------------------------------------------ measure


def hash_view(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hash-matched pairs at the tool's default radii, hashes computed from the images as the tool does."""
    from splitaudit.checks.context import DEFAULT_MAX_DHASH, DEFAULT_MAX_PHASH
    from splitaudit.features.hashing import batch_hash_inputs, hash_all
    from splitaudit.neighbors import hash_pairs

    grays = [Image.fromarray(im).convert("L") for im in images]
    h = hash_all(*batch_hash_inputs(grays))
    hp = hash_pairs(h["phash"], h["dhash"], h["phash_flip"], h["dhash_flip"], np.ones(len(images), bool),
                    max_phash=DEFAULT_MAX_PHASH, max_dhash=DEFAULT_MAX_DHASH)
    return hp.a, hp.b


def measure(suite: Suite, thumb: int, gt: list[tuple[int, int, float]] | None = None) -> None:
    """Candidates, calibration, verification and decisions on one suite; prints the tables."""
    import cv2

    from splitaudit.neighbors.calibrate import calibrate
    from splitaudit.neighbors.candidates import view_vectors
    from splitaudit.neighbors.verify import find_copies, screen, verify_pairs

    images = suite.images
    if images.shape[1] != thumb:
        images = np.stack([cv2.resize(im, (thumb, thumb), interpolation=cv2.INTER_AREA) for im in images])
    n_eval = int((suite.split == 1).sum())
    print(f"== {suite.name}: {int((suite.split == 0).sum())} train, {n_eval} eval images ({len(suite.planted)} planted "
          f"copies, {len(suite.hard)} hard negatives), thumbnails {thumb} px ==")
    t0 = time.perf_counter()
    ha, hb = hash_view(suite.images)
    t_hash = time.perf_counter() - t0
    # the stage as find_copies runs it; the calibration timed on its own (find_copies would run the same call)
    t0 = time.process_time()
    cal = calibrate(images, np.flatnonzero(suite.split == 0), vectors=view_vectors(images))
    t_cal = time.process_time() - t0
    t0 = time.process_time()
    cand = find_copies(images, suite.split, hash_a=ha, hash_b=hb, calibration=cal)
    t_all = time.process_time() - t0
    reg, copy, similar = cand, cand.copy, cand.similar
    n_reg = int(cand.registered.sum())
    print(f"  candidates: {len(cand)} pairs ({len(cand) / max(n_eval, 1):.1f} per eval image), {n_reg} registered "
          f"({n_reg / max(n_eval, 1):.1f} per eval image); hashes {t_hash:.1f} s; calibration {t_cal:.1f} CPU-s; "
          f"find_copies without calibration (views, candidates, screen, registration) {t_all:.1f} CPU-s = "
          f"{1e3 * t_all / max(len(cand), 1):.2f} CPU-ms per candidate pair")
    print("  calibration: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in cal.__dict__.items()))
    at = {(int(x), int(y)): j for j, (x, y) in enumerate(zip(cand.a, cand.b))}
    pixel = cand.pixel_rank >= 0
    # the true pairs scored directly, whether or not they are candidates: the verifier on its own
    pa = np.array([p[0] for p in suite.planted])
    pb = np.array([p[1] for p in suite.planted])
    direct = verify_pairs(images, pa, pb, start=screen(images, pa, pb))
    # an eval copy is found when it is confirmed with any of its true partners (its source, or the source's twin
    # inside train)
    partners: dict[int, set[int]] = {}
    split_of = suite.split
    for x, y in [(p[0], p[1]) for p in suite.planted] + sorted(suite.known):
        if split_of[y] > split_of[x]:
            partners.setdefault(int(y), set()).add(int(x))

    def hit(mask: np.ndarray, e: int) -> bool:
        return any((t, e) in at and mask[at[(t, e)]] for t in partners.get(int(e), ()))

    rows = []
    for name in dict.fromkeys(p[2] for p in suite.planted):
        idx = [i for i, p in enumerate(suite.planted) if p[2] == name]
        c_pix = np.mean([at.get((pa[i], pb[i])) is not None and pixel[at[(pa[i], pb[i])]] for i in idx])
        c_all = np.mean([(pa[i], pb[i]) in at for i in idx])
        found = np.mean([hit(copy, pb[i]) for i in idx])
        band = np.mean([hit(copy | similar, pb[i]) for i in idx])
        alone = np.mean(direct.score[idx] >= cal.copy_cut)
        rows.append((name, len(idx), c_pix, c_all, alone, found, band, float(np.median(direct.score[idx]))))
    print(f"  {'transform':34s} {'n':>4s} | {'cand pix':>8s} {'cand all':>8s} | {'verify':>6s} | {'found':>6s} "
          f"{'+similar':>8s} | {'score p50':>9s}")
    for r in rows:
        print(f"  {r[0]:34s} {r[1]:4d} | {r[2]:8.2f} {r[3]:8.2f} | {r[4]:6.2f} | {r[5]:6.2f} {r[6]:8.2f} | {r[7]:9.3f}")
    w = np.array([r[1] for r in rows], float)
    tot = [float(np.average([r[k] for r in rows], weights=w)) for k in (2, 3, 4, 5, 6)]
    print(f"  {'OVERALL':34s} {int(w.sum()):4d} | {tot[0]:8.3f} {tot[1]:8.3f} | {tot[2]:6.3f} | {tot[3]:6.3f} {tot[4]:8.3f} |")
    worst = min(rows, key=lambda r: r[5])
    print(f"  worst transform end to end: {worst[0]} {worst[5]:.2f}")
    # false pairs: confirmed pairs that are neither planted nor known copies
    planted = {(int(a), int(b)) for a, b, _ in suite.planted} | suite.known
    false_pairs = [(int(x), int(y)) for x, y, c in zip(cand.a, cand.b, copy) if c and (int(x), int(y)) not in planted]
    false_sim = [(int(x), int(y)) for x, y, c in zip(cand.a, cand.b, similar) if c and (int(x), int(y)) not in planted]
    hard_ids = {(a, b) for a, b, _ in suite.hard}
    hard_flag = sum(1 for p in false_pairs if p in hard_ids)
    print(f"  false copy pairs: {len(false_pairs)} ({len({b for _, b in false_pairs})} eval images) = "
          f"{1e3 * len({b for _, b in false_pairs}) / n_eval:.2f} per 1,000 eval images; of them hard negatives "
          f"(neighbouring crops) {hard_flag}/{len(suite.hard)}; similar-band false pairs: {len(false_sim)} "
          f"({1e3 * len({b for _, b in false_sim}) / n_eval:.1f} per 1,000)")
    if suite.origin is not None and false_pairs:
        kinds: dict[str, int] = {}
        for x, y in false_pairs:
            k = f"{suite.origin[x]}~{suite.origin[y]}" if suite.origin[x] != suite.origin[y] else f"{suite.origin[x]} (same photo)"
            kinds[k] = kinds.get(k, 0) + 1
        print("    by source: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:8]))
    if gt is not None and false_pairs:
        # Fashion-MNIST holds more real duplicates than the 18 within MAD 4: how far apart are the "false" pairs?
        g = suite.images[..., 0].astype(np.int16)
        mad = np.array([np.abs(g[x] - g[y]).mean() for x, y in false_pairs])
        hist = np.histogram(mad, [0, 4, 8, 16, 32, 256])[0]
        print("    their mean absolute difference (grey levels, 32 px): "
              + ", ".join(f"{lo}-{hi}: {c}" for lo, hi, c in zip((0, 4, 8, 16, 32), (4, 8, 16, 32, 255), hist)))
    if gt is not None:
        hits = [(i, j, m) for i, j, m in gt if (j, i) in at and copy[at[(j, i)]]]
        cands = [(i, j, m) for i, j, m in gt if (j, i) in at]
        print(f"  Fashion-MNIST ground truth (test within MAD 4 of a train image): {len(gt)} pairs, "
              f"{len({g[0] for g in gt})} test images; candidates {len(cands)}, found as copies {len(hits)} "
              f"({len({h[0] for h in hits})} images)")
        for i, j, m in gt:
            j2 = at.get((j, i))
            print(f"    test {i - int((suite.split == 0).sum()):5d} train {j:5d} MAD {m:.2f}: "
                  + ("not a candidate" if j2 is None else f"score {reg.score[j2]:.3f} {'COPY' if copy[j2] else 'similar' if similar[j2] else 'missed'}"))
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=("tiny", "photo", "fmnist", "all"), default="all")
    ap.add_argument("--sources", type=int, default=300, help="training images that get copies (photo suites)")
    ap.add_argument("--twins", type=int, default=10, help="every N-th source is also copied inside train (0: none)")
    ap.add_argument("--fmnist-train", type=int, default=60000)
    ap.add_argument("--fmnist-copies", type=int, default=300)
    ap.add_argument("--fmnist-test", type=int, default=10000, help="test images (+ those of the ground truth)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.suite in ("tiny", "all"):
        measure(photo_suite(32, args.sources, twins=args.twins), 32)
    if args.suite in ("photo", "all"):
        measure(photo_suite(128, args.sources, twins=args.twins), 64)
    if args.suite in ("fmnist", "all"):
        made = fmnist_suite(args.fmnist_train, args.fmnist_copies, args.fmnist_test)
        if made is None:
            print(f"Fashion-MNIST not found in {FMNIST_DIR}: `apt-get install -y dataset-fashion-mnist`. Skipped.")
        else:
            measure(made[0], 32, made[1])
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
