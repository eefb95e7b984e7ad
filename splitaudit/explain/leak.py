"""What copies of training images in validation do to the validation accuracy, measured where copies are copies.

A probe trained on embeddings may not see a lightly noised copy as the image it trained on, so the leakage term of
its own decomposition says nothing about a real model that memorised the original. The leak effect is therefore
measured with the user's model when given (it was trained on the originals), else by inheritance: each copy takes
its training original's correctness under the probe (inference mode), which is what a copy scores for a model that
recognises it. The effect is ``share * (copies' accuracy - clean validation accuracy)`` with a 95% interval
(Newcombe's, from Wilson intervals of both accuracies); its sign is stated only when the interval excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..neighbors.register import PIXEL_MAD

Z95 = 1.959963984540054


@dataclass(frozen=True)
class CopySources:
    """Per validation row: the training row it copies (-1: none) and whether the match is verified.

    Verified: same bytes, same pixels, pixel correlation at or above the calibrated threshold, or a hash match
    confirmed by the embedding, or registered by the copy verifier at its cut. A hash match alone (``--backbone none``)
    is a possible copy, not a verified one.
    """

    source: np.ndarray  # int64, row index into the dataset
    verified: np.ndarray  # bool

    @property
    def leaked(self) -> np.ndarray:
        return self.source >= 0


def copy_sources(ctx: Any, val_rows: np.ndarray) -> CopySources:
    """The copies as the duplicate checks count them (``checks._pairs``), with each copy's closest training image."""
    from ..checks._pairs import cross_split, duplicate_mask

    m = cross_split(ctx, ctx.matches())
    m = m.select(duplicate_mask(m, ctx.ncc_threshold()))
    split = ctx.split_index
    pixel_ok = np.nan_to_num(m.ncc, nan=-1.0) >= ctx.ncc_threshold()
    verified = m.same_bytes | m.same_pixels | pixel_ok | (m.hashed & m.cos_ok & ~np.isnan(m.cosine))
    if ctx.options.verify:  # registered by the copy verifier at its calibrated copy cut, or pixels that agree: verified
        later = np.where(ctx.split_index[m.a] > ctx.split_index[m.b], m.a, m.b)  # the cut is the eval image's
        verified |= np.nan_to_num(m.copy_score, nan=-1.0) >= ctx.copies().cuts(later)[0]
        verified |= m.copy & (np.nan_to_num(m.copy_mad, nan=np.inf) <= PIXEL_MAD)
        verified |= m.copy & (np.nan_to_num(m.copy_level, nan=np.inf) <= ctx.copies().calibration.level_cut)
    # Strongest evidence first, so each validation image keeps its best match.
    strength = m.same_bytes * 4.0 + m.same_pixels * 2.0 + verified * 1.0 + np.nan_to_num(m.ncc, nan=0.0) * 0.1
    best: dict[int, tuple[float, int, bool]] = {}
    for j in np.argsort(-strength, kind="stable").tolist():
        a, b = int(m.a[j]), int(m.b[j])
        val, train = (b, a) if split[a] == 0 else (a, b)
        if split[train] != 0 or val in best:
            continue
        best[val] = (float(strength[j]), train, bool(verified[j]))
    source = np.full(len(val_rows), -1, np.int64)
    ok = np.zeros(len(val_rows), bool)
    for k, r in enumerate(val_rows.tolist()):
        if int(r) in best:
            _, source[k], ok[k] = best[int(r)]
    return CopySources(source, ok)


@dataclass(frozen=True)
class LeakEffect:
    """``effect``: what the copies add to validation accuracy, with its 95% interval ``[low, high]``."""

    copies: int
    verified: int
    val_images: int
    method: str  # "model": the user's model scores the copies; "inherited": copies take their original's correctness
    measured_by: str  # the subject whose correctness is used
    copies_accuracy: float | None
    clean_accuracy: float | None
    effect: float | None
    low: float | None
    high: float | None
    same_split: bool  # every validation image copies a training image and every training image is copied

    @property
    def sign(self) -> str:
        """``"+"`` or ``"-"`` when the interval excludes 0, else ``"not measurable"``."""
        if self.low is None or self.high is None:
            return "not measurable"
        return "+" if self.low > 0 else "-" if self.high < 0 else "not measurable"

    def describe(self) -> str:
        if self.effect is None:
            return "their effect is not measurable here (no validation image without a copy to compare with)"
        span = f"{self.effect:+.4f}, 95% interval {self.low:+.4f} to {self.high:+.4f}"
        how = "your model's score on the copies" if self.method == "model" else \
            f"each copy scored as {self.measured_by} scores its training original"
        if self.sign == "not measurable":
            return f"their effect on validation accuracy is not measurable at this size ({span}, spans 0; {how})"
        verb = "add" if self.sign == "+" else "take"
        return f"they {verb} {abs(self.effect):.4f} {'to' if verb == 'add' else 'from'} the validation accuracy ({span}; {how})"

    def to_dict(self) -> dict[str, Any]:
        return {"copies": self.copies, "verified": self.verified, "val_images": self.val_images, "method": self.method,
                "measured_by": self.measured_by, "copies_accuracy": self.copies_accuracy,
                "clean_accuracy": self.clean_accuracy, "effect": self.effect, "interval": [self.low, self.high],
                "sign": self.sign, "same_split": self.same_split}


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def leak_effect(copies_correct: np.ndarray, clean_correct: np.ndarray, *, verified: int, same_split: bool, method: str,
                measured_by: str) -> LeakEffect:
    """The effect of ``len(copies_correct)`` copies among ``len(copies) + len(clean)`` validation images.

    The interval is Newcombe's hybrid score interval of the difference of the two accuracies (Wilson intervals of
    each), scaled by the copies' share: it stays honest with few copies or accuracies of 0 or 1, and needs no
    random draws.
    """
    c = np.asarray(copies_correct, np.float64)
    k = np.asarray(clean_correct, np.float64)
    n = len(c) + len(k)
    if len(c) == 0 or len(k) == 0:
        return LeakEffect(len(c), verified, n, method, measured_by, float(c.mean()) if len(c) else None,
                          float(k.mean()) if len(k) else None, None, None, None, same_split)
    share = len(c) / n
    p1, p2 = float(c.mean()), float(k.mean())
    l1, u1 = wilson(c.sum(), len(c))
    l2, u2 = wilson(k.sum(), len(k))
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return LeakEffect(len(c), verified, n, method, measured_by, p1, p2, share * d, share * low, share * high, same_split)
