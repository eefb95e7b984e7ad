"""similar-images: embedding neighbours that stand out but are not confirmed as the same shot.

These are the "same scene or object, another shot" pairs (burst photos, the same product from another angle):
not proven copies, but a curator should look, because they still make validation easier than new data would.
Needs embeddings (``--backbone``); with ``--backbone none`` it finds nothing.
"""

from __future__ import annotations

import numpy as np

from ..report.model import Finding, Severity
from ._pairs import cross_split, duplicate_mask, pair_findings
from ..neighbors.thresholds import (DEFAULT_MAX_DHASH, DEFAULT_MAX_PHASH, DEFAULT_MAX_RATIO, DEFAULT_MIN_NCC,
                                    DEFAULT_MIN_SIMILARITY)
from .context import AuditContext
from .registry import Cosine, Count, NonNegative, register


@register("similar-images", summary="Embedding neighbours across splits that stand out of their neighbourhood but are not pixel-confirmed copies.", display="pair")
def similar_images(
    ctx: AuditContext,
    *,
    min_similarity: Cosine = DEFAULT_MIN_SIMILARITY,
    max_ratio: NonNegative = DEFAULT_MAX_RATIO,
    min_ncc: Cosine = DEFAULT_MIN_NCC,
    max_matches_per_image: Count = 1,
) -> list[Finding]:
    """Pairs whose cosine is at least ``min_similarity`` and at most ``max_ratio`` of the way to the query's
    10th-nearest neighbour (in cosine distance), minus those confirmed as copies."""
    m = cross_split(ctx, ctx.matches(DEFAULT_MAX_PHASH, DEFAULT_MAX_DHASH, min_similarity, max_ratio))
    copies = duplicate_mask(m, ctx.ncc_threshold(min_ncc))
    # An image that already has a copy in an earlier split is explained: its other neighbours are not news.
    explained = np.isin(m.b, m.b[copies])
    keep = m.candidate & ~copies & ~explained
    return pair_findings(ctx, m.select(keep), check="similar-images", category="very-similar",
                         max_matches_per_image=max_matches_per_image, severity=Severity.WARNING)
