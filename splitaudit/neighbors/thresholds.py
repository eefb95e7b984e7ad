"""The dataset's own scale of 'similar': thresholds calibrated on nearest *distinct* training neighbours.

Uniform datasets (every digit or garment alike) have high nearest-neighbour cosines everywhere, photo collections
low ones; a copy is only remarkable against its dataset's background. See docs/embeddings.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..features.hashing import hamming
from .binary import HashPairs
from .confirm import Confirmation

#: Default near-duplicate radii (bits out of 64), chosen from measurement: see docs/thresholds.md.
DEFAULT_MAX_PHASH = 6
DEFAULT_MAX_DHASH = 12
#: Embedding candidates: an eval image's train neighbour is a candidate when its cosine distance is at most
#: MAX_RATIO times the distance to its K-th nearest train image (it stands out of its own neighbourhood, which
#: adapts to uniform datasets), and its cosine is at least MIN_SIMILARITY.
EMBED_K = 10
DEFAULT_MAX_RATIO = 0.5
DEFAULT_MIN_SIMILARITY = 0.85
#: The calibrated cosine threshold: this quantile of the null distribution (each sampled training image's cosine
#: to its nearest *other* training image that is not already a known copy), clipped to [min_similarity, CEILING].
NULL_QUANTILE = 0.999
NULL_SAMPLE = 2000
CEILING = 0.98
#: The NCC a pair needs is calibrated the same way: this quantile of the aligned NCC of NCC_SAMPLE null pairs,
#: never below min_ncc (photos: distinct neighbours correlate far below 0.9; 8x8 digits: above 0.95).
NCC_QUANTILE = 0.99
NCC_SAMPLE = 200
NCC_CEILING = 0.995
#: Aligned normalised cross-correlation at or above which a candidate is the same shot (near-duplicate).
DEFAULT_MIN_NCC = 0.9
#: Hashes are trusted alone when at most this share of training images hash-match another, non-identical training
#: image (photos: ~0%); above it (uniform data such as digits, where every image hashes alike) a hash match needs
#: the embedding or the pixel test to agree.
HASH_COLLISION_RATE = 0.02
#: Every constant above that changes a calibration or a search result: part of the stage's cache keys.
CONSTANTS = (EMBED_K, NULL_QUANTILE, NULL_SAMPLE, CEILING, NCC_QUANTILE, NCC_SAMPLE, DEFAULT_MAX_PHASH, DEFAULT_MAX_DHASH)


@dataclass(frozen=True)
class Calibration:
    """The null distribution's size and quantiles (``q50`` ... ``q99.9``), the cosine ``threshold`` (its
    ``NULL_QUANTILE`` quantile, before clipping) and the aligned-NCC threshold of its hardest pairs."""

    samples: int = 0
    threshold: float = CEILING
    quantiles: dict[str, float] = field(default_factory=dict)
    ncc_samples: int | None = None  # None: no null pairs, so no NCC calibration
    ncc_threshold: float = 0.0

    def null_cosine(self) -> dict[str, float | int]:
        """The summary the report shows: sample size and quantiles."""
        return {"samples": self.samples, **self.quantiles}

    def to_arrays(self) -> dict[str, np.ndarray]:
        names = sorted(self.quantiles)
        return {"names": np.array(names, dtype=str), "quantiles": np.array([self.quantiles[n] for n in names], np.float64),
                "scalars": np.array([self.samples, self.threshold, -1 if self.ncc_samples is None else self.ncc_samples,
                                     self.ncc_threshold], np.float64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Calibration | None:
        if not {"names", "quantiles", "scalars"} <= set(arrays) or arrays["scalars"].shape != (4,):
            return None
        samples, threshold, ncc_samples, ncc_threshold = arrays["scalars"].tolist()
        return cls(int(samples), threshold, dict(zip(arrays["names"].tolist(), arrays["quantiles"].tolist())),
                   None if ncc_samples < 0 else int(ncc_samples), ncc_threshold)


def calibrate(emb: np.ndarray, have: np.ndarray, split_index: np.ndarray, digests: np.ndarray, phash: np.ndarray,
              dhash: np.ndarray, confirm: Callable[[np.ndarray, np.ndarray], Confirmation]) -> Calibration:
    """Calibrate on a fixed sample of training images: each one's nearest other training image that is not a known
    copy (same bytes, or hashes within the default radii) is a distinct neighbour; ``confirm`` scores the hardest
    of those pairs at pixel level."""
    from .dense import _rows, knn

    train = np.flatnonzero(have & (split_index == 0))
    if emb.shape[1] == 0 or len(train) < 3:
        return Calibration()
    rng = np.random.default_rng(0)  # a fixed sample: same data, same threshold
    queries = train if len(train) <= NULL_SAMPLE else np.sort(rng.choice(train, NULL_SAMPLE, replace=False))
    # the training rows are usually consecutive: a view, not a copy of most of the matrix (82 MiB at 20k photos)
    sims, ids = knn(_rows(emb, train), emb[queries], min(4, len(train)))
    null: list[float] = []
    null_pairs: list[tuple[int, int]] = []
    for q, row_s, row_i in zip(queries, sims, ids):
        for sim, j in zip(row_s, row_i):
            t = train[j] if j >= 0 else -1
            if t < 0 or t == q:
                continue
            same = digests[t] == digests[q] or (hamming(phash[[q]], phash[[t]])[0] <= DEFAULT_MAX_PHASH
                                                 and hamming(dhash[[q]], dhash[[t]])[0] <= DEFAULT_MAX_DHASH)
            if not same:
                null.append(float(sim))
                null_pairs.append((int(q), int(t)))
                break
    if not null:
        return Calibration()
    v = np.asarray(null)
    quantiles = {f"q{int(p * 1000) / 10:g}": float(np.quantile(v, p)) for p in (0.5, 0.9, 0.99, 0.999)}
    # The closest distinct neighbours are the hardest negatives for the pixel test too.
    hardest = sorted(range(len(null)), key=lambda i: -null[i])[:NCC_SAMPLE]
    ncc = confirm(np.asarray([null_pairs[i][0] for i in hardest]), np.asarray([null_pairs[i][1] for i in hardest])).ncc
    ncc = ncc[np.isfinite(ncc)]
    return Calibration(len(v), float(np.quantile(v, NULL_QUANTILE)), quantiles, len(ncc),
                       float(np.quantile(ncc, NCC_QUANTILE)) if len(ncc) else 0.0)


def similarity_threshold(cal: Calibration, min_similarity: float = DEFAULT_MIN_SIMILARITY) -> float:
    """The cosine an embedding candidate needs: the calibrated threshold within [min_similarity, CEILING]."""
    return float(min(max(cal.threshold, min_similarity), max(CEILING, min_similarity)))


def ncc_threshold(cal: Calibration | None, min_ncc: float = DEFAULT_MIN_NCC) -> float:
    """The aligned NCC a pixel confirmation needs: the calibrated value, at least ``min_ncc`` (``min_ncc`` itself
    without embeddings, ``cal`` None)."""
    if cal is None:
        return min_ncc
    return float(min(max(cal.ncc_threshold, min_ncc), max(NCC_CEILING, min_ncc)))


def hash_collision_rate(hp: HashPairs, split_index: np.ndarray, digests: np.ndarray, ok: np.ndarray) -> float:
    """Share of training images with a hash match inside train that is not byte-identical: how often this dataset's
    distinct images collide under the hash radii (real within-split copies count too, so it errs towards
    distrusting hashes)."""
    train = split_index == 0
    n = int((train & ok).sum())
    if n == 0:
        return 0.0
    inside = train[hp.a] & train[hp.b]
    differ = np.fromiter((digests[x] != digests[y] for x, y in zip(hp.a[inside], hp.b[inside])), dtype=bool, count=int(inside.sum()))
    involved = np.unique(np.concatenate([hp.a[inside][differ], hp.b[inside][differ]]))
    return len(involved) / n
