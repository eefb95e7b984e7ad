"""The data side of the gap: leaked validation images, a held-out difficulty comparison, inseparable classes.

Nothing here depends on a trained probe's own fit: difficulty is measured with a logistic regression cross-fitted
on both splits pooled (every image scored by a model that never saw it), so an "easier" validation split shows up
as higher held-out accuracy on its images than on the training images.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

FOLDS = 5
PCA_DIMS = 64
#: A pair of classes is "not separable" when the held-out probe tells them apart no better than this above chance.
PAIR_MARGIN = 0.1


@dataclass(frozen=True)
class ClassPair:
    """Two classes a held-out probe cannot tell apart: its accuracy restricted to the pair (chance: 0.5)."""

    a: str
    b: str
    accuracy: float
    images: int

    def to_dict(self) -> dict[str, Any]:
        return {"classes": [self.a, self.b], "accuracy": self.accuracy, "images": self.images}


@dataclass(frozen=True)
class Difficulty:
    """Held-out (cross-fitted) accuracy and loss of the training and the copy-free validation images."""

    train_accuracy: float
    val_accuracy: float
    train_loss: float
    val_loss: float
    correct: np.ndarray  # per pooled image, aligned with the rows passed in
    losses: np.ndarray

    @property
    def accuracy(self) -> float:
        return self.val_accuracy - self.train_accuracy

    @property
    def loss(self) -> float:
        return self.val_loss - self.train_loss


def leaked_val(ctx: Any, val_rows: np.ndarray) -> np.ndarray:
    """Mask over ``val_rows``: images with a copy in the training split (exact, pixel or near-duplicate).

    A match counts exactly as the duplicate checks count it (``checks._pairs.duplicate_mask`` on cross-split pairs).
    """
    from ..checks._pairs import cross_split, duplicate_mask

    m = cross_split(ctx, ctx.matches())
    m = m.select(duplicate_mask(m, ctx.ncc_threshold()))
    leaked = set(m.b.tolist()) | set(m.a.tolist())
    return np.fromiter((int(r) in leaked for r in val_rows), dtype=bool, count=len(val_rows))


def held_out(x: np.ndarray, y: np.ndarray, is_val: np.ndarray, classes: int, seed: int = 0) -> tuple[Difficulty, np.ndarray] | None:
    """Cross-fitted class probabilities for every row of ``x`` (train and copy-free val pooled).

    Returns the difficulty comparison and the probability matrix, or ``None`` when there are too few images.
    """
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    counts = np.bincount(y, minlength=classes)
    present = counts[counts > 0]
    k = int(min(FOLDS, present.min())) if len(present) >= 2 else 0
    if k < 2 or is_val.sum() == 0 or (~is_val).sum() == 0:
        return None
    # One BLAS thread: these matrices are small, and OpenBLAS' spinning threads made it 10-20x slower next to
    # TensorFlow's pools on 2 cores.
    with threadpool_limits(1), warnings.catch_warnings():
        # A probe that ranks images by difficulty needs no exact optimum; lbfgs' iteration limit is no user concern.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _cross_fit(x, y, is_val, classes, k, seed)


def _cross_fit(x: np.ndarray, y: np.ndarray, is_val: np.ndarray, classes: int, k: int, seed: int) -> tuple[Difficulty, np.ndarray]:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    proba = np.zeros((len(x), classes))
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fit, score in folds.split(x, y):
        # PCA first: a logistic regression on 1,280 raw dimensions costs 10-50x more for the same ranking of images.
        pca = PCA(n_components=min(PCA_DIMS, len(fit) - 1, x.shape[1]), random_state=seed).fit(x[fit])
        clf = LogisticRegression(C=1.0, max_iter=500)
        clf.fit(pca.transform(x[fit]), y[fit])
        proba[np.ix_(score, clf.classes_)] = clf.predict_proba(pca.transform(x[score]))
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    losses = -np.log(np.clip(proba[np.arange(len(y)), y], 1e-7, 1.0))
    d = Difficulty(float(correct[~is_val].mean()), float(correct[is_val].mean()), float(losses[~is_val].mean()),
                   float(losses[is_val].mean()), correct, losses)
    return d, proba


def inseparable_pairs(proba: np.ndarray, y: np.ndarray, names: list[str], *, min_images: int = 5) -> list[ClassPair]:
    """Class pairs the held-out probe separates at (near) chance, worst first."""
    classes = len(names)
    counts = np.bincount(y, minlength=classes)
    out: list[ClassPair] = []
    if classes > 200:
        return out
    for i in range(classes):
        for j in range(i + 1, classes):
            if counts[i] < min_images or counts[j] < min_images:
                continue
            rows = (y == i) | (y == j)
            pred_i = proba[rows, i] >= proba[rows, j]
            acc = float(np.mean(pred_i == (y[rows] == i)))
            n = int(rows.sum())
            if acc <= 0.5 + max(PAIR_MARGIN, 2 * math.sqrt(0.25 / n)):
                out.append(ClassPair(names[i], names[j], acc, n))
    return sorted(out, key=lambda p: (p.accuracy, p.a, p.b))
