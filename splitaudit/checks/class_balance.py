"""class-balance: classes missing from a split, classes only in evaluation splits, and a chi-square test.

The first split is the training split; every later split is compared with it. (The full distribution audit,
with effect sizes per property, is a separate family of checks.)
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..report.model import Finding, Severity
from ._stats import chi2_contingency
from .context import AuditContext
from .registry import register


@register("class-balance", summary="Classes missing or only in evaluation splits; label distributions that differ (chi-square).")
def class_balance(ctx: AuditContext, *, alpha: float = 0.001, min_cramers_v: float = 0.1) -> list[Finding]:
    ok = ctx.features.ok
    counts: dict[str, Counter[str]] = {name: Counter() for name in ctx.dataset.split_names}
    for i, r in enumerate(ctx.dataset.records):
        if ok[i] and r.label is not None:
            counts[r.split][r.label] += 1
    names = ctx.dataset.split_names
    train = names[0]
    if not counts[train]:
        return []  # unlabelled (flat) folders: nothing to compare
    findings: list[Finding] = []
    for other in names[1:]:
        if not counts[other]:
            continue
        only_eval = sorted(set(counts[other]) - set(counts[train]))
        missing = sorted(set(counts[train]) - set(counts[other]))
        if only_eval:
            findings.append(Finding(
                "class-balance", Severity.ERROR,
                f"{other} has classes absent from {train}: {', '.join(only_eval)} (a model trained on {train} can never predict them)",
                data={"split": other, "classes": only_eval, "kind": "only-in-eval"}))
        if missing:
            findings.append(Finding(
                "class-balance", Severity.WARNING,
                f"{other} lacks classes present in {train}: {', '.join(missing)} (their accuracy is never measured)",
                data={"split": other, "classes": missing, "kind": "missing-in-eval"}))
        classes = sorted(set(counts[train]) | set(counts[other]))
        table = np.array([[counts[train][c] for c in classes], [counts[other][c] for c in classes]], dtype=np.float64)
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            continue
        chi2, p, dof, _ = chi2_contingency(table)
        v = math.sqrt(chi2 / (table.sum() * (min(table.shape) - 1)))
        if p < alpha and v >= min_cramers_v:
            props = table / table.sum(axis=1, keepdims=True)
            worst = int(np.argmax(np.abs(props[1] - props[0])))
            c = [c for c in classes if counts[train][c] + counts[other][c] > 0][worst]
            findings.append(Finding(
                "class-balance", Severity.WARNING,
                f"class proportions differ between {train} and {other} (chi-square p={p:.2g}, Cramér's V={v:.2f}); "
                f"largest gap: {c!r} is {props[0][worst]:.0%} of {train} but {props[1][worst]:.0%} of {other}",
                data={"split": other, "chi2": chi2, "p_value": p, "dof": dof, "cramers_v": v, "kind": "proportions"}))
    return findings
