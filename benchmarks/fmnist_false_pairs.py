"""Review the "false pairs" of a Fashion-MNIST run of copy_check.py: how far apart they are, and a sheet to look at.

Run:  python benchmarks/copy_check.py --suite fmnist --backbone efficientnet_lite0 --sources 150 --false-pairs 200 > RUN
      python benchmarks/fmnist_false_pairs.py RUN SHEET.png [--train 60000 --test 10000]

A false pair is a reported copy that is neither planted nor in the ground truth (test images within 4 grey levels of
a train image, mean absolute difference at 28 px). Fashion-MNIST's product photos were often re-encoded or
re-brightened between its splits, so many such pairs are the same photo a little further apart than the ground
truth's 4 levels. This prints each pair's difference at 28 px (for a planted copy: between the train image and the
copy's source) and draws the pairs in that order, six to a row, train image left.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from copy_suites import fmnist_arrays, fmnist_ground_truth, fmnist_suite  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="copy_check.py's output (with --false-pairs N)")
    ap.add_argument("sheet", help="PNG to write")
    ap.add_argument("--train", type=int, default=60000)
    ap.add_argument("--test", type=int, default=10000)
    args = ap.parse_args()
    import cv2

    lines = [line for line in open(args.run) if "false pair (verifier on)" in line]
    pairs = [tuple(int(x) for x in re.search(r"train (\d+) ~ eval (\d+)", line).groups()) for line in lines]
    suite, _ = fmnist_suite(args.train, 300, args.test)
    xtr, xte = fmnist_arrays()
    # the suite's eval images: these test images (in this order), then the planted copies
    test_ids = sorted(set(range(min(args.test, len(xte)))) | {g[0] for g in fmnist_ground_truth(xtr, xte) if g[1] < args.train})
    source = {b: a for a, b, _ in suite.planted}
    rows = []
    for a, b in pairs:
        other = xte[test_ids[b - args.train]] if b - args.train < len(test_ids) else xtr[source[b]]
        rows.append((float(np.abs(xtr[a].astype(np.int16) - other).mean()), a, b))
    rows.sort()
    mad = np.array([r[0] for r in rows])
    print(f"{len(rows)} false pairs ({sum(b - args.train >= len(test_ids) for _, _, b in rows)} with a planted copy)")
    if not len(rows):
        return
    print("mean absolute difference at 28 px: " + ", ".join(f"<= {t}: {int((mad <= t).sum())}" for t in (5, 6, 8, 12))
          + f", > 12: {int((mad > 12).sum())}; median {np.median(mad):.1f}")
    tiles = []
    for _, a, b in rows:
        t = np.concatenate([suite.images[a], np.full((32, 2, 3), 90, np.uint8), suite.images[b]], axis=1)
        tiles.append(np.pad(cv2.resize(t, (t.shape[1] * 2, 64), interpolation=cv2.INTER_NEAREST), ((3, 3), (4, 4), (0, 0)),
                            constant_values=255))
    while len(tiles) % 6:
        tiles.append(np.full_like(tiles[0], 255))
    sheet = np.concatenate([np.concatenate(tiles[r : r + 6], axis=1) for r in range(0, len(tiles), 6)])
    cv2.imwrite(args.sheet, sheet[:, :, 0])
    print(f"sheet: {args.sheet} ({len(rows)} pairs by difference, six to a row)")


if __name__ == "__main__":
    main()
