"""The data side of the gap: leaked validation images, a held-out difficulty comparison, inseparable classes.

Nothing here depends on a trained probe's own fit: difficulty is measured with the class probe of the
``difficulty`` check (``checks._probe``: logistic regression on standardised principal components), cross-fitted on
both splits pooled (every image scored by a model that never saw it), so an "easier" validation split shows up as
higher held-out accuracy on its images than on the training images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks._probe import FOLDS, class_probe, cross_entropy, project

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
    """Cross-fitted class probabilities for every row of ``x`` (train and copy-free val pooled): the class probe of
    the checks (``checks._probe.class_probe`` on ``project(x)``) with every row in the fit.

    Returns the difficulty comparison and the probability matrix, or ``None`` when there are too few images.
    """
    counts = np.bincount(y, minlength=classes)
    present = counts[counts > 0]
    k = int(min(FOLDS, present.min())) if len(present) >= 2 else 0
    if k < 2 or is_val.sum() == 0 or (~is_val).sum() == 0:
        return None
    proba, _ = class_probe(project(x, seed), y, classes, np.ones(len(y), bool), folds=k, seed=seed)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    losses = cross_entropy(proba, y)  # the difficulty check's loss
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
