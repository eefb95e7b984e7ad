"""Measure how the near-duplicate radii (max_phash, max_dhash) trade recall against false pairs.

Run:  python benchmarks/hash_thresholds.py  [--workers 2] [--layouts 30] [--copies 20] [--fmnist 5000] [--seed N]
See docs/thresholds.md for what the output means and how the defaults were chosen from it.

Deterministic (fixed seeds), no network; scratch files live in a temporary directory.  About a minute on 2 cores.

1. Distinct images.
   * Photos: the photos bundled with scikit-image and scikit-learn (PHOTO_SOURCES, including the texture photos
     brick, grass, gravel, text and page, whose tiles are the hard negatives) cut into non-overlapping tiles.  Region
     sides are 32-256 px in the source; regions under 64 px are saved upscaled 2x, so every tile is 64-256 px (the
     bundled photos hold only ~750 tiles of 64-256 px at native scale).  Mostly blank tiles (``mostly_blank``) are
     dropped: two blank tiles *are* duplicates as far as a viewer can tell.  Saved as JPEG quality 90.  This is
     repeated for --layouts independent random layouts (different tile sizes and borders), each one a separate set of
     distinct images; false pairs are counted within each layout and pooled.
   * Fashion-MNIST (Debian package ``dataset-fashion-mnist``): the first N test images, 28x28 grey, saved as PNG.
     A "uniform" dataset where every image looks alike.  Skipped with a message when the package is absent.
2. Transformed copies of a seeded sample of the distinct images (TRANSFORMS: re-encodes, resizes, crops, flips,
   rotations, photometric edits, blur, text overlay).
3. Features with the tool's own ``splitaudit.features.extract_batch`` (draft-mode JPEG decode included), and
   distances exactly as ``splitaudit.neighbors.binary.hash_pairs`` sees them: a pair matches when, in one
   orientation (as stored, a mirrored vs b, or b mirrored vs a), pHash distance <= max_phash AND dHash distance
   <= max_dhash.  Distributions of copy-to-source and nearest-neighbour distances are printed.
4. For a grid of radii: recall per transform and family, false pairs among distinct images, and a recommendation.

"False pairs per 10k images" is the number of distinct-image pairs found within the radii, scaled to what a
dataset of 10,000 images of the same kind would show: observed count x C(10000, 2) / (number of pairs examined),
since false pairs grow with the number of *pairs*.  Raw counts are printed too.

The recommended default is the highest recall whose false pairs per 10k, counted over pairs of tiles cut from two
*different* photos, stay within the budget (1).  Pairs of tiles of one photo are reported but not used for the
choice: they include mirror-image lookalikes (the left and right rims of the retina photo) that match at almost any
radius, so a rule on all pairs only shrinks towards (4, 4) as more layouts are sampled.
"""

from __future__ import annotations

import argparse
import gzip
import io
import multiprocessing as mp
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from splitaudit.features import HashOptions, extract_batch
from splitaudit.features.hashing import hamming

SEED = 20240607
PHASH_GRID = list(range(4, 17, 2))  # pHash distances are always even (see the report)
DHASH_GRID = list(range(4, 21))
CURRENT = (10, 14)
FALSE_BUDGET_PER_10K = 1.0
RECALL_TIE = 0.005  # recall differences under half a point are within sampling noise
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"

PHOTO_SOURCES = [
    # (name, loader) -- all bundled, none needs a download
    ("astronaut", "skimage"), ("coffee", "skimage"), ("chelsea", "skimage"), ("rocket", "skimage"),
    ("hubble_deep_field", "skimage"), ("immunohistochemistry", "skimage"), ("camera", "skimage"),
    ("coins", "skimage"), ("text", "skimage"), ("brick", "skimage"), ("grass", "skimage"), ("gravel", "skimage"),
    ("page", "skimage"), ("moon", "skimage"), ("retina", "skimage"), ("clock", "skimage"), ("cell", "skimage"),
    ("stereo_motorcycle", "skimage"), ("china.jpg", "sklearn"), ("flower.jpg", "sklearn"),
]
#: Region sides in the source photo. Regions under 64 px are saved upscaled 2x (bicubic), so every tile is 64-256 px;
#: without them the bundled photos give only ~750 tiles of 64-256 px.
TILE_SIDES = np.array([32, 48, 64, 96, 128, 192, 256])
TILE_WEIGHTS = np.array([0.35, 0.30, 0.13, 0.09, 0.06, 0.04, 0.03])
MIN_TILE_STD = 4.0


# --------------------------------------------------------------------------------------------------- images


def load_photo(name: str, kind: str) -> np.ndarray:
    if kind == "sklearn":
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)
    import skimage.data

    a = getattr(skimage.data, name)()
    if isinstance(a, tuple):  # stereo_motorcycle: (left, right, disparity): the right view would duplicate the left
        a = a[0]
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    return np.ascontiguousarray(a.astype(np.uint8))


def shelf_tiles(h: int, w: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Non-overlapping (y, x, th, tw) boxes covering the image in rows of random height and random widths."""
    boxes = []
    y = 0
    while h - y >= TILE_SIDES[0]:
        fits = TILE_SIDES[TILE_SIDES <= h - y]
        th = int(rng.choice(fits, p=TILE_WEIGHTS[: len(fits)] / TILE_WEIGHTS[: len(fits)].sum()))
        x = 0
        while w - x >= TILE_SIDES[0]:
            ok = (TILE_SIDES <= w - x) & (TILE_SIDES <= 2 * th) & (2 * TILE_SIDES >= th)
            if not ok.any():
                break
            p = TILE_WEIGHTS * ok
            tw = int(rng.choice(TILE_SIDES, p=p / p.sum()))
            boxes.append((y, x, th, tw))
            x += tw
        y += th
    return boxes


def to_pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a, "L" if a.ndim == 2 else "RGB")


def save(im: Image.Image, path: str, fmt: str) -> None:
    if fmt == "png":
        im.save(path, "PNG")
    else:
        im.save(path, "JPEG", quality=int(fmt[4:]))


def mostly_blank(a: np.ndarray) -> bool:
    """Near-uniform tiles (sky, black borders): grey standard deviation < 4, or at least 3/4 of the 8x8 blocks of the
    32x32 image the pHash is computed from nearly flat (std < 2), e.g. a black tile with a sliver of the retina's edge
    in one corner.  Such tiles look alike to a viewer, so they are not negatives."""
    im = to_pil(a).convert("L")
    g = np.asarray(im, dtype=np.float64)
    g32 = np.asarray(im.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    blocks = g32.reshape(4, 8, 4, 8).std(axis=(1, 3))
    return bool(g.std() < MIN_TILE_STD or np.mean(blocks < 2) >= 0.75)


def make_photo_tiles(root: str, seed: int, verbose: bool) -> tuple[list[str], list[str], list[bool], list[bool]]:
    """One layout: every source photo cut into non-overlapping tiles (the seed picks the sizes)."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths, origin, colour, upscaled = [], [], [], []
    dropped = 0
    if verbose:
        print("Photo tiles per source, first layout (non-overlapping regions; regions under 64 px saved upscaled 2x; "
              "mostly blank ones dropped):")
        print(f"  {'source':22s} {'size':>10s} {'native':>7s} {'upsc.':>6s} {'blank':>6s}")
    for name, kind in PHOTO_SOURCES:
        img = load_photo(name, kind)
        short = name.split(".")[0]
        boxes = shelf_tiles(img.shape[0], img.shape[1], rng)
        counts = [0, 0]
        blank = 0
        for (y, x, th, tw) in boxes:
            t = img[y : y + th, x : x + tw]
            if mostly_blank(t):
                blank += 1
                continue
            im = to_pil(t)
            up = min(th, tw) < 64
            if up:
                im = im.resize((2 * tw, 2 * th), Image.Resampling.BICUBIC)
            p = os.path.join(root, f"{short}_{y}_{x}.jpg")
            save(im, p, "jpeg90")
            paths.append(p)
            origin.append(short)
            colour.append(t.ndim == 3)
            upscaled.append(up)
            counts[up] += 1
        dropped += blank
        if verbose:
            print(f"  {short:22s} {img.shape[1]:>4d}x{img.shape[0]:<5d} {counts[0]:7d} {counts[1]:6d} {blank:6d}")
    n_up = sum(upscaled)
    if verbose:
        print(f"  {'total':22s} {'':10s} {len(paths) - n_up:7d} {n_up:6d} {dropped:6d}   = {len(paths)} tiles\n")
    return paths, origin, colour, upscaled


def read_idx_images(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    n, rows, cols = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def make_fmnist(root: str, n: int) -> tuple[list[str], list[str], list[bool], list[bool]] | None:
    path = os.path.join(FMNIST_DIR, "t10k-images-idx3-ubyte.gz")
    if not os.path.exists(path):
        print(f"Fashion-MNIST not found at {path}: install it with "
              "`apt-get update && apt-get install -y dataset-fashion-mnist`. Skipping that dataset.\n")
        return None
    imgs = read_idx_images(path)[:n]
    os.makedirs(root, exist_ok=True)
    paths = []
    for i, a in enumerate(imgs):
        p = os.path.join(root, f"fm_{i:05d}.png")
        save(to_pil(a), p, "png")
        paths.append(p)
    print(f"Fashion-MNIST: first {len(paths)} test images (28x28 grey), saved as PNG.\n")
    return paths, ["fmnist"] * len(paths), [False] * len(paths), [False] * len(paths)


# ----------------------------------------------------------------------------------------------- transforms


@dataclass(frozen=True)
class Transform:
    name: str
    family: str
    fn: Callable[[Image.Image, np.random.Generator], Image.Image] | None  # None: byte-identical file copy
    fmt: str | None = None  # None: the dataset's own format (JPEG q90 for photos, PNG for Fashion-MNIST)
    colour_only: bool = False


def _resize(f: float):
    return lambda im, r: im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.BICUBIC)


def _crop_side(f: float):
    def fn(im: Image.Image, r: np.random.Generator) -> Image.Image:
        w, h = im.size
        side = int(r.integers(4))  # left, right, top, bottom: one edge loses the fraction f of that dimension
        cw, ch = max(1, round(w * f)), max(1, round(h * f))
        box = [(cw, 0, w, h), (0, 0, w - cw, h), (0, ch, w, h), (0, 0, w, h - ch)][side]
        return im.crop(box)

    return fn


def _crop_centre(f: float):
    def fn(im: Image.Image, r: np.random.Generator) -> Image.Image:
        w, h = im.size  # keep the centre: f of the width and f of the height removed, half from each edge
        cw, ch = max(1, round(w * f)), max(1, round(h * f))
        return im.crop((cw // 2, ch // 2, w - (cw - cw // 2), h - (ch - ch // 2)))

    return fn


def _rotate(deg: float):
    def fn(im: Image.Image, r: np.random.Generator) -> Image.Image:
        from scipy import ndimage

        a = np.asarray(im, dtype=np.float64)
        out = ndimage.rotate(a, deg, axes=(1, 0), reshape=False, order=3, mode="reflect")  # no black corners
        return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), im.mode)

    return fn


def _enhance(cls, factor: float):
    return lambda im, r: cls(im).enhance(factor)


def _overlay(im: Image.Image, r: np.random.Generator) -> Image.Image:
    im = im.copy()
    size = max(7, round(im.height * 0.08))  # a corner watermark: about 8% of the height, a third of the width
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, ImportError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(im)
    fill = 255 if im.mode == "L" else (255, 255, 255)
    stroke = 0 if im.mode == "L" else (0, 0, 0)
    draw.text((2, im.height - size - 3), "(c) 2024", font=font, fill=fill, stroke_width=1, stroke_fill=stroke)
    return im


TRANSFORMS: list[Transform] = [
    Transform("exact copy", "exact", None),
    Transform("jpeg q90", "re-encode", lambda im, r: im, "jpeg90"),
    Transform("jpeg q75", "re-encode", lambda im, r: im, "jpeg75"),
    Transform("jpeg q50", "re-encode", lambda im, r: im, "jpeg50"),
    Transform("jpeg q30", "re-encode", lambda im, r: im, "jpeg30"),
    Transform("png of pixels", "re-encode", lambda im, r: im, "png"),
    Transform("resize 50%", "resize", _resize(0.5)),
    Transform("resize 75%", "resize", _resize(0.75)),
    Transform("resize 150%", "resize", _resize(1.5)),
    Transform("resize 200%", "resize", _resize(2.0)),
    *[Transform(f"crop {p}% side", "crop <=5%" if p <= 5 else "crop >=10%", _crop_side(p / 100)) for p in (3, 5, 10, 15, 25)],
    *[Transform(f"crop {p}% centre", "crop <=5%" if p <= 5 else "crop >=10%", _crop_centre(p / 100)) for p in (3, 5, 10, 15, 25)],
    Transform("hflip", "flip", lambda im, r: ImageOps.mirror(im)),
    Transform("hflip + jpeg q75", "flip", lambda im, r: ImageOps.mirror(im), "jpeg75"),
    Transform("rotate +3", "rotate 3", _rotate(3)),
    Transform("rotate -3", "rotate 3", _rotate(-3)),
    Transform("rotate +10", "rotate 10", _rotate(10)),
    Transform("rotate -10", "rotate 10", _rotate(-10)),
    Transform("brightness +20%", "photometric", _enhance(ImageEnhance.Brightness, 1.2)),
    Transform("brightness -20%", "photometric", _enhance(ImageEnhance.Brightness, 0.8)),
    Transform("contrast +20%", "photometric", _enhance(ImageEnhance.Contrast, 1.2)),
    Transform("contrast -20%", "photometric", _enhance(ImageEnhance.Contrast, 0.8)),
    Transform("saturation x1.5", "photometric", _enhance(ImageEnhance.Color, 1.5), colour_only=True),
    Transform("saturation x0.5", "photometric", _enhance(ImageEnhance.Color, 0.5), colour_only=True),
    Transform("grayscale", "photometric", lambda im, r: im.convert("L"), colour_only=True),
    Transform("gaussian blur r=1", "blur", lambda im, r: im.filter(ImageFilter.GaussianBlur(1))),
    Transform("gaussian blur r=2", "blur", lambda im, r: im.filter(ImageFilter.GaussianBlur(2))),
    Transform("text overlay", "overlay", _overlay),
]
FAMILIES = list(dict.fromkeys(t.family for t in TRANSFORMS))
UNCATCHABLE = ("crop >=10%", "rotate 10")


def make_copies(root: str, paths: list[str], colour: list[bool], n: int, default_fmt: str, seed: int):
    """Transformed copies of a seeded sample; returns (copy paths, source index, transform index)."""
    rng = np.random.default_rng(seed + 1)
    sample = np.sort(rng.choice(len(paths), size=min(n, len(paths)), replace=False))
    out, src, tid = [], [], []
    for s in sample:
        with open(paths[s], "rb") as fh:
            data = fh.read()
        base = Image.open(io.BytesIO(data))
        base.load()
        for k, t in enumerate(TRANSFORMS):
            if t.colour_only and not colour[s]:
                continue
            fmt = t.fmt or default_fmt
            p = os.path.join(root, f"copy_{s}_{k}.{'png' if fmt == 'png' else 'jpg'}")
            if t.fn is None:
                with open(p, "wb") as fh:
                    fh.write(data)
            else:
                r = np.random.default_rng([seed, int(s), k])
                save(t.fn(base, r), p, fmt)
            out.append(p)
            src.append(int(s))
            tid.append(k)
    return out, np.array(src), np.array(tid)


# ----------------------------------------------------------------------------------------------- features


def _extract_chunk(paths: list[str]) -> dict[str, np.ndarray]:
    out = extract_batch({"path": np.array(paths, dtype=object)}, HashOptions())
    return {k: out[k] for k in ("phash", "dhash", "phash_flip", "dhash_flip", "status")}


def extract(paths: list[str], workers: int) -> dict[str, np.ndarray]:
    chunks = [paths[i : i + 400] for i in range(0, len(paths), 400)]
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_extract_chunk, chunks)
    else:
        parts = [_extract_chunk(c) for c in chunks]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    bad = np.flatnonzero(out["status"] != "ok")
    if len(bad):
        sys.exit(f"{len(bad)} images failed to decode, e.g. {paths[bad[0]]}: {out['status'][bad[0]]}")
    return out


def orientations(h: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pHash, dHash) distances of pairs (a, b) in the three orientations hash_pairs tries: shape (3, n) each.

    0: as stored; 1: a mirrored vs b; 2: b mirrored vs a (mirroring is not symmetric for pHash's median split).
    """
    p = np.stack([hamming(h["phash"][a], h["phash"][b]), hamming(h["phash_flip"][a], h["phash"][b]),
                  hamming(h["phash_flip"][b], h["phash"][a])])
    d = np.stack([hamming(h["dhash"][a], h["dhash"][b]), hamming(h["dhash_flip"][a], h["dhash"][b]),
                  hamming(h["dhash_flip"][b], h["dhash"][a])])
    return p, d


def best(p: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The orientation with the smallest pHash + dHash sum (ties: as stored first), as the tool reports it."""
    k = np.argmin(p + d, axis=0)
    idx = np.arange(p.shape[1])
    return p[k, idx], d[k, idx]


def match_grid(p: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(len(PHASH_GRID), len(DHASH_GRID), n) booleans: matched at those radii in some orientation."""
    P = np.array(PHASH_GRID)[:, None, None, None]
    D = np.array(DHASH_GRID)[None, :, None, None]
    return ((p[None, None] <= P) & (d[None, None] <= D)).any(axis=2)


def _ham_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.empty((len(x), len(y)), dtype=np.int8)
    for i in range(0, len(x), 512):
        out[i : i + 512] = hamming(np.repeat(x[i : i + 512], len(y)), np.tile(y, len(x[i : i + 512]))).reshape(-1, len(y))
    return out


@dataclass
class Distinct:
    n: int
    pairs: np.ndarray  # (m, 2) candidate pairs within the largest grid radii in some orientation
    p: np.ndarray  # (3, m)
    d: np.ndarray  # (3, m)
    nn_p: np.ndarray  # per image: distances to its nearest neighbour (best orientation, smallest sum)
    nn_d: np.ndarray
    nn_p_alone: np.ndarray  # per image: smallest pHash distance to any other image, any orientation
    nn_d_alone: np.ndarray


def distinct_pairs(h: dict[str, np.ndarray]) -> Distinct:
    n = len(h["phash"])
    Pn, Dn = _ham_matrix(h["phash"], h["phash"]), _ham_matrix(h["dhash"], h["dhash"])
    Pf, Df = _ham_matrix(h["phash_flip"], h["phash"]), _ham_matrix(h["dhash_flip"], h["dhash"])  # [i, j]: flip(i) vs j
    big = 127
    S = np.minimum(np.minimum(Pn.astype(np.int16) + Dn, Pf.astype(np.int16) + Df), (Pf.astype(np.int16) + Df).T)
    np.fill_diagonal(S, big)
    nn = np.argmin(S, axis=1)
    ii = np.arange(n)
    p3, d3 = orientations(h, ii, nn)
    nn_p, nn_d = best(p3, d3)
    Pmin = np.minimum(np.minimum(Pn, Pf), Pf.T)
    Dmin = np.minimum(np.minimum(Dn, Df), Df.T)
    np.fill_diagonal(Pmin, big)
    np.fill_diagonal(Dmin, big)
    cand = np.zeros((n, n), dtype=bool)
    for P, D in ((Pn, Dn), (Pf, Df), (Pf.T, Df.T)):
        cand |= (P <= PHASH_GRID[-1]) & (D <= DHASH_GRID[-1])
    cand = np.triu(cand, 1)
    a, b = np.nonzero(cand)
    p, d = orientations(h, a, b)
    return Distinct(n, np.stack([a, b], 1), p, d, nn_p, nn_d, Pmin.min(axis=1), Dmin.min(axis=1))


def n_pairs(n: int) -> int:
    return n * (n - 1) // 2


def per_10k(count: np.ndarray | float, pairs: int) -> np.ndarray | float:
    """False pairs a dataset of 10,000 such images would show: the per-pair rate times C(10000, 2)."""
    return count * n_pairs(10_000) / pairs


# ---------------------------------------------------------------------------------------------------- report


def pct(x: np.ndarray, q: float) -> str:
    return f"{np.percentile(x, q):.0f}" if len(x) else "-"


def print_copy_distributions(title: str, bp: np.ndarray, bd: np.ndarray, tid: np.ndarray) -> None:
    print(f"== {title}: distance of each copy to its source (best orientation), over the sampled sources ==")
    print(f"  {'transform':20s} {'n':>4s} | {'pHash: p50':>10s} {'p90':>4s} {'p95':>4s} {'max':>4s} | "
          f"{'dHash: p50':>10s} {'p90':>4s} {'p95':>4s} {'max':>4s}")
    for k, t in enumerate(TRANSFORMS):
        m = tid == k
        if not m.any():
            print(f"  {t.name:20s} {0:4d} | (not applicable: grey images)")
            continue
        x, y = bp[m], bd[m]
        print(f"  {t.name:20s} {m.sum():4d} | {pct(x, 50):>10s} {pct(x, 90):>4s} {pct(x, 95):>4s} {x.max():4d} | "
              f"{pct(y, 50):>10s} {pct(y, 90):>4s} {pct(y, 95):>4s} {y.max():4d}")
    print()


def print_nn(title: str, r) -> None:
    nn_p = np.concatenate([p.dist.nn_p for p in r.parts])
    nn_d = np.concatenate([p.dist.nn_d for p in r.parts])
    p_alone = np.concatenate([p.dist.nn_p_alone for p in r.parts])
    d_alone = np.concatenate([p.dist.nn_d_alone for p in r.parts])
    print(f"== {title}: nearest other distinct image (N={r.n}" + (f", nearest within each of {len(r.parts)} layouts" if len(r.parts) > 1 else "") + ") ==")
    print("  Nearest by pHash+dHash sum, best orientation; and each hash alone (smallest distance, any orientation).")
    print(f"  {'':28s} {'min':>4s} {'p1':>4s} {'p5':>4s} {'p25':>4s} {'p50':>4s}")
    for label, x in (("pHash of nearest (by sum)", nn_p), ("dHash of nearest (by sum)", nn_d),
                     ("pHash alone, nearest", p_alone), ("dHash alone, nearest", d_alone)):
        print(f"  {label:28s} {x.min():4d} " + " ".join(f"{pct(x, q):>4s}" for q in (1, 5, 25, 50)))
    ks = (4, 6, 8, 10, 12, 14, 16)
    print("  share of images with another image within k bits:  k = " + " ".join(f"{k:>5d}" for k in ks))
    for label, x in (("pHash alone", p_alone), ("dHash alone", d_alone)):
        print(f"  {label:51s} " + " ".join(f"{100 * np.mean(x <= k):4.1f}%" for k in ks))
    print()


def print_matrix(title: str, m: np.ndarray, fmt: str, mark: dict[tuple[int, int], str]) -> None:
    print(f"== {title} ==")
    print("  rows: max_phash, columns: max_dhash" + ("; " + ", ".join(f"{v} = {k}" for k, v in
          {v: k for k, v in mark.items()}.items()) if mark else ""))
    print("  " + " " * 4 + "".join(f"{d:>7d}" for d in DHASH_GRID))
    for i, P in enumerate(PHASH_GRID):
        cells = []
        for j, D in enumerate(DHASH_GRID):
            s = fmt.format(m[i, j])
            cells.append(f"{s + mark.get((P, D), ' '):>7s}")
        print(f"  {P:4d}" + "".join(cells))
    print()


def gi(P: int, D: int) -> tuple[int, int]:
    return PHASH_GRID.index(P), DHASH_GRID.index(D)


@dataclass
class Part:
    """One set of distinct images (one photo layout, or Fashion-MNIST) with its transformed copies, measured."""

    n: int
    origin: np.ndarray
    upscaled: np.ndarray
    tid: np.ndarray  # per copy: transform index
    bp: np.ndarray  # per copy: distances to its source, best orientation
    bd: np.ndarray
    grid: np.ndarray  # (P, D, copies): matched at those radii
    dist: Distinct
    pgrid: np.ndarray  # (P, D, candidate pairs): distinct pair matched at those radii
    native_pair: np.ndarray  # per candidate pair: both tiles at native resolution, from two different photos
    same_pair: np.ndarray  # per candidate pair: both tiles cut from the same photo
    weight32: tuple[int, int]
    grid_plain: np.ndarray  # as grid / pgrid, comparing the images as stored only (no mirrored matching)
    pgrid_plain: np.ndarray
    grid_one: np.ndarray  # as grid / pgrid, with one mirrored test per pair (flip of the lower index vs the other)
    pgrid_one: np.ndarray


def measure(root: str, data, n_copies: int, fmt: str, seed: int, workers: int) -> Part:
    paths, origin, colour, upscaled = data
    cpaths, src, tid = make_copies(root, paths, colour, n_copies, fmt, seed)
    h = extract(paths + cpaths, workers)
    n = len(paths)
    a = n + np.arange(len(cpaths))  # the copies follow the distinct images in the same hash table
    p3, d3 = orientations(h, a, src)
    bp, bd = best(p3, d3)
    dist = distinct_pairs({k: v[:n] for k, v in h.items()})
    pgrid = match_grid(dist.p, dist.d) if len(dist.pairs) else np.zeros((len(PHASH_GRID), len(DHASH_GRID), 0), bool)
    up = np.array(upscaled)
    org = np.array(origin)
    same_pair = org[dist.pairs[:, 0]] == org[dist.pairs[:, 1]] if len(dist.pairs) else np.zeros(0, bool)
    native_pair = ~up[dist.pairs[:, 0]] & ~up[dist.pairs[:, 1]] & ~same_pair if len(dist.pairs) else np.zeros(0, bool)
    weights = np.concatenate([hamming(h[c], np.zeros_like(h[c])) for c in ("phash", "phash_flip")])  # popcounts
    pgrid_plain = match_grid(dist.p[:1], dist.d[:1]) if len(dist.pairs) else pgrid
    return Part(n, org, up, tid, bp, bd, match_grid(p3, d3), dist, pgrid, native_pair, same_pair,
                (int((weights == 32).sum()), len(weights)), match_grid(p3[:1], d3[:1]), pgrid_plain,
                # copies have higher indices than their sources: the lower index is the source (orientation 2)
                match_grid(p3[[0, 2]], d3[[0, 2]]),
                match_grid(dist.p[:2], dist.d[:2]) if len(dist.pairs) else pgrid)


@dataclass
class Pooled:
    name: str
    parts: list[Part]

    def __post_init__(self) -> None:
        ps = self.parts
        self.n = sum(p.n for p in ps)
        self.pairs = sum(n_pairs(p.n) for p in ps)
        self.native_pairs = sum(n_pairs(int((~p.upscaled).sum())) - sum(n_pairs(c) for c in np.unique(p.origin[~p.upscaled], return_counts=True)[1])
                                for p in ps)
        self.n_native = sum(int((~p.upscaled).sum()) for p in ps)
        self.false = sum(p.pgrid.sum(axis=2) for p in ps)
        self.false_native = sum(p.pgrid[:, :, p.native_pair].sum(axis=2) for p in ps)
        self.false_same = sum(p.pgrid[:, :, p.same_pair].sum(axis=2) for p in ps)
        self.false_cross = self.false - self.false_same
        self.same_pairs = sum(n_pairs(c) for p in ps for c in np.unique(p.origin, return_counts=True)[1])
        self.cross_pairs = self.pairs - self.same_pairs
        self.tid = np.concatenate([p.tid for p in ps])
        self.bp = np.concatenate([p.bp for p in ps])
        self.bd = np.concatenate([p.bd for p in ps])
        grid = np.concatenate([p.grid for p in ps], axis=2)
        self.n_copies = grid.shape[2]
        self.rec_t = np.stack([grid[:, :, self.tid == k].mean(axis=2) if (self.tid == k).any()
                               else np.full(grid.shape[:2], np.nan) for k in range(len(TRANSFORMS))], axis=2)
        self.rec_f = np.stack([np.nanmean(self.rec_t[:, :, [k for k, t in enumerate(TRANSFORMS) if t.family == f]], axis=2)
                               for f in FAMILIES], axis=2)
        self.overall = np.nanmean(self.rec_t, axis=2)
        plain = np.concatenate([p.grid_plain for p in ps], axis=2)
        self.overall_plain = np.nanmean(np.stack([plain[:, :, self.tid == k].mean(axis=2) if (self.tid == k).any()
                                                  else np.full(plain.shape[:2], np.nan) for k in range(len(TRANSFORMS))], axis=2), axis=2)
        self.false_plain = sum(p.pgrid_plain.sum(axis=2) for p in ps)
        one = np.concatenate([p.grid_one for p in ps], axis=2)
        self.overall_one = np.nanmean(np.stack([one[:, :, self.tid == k].mean(axis=2) if (self.tid == k).any()
                                                else np.full(one.shape[:2], np.nan) for k in range(len(TRANSFORMS))], axis=2), axis=2)
        self.false_one = sum(p.pgrid_one.sum(axis=2) for p in ps)
        catch = [k for k, t in enumerate(TRANSFORMS) if t.family not in UNCATCHABLE]
        self.catchable = np.nanmean(self.rec_t[:, :, catch], axis=2)
        self.f10k = per_10k(self.false, self.pairs)
        self.f10k_cross = per_10k(self.false_cross, self.cross_pairs) if self.cross_pairs else self.f10k

    def at(self, P: int, D: int) -> tuple[int, int]:
        return PHASH_GRID.index(P), DHASH_GRID.index(D)


def recommend(ph: Pooled, budget: float, cross: bool = False) -> tuple[int, int]:
    """Highest overall photo recall with false pairs per 10k <= budget; recalls within RECALL_TIE of the best count as
    ties, broken by the smallest max_phash + max_dhash (then the smaller max_phash).  ``cross``: count only pairs of
    tiles cut from two different photos."""
    score = np.where((ph.f10k_cross if cross else ph.f10k) <= budget, ph.overall, -1.0)
    tied = score >= score.max() - RECALL_TIE
    cands = [(P + D, P, D) for i, P in enumerate(PHASH_GRID) for j, D in enumerate(DHASH_GRID) if tied[i, j]]
    return min(cands)[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--layouts", type=int, default=30, help="independent tile layouts of the photos (pooled)")
    ap.add_argument("--copies", type=int, default=20, help="tiles per layout that get transformed copies")
    ap.add_argument("--fmnist", type=int, default=5000, help="Fashion-MNIST test images to use (0: skip)")
    ap.add_argument("--fmnist-copies", type=int, default=300)
    ap.add_argument("--seed", type=int, default=SEED, help="changes the tile layouts and the sampled sources")
    ap.add_argument("--budget", type=float, default=FALSE_BUDGET_PER_10K, help="false photo pairs per 10k images allowed")
    ap.add_argument("--exclude", nargs="*", default=[], help="source photos to leave out (sensitivity checks), e.g. retina")
    args = ap.parse_args()
    PHOTO_SOURCES[:] = [s for s in PHOTO_SOURCES if s[0].split(".")[0] not in args.exclude]

    results: dict[str, Pooled] = {}
    with tempfile.TemporaryDirectory(prefix="hash_thresholds_") as root:
        parts = []
        for layout in range(args.layouts):
            seed = args.seed + 1000 * layout
            d = os.path.join(root, f"photos{layout}")
            tiles = make_photo_tiles(d, seed, verbose=layout == 0)
            parts.append(measure(d, tiles, args.copies, "jpeg90", seed, args.workers))
        results["photos"] = Pooled("photos", parts)
        print(f"photos: {args.layouts} layouts of {', '.join(str(p.n) for p in parts)} distinct tiles "
              f"({results['photos'].n} in all, {results['photos'].pairs:,} distinct pairs); "
              f"{results['photos'].n_copies} transformed copies of {args.copies} tiles per layout.")
        fm = make_fmnist(os.path.join(root, "fmnist"), args.fmnist) if args.fmnist > 0 else None
        if fm is not None:
            d = os.path.join(root, "fmnist")
            results["Fashion-MNIST"] = Pooled("Fashion-MNIST", [measure(d, fm, args.fmnist_copies, "png", args.seed, args.workers)])
            r = results["Fashion-MNIST"]
            print(f"Fashion-MNIST: {r.n} distinct images ({r.pairs:,} pairs); {r.n_copies} transformed copies of "
                  f"{args.fmnist_copies} of them.")
        print()

    for name, r in results.items():
        print_copy_distributions(name, r.bp, r.bd, r.tid)
        print_nn(name, r)
    for name, r in results.items():
        w, t = (sum(x) for x in zip(*(p.weight32 for p in r.parts)))
        print(f"{name}: {w} of {t} pHashes (and mirrored pHashes) have exactly 32 bits set (median split of 64 DCT "
              "coefficients), so pHash distances are even: an odd max_phash behaves like the even value below it.")
    print()

    ph = results["photos"]
    aP, aD = recommend(ph, args.budget)  # counting every distinct pair
    rP, rD = recommend(ph, args.budget, cross=True)  # counting pairs of tiles from two different photos: the default
    mark = {CURRENT: "c", (aP, aD): "a", (rP, rD): "*"}
    for name, r in results.items():
        print_matrix(f"{name}: overall recall, % (mean over the {len(TRANSFORMS)} transforms)", 100 * r.overall, "{:.1f}", mark)
        print_matrix(f"{name}: false pairs among distinct images (raw count, {r.pairs:,} pairs"
                     + (f" over {len(r.parts)} layouts" if len(r.parts) > 1 else "") + ")", r.false, "{:d}", mark)
        print_matrix(f"{name}: false pairs per 10k images (count x C(10000,2) / {r.pairs:,})", r.f10k, "{:.0f}", mark)
        if r.cross_pairs and r.same_pairs:
            print_matrix(f"{name}: false pairs between tiles of two different photos (raw count, {r.cross_pairs:,} pairs)",
                         r.false_cross, "{:d}", mark)

    budgets = sorted({args.budget, 1, 5, 10, 25, 50, 100, 250})
    fm_ = results.get("Fashion-MNIST")
    for cross in (False, True):
        frontier = {b: recommend(ph, b, cross) for b in budgets}
        what = "pairs of tiles from two different photos" if cross else "all distinct pairs"
        print(f"== the trade-off: best photo recall for a budget of false photo pairs per 10k images, counting {what} ==")
        head = f"  {'budget':>7s} {'radii':>7s} {'recall':>7s} {'catchable':>10s} {'fp/10k: other photos':>21s} {'all':>6s}"
        print(head + (f" {'FMNIST recall':>14s} {'FMNIST fp/10k':>14s}" if fm_ else ""))
        for b, (P, D) in frontier.items():
            i, j = ph.at(P, D)
            line = (f"  {b:7g} {f'{P}/{D}':>7s} {100 * ph.overall[i, j]:6.1f}% {100 * ph.catchable[i, j]:9.1f}% "
                    f"{ph.f10k_cross[i, j]:21.1f} {ph.f10k[i, j]:6.1f}")
            print(line + (f" {100 * fm_.overall[i, j]:13.1f}% {fm_.f10k[i, j]:14.0f}" if fm_ else ""))
        print()

    looser = [recommend(ph, b, cross=True) for b in (5 * args.budget, 10 * args.budget)]
    points = [(rP, rD), (rP - 2, rD), (rP + 2, rD), (rP, rD - 2), (rP, rD + 2), (aP, aD), *looser, CURRENT]
    points = [pt for pt in dict.fromkeys(points) if pt[0] in PHASH_GRID and pt[1] in DHASH_GRID][:12]
    head = "".join(f"{f'{P}/{D}':>8s}" for P, D in points)
    for name, r in results.items():
        print(f"== {name}: recall per transform (%) at max_phash/max_dhash ==")
        print(f"  {'transform':20s}{head}")
        for k, t in enumerate(TRANSFORMS):
            vals = [r.rec_t[r.at(P, D)][k] for P, D in points]
            print(f"  {t.name:20s}" + "".join(f"{'-' if np.isnan(v) else f'{100 * v:.1f}':>8s}" for v in vals))
        print(f"  {'family':20s}{head}")
        for fi, f in enumerate(FAMILIES):
            print(f"  {f:20s}" + "".join(f"{100 * r.rec_f[r.at(P, D)][fi]:8.1f}" for P, D in points))
        print(f"  {'OVERALL':20s}" + "".join(f"{100 * r.overall[r.at(P, D)]:8.1f}" for P, D in points))
        print(f"  {'OVERALL catchable':20s}" + "".join(f"{100 * r.catchable[r.at(P, D)]:8.1f}" for P, D in points))
        print(f"  {'false pairs (raw)':20s}" + "".join(f"{r.false[r.at(P, D)]:8d}" for P, D in points))
        print(f"  {'false pairs /10k img':20s}" + "".join(f"{r.f10k[r.at(P, D)]:8.1f}" for P, D in points))
        if len(r.parts) > 1:
            per_layout = np.stack([p.pgrid.sum(axis=2) for p in r.parts])  # (layouts, P, D)
            print(f"  {'  layouts with any':20s}" + "".join(f"{int((per_layout[:, i, j] > 0).sum()):8d}" for i, j in (r.at(P, D) for P, D in points))
                  + f"   (of {len(r.parts)} layouts)")
            print(f"  {'  most in a layout':20s}" + "".join(f"{int(per_layout[:, i, j].max()):8d}" for i, j in (r.at(P, D) for P, D in points)))
        print(f"  {'no mirror: OVERALL':20s}" + "".join(f"{100 * r.overall_plain[r.at(P, D)]:8.1f}" for P, D in points)
              + "   (images compared as stored only)")
        print(f"  {'no mirror: false':20s}" + "".join(f"{r.false_plain[r.at(P, D)]:8d}" for P, D in points))
        print(f"  {'1 mirror: OVERALL':20s}" + "".join(f"{100 * r.overall_one[r.at(P, D)]:8.1f}" for P, D in points)
              + "   (one mirrored test per pair instead of two)")
        print(f"  {'1 mirror: false':20s}" + "".join(f"{r.false_one[r.at(P, D)]:8d}" for P, D in points))
        if len(np.unique(r.parts[0].origin)) > 1:
            print(f"  {'  same photo (raw)':20s}" + "".join(f"{r.false_same[r.at(P, D)]:8d}" for P, D in points)
                  + f"   (pairs of tiles of one photo: {r.same_pairs:,})")
            print(f"  {'  other photos (raw)':20s}" + "".join(f"{r.false_cross[r.at(P, D)]:8d}" for P, D in points)
                  + f"   (pairs of tiles of two photos: {r.cross_pairs:,})")
            print(f"  {'  other photos /10k':20s}" + "".join(f"{per_10k(r.false_cross[r.at(P, D)], r.cross_pairs):8.1f}" for P, D in points))
        if r.n_native < r.n:
            print(f"  {'  other, native':20s}" + "".join(f"{r.false_native[r.at(P, D)]:8d}" for P, D in points)
                  + f"   (pairs of native-resolution tiles of two photos: {r.native_pairs:,})")
        print()
    print(f"  'OVERALL catchable' leaves out the families no radius in the grid catches: {', '.join(UNCATCHABLE)}.\n")

    rows = []
    for li, p in enumerate(ph.parts):
        if len(p.dist.pairs):
            bp_, bd_ = best(p.dist.p, p.dist.d)
            o = np.argmin(p.dist.p + p.dist.d, axis=0)
            tag = lambda i: p.origin[i] + ("^" if p.upscaled[i] else "")
            rows += [(int(bp_[q] + bd_[q]), int(bp_[q]), int(bd_[q]), li, f"{tag(a)} / {tag(b)}" + ("  (mirrored)" if o[q] else ""))
                     for q, (a, b) in enumerate(p.dist.pairs)]
    rows.sort()
    print("== photos: the closest distinct pairs over all layouts (best orientation; ^ = upscaled from a small region) ==")
    for _, P, D, li, label in rows[:25]:
        print(f"  pHash {P:2d}  dHash {D:2d}   layout {li}: {label}")
    print()

    print("== recommendation ==")
    print(f"  rule: highest overall photo recall with false pairs per 10k photo images <= {args.budget:g} "
          f"(recalls within {100 * RECALL_TIE:g} points of the best are ties: smallest max_phash + max_dhash wins)")
    print(f"  one observed false pair = {per_10k(1, ph.pairs):.1f} per 10k images over all {ph.pairs:,} distinct pairs, "
          f"{per_10k(1, ph.cross_pairs):.1f} over the {ph.cross_pairs:,} pairs of tiles from two different photos")
    print(f"  (a) counting all distinct pairs:           max_phash={aP} max_dhash={aD}")
    print(f"  (b) counting pairs from different photos:  max_phash={rP} max_dhash={rD}   <- recommended default")
    print("  (b) is the default: tiles of one photo include mirror-symmetric lookalikes (the two sides of the retina's")
    print("  rim) that collide at almost any radius, so (a) only shrinks as more layouts are sampled (see the closest pairs).")
    for label, (P, D) in (("recommended", (rP, rD)), ("all pairs", (aP, aD)), ("current", CURRENT)):
        print(f"  {label:12s} max_phash={P} max_dhash={D}")
        for name, r in results.items():
            i, j = r.at(P, D)
            extra = (f"; other photos {r.false_cross[i, j]} of {r.cross_pairs:,} ({r.f10k_cross[i, j]:.1f} per 10k)"
                     if r.cross_pairs and r.same_pairs else "")
            print(f"      {name:14s} recall {100 * r.overall[i, j]:5.1f}% (catchable {100 * r.catchable[i, j]:5.1f}%), "
                  f"false pairs {r.false[i, j]} of {r.pairs:,} ({r.f10k[i, j]:.1f} per 10k images){extra}")


if __name__ == "__main__":
    main()
