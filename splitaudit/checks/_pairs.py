"""Shared by the duplicate checks: turn matched pairs into findings with merged evidence."""

from __future__ import annotations

import numpy as np

from ..report.model import Evidence, Finding, Severity
from ..neighbors.matches import Matches
from .context import AuditContext

CATEGORY_WORDS = {"exact": "an exact copy", "identical-pixels": "a pixel-identical copy",
                  "near-duplicate": "a near-duplicate", "very-similar": "very similar (same scene, other shot?)"}


def evidence(m: Matches, j: int) -> tuple[Evidence, ...]:
    """Every stage's say about pair ``j``: identical bytes/pixels and both hash distances."""
    ev: list[Evidence] = []
    if m.same_bytes[j]:
        ev.append(Evidence("bytes", 0))
    if m.same_pixels[j]:
        ev.append(Evidence("pixels", 0))
    flipped = bool(m.flipped[j])
    ev.append(Evidence("phash", int(m.phash[j]), flipped))
    ev.append(Evidence("dhash", int(m.dhash[j]), flipped))
    if not np.isnan(m.cosine[j]):
        ev.append(Evidence("embedding", max(0.0, 1.0 - float(m.cosine[j])), False, float(m.cosine[j])))
    if not np.isnan(m.ncc[j]):
        ev.append(Evidence("ncc", 1.0 - float(m.ncc[j]), bool(m.ncc_flipped[j]), float(m.ncc[j])))
    if not np.isnan(m.copy_score[j]):
        ev.append(Evidence("copy", 1.0 - float(m.copy_score[j]), bool(m.copy_mirrored[j]), float(m.copy_score[j])))
    return tuple(ev)


def registration(m: Matches, j: int) -> dict[str, float | bool]:
    """The verifier's registration of pair ``j`` for the finding's data (empty when it was not verified): b
    relative to a, both squashed to a square of side 1: x_b = scale R(angle) (x_a - c - (dx, dy)) + c."""
    if np.isnan(m.copy_score[j]):
        return {}
    return {"score": round(float(m.copy_score[j]), 4), "mirrored": bool(m.copy_mirrored[j]),
            "scale": round(float(m.copy_scale[j]), 4), "angle": round(float(m.copy_angle[j]), 3),
            "dx": round(float(m.copy_dx[j]), 4), "dy": round(float(m.copy_dy[j]), 4),
            **({"mad": round(float(m.copy_mad[j]), 2)} if np.isfinite(m.copy_mad[j]) else {}),
            **({"level": round(float(m.copy_level[j]), 4)} if np.isfinite(m.copy_level[j]) else {})}


def duplicate_mask(m: Matches, ncc_threshold: float) -> np.ndarray:
    """Pairs that are copies: same bytes or pixels; or hashes within radius, confirmed by the embedding (cosine
    at or above the calibrated threshold) or at pixel level; or an embedding candidate confirmed at pixel level.

    Without embeddings ``cos_ok`` is all true, so a hash match alone decides (the hash-only behaviour), except
    where hashes collide on this dataset and the copy verifier ran: its decision (``m.copy``) then decides hash
    matches too. With embeddings and the verifier, a hash match on such a dataset is a copy by the verifier's decision
    or by agreeing embeddings; without the verifier, by the pixel confirmation of each image's best few hash matches
    (:func:`~splitaudit.neighbors.matches.merge_matches`). The verifier adds the pairs it registered as the same
    shot in any case.
    """
    pixel_ok = np.nan_to_num(m.ncc, nan=-1.0) >= ncc_threshold
    return m.same_bytes | m.same_pixels | (m.hashed & (m.cos_ok | pixel_ok)) | (m.candidate & pixel_ok) | m.copy


def cross_split(ctx: AuditContext, m: Matches, keep: np.ndarray | None = None) -> Matches:
    """The pairs of ``m`` across two splits (and in the mask ``keep`` over ``m``): one selection, one copy of the
    columns (a copy per mask held tens of MiB at 1M images, issue #15)."""
    s = ctx.split_index
    cross = s[m.a] != s[m.b]
    return m.select(cross if keep is None else cross & keep)


def pair_findings(ctx: AuditContext, m: Matches, *, check: str, category: str, max_matches_per_image: int,
                  severity: Severity = Severity.ERROR) -> list[Finding]:
    """One finding per cross-split pair, keeping each later-split image's ``max_matches_per_image`` closest matches."""
    if len(m) == 0:
        return []
    # Strongest evidence first: bytes, then pixels, then the hash distance, then the embedding similarity.
    closeness = (~m.same_bytes) * 1000.0 + (~m.same_pixels) * 500.0 + (~m.hashed) * 200.0 + m.phash + m.dhash \
        - np.nan_to_num(m.ncc, nan=0.0) - np.nan_to_num(m.cosine, nan=0.0) - np.nan_to_num(m.copy_score, nan=0.0)
    order = np.lexsort((m.a, closeness, m.b))
    kept: dict[int, int] = {}
    findings: list[Finding] = []
    for j in order:
        b = int(m.b[j])
        if kept.get(b, 0) >= max_matches_per_image:
            continue
        kept[b] = kept.get(b, 0) + 1
        first, second = ctx.ref(m.a[j]), ctx.ref(m.b[j])
        mirrored = m.flipped[j] if m.hashed[j] else (m.ncc_flipped[j] if m.candidate[j] else m.copy_mirrored[j])
        reg = registration(m, j)
        flip = " (mirrored)" if mirrored and not m.same_pixels[j] else ""
        findings.append(
            Finding(
                check=check,
                severity=severity,
                message=f"{second.split}/{second.path} is {CATEGORY_WORDS[category]}{flip} of {first.split}/{first.path}",
                images=(first, second),
                category=category,
                evidence=evidence(m, j),
                data={"registration": reg} if reg else {},
            )
        )
    return findings
