"""The copy verifier: is a candidate pair the same shot (re-cropped, re-graded, re-encoded), or a similar scene?

Each pair is registered (:mod:`.register`: zoom, mirror, small rotation, sub-pixel shift, frames) and scored by the
normalised cross-correlation of band-passed grey images on the overlap of the two images' content. A grey,
band-passed NCC is what a per-channel affine colour correction followed by a residual test amounts to, without
its over-fitting: level, contrast and grey conversion drop out, structure has to agree. The calibration
(:mod:`.calibrate`) turns the score into decisions for this dataset.

:func:`find_copies` is the whole stage: candidates, verification, calibration, decisions, over plain arrays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from .register import SIDE, Registration, prepare, register_pair

#: Pairs are verified in chunks whose images are prepared together (bounded memory: ~9 kB per prepared image).
CHUNK = 4096


def verify_pairs(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, *, side: int = SIDE, mirror: bool = True
                 ) -> Registration:
    """Register and score every pair (``thumbs[a[i]]``, ``thumbs[b[i]]``): a copy score per pair and the transform
    that maps a onto b. Deterministic; the work is bounded by the pair count (a fixed search per pair)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    n = len(a)
    out = {f.name: np.zeros(n, bool if f.name == "mirrored" else np.float64) for f in fields(Registration)}
    order = np.lexsort((a, b))
    for start in range(0, n, CHUNK):
        sel = order[start : start + CHUNK]
        ids, inv = np.unique(np.concatenate([a[sel], b[sel]]), return_inverse=True)
        prep = prepare(thumbs[ids], side)
        ia, ib = inv[: len(sel)], inv[len(sel) :]
        for j, x, y in zip(sel.tolist(), ia.tolist(), ib.tolist()):
            score, flipped, (k, theta, dx, dy), overlap, _ = register_pair(prep, x, y, mirror=mirror)
            out["score"][j] = score
            out["mirrored"][j] = flipped
            out["scale"][j] = k  # x_b = k R (x_a - c - d) + c: b shows a k times bigger
            out["angle"][j] = theta
            out["dx"][j] = dx / side
            out["dy"][j] = dy / side
            out["overlap"][j] = min(overlap, 1.0)
    return Registration(**out)


@dataclass(frozen=True)
class CopyMatches:
    """The copy stage's answer over record indices: candidate pairs ``a`` (earlier split) -> ``b`` (later split)
    with the candidate evidence, the registration and the decision. ``copy``: a confirmed copy (the
    near-duplicates error); ``similar``: the uncertain band (the similar-images warning). ``best_score`` /
    ``best_partner``: per record, its best-scoring candidate in an earlier split (NaN / -1 for none): every eval
    image's best copy score goes into the JSON report. ``calibration``: the values the decisions used."""

    a: np.ndarray
    b: np.ndarray
    pixel_rank: np.ndarray
    embed_rank: np.ndarray
    hashed: np.ndarray
    score: np.ndarray
    mirrored: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    overlap: np.ndarray
    copy: np.ndarray
    similar: np.ndarray
    best_score: np.ndarray
    best_partner: np.ndarray
    calibration: object  # a calibrate.Calibration

    def __len__(self) -> int:
        return len(self.a)

    def pairs(self) -> dict[str, np.ndarray]:
        """The per-pair columns (for a table, a cache entry or a report)."""
        skip = {"best_score", "best_partner", "calibration"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return copies_to_arrays(self)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> CopyMatches | None:
        return copies_from_arrays(arrays)


def decide(score: np.ndarray, hashed: np.ndarray, calibration, *, trust_hashes: bool = False  # type: ignore[no-untyped-def]
           ) -> tuple[np.ndarray, np.ndarray]:
    """(copy, similar) per pair. A pair is a copy at ``copy_cut``; a hash match is one from ``similar_cut`` on
    (two independent tests agree: the hash false pairs of uniform data -- digits, garments -- fail the
    registration), or always with ``trust_hashes`` (datasets whose distinct images do not hash alike: the check
    context's hash collision rate), so the stage never finds fewer copies than hashes alone. The band between the
    cuts is 'similar'."""
    score = np.nan_to_num(np.asarray(score, np.float64), nan=-1.0)
    hashed = np.asarray(hashed, bool)
    copy = (score >= calibration.copy_cut) | (hashed & (trust_hashes | (score >= calibration.similar_cut)))
    similar = ~copy & (score >= calibration.similar_cut)
    return copy, similar


#: A second partner of one eval image is a copy only if it scores within this of the image's best partner.
SECONDARY_MARGIN = 0.02


def demote_secondary(b: np.ndarray, score: np.ndarray, hashed: np.ndarray, copy: np.ndarray, similar: np.ndarray,
                     *, margin: float = SECONDARY_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """A shot has one source: an eval image's copy partners other than its best are copies only when they score
    nearly as well (within ``margin``: copies of that source inside train, which score alike); the others are
    look-alikes of the source (a neighbouring crop of a mirror-symmetric scene, another tile of one texture) and
    move to the similar band. Pairs the hashes back keep their decision (independent evidence)."""
    score = np.nan_to_num(np.asarray(score, np.float64), nan=-1.0)
    best = np.full(int(b.max(initial=-1)) + 1, -np.inf)
    np.maximum.at(best, b[copy], score[copy])
    weak = copy & ~hashed & (score < best[b] - margin)
    return copy & ~weak, similar | weak


def find_copies(thumbs: np.ndarray, split_index: np.ndarray, *, valid: np.ndarray | None = None,
                embeddings: np.ndarray | None = None, have_embedding: np.ndarray | None = None,
                hash_a: np.ndarray | None = None, hash_b: np.ndarray | None = None, trust_hashes: bool = False,
                calibration=None, seed: int = 0) -> CopyMatches:  # type: ignore[no-untyped-def]
    """The copy stage over arrays: candidates (pixel views, embeddings, hashes), verification, calibration on the
    training split (unless one is given), decisions, and every record's best copy score.

    ``thumbs``: (N, s, s[, 3]) uint8 squashed thumbnails of every record (32 px for tiny images, 64 px for
    photos); ``split_index``: 0 = train, then the later splits; ``valid``: rows that decoded; ``trust_hashes``:
    hash matches are copies on their own (see :func:`decide`)."""
    from .calibrate import calibrate
    from .candidates import candidate_pairs

    split_index = np.asarray(split_index)
    n = len(split_index)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    cand = candidate_pairs(thumbs, split_index, valid=valid, embeddings=embeddings, have_embedding=have_embedding,
                           hash_a=hash_a, hash_b=hash_b)
    if calibration is None:
        calibration = calibrate(thumbs, np.flatnonzero(valid & (split_index == 0)), seed=seed)
    reg = verify_pairs(thumbs, cand.a, cand.b)
    copy, similar = decide(reg.score, cand.hashed, calibration, trust_hashes=trust_hashes)
    copy, similar = demote_secondary(cand.b, reg.score, cand.hashed, copy, similar)
    best = np.full(n, np.nan)
    partner = np.full(n, -1, np.int64)
    order = np.lexsort((cand.a, -reg.score))  # best score first; ties: the lowest partner index
    for j in order[::-1].tolist():  # the last write per record wins: the best
        best[cand.b[j]] = reg.score[j]
        partner[cand.b[j]] = cand.a[j]
    return CopyMatches(cand.a, cand.b, cand.pixel_rank, cand.embed_rank, cand.hashed, reg.score, reg.mirrored, reg.scale,
                       reg.angle, reg.dx, reg.dy, reg.overlap, copy, similar, best, partner, calibration)


def as_dict(calibration) -> dict[str, float | int]:  # type: ignore[no-untyped-def]
    """A calibration's values for the JSON report."""
    return asdict(calibration)


def copies_to_arrays(c: CopyMatches) -> dict[str, np.ndarray]:
    """Plain arrays of a :class:`CopyMatches` (the run cache stores them: nothing executable)."""
    out = {f.name: getattr(c, f.name) for f in fields(c) if f.name != "calibration"}
    out.update({f"calibration.{k}": np.asarray(v) for k, v in asdict(c.calibration).items()})
    return out


def copies_from_arrays(arrays: dict[str, np.ndarray]) -> CopyMatches | None:
    """:func:`copies_to_arrays` reversed; ``None`` when the arrays are not of this shape (an older layout)."""
    from .calibrate import Calibration

    names = [f.name for f in fields(CopyMatches) if f.name != "calibration"]
    cal_names = [f.name for f in fields(Calibration)]
    if not all(n in arrays for n in names) or not all(f"calibration.{n}" in arrays for n in cal_names):
        return None
    cal = Calibration(**{n: arrays[f"calibration.{n}"].item() for n in cal_names})
    return CopyMatches(**{n: arrays[n] for n in names}, calibration=cal)
