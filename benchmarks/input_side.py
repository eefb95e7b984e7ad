"""How much of the classes the embeddings of tiny images carry at each network input side (issue #16).

    SPLITAUDIT_MODEL_DIR=DIR python benchmarks/input_side.py [--sides 64,48]

A logistic probe on the default network's embeddings of 6,000 Fashion-MNIST training images (32 px; Debian package
``dataset-fashion-mnist``), scored on 2,000 of its test images, and of scikit-learn's 8-px digits grown to 32 px (the
first two thirds against the rest), at each side. The split probes and ``explain`` read these embeddings; the copy
stage's recall at each side is ``copy_check.py --image-size``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _labels(kind: str) -> np.ndarray:
    from copy_suites import FMNIST_DIR

    path = os.path.join(FMNIST_DIR, f"{kind}-labels-idx1-ubyte")
    data = gzip.open(path + ".gz").read() if os.path.exists(path + ".gz") else open(path, "rb").read()
    return np.frombuffer(data[8:], np.uint8)


def _embed(images: np.ndarray, side: int) -> np.ndarray:
    from splitaudit.features.embeddings.backbones import BackboneSpec
    from splitaudit.features.embeddings.compute import EmbedBatch

    pixels = np.empty(len(images), dtype=object)
    pixels[:] = list(images)
    work = EmbedBatch(BackboneSpec(image_size=side), model_dir=os.environ.get("SPLITAUDIT_MODEL_DIR"))
    return work({"path": np.full(len(images), None, dtype=object), "pixels": pixels})["embedding"].astype(np.float32)


def main() -> None:
    import cv2
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from copy_suites import fmnist_arrays

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", default="64,48")
    args = ap.parse_args()
    grow = lambda a: np.repeat(cv2.resize(a, (32, 32), interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=2)  # noqa: E731
    sets = []
    arrays = fmnist_arrays()
    if arrays is None:
        print("Fashion-MNIST not found: `apt-get install -y dataset-fashion-mnist`. Skipped.")
    else:
        (xtr, xte), ytr, yte = arrays, _labels("train"), _labels("t10k")
        sets.append(("Fashion-MNIST 6,000 / 2,000", np.stack([grow(a) for a in xtr[:6000]]), ytr[:6000],
                     np.stack([grow(a) for a in xte[:2000]]), yte[:2000]))
    d = load_digits()
    digits = np.stack([grow((x * 16).clip(0, 255).astype(np.uint8)) for x in d.images])
    n = len(digits) * 2 // 3
    sets.append((f"digits {n} / {len(digits) - n}", digits[:n], d.target[:n], digits[n:], d.target[n:]))
    for side in (int(s) for s in args.sides.split(",")):
        for name, a, ya, b, yb in sets:
            acc = LogisticRegression(max_iter=2000).fit(_embed(a, side), ya).score(_embed(b, side), yb)
            print(f"input {side} px: {name}: probe accuracy {acc:.3f}", flush=True)


if __name__ == "__main__":
    main()
