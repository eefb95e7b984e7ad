"""Shared by the duplicate checks: turn matched pairs into findings with merged evidence."""

from __future__ import annotations

import numpy as np

from ..report.model import Evidence, Finding, Severity
from .context import AuditContext, Matches

CATEGORY_WORDS = {"exact": "an exact copy", "identical-pixels": "a pixel-identical copy", "near-duplicate": "a near-duplicate"}


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
    return tuple(ev)


def cross_split(ctx: AuditContext, m: Matches) -> Matches:
    s = ctx.split_index
    return m.select(s[m.a] != s[m.b])


def pair_findings(ctx: AuditContext, m: Matches, *, check: str, category: str, max_matches_per_image: int) -> list[Finding]:
    """One finding per cross-split pair, keeping each later-split image's ``max_matches_per_image`` closest matches."""
    if len(m) == 0:
        return []
    closeness = (~m.same_bytes).astype(np.int64) * 1000 + (~m.same_pixels).astype(np.int64) * 500 + m.phash + m.dhash
    order = np.lexsort((m.a, closeness, m.b))
    kept: dict[int, int] = {}
    findings: list[Finding] = []
    for j in order:
        b = int(m.b[j])
        if kept.get(b, 0) >= max_matches_per_image:
            continue
        kept[b] = kept.get(b, 0) + 1
        first, second = ctx.ref(m.a[j]), ctx.ref(m.b[j])
        flip = " (mirrored)" if m.flipped[j] and not m.same_pixels[j] else ""
        findings.append(
            Finding(
                check=check,
                severity=Severity.ERROR,
                message=f"{second.split}/{second.path} is {CATEGORY_WORDS[category]}{flip} of {first.split}/{first.path}",
                images=(first, second),
                category=category,
                evidence=evidence(m, j),
            )
        )
    return findings
