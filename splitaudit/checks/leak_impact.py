"""leak-impact: how much the leaked images inflate evaluation accuracy.

A probe fitted on all of train (logistic regression on the CNN embeddings, ``_probe.label_probe``) predicts each
evaluation split twice over: all its images, and only those without a copy (exact, pixel-identical or
near-duplicate: the leak checks) or a very similar image (``similar-images``) in an earlier split. The difference
is the number of accuracy points the leaked images add, with a 95% bootstrap interval (fixed seed). Reported for
a split when the leaked images are predicted right significantly more often than the others (Fisher's exact test,
p < ``alpha``) and the inflation reaches ``min_points`` (a warning). The bootstrap interval alone is no test: when
every leaked image is right, no resample can show a negative inflation, so a handful of real copies in a clean
dataset would "significantly" inflate it by a fraction of a point. Otherwise the numbers are only in the report's
``distribution["leak_impact"]`` table (one leaked image in a thousand moves accuracy by less than the noise, and
its copy findings already say what to fix). Needs embeddings and labels.
"""

from __future__ import annotations

import numpy as np

from ..report.model import CheckResult, Finding, Severity
from ._pairs import cross_split, duplicate_mask
from ._probe import SEED, label_probe
from ._twosample import fisher_exact
from ..neighbors.thresholds import DEFAULT_MAX_DHASH, DEFAULT_MAX_PHASH, DEFAULT_MAX_RATIO, DEFAULT_MIN_NCC, DEFAULT_MIN_SIMILARITY
from .context import AuditContext
from .registry import register


@register("leak-impact", summary="Probe accuracy on each evaluation split with and without the images that copy (or closely resemble) a training image: how many points the leaks add.", display="table")
def leak_impact(ctx: AuditContext, *, alpha: float = 0.001, min_points: float = 0.5, resamples: int = 1000,
                include_similar: bool = True) -> CheckResult:
    probe = label_probe(ctx)
    if probe is None:
        return CheckResult()
    m = cross_split(ctx, ctx.matches(DEFAULT_MAX_PHASH, DEFAULT_MAX_DHASH, DEFAULT_MIN_SIMILARITY, DEFAULT_MAX_RATIO))
    copies = duplicate_mask(m, ctx.ncc_threshold(DEFAULT_MIN_NCC))
    similar = m.candidate & ~copies
    s = ctx.split_index
    later = np.where(s[m.a] > s[m.b], m.a, m.b)
    copied = set(later[copies].tolist())
    alike = set(later[similar].tolist()) - copied if include_similar else set()
    names = ctx.dataset.split_names
    correct = probe.full_proba.argmax(axis=1) == probe.y  # NaN rows (train) are never used below
    findings: list[Finding] = []
    summary: dict = {}
    for k, other in enumerate(names[1:], start=1):
        idx = np.flatnonzero(probe.split == k)
        if len(idx) == 0:
            continue
        rec = probe.rows[idx]
        is_copy = np.isin(rec, list(copied))
        is_alike = np.isin(rec, list(alike))
        leaked = is_copy | is_alike
        ok = correct[idx].astype(np.float64)
        acc_all = float(ok.mean())
        entry: dict = {"accuracy": acc_all, "n": int(len(idx)), "leaked": int(leaked.sum()), "copies": int(is_copy.sum()),
                       "similar": int(is_alike.sum())}
        summary[other] = entry
        if not leaked.any() or leaked.all():
            continue
        acc_clean = float(ok[~leaked].mean())
        acc_leaked = float(ok[leaked].mean())
        lo, hi = _bootstrap(ok, leaked, resamples)
        inflation = acc_all - acc_clean
        entry.update({"accuracy_without_leaked": acc_clean, "accuracy_on_leaked": acc_leaked, "inflation": inflation,
                      "ci": [lo, hi]})
        kinds = f"{int(is_copy.sum())} copies" + (f" and {int(is_alike.sum())} very similar images" if is_alike.any() else "")
        kl, kc = int(ok[leaked].sum()), int(ok[~leaked].sum())
        p_value = fisher_exact(np.array([[kl, int(leaked.sum()) - kl], [kc, int((~leaked).sum()) - kc]]))
        entry["p_value"] = p_value
        if p_value >= alpha or acc_leaked <= acc_clean or 100 * inflation < min_points:
            continue
        findings.append(Finding(
            "leak-impact", Severity.WARNING,
            f"the {int(leaked.sum())} leaked {other} images ({kinds} of earlier-split images) "
            f"{'inflate' if inflation >= 0 else 'change'} {other} accuracy by {100 * inflation:+.1f} points (95% CI "
            f"{100 * lo:+.1f} to {100 * hi:+.1f}): a probe trained on {names[0]} scores {acc_all:.1%} on all of {other}, "
            f"{acc_clean:.1%} without them and {acc_leaked:.1%} on them (Fisher p={p_value:.1e}). The {other} score measures memory of training "
            f"images as well as generalisation",
            category=f"{other}/impact",
            data={"split": other, **entry}))
    return CheckResult(tuple(findings), {"leak_impact": summary} if summary else {})


def _bootstrap(ok: np.ndarray, leaked: np.ndarray, resamples: int) -> tuple[float, float]:
    """95% interval of accuracy(all) - accuracy(not leaked), resampling the split's images (fixed seed)."""
    rng = np.random.default_rng(SEED)
    pick = rng.integers(0, len(ok), size=(max(1, resamples), len(ok)))
    o, lk = ok[pick], leaked[pick]
    clean_n = (~lk).sum(axis=1)
    valid = clean_n > 0
    diff = o.mean(axis=1)[valid] - (o * ~lk).sum(axis=1)[valid] / clean_n[valid]
    return float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))
