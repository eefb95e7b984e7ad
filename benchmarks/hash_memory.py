"""Peak memory (RSS) of a hash-only check (``splitaudit check --backbone none``) at growing dataset sizes.

Issue #13 measured 324 MB at 100k and 1,310 MB at 300k images, growing with the number of findings rather than the
number of images. This script builds N small images (``--side`` px real-photo crops from the scikit-image and
scikit-learn sample photos, PNG, 80/20 into ``train/`` and ``val/``), runs the CLI once as a child process with a
fresh cache and ``--format json`` to a file, and prints the child's peak RSS (``ru_maxrss`` of the waited child),
the number of findings and bytes per image. Crops are taken on a grid of the few bundled photos, so nearby crops
are near-duplicates and many findings appear, as in the issue's measurement.

Usage::

    python benchmarks/hash_memory.py [--sizes 100000 300000] [--side 32] [--workdir DIR] [--workers N]
                                      [--photos hubble_deep_field ...] [--code DIR ...]

``--photos`` restricts the crops to some photos (``hubble_deep_field`` is mostly black sky: near-blank crops, which
the hash search used to pair all with all); ``--code`` runs the same datasets with other checkouts of splitaudit
(e.g. the main branch) for a comparison in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


PHOTOS = ("china", "flower", "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def photos(names: tuple[str, ...] = PHOTOS) -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_image

    out = [load_sample_image(f"{n}.jpg") if n in ("china", "flower") else getattr(skimage.data, n)() for n in names]
    return [p if p.ndim == 3 else np.stack([p] * 3, -1) for p in out]


def build(root: Path, n: int, side: int, names: tuple[str, ...] = PHOTOS) -> None:
    """``n`` crops of ``side`` px on a 3-px grid over the photos (the grid wraps to offsets shifted by 1 px)."""
    marker = root / f".built-{n}-{side}-{'-'.join(names)}"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
    pics = photos(names)
    k = 0
    shift = 0
    while k < n:
        for p in pics:
            h, w = p.shape[:2]
            for y in range(shift, h - side, 3):
                for x in range(shift, w - side, 3):
                    if k == n:
                        break
                    split = "val" if k % 5 == 0 else "train"
                    Image.fromarray(p[y : y + side, x : x + side]).save(root / split / f"{k:07d}.png", compress_level=1)
                    k += 1
        shift += 1
    marker.write_text("ok")


def measure(root: Path, workers: int | None, code: Path = ROOT) -> tuple[float, int, float]:
    """(peak RSS in MB of one CLI run with a fresh cache, findings, seconds)."""
    cache = Path(tempfile.mkdtemp(prefix="splitaudit-mem-cache-"))
    out = root / "report.json"
    cmd = [sys.executable, "-m", "splitaudit", "check", str(root / "train"), str(root / "val"), "--backbone", "none",
           "--format", "json", "-o", str(out), "--cache-dir", str(cache), "--exit-zero"]
    if workers:
        cmd += ["--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(code)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    shutil.rmtree(cache, ignore_errors=True)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"check failed with exit status {os.waitstatus_to_exitcode(status)}")
    findings = len(json.loads(out.read_text())["findings"])
    return usage.ru_maxrss / 1024, findings, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    ap.add_argument("--side", type=int, default=32)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--photos", nargs="+", default=list(PHOTOS), choices=PHOTOS)
    ap.add_argument("--code", type=Path, nargs="+", default=[ROOT], help="splitaudit checkouts to compare (PYTHONPATH)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="splitaudit-mem-"))
    for code in args.code:
        rows = []
        for n in args.sizes:
            root = work / f"n{n}-{'-'.join(args.photos)}"
            build(root, n, args.side, tuple(args.photos))
            rss, findings, seconds = measure(root, args.workers, code)
            rows.append((n, rss, findings, seconds))
            print(f"{code}: {n:>8} images: peak RSS {rss:8.0f} MB, {findings:>7} findings, {rss * 2**20 / n:7.0f} B/image, "
                  f"{seconds:6.0f} s", flush=True)
        if len(rows) > 1:
            (n0, r0, f0, _), (n1, r1, f1, _) = rows[0], rows[-1]
            print(f"{code}: x{n1 / n0:.1f} images, x{max(f1, 1) / max(f0, 1):.1f} findings -> x{r1 / r0:.2f} peak RSS")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
