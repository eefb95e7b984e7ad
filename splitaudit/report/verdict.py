"""The verdict: one :func:`decide` from the findings and a frozen :class:`~splitaudit.report.model.Policy`.

``build_report`` decides with the run's policy; applying a baseline afterwards decides again with the policy stored
in the report, so a verdict never depends on where it was decided.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from .model import Finding, Policy, Severity, Verdict


def leak_fractions(split_names: Sequence[str], images_per_split: Mapping[str, int], leak_findings: Sequence[Finding]) -> dict[str, float]:
    """Per split: the share of its images that copy an image of an earlier split (the later image of each pair)."""
    leaked: dict[str, set[str]] = {n: set() for n in split_names}
    for f in leak_findings:
        if len(f.images) >= 2:
            later = f.images[-1]
            leaked[later.split].add(later.path)
    return {n: (len(leaked[n]) / images_per_split[n]) if images_per_split.get(n) else 0.0 for n in split_names}


def decide(findings: Sequence[Finding], policy: Policy, fractions: Mapping[str, float]) -> Verdict:
    """Fail when a finding at or above ``policy.fail_on`` remains that no baseline accepted, after the leak
    tolerance: copy findings of ``policy.leak_checks`` are tolerated when *every* split's leak fraction (in
    ``fractions``) is at most ``policy.max_leak_fraction``."""
    fail_on, max_leak = policy.fail_on, policy.max_leak_fraction
    counts = Counter(x.severity.label for x in findings)
    tolerate = max_leak > 0 and all(v <= max_leak for v in fractions.values())
    tolerated = [x for x in findings if tolerate and x.check in policy.leak_checks]
    accepted = [x for x in findings if x.accepted]
    failing = [x for x in findings if x.severity >= fail_on and not (tolerate and x.check in policy.leak_checks) and not x.accepted]
    if failing:
        by_check = Counter(x.check for x in failing)
        reason = f"{len(failing)} finding(s) at or above {fail_on.label}: " + ", ".join(f"{c} ({n})" for c, n in sorted(by_check.items()))
    else:
        reason = "no findings at or above " + fail_on.label
        if tolerated:
            worst = max(fractions.values()) if fractions else 0.0
            reason += f" ({len(tolerated)} leak finding(s) tolerated: worst leak fraction {worst:.2%} <= {max_leak:.2%})"
    if accepted:
        reason += f"; {len(accepted)} accepted in the baseline"
    order = [s.label for s in sorted(Severity, reverse=True)]
    return Verdict(bool(failing), fail_on, tuple((k, counts.get(k, 0)) for k in order), reason, len(tolerated))
