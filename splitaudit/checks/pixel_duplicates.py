"""pixel-duplicates: different files whose decoded pixels are identical (re-encoded losslessly, metadata edited)."""

from __future__ import annotations

from ..report.model import Finding
from ._pairs import cross_split, pair_findings
from .context import AuditContext
from .registry import Count, register


@register("pixel-duplicates", summary="Different files with identical decoded pixels in two splits (PNG vs WebP, stripped EXIF).", leak=True)
def pixel_duplicates(ctx: AuditContext, *, max_matches_per_image: Count = 5) -> list[Finding]:
    m = cross_split(ctx, ctx.matches())
    return pair_findings(ctx, m.select(m.same_pixels & ~m.same_bytes), check="pixel-duplicates",
                         category="identical-pixels", max_matches_per_image=max_matches_per_image)
