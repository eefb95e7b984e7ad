"""within-split-duplicates: copies inside one split. Not leakage, but they over-weight images in training and metrics."""

from __future__ import annotations

import numpy as np

from ..neighbors import components
from ..report.model import Finding, Severity
from ._pairs import duplicate_mask
from .context import DEFAULT_MAX_DHASH, DEFAULT_MAX_PHASH, DEFAULT_MIN_NCC, AuditContext
from .registry import register


@register("within-split-duplicates", summary="Groups of copies (exact, pixel or near) inside a single split.")
def within_split_duplicates(ctx: AuditContext, *, max_phash: int = DEFAULT_MAX_PHASH, max_dhash: int = DEFAULT_MAX_DHASH) -> list[Finding]:
    m = ctx.matches(max_phash, max_dhash)
    m = m.select(duplicate_mask(m, ctx.ncc_threshold(DEFAULT_MIN_NCC)))
    s = ctx.split_index
    m = m.select(s[m.a] == s[m.b])
    findings: list[Finding] = []
    pair_at = {(int(x), int(y)): j for j, (x, y) in enumerate(zip(m.a, m.b))}
    for group in components(len(s), m.a, m.b):
        inner = [pair_at[(x, y)] for x in group for y in group if (x, y) in pair_at]
        exact = all(m.same_bytes[j] for j in inner)
        pixels = all(m.same_pixels[j] for j in inner)
        category = "exact" if exact else "identical-pixels" if pixels else "near-duplicate"
        refs = tuple(ctx.ref(i) for i in group)
        findings.append(
            Finding(
                check="within-split-duplicates",
                severity=Severity.WARNING,
                message=f"{len(group)} copies ({category}) inside split {refs[0].split}: " + ", ".join(r.path for r in refs[:4]) + (" ..." if len(refs) > 4 else ""),
                images=refs,
                category=category,
                data={"size": len(group), "max_phash": int(np.max(m.phash[inner])) if inner else 0},
            )
        )
    return findings
