"""unreadable-images: files that cannot be read or decoded, and images a training pipeline will mishandle."""

from __future__ import annotations

from collections import Counter

from ..features import decode
from ..features.table import is_image_name
from ..report.model import Finding, Severity
from .context import AuditContext
from .registry import register

#: Statuses of valid files we leave out on purpose (a documented limit, an unsupported format): warnings.
_WARNED = {decode.OVERSIZED: "oversized", decode.UNSUPPORTED: "unsupported"}


@register("unreadable-images", summary="Unreadable, empty, truncated, undecodable, oversized, unsupported or non-image files; animated images; splits without a readable image.", display="image")
def unreadable_images(ctx: AuditContext) -> list[Finding]:
    f = ctx.features
    findings: list[Finding] = []
    for problem in ctx.dataset.problems:
        findings.append(Finding("unreadable-images", Severity.WARNING, f"{problem.split}/{problem.relpath}: {problem.reason}",
                                data={"status": "scan"}))
    readable: Counter[str] = Counter()
    files: Counter[str] = Counter()
    for i, r in enumerate(ctx.dataset.records):
        status = f["status"][i]
        files[r.split] += 1
        if status == decode.OK:
            readable[r.split] += 1
            if f["frames"][i] > 1:
                findings.append(Finding(
                    "unreadable-images", Severity.WARNING,
                    f"{r.split}/{r.relpath}: animated {f['format'][i]} with {f['frames'][i]} frames; only the first was audited, and Keras' loaders reject animations",
                    images=(ctx.ref(i),), data={"status": "animated", "frames": int(f["frames"][i])}))
            continue
        if status == decode.NOT_IMAGE and not is_image_name(r.relpath):
            continue  # a README or labels.csv beside the images: counted as skipped, not a problem
        severity = Severity.WARNING if status in _WARNED else Severity.ERROR
        findings.append(Finding(
            "unreadable-images", severity, f"{r.split}/{r.relpath}: {status}: {f['detail'][i]}",
            images=(ctx.ref(i),), data={"status": status}))
    # A CI gate pointed at a wrong folder (empty, only unsupported files) must not pass: nothing was audited there.
    for spec in ctx.dataset.splits:
        if not readable[spec.name]:
            findings.append(Finding(
                "unreadable-images", Severity.ERROR,
                f"split {spec.name!r} has no readable image ({files[spec.name]} file(s) under {spec.root}); nothing in it "
                "was audited: check the path",
                data={"status": "no-readable-image", "split": spec.name, "files": files[spec.name]}))
    return findings
