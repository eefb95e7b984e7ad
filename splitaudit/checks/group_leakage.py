"""group-leakage: one group (patient, camera, session...) has images in two splits."""

from __future__ import annotations

from collections import defaultdict

from ..report.model import Finding, Severity
from .context import AuditContext
from .registry import Count, register


@register("group-leakage", summary="A group (from --group-by or the manifest's group column) present in two splits.", leak=False, display="group")
def group_leakage(ctx: AuditContext, *, max_examples: Count = 3) -> list[Finding]:
    members: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(ctx.dataset.records):
        if r.group is not None:
            members[r.group][r.split].append(i)
    order = {n: k for k, n in enumerate(ctx.dataset.split_names)}
    findings: list[Finding] = []
    for group in sorted(members):
        by_split = members[group]
        if len(by_split) < 2:
            continue
        splits = sorted(by_split, key=order.__getitem__)
        examples = tuple(ctx.ref(i) for s in splits for i in by_split[s][:max_examples])
        counts = {s: len(by_split[s]) for s in splits}
        findings.append(
            Finding(
                check="group-leakage",
                severity=Severity.ERROR,
                message=f"group {group!r} appears in {', '.join(f'{s} ({n})' for s, n in counts.items())}",
                images=examples,
                data={"group": group, "counts": counts},
            )
        )
    return findings
