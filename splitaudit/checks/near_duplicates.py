"""near-duplicates: re-encoded, resized, re-cropped, framed, re-graded or mirrored copies: registered and scored by
the copy verifier, or matched by perceptual hashes, or by embeddings confirmed at pixel level."""

from __future__ import annotations

from ..report.model import Finding
from ._pairs import cross_split, duplicate_mask, pair_findings
from ..neighbors.thresholds import (DEFAULT_MAX_DHASH, DEFAULT_MAX_PHASH, DEFAULT_MAX_RATIO, DEFAULT_MIN_NCC,
                                    DEFAULT_MIN_SIMILARITY)
from .context import AuditContext
from .registry import Cosine, Count, HashRadius, NonNegative, register


@register("near-duplicates", summary="The same shot in two splits: registered by the copy verifier, hashes agree (mirror included), or an embedding match confirmed at pixel level.", leak=True, display="pair")
def near_duplicates(
    ctx: AuditContext,
    *,
    max_phash: HashRadius = DEFAULT_MAX_PHASH,
    max_dhash: HashRadius = DEFAULT_MAX_DHASH,
    min_similarity: Cosine = DEFAULT_MIN_SIMILARITY,
    max_ratio: NonNegative = DEFAULT_MAX_RATIO,
    min_ncc: Cosine = DEFAULT_MIN_NCC,
    max_matches_per_image: Count = 3,
) -> list[Finding]:
    """Cross-split pairs that are copies but not pixel-identical (exact and pixel copies have their own checks).

    A pair qualifies when the copy verifier registers it with a copy score at the dataset's calibrated cut (see
    ``docs/copies.md``), when its 64-bit pHash and dHash are both within the radii (confirmed where hashes collide
    on this dataset), or when it is an embedding candidate (see ``similar-images``) whose aligned pixel correlation
    reaches ``min_ncc``.
    """
    m = ctx.matches(max_phash, max_dhash, min_similarity, max_ratio)
    m = cross_split(ctx, m, duplicate_mask(m, ctx.ncc_threshold(min_ncc)) & ~m.same_pixels)
    return pair_findings(ctx, m, check="near-duplicates", category="near-duplicate",
                         max_matches_per_image=max_matches_per_image)
