"""label-conflicts: the same (or near-same) image carries different labels, within or across splits."""

from __future__ import annotations

from collections import Counter

from ..neighbors import components
from ..report.model import Finding, Severity
from ._pairs import duplicate_mask
from ..neighbors.thresholds import DEFAULT_MAX_DHASH, DEFAULT_MAX_PHASH, DEFAULT_MIN_NCC
from .context import AuditContext
from .registry import HashRadius, register


@register("label-conflicts", summary="Copies of one image carrying different class labels.", display="group")
def label_conflicts(ctx: AuditContext, *, max_phash: HashRadius = DEFAULT_MAX_PHASH, max_dhash: HashRadius = DEFAULT_MAX_DHASH) -> list[Finding]:
    m = ctx.matches(max_phash, max_dhash)
    m = m.select(duplicate_mask(m, ctx.ncc_threshold(DEFAULT_MIN_NCC)))
    records = ctx.dataset.records
    findings: list[Finding] = []
    for group in components(len(records), m.a, m.b):
        labels = Counter(records[i].label for i in group if records[i].label is not None)
        if len(labels) < 2:
            continue
        refs = tuple(ctx.ref(i) for i in group)
        splits = sorted({r.split for r in refs})
        findings.append(
            Finding(
                check="label-conflicts",
                severity=Severity.WARNING if len(splits) == 1 else Severity.ERROR,
                message=f"copies of one image carry labels {' and '.join(repr(k) for k in sorted(labels))}: "
                + ", ".join(f"{r.split}/{r.path} ({r.label})" for r in refs[:4]) + (" ..." if len(refs) > 4 else ""),
                images=refs,
                data={"labels": dict(sorted(labels.items()))},
            )
        )
    return findings
