"""class-balance: classes missing from a split, classes only in evaluation splits, a chi-square test with its
effect size (Cramér's V) and the per-class ratio table, and imbalance within each split.

The first split is the training split; every later split is compared with it. The per-split counts, proportions,
ratios (evaluation share / training share) and imbalance go to the report's ``distribution["classes"]`` table
whether or not anything is flagged. (Image properties, distinguishability and difficulty are separate checks.)
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..report.model import CheckResult, Finding, Severity
from ._stats import chi2_contingency
from .context import AuditContext
from .registry import Alpha, NonNegative, register


@register("class-balance", summary="Classes missing or only in evaluation splits; label distributions that differ (chi-square, Cramér's V, per-class ratios); imbalance within a split.", display="table")
def class_balance(ctx: AuditContext, *, alpha: Alpha = 0.001, min_cramers_v: NonNegative = 0.1, max_imbalance: NonNegative = 20.0) -> CheckResult:
    ok = ctx.features.ok
    counts: dict[str, Counter[str]] = {name: Counter() for name in ctx.dataset.split_names}
    for i, r in enumerate(ctx.dataset.records):
        if ok[i] and r.label is not None:
            counts[r.split][r.label] += 1
    names = ctx.dataset.split_names
    train = names[0]
    if not counts[train]:
        return CheckResult()  # unlabelled (flat) folders: nothing to compare
    findings: list[Finding] = []
    summary = _summary(counts, names)
    for name in names:
        c = counts[name]
        if len(c) >= 2 and summary["imbalance"][name] >= max_imbalance:
            (big, nb), (small, ns) = max(c.items(), key=lambda kv: (kv[1], kv[0])), min(c.items(), key=lambda kv: (kv[1], kv[0]))
            findings.append(Finding(
                "class-balance", Severity.INFO,
                f"{name} is imbalanced: its largest class {big!r} has {nb} images, its smallest {small!r} {ns} "
                f"({nb / ns:.0f}x; threshold {max_imbalance:g}x). Accuracy on such a split is dominated by the large "
                f"classes and the small ones' metrics are noisy; compare per-class or balanced accuracy",
                data={"split": name, "kind": "imbalance", "ratio": nb / ns, "largest": {big: nb}, "smallest": {small: ns}}))
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
        summary["tests"][other] = {"chi2": chi2, "p_value": p, "dof": dof, "cramers_v": v}
        if p < alpha and v >= min_cramers_v:
            present = [c for c in classes if counts[train][c] + counts[other][c] > 0]
            props = table / table.sum(axis=1, keepdims=True)
            worst = int(np.argmax(np.abs(props[1] - props[0])))
            c = present[worst]
            over, under = _outlying(table, present, alpha)
            named = "".join(f"; {word} in {other}: " + ", ".join(f"{k!r} ({_ratio_text(summary['ratios'][other][k], train)})" for k in ks)
                            for word, ks in (("over-represented", over), ("under-represented", under)) if ks)
            findings.append(Finding(
                "class-balance", Severity.WARNING,
                f"class proportions differ between {train} and {other} (chi-square p={p:.2g}, Cramér's V={v:.2f}); "
                f"largest gap: {c!r} is {props[0][worst]:.0%} of {train} but {props[1][worst]:.0%} of {other}{named}. "
                f"Overall accuracy on {other} weights the classes differently from training, so the {train}/{other} gap "
                f"mixes per-class performance with the class mix",
                data={"split": other, "chi2": chi2, "p_value": p, "dof": dof, "cramers_v": v, "kind": "proportions",
                      "ratios": {k: summary["ratios"][other][k] for k in present if summary["ratios"][other][k] is not None},
                      "over_represented": over, "under_represented": under}))
    return CheckResult(tuple(findings), {"classes": summary})


def _ratio_text(ratio: float | None, train: str) -> str:
    """A class's share ratio for a message; ``None`` is a class absent from training (no ratio exists)."""
    return f"absent from {train}" if ratio is None else f"{ratio:.2g}x"


def _summary(counts: dict[str, Counter[str]], names: tuple[str, ...]) -> dict:
    """Counts, proportions, ratio to train's proportion and max/min imbalance, per split (JSON-ready)."""
    classes = sorted(set().union(*(set(c) for c in counts.values())))
    total = {n: sum(counts[n].values()) for n in names}
    prop = {n: {c: counts[n][c] / total[n] for c in classes} if total[n] else {} for n in names}
    train = names[0]
    ratios = {n: {c: (prop[n][c] / prop[train][c] if prop[train][c] > 0 else None) for c in classes}
              for n in names[1:] if total[n]}
    imbalance = {n: (max(counts[n].values()) / min(counts[n].values()) if counts[n] else None) for n in names}
    return {"counts": {n: {c: counts[n][c] for c in classes} for n in names}, "proportions": prop,
            "ratios": ratios, "imbalance": imbalance, "tests": {}}


def _outlying(table: np.ndarray, classes: list[str], alpha: float) -> tuple[list[str], list[str]]:
    """Classes whose evaluation count departs from independence: adjusted standardised residuals beyond the
    two-sided ``alpha`` quantile, Bonferroni-corrected over the classes (largest departure first)."""
    n = table.sum()
    rows = table.sum(axis=1, keepdims=True)
    cols = table.sum(axis=0, keepdims=True)
    expected = rows * cols / n
    with np.errstate(divide="ignore", invalid="ignore"):
        resid = (table - expected) / np.sqrt(expected * (1 - rows / n) * (1 - cols / n))
    r = np.nan_to_num(resid[1])
    z = _normal_quantile(1 - alpha / (2 * len(classes)))
    order = np.argsort(-np.abs(r), kind="stable")
    return [classes[i] for i in order if r[i] > z], [classes[i] for i in order if r[i] < -z]


def _normal_quantile(q: float) -> float:
    """Inverse of the standard normal CDF (bisection on math.erfc; no SciPy import on the re-check path)."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(mid / math.sqrt(2)) > 1 - q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
