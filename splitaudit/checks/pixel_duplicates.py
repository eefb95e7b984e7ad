"""pixel-duplicates: different files whose decoded pixels are identical (re-encoded losslessly, metadata edited),
including copies that differ only by their EXIF orientation tag (the model sees the same stored pixels)."""

from __future__ import annotations

from ..features.orientation import candidate_pairs, stored_pixel_digest
from ..neighbors.blank import near_blank
from ..report.model import Evidence, Finding, Severity
from ._pairs import cross_split, pair_findings
from .context import AuditContext
from .registry import Count, register


@register("pixel-duplicates", summary="Different files with identical decoded pixels in two splits (PNG vs WebP, stripped EXIF, another orientation tag).", leak=True, display="pair")
def pixel_duplicates(ctx: AuditContext, *, max_matches_per_image: Count = 5) -> list[Finding]:
    m = ctx.matches()
    findings = pair_findings(ctx, cross_split(ctx, m, m.same_pixels & ~m.same_bytes), check="pixel-duplicates",
                             category="identical-pixels", max_matches_per_image=max_matches_per_image)
    return findings + _orientation_copies(ctx)


def _orientation_copies(ctx: AuditContext) -> list[Finding]:
    """Cross-split pairs whose stored pixels are identical but whose EXIF orientation tags differ."""
    f = ctx.features
    a, b = candidate_pairs(f["stored_phash"], f["stored_dhash"], f["orientation"], f.ok, near_blank(f["spread"], f.ok))
    s = ctx.split_index
    records = ctx.dataset.records
    findings: list[Finding] = []
    digests: dict[int, bytes | None] = {}
    for i, j in zip(a.tolist(), b.tolist()):
        if s[i] == s[j] or f["digest"][i] == f["digest"][j] or not (records[i].path and records[j].path):
            continue
        for k in (i, j):
            if k not in digests:
                digests[k] = stored_pixel_digest(records[k].path, max_pixels=ctx.hash_options.max_pixels)  # type: ignore[arg-type]
        if digests[i] is None or digests[i] != digests[j]:
            continue
        first, second = (i, j) if s[i] < s[j] else (j, i)
        r1, r2 = ctx.ref(first), ctx.ref(second)
        o1, o2 = int(f["orientation"][first]), int(f["orientation"][second])
        findings.append(Finding(
            "pixel-duplicates", Severity.ERROR,
            f"{r2.split}/{r2.path} is a pixel-identical copy of {r1.split}/{r1.path} that differs only by its EXIF "
            f"orientation tag ({o2} vs {o1}): viewers show them rotated, but Keras' loaders ignore the tag and a "
            "model sees the same pixels",
            images=(r1, r2), category="identical-pixels", evidence=(Evidence("pixels", 0),),
            data={"orientation": [o1, o2]}))
    return findings
