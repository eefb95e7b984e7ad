"""exact-duplicates: the same bytes in two splits."""

from __future__ import annotations

from ..report.model import Finding
from ._pairs import cross_split, pair_findings
from .context import AuditContext
from .registry import Count, register


@register("exact-duplicates", summary="Identical files (same bytes) in two different splits.", leak=True, display="pair")
def exact_duplicates(ctx: AuditContext, *, max_matches_per_image: Count = 5) -> list[Finding]:
    m = ctx.matches()
    return pair_findings(ctx, cross_split(ctx, m, m.same_bytes), check="exact-duplicates", category="exact",
                         max_matches_per_image=max_matches_per_image)
