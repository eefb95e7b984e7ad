"""near-duplicates: re-encoded, resized, slightly cropped or mirrored copies, found by perceptual hashes."""

from __future__ import annotations

from ..report.model import Finding
from ._pairs import cross_split, pair_findings
from .context import DEFAULT_MAX_DHASH, DEFAULT_MAX_PHASH, AuditContext
from .registry import register


@register("near-duplicates", summary="Perceptually identical images (pHash and dHash agree, mirror included) in two splits.", leak=True)
def near_duplicates(
    ctx: AuditContext,
    *,
    max_phash: int = DEFAULT_MAX_PHASH,
    max_dhash: int = DEFAULT_MAX_DHASH,
    max_matches_per_image: int = 3,
) -> list[Finding]:
    """Pairs whose 64-bit pHash and dHash are both within the radii; exact and pixel copies are left to their checks."""
    m = cross_split(ctx, ctx.matches(max_phash, max_dhash))
    return pair_findings(ctx, m.select(~m.same_pixels), check="near-duplicates", category="near-duplicate",
                         max_matches_per_image=max_matches_per_image)
