"""Speed of the distribution checks on ~10k images with cached embeddings, and their false-alarm rate on clean splits.

Data: Fashion-MNIST (the Debian/Ubuntu package ``dataset-fashion-mnist``, 28x28 grey garments) when installed,
else scikit-learn's digits (1,797 images, 8x8 upscaled to 32x32), each image a PNG file under ``--workdir``;
``--source photos``: up to 3,000 random crops (48-160 px, colour and grey, JPEG and PNG) of the photos bundled
with scikit-image and scikit-learn, the class being the photo.

1. ``speed`` (default): a random 80/20 split of ``--images`` images. One ``splitaudit.audit`` fills the cache
   (features, embeddings, image properties); then, in a fresh context reading everything from that cache, the six
   distribution checks (class-balance, image-properties, split-distinguishability, difficulty, separability,
   leak-impact) are timed one by one, after the cross-split matching they share with the leak checks (timed on its
   own: a full audit pays it in the leak checks). Printed: each check's wall time, their total, and the total as a ratio to
   the cold embedding stage of the same data (the work the cache saves) and to reading the cache.
2. ``--null-seeds N``: N clean random splits (a new random 75/25 assignment per seed, through a manifest: the
   files and the cache are shared), every distribution check at its defaults. Printed: how many seeds produced a
   finding per check (the false-alarm count), and the distribution of each test statistic under this null,
   which is what the defaults in docs/distribution.md were chosen from.

Usage::

    python benchmarks/distribution_speed.py [--images 10000] [--workdir DIR] [--null-seeds 0] [--source auto|fashion|digits|photos]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

import splitaudit
from splitaudit.checks import AuditContext, all_checks
from splitaudit.features import FeatureCache
from splitaudit.options import Options
from splitaudit.scan import scan

FASHION = Path("/usr/share/datasets/fashion-mnist")
DISTRIBUTION_CHECKS = ("class-balance", "image-properties", "split-distinguishability", "difficulty", "separability", "leak-impact")
IMAGE_SIZE = 64
SEED = 20261123


PHOTOS = ("china", "flower", "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "camera", "coins", "moon")


def load_photos(limit: int) -> tuple[list[np.ndarray], np.ndarray, str]:
    """Random crops (48-160 px per side, so width, height and aspect vary) of scikit-image's and scikit-learn's
    photos, colour and grey; the class is the photo."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(SEED)
    photos = {n: (load_sample_image(f"{n}.jpg") if n in ("china", "flower") else getattr(skimage.data, n)()) for n in PHOTOS}
    images, labels = [], []
    for i in range(limit):
        name = PHOTOS[i % len(PHOTOS)]
        a = photos[name]
        w, h = (int(v) for v in rng.integers(48, 161, 2))
        y0, x0 = int(rng.integers(0, a.shape[0] - h)), int(rng.integers(0, a.shape[1] - w))
        images.append(np.ascontiguousarray(a[y0 : y0 + h, x0 : x0 + w]))
        labels.append(name)
    return images, np.array(labels), "photo-crops"


def load_images(source: str, limit: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(uint8 N×H×W grey images, string labels, source name)."""
    if source == "photos":
        return load_photos(min(limit, 3000))  # type: ignore[return-value]
    if source in ("auto", "fashion") and (FASHION / "train-images-idx3-ubyte.gz").exists():
        with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as fh:
            x = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as fh:
            y = np.frombuffer(fh.read(), np.uint8, offset=8)
        names = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
        return x[:limit], np.array([names[v] for v in y[:limit]]), "fashion-mnist"
    if source == "fashion":
        raise SystemExit("Fashion-MNIST is not installed (apt package dataset-fashion-mnist)")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.stack([np.asarray(Image.fromarray((255 - im * 255 / 16).clip(0, 255).astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR))
                  for im in d.images])
    return x[:limit], d.target.astype(str)[:limit], "sklearn-digits"


def write_pool(root: Path, x: np.ndarray, y: np.ndarray) -> list[tuple[str, str]]:
    """Every image as ``root/pool/<label>/<i>.png`` (kept when already there); returns (relative path, label).
    Colour photo crops are JPEGs at a random quality (70-95), one in eight a PNG."""
    rows = []
    rng = np.random.default_rng(SEED)
    for i, (im, label) in enumerate(zip(x, y)):
        jpeg = im.ndim == 3 and rng.random() >= 1 / 8
        quality = int(rng.integers(70, 96))
        rel = f"pool/{label}/{i:05d}.{'jpg' if jpeg else 'png'}"
        p = root / rel
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(p, quality=quality) if jpeg else Image.fromarray(im).save(p)
        rows.append((rel, str(label)))
    return rows


def write_manifest(root: Path, rows: list[tuple[str, str]], seed: int, val_share: float) -> Path:
    rng = np.random.default_rng(seed)
    is_val = rng.random(len(rows)) < val_share
    path = root / f"manifest-{seed}.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        # Training rows first: a manifest's splits are ordered by first appearance, and the first is train.
        for want in (False, True):
            for (rel, label), v in zip(rows, is_val):
                if v == want:
                    w.writerow([rel, label, "val" if v else "train"])
    return path


def speed(root: Path, rows: list[tuple[str, str]], cache_dir: Path) -> None:
    shutil.rmtree(cache_dir, ignore_errors=True)  # the cold figures must be cold
    manifest = write_manifest(root, rows, SEED, 0.2)
    t0 = time.perf_counter()
    report = splitaudit.audit(manifest=manifest, cache_dir=cache_dir, image_size=IMAGE_SIZE, select=["class-balance"])
    cold = time.perf_counter() - t0
    print(f"cold audit (features + embeddings, class-balance only): {cold:.1f} s; embeddings {report.timings.get('embeddings', 0):.1f} s")
    # Fill the property cache too (the first image-properties run measures every image).
    t0 = time.perf_counter()
    splitaudit.audit(manifest=manifest, cache_dir=cache_dir, image_size=IMAGE_SIZE, select=["image-properties"])
    print(f"first image-properties run (measures {len(rows)} images, cold property cache): {time.perf_counter() - t0:.1f} s")

    checks = all_checks()
    with FeatureCache(cache_dir) as store:
        ds = scan(None, manifest=manifest)
        ctx = AuditContext(ds, Options(image_size=IMAGE_SIZE), cache=store)
        t0 = time.perf_counter()
        f = ctx.features
        _ = ctx.embeddings
        read = time.perf_counter() - t0
        print(f"\n{len(ds.records)} images ({int(f.ok.sum())} decoded), {ctx.embeddings[0].shape[1]}-d embeddings read from the cache in {read:.2f} s")
        # leak-impact needs the cross-split matches; in a full audit the leak checks (which run first) compute them.
        t0 = time.perf_counter()
        _ = ctx.matches()
        shared = time.perf_counter() - t0
        print(f"  (cross-split matching, shared with the leak checks and paid by them in a full audit: {shared:.2f} s)")
        total = 0.0
        for name in DISTRIBUTION_CHECKS:
            c = checks[name]
            t0 = time.perf_counter()
            found = c.run(ctx, {})
            dt = time.perf_counter() - t0
            total += dt
            print(f"  {name:26s} {dt:6.2f} s  ({len(found.findings)} finding(s))")
    embed_cold = report.timings.get("embeddings", float("nan"))
    print(f"all distribution checks: {total:.2f} s for {len(ds.records)} images "
          f"= {total / embed_cold:.2f}x the cold embedding stage ({embed_cold:.1f} s), {total / max(read, 1e-9):.1f}x reading features and embeddings from the cache")


def null(root: Path, rows: list[tuple[str, str]], cache_dir: Path, seeds: int) -> None:
    fired: Counter[str] = Counter()
    stats: dict[str, list[float]] = {}

    def add(key: str, value: float | None) -> None:
        if value is not None:
            stats.setdefault(key, []).append(float(value))

    t_all = time.perf_counter()
    for seed in range(seeds):
        manifest = write_manifest(root, rows, seed, 0.25)
        r = splitaudit.audit(manifest=manifest, cache_dir=cache_dir, image_size=IMAGE_SIZE, select=list(DISTRIBUTION_CHECKS))
        for check in {f.check for f in r.findings}:
            fired[check] += 1
        for f in r.findings:
            print(f"  seed {seed}: {f.severity.label} {f.check}: {f.message[:160]}")
        d = r.distribution
        t = d.get("classes", {}).get("tests", {}).get("val", {})
        add("class-balance cramers_v", t.get("cramers_v"))
        add("class-balance -log10 p", -np.log10(max(t.get("p_value", 1.0), 1e-300)))
        tests = d.get("properties", {}).get("tests", {}).get("val", {})
        for prop, v in tests.items():
            add(f"properties {prop} {'ks' if 'ks' in v else 'tvd'}", v.get("ks", v.get("tvd")))
        if tests:
            add("properties max -log10 p (Bonferroni)", max(-np.log10(max(v["p_value"], 1e-300)) for v in tests.values()))
        for kind, v in d.get("distinguishability", {}).get("val", {}).items():
            add(f"distinguishability {kind} auc", v["auc"])
            add(f"distinguishability {kind} ci low", v["ci"][0])
        v = d.get("difficulty", {}).get("val")
        if v:
            add("difficulty |P(easier)-0.5|", abs(v["p_easier"] - 0.5))
            add("difficulty -log10 p", -np.log10(max(v["p_value"], 1e-300)))
            if v["by_class"]:
                add("difficulty per class max |P(easier)-0.5|", max(abs(c["p_easier"] - 0.5) for c in v["by_class"].values()))
        s = d.get("separability")
        if s:
            add("separability accuracy - chance", s["accuracy"] - s["chance"])
            add("separability min pair CI high", min(p["ci"][1] for p in s["confused_pairs"]))
    print(f"\n{seeds} clean random splits in {time.perf_counter() - t_all:.0f} s; seeds with a finding, per check (defaults):")
    for c in DISTRIBUTION_CHECKS:
        print(f"  {c:26s} {fired[c]}/{seeds}")
    print("\nstatistic under the null: median, 95th percentile, max")
    for key in sorted(stats):
        v = np.asarray(stats[key])
        print(f"  {key:48s} {np.median(v):8.3f} {np.quantile(v, 0.95):8.3f} {v.max():8.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--null-seeds", type=int, default=0)
    ap.add_argument("--source", choices=("auto", "fashion", "digits", "photos"), default="auto")
    args = ap.parse_args()
    x, y, name = load_images(args.source, args.images)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        cache_dir = root / f"cache-{name}" if args.null_seeds else root / f"cache-speed-{name}"
        t0 = time.perf_counter()
        rows = write_pool(root / name, x, y)
        print(f"{len(rows)} {name} images under {root / name} ({time.perf_counter() - t0:.1f} s to write); {os.cpu_count()} CPUs")
        if args.null_seeds:
            null(root / name, rows, cache_dir, args.null_seeds)
        else:
            speed(root / name, rows, cache_dir)


if __name__ == "__main__":
    main()
