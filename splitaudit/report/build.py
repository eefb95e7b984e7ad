"""Stage 5: assemble findings into a report with per-split counts and a verdict."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..features import decode
from ..features.table import is_skipped
from .model import AuditReport, Finding, Severity, SplitSummary, Verdict


def leak_fractions(split_names: Sequence[str], images_per_split: Mapping[str, int], leak_findings: Sequence[Finding]) -> dict[str, float]:
    """Per split: the share of its images that copy an image of an earlier split (the later image of each pair)."""
    leaked: dict[str, set[str]] = {n: set() for n in split_names}
    for f in leak_findings:
        if len(f.images) >= 2:
            later = f.images[-1]
            leaked[later.split].add(later.path)
    return {n: (len(leaked[n]) / images_per_split[n]) if images_per_split.get(n) else 0.0 for n in split_names}


def build_report(
    ctx: Any,
    findings: Sequence[Finding],
    *,
    checks: Sequence[tuple[str, Mapping[str, Any]]],
    leak_checks: set[str],
    fail_on: Severity,
    max_leak_fraction: float,
    timings: Mapping[str, float] | None = None,
    baseline: Any = None,
) -> AuditReport:
    """The report for one run; ``ctx`` is the run's :class:`~splitaudit.checks.AuditContext`.

    Findings listed in ``baseline`` (a :class:`~splitaudit.baseline.Baseline`) are marked accepted and do not
    count towards the verdict.
    """
    dataset = ctx.dataset
    f = ctx.features
    files: Counter[str] = Counter()
    images: Counter[str] = Counter()
    unreadable: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    classes: dict[str, Counter[str]] = {n: Counter() for n in dataset.split_names}
    for i, r in enumerate(dataset.records):
        files[r.split] += 1
        status = f["status"][i]
        if status == decode.OK:
            images[r.split] += 1
            if r.label is not None:
                classes[r.split][r.label] += 1
        elif is_skipped(status, r.relpath):
            skipped[r.split] += 1
        else:
            unreadable[r.split] += 1

    from ..baseline import accept

    ordered = tuple(sorted(accept(findings, baseline), key=Finding.sort_key))
    leaks = [x for x in ordered if x.check in leak_checks]
    fractions = leak_fractions(dataset.split_names, images, leaks)
    splits = tuple(
        SplitSummary(
            name=s.name, root=s.root, files=files[s.name], images=images[s.name], unreadable=unreadable[s.name],
            skipped=skipped[s.name], classes=tuple(sorted(classes[s.name].items())), leak_fraction=fractions[s.name],
        )
        for s in dataset.splits
    )
    verdict = decide(ordered, leak_checks=leak_checks, fractions=fractions, fail_on=fail_on, max_leak_fraction=max_leak_fraction)
    cache_info = {"hits": f.hits, "misses": f.misses, "embedded": getattr(ctx, "embedded_count", 0)}
    return AuditReport(splits, ordered, verdict, tuple(checks), embedding_summary(ctx), dict(timings or {}), cache_info,
                       distribution=distribution_summary(ctx))


def distribution_summary(ctx: Any) -> dict[str, Any]:
    """The tables the distribution checks measured (class counts, property medians, AUCs, probe accuracy), by
    section; empty when none of them ran. See docs/json-schema.md."""
    return {k: v for k, v in sorted(dict(getattr(ctx, "summaries", None) or {}).items())}


def embedding_summary(ctx: Any) -> dict[str, Any]:
    """The backbone and the thresholds this dataset calibrated (empty when embeddings are off)."""
    if getattr(ctx, "backbone", None) is None:
        return {}
    from ..checks.context import DEFAULT_MIN_NCC, HASH_COLLISION_RATE

    cal = ctx.calibration
    rate = ctx.hash_collision_rate()
    return {
        "backbone": ctx.backbone.identity,
        "image_size": ctx.backbone.image_size,
        "similarity_threshold": ctx.similarity_threshold(),
        "ncc_threshold": ctx.ncc_threshold(DEFAULT_MIN_NCC),
        "hash_collision_rate": rate,
        "hashes_trusted": rate <= HASH_COLLISION_RATE,
        "null_cosine": {k: v for k, v in cal.items() if k.startswith("q") or k == "samples"},
    }


def _accepted(finding: Finding) -> bool:
    return isinstance(finding.data, Mapping) and finding.data.get("baseline") == "accepted"


def decide(findings: Sequence[Finding], *, leak_checks: set[str], fractions: Mapping[str, float], fail_on: Severity, max_leak_fraction: float) -> Verdict:
    """Fail when a finding at or above ``fail_on`` remains after the leak tolerance is applied.

    Cross-split copy findings are tolerated when *every* split's leak fraction is at most ``max_leak_fraction``.
    """
    counts = Counter(x.severity.label for x in findings)
    tolerate = max_leak_fraction > 0 and all(v <= max_leak_fraction for v in fractions.values())
    tolerated = [x for x in findings if tolerate and x.check in leak_checks]
    # Findings a baseline accepted are reported but never fail the run (see splitaudit.baseline).
    accepted = [x for x in findings if _accepted(x)]
    failing = [x for x in findings if x.severity >= fail_on and not (tolerate and x.check in leak_checks) and not _accepted(x)]
    if failing:
        by_check = Counter(x.check for x in failing)
        reason = f"{len(failing)} finding(s) at or above {fail_on.label}: " + ", ".join(f"{c} ({n})" for c, n in sorted(by_check.items()))
    else:
        reason = "no findings at or above " + fail_on.label
        if tolerated:
            worst = max(fractions.values()) if fractions else 0.0
            reason += f" ({len(tolerated)} leak finding(s) tolerated: worst leak fraction {worst:.2%} <= {max_leak_fraction:.2%})"
    if accepted:
        reason += f"; {len(accepted)} accepted in the baseline"
    order = [s.label for s in sorted(Severity, reverse=True)]
    return Verdict(bool(failing), fail_on, tuple((k, counts.get(k, 0)) for k in order), reason, len(tolerated))
