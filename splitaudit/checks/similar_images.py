"""similar-images: pairs that look alike but are not confirmed as the same shot.

These are the "same scene or object, another shot" pairs (burst photos, the same product from another angle), and
pairs the copy verifier scored between its calibrated similar and copy cuts: not proven copies, but a curator
should look, because they still make validation easier than new data would. Embedding neighbours need
``--backbone``; the verifier's band needs only pixels (off with ``--no-verify``).
"""

from __future__ import annotations

import numpy as np

from ..report.model import Finding, Severity
from ._pairs import cross_split, duplicate_mask, pair_findings
from ..neighbors.thresholds import (DEFAULT_MAX_DHASH, DEFAULT_MAX_PHASH, DEFAULT_MAX_RATIO, DEFAULT_MIN_NCC,
                                    DEFAULT_MIN_SIMILARITY)
from .context import AuditContext
from .registry import Cosine, Count, NonNegative, register


#: How far under the calibrated cosine threshold a pair of the verifier's uncertain band may lie. 0: the embeddings
#: must call the pair similar too (measured: with 0.15, digits that hash and register alike, cosines 0.92-0.96
#: against a threshold of 0.975, were shown; a flower tile against a saucer's rim had 0.25).
BAND_COSINE_SLACK = 0.0


@register("similar-images", summary="Pairs across splits that look alike but are not confirmed copies: the verifier's uncertain band, and embedding neighbours that stand out.", display="pair")
def similar_images(
    ctx: AuditContext,
    *,
    min_similarity: Cosine = DEFAULT_MIN_SIMILARITY,
    max_ratio: NonNegative = DEFAULT_MAX_RATIO,
    min_ncc: Cosine = DEFAULT_MIN_NCC,
    max_matches_per_image: Count = 1,
) -> list[Finding]:
    """Pairs whose cosine is at least ``min_similarity`` and at most ``max_ratio`` of the way to the query's
    10th-nearest neighbour (in cosine distance), and pairs the copy verifier scored in its uncertain band (between
    its calibrated similar and copy cuts), minus those confirmed as copies. With embeddings on, a pair of the
    verifier's band also needs a cosine at the calibrated threshold (``BAND_COSINE_SLACK``): a second, independent
    test (registration over mirror, zoom, rotation and shift finds some alignment for distinct images too)."""
    m = cross_split(ctx, ctx.matches(DEFAULT_MAX_PHASH, DEFAULT_MAX_DHASH, min_similarity, max_ratio))
    copies = duplicate_mask(m, ctx.ncc_threshold(min_ncc))
    # An image that already has a copy in an earlier split is explained: its other neighbours are not news.
    explained = np.isin(m.b, m.b[copies])
    band = m.copy_similar
    if ctx.backbone is not None:
        floor = ctx.similarity_threshold(min_similarity) - BAND_COSINE_SLACK
        band = band & (np.isnan(m.cosine) | (m.cosine >= floor))
    keep = (m.candidate | band) & ~copies & ~explained
    return pair_findings(ctx, m.select(keep), check="similar-images", category="very-similar",
                         max_matches_per_image=max_matches_per_image, severity=Severity.WARNING)
