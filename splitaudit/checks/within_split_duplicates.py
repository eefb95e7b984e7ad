"""within-split-duplicates: copies inside one split. Not leakage, but they over-weight images in training and metrics."""

from __future__ import annotations

import numpy as np

from ..neighbors import components
from ..report.model import Finding, Severity
from ._pairs import duplicate_mask
from ..neighbors.thresholds import DEFAULT_MAX_DHASH, DEFAULT_MAX_PHASH, DEFAULT_MIN_NCC
from .context import AuditContext
from .registry import HashRadius, register


@register("within-split-duplicates", summary="Groups of copies (exact, pixel or near) inside a single split.", display="group")
def within_split_duplicates(ctx: AuditContext, *, max_phash: HashRadius = DEFAULT_MAX_PHASH, max_dhash: HashRadius = DEFAULT_MAX_DHASH) -> list[Finding]:
    m = ctx.matches(max_phash, max_dhash)
    s = ctx.split_index
    # one selection: a copy of every column per mask held ~30 MiB at 1M images (issue #15)
    m = m.select(duplicate_mask(m, ctx.ncc_threshold(DEFAULT_MIN_NCC)) & (s[m.a] == s[m.b]))
    findings: list[Finding] = []
    # Each pair belongs to the component of its first image: label pairs by component once (linear), instead of
    # testing every (x, y) inside each group (quadratic in the group size: one big group of copies is common).
    groups = components(len(s), m.a, m.b)
    comp = np.full(len(s), -1, dtype=np.int64)
    for g, group in enumerate(groups):
        comp[group] = g
    pair_comp = comp[m.a] if len(m) else np.zeros(0, np.int64)
    order = np.argsort(pair_comp, kind="stable")
    bounds = np.searchsorted(pair_comp[order], np.arange(len(groups) + 1))
    for g, group in enumerate(groups):
        inner = order[bounds[g]:bounds[g + 1]]
        exact = bool(m.same_bytes[inner].all())
        pixels = bool(m.same_pixels[inner].all())
        category = "exact" if exact else "identical-pixels" if pixels else "near-duplicate"
        refs = tuple(ctx.ref(i) for i in group)
        findings.append(
            Finding(
                check="within-split-duplicates",
                severity=Severity.WARNING,
                message=f"{len(group)} copies ({category}) inside split {refs[0].split}: " + ", ".join(r.path for r in refs[:4]) + (" ..." if len(refs) > 4 else ""),
                images=refs,
                category=category,
                data={"size": len(group), "max_phash": int(np.max(m.phash[inner])) if len(inner) else 0},
            )
        )
    return findings
