"""unreadable-images: files that cannot be read or decoded, and images a training pipeline will mishandle."""

from __future__ import annotations

from ..features import decode
from ..features.table import is_image_name
from ..report.model import Finding, Severity
from .context import AuditContext
from .registry import register


@register("unreadable-images", summary="Unreadable, empty, truncated, undecodable, oversized or non-image files; animated images.", display="image")
def unreadable_images(ctx: AuditContext) -> list[Finding]:
    f = ctx.features
    findings: list[Finding] = []
    for problem in ctx.dataset.problems:
        findings.append(Finding("unreadable-images", Severity.WARNING, f"{problem.split}/{problem.relpath}: {problem.reason}",
                                data={"status": "scan"}))
    for i, r in enumerate(ctx.dataset.records):
        status = f["status"][i]
        if status == decode.OK:
            if f["frames"][i] > 1:
                findings.append(Finding(
                    "unreadable-images", Severity.WARNING,
                    f"{r.split}/{r.relpath}: animated {f['format'][i]} with {f['frames'][i]} frames; only the first was audited, and Keras' loaders reject animations",
                    images=(ctx.ref(i),), data={"status": "animated", "frames": int(f["frames"][i])}))
            continue
        if status == decode.NOT_IMAGE and not is_image_name(r.relpath):
            continue  # a README or labels.csv beside the images: counted as skipped, not a problem
        findings.append(Finding(
            "unreadable-images", Severity.ERROR, f"{r.split}/{r.relpath}: {status}: {f['detail'][i]}",
            images=(ctx.ref(i),), data={"status": status}))
    return findings
